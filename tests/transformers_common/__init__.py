"""Support for running transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`) on Hydra.

`sdist_tests` fetches those tests from the PyPI sdist of the installed transformers at test time; the `standin_*`
modules stand in for the helper modules of transformers' test suite that the sdist does not ship.
"""
