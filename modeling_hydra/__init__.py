"""Hydra bidirectional state-space encoders for Hugging Face transformers."""

from .modeling_hydra import *  # noqa: F403 (the model classes listed in modeling_hydra.__all__)
from .modeling_hydra import __all__
