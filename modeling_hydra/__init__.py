"""Hydra bidirectional state-space encoders for Hugging Face transformers: text (BERT-style) and vision (ViT-style)."""

from . import modeling_hydra as _text, modeling_hydra_vision as _vision
from .modeling_hydra import *  # noqa: F403 (the text model classes listed in modeling_hydra.__all__)
from .modeling_hydra_vision import *  # noqa: F403 (the vision model classes listed in modeling_hydra_vision.__all__)

__all__ = [*_text.__all__, *_vision.__all__]
