"""Make Hydra look like a model of the transformers library to transformers' own tests, for as long as they run."""

import contextlib
from unittest import mock

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
from transformers.models.auto import configuration_auto, modeling_auto

from configuration_hydra import HydraConfig
from modeling_hydra import (
    HydraForImageClassification,
    HydraForMaskedLM,
    HydraForMultipleChoice,
    HydraForQuestionAnswering,
    HydraForSequenceClassification,
    HydraForTokenClassification,
    HydraModel,
    HydraVisionModel,
)

# auto class -> (its name table in `modeling_auto`, Hydra's class for it)
HYDRA_AUTO_CLASSES = {
    AutoModel: ("MODEL_MAPPING_NAMES", HydraModel),
    AutoModelForMaskedLM: ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", HydraForMaskedLM),
    AutoModelForSequenceClassification: ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
                                         HydraForSequenceClassification),
    AutoModelForTokenClassification: ("MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", HydraForTokenClassification),
    AutoModelForQuestionAnswering: ("MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES", HydraForQuestionAnswering),
    AutoModelForMultipleChoice: ("MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES", HydraForMultipleChoice),
}
HYDRA_VISION_AUTO_CLASSES = {
    AutoModel: ("MODEL_MAPPING_NAMES", HydraVisionModel),
    AutoModelForImageClassification: ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", HydraForImageClassification),
}


@contextlib.contextmanager
def hydra_in_transformers_auto_mappings(config_class=HydraConfig, auto_classes=HYDRA_AUTO_CLASSES):
    """Register Hydra's config and classes (the text ones by default; `HydraVisionConfig` and
    `HYDRA_VISION_AUTO_CLASSES` for vision) with the Auto classes and add them to `modeling_auto`'s name tables.

    The common tests pick a model's inputs and labels by looking its class name up in those tables (e.g. a class
    in `MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES` gets inputs of shape (batch, num_choices, seqlen)), and load
    checkpoints through `AutoModel...`. Everything is restored on exit, so that other tests still see Hydra as
    remote code.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.dict(configuration_auto.CONFIG_MAPPING._extra_content))
        AutoConfig.register(config_class.model_type, config_class)
        for auto_class, (names_table, model_class) in auto_classes.items():
            stack.enter_context(mock.patch.dict(auto_class._model_mapping._extra_content))
            auto_class.register(config_class, model_class)
            stack.enter_context(mock.patch.dict(getattr(modeling_auto, names_table),
                                                {config_class.model_type: model_class.__name__}))
        yield
