"""Hydra bidirectional state-space encoders for Hugging Face transformers."""

from .modeling_hydra import (
    HydraForMaskedLM,
    HydraForMultipleChoice,
    HydraForQuestionAnswering,
    HydraForSequenceClassification,
    HydraForTokenClassification,
    HydraModel,
    HydraPreTrainedModel,
)

__all__ = [
    "HydraPreTrainedModel",
    "HydraModel",
    "HydraForMaskedLM",
    "HydraForSequenceClassification",
    "HydraForTokenClassification",
    "HydraForQuestionAnswering",
    "HydraForMultipleChoice",
]
