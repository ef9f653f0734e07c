"""Stand-in for transformers' `tests/generation/test_utils.py`, which the PyPI sdist does not ship.

`test_modeling_common.py` only checks that a tester derives from `GenerationTesterMixin` exactly when its model can
`generate`; Hydra is an encoder and cannot, so its tester does not derive from it.
"""


class GenerationTesterMixin:
    """Marker base class of the testers of generative models; contributes no tests here."""
