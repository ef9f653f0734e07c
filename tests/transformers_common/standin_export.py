"""Stand-in for transformers' `tests/exporters/test_export.py`, which the PyPI sdist does not ship.

`ModelTesterMixin` derives from its `ExportTesterMixin`; the real one runs transformers' exporters on every model.
This stand-in adds no tests: Hydra's own export tests cover `torch.export` and ONNX.
"""


class ExportTesterMixin:
    """Base of `ModelTesterMixin`; contributes no tests here."""
