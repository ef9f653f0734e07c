"""Make Hydra look like a model of the transformers library to transformers' own tests, for as long as they run."""

import contextlib
from unittest import mock

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
from transformers.models.auto import configuration_auto, modeling_auto

from configuration_hydra import HydraConfig
from modeling_hydra import (
    HydraForMaskedLM,
    HydraForMultipleChoice,
    HydraForQuestionAnswering,
    HydraForSequenceClassification,
    HydraForTokenClassification,
    HydraModel,
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


@contextlib.contextmanager
def hydra_in_transformers_auto_mappings():
    """Register Hydra's config and classes with the Auto classes and add them to `modeling_auto`'s name tables.

    The common tests pick a model's inputs and labels by looking its class name up in those tables (e.g. a class
    in `MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES` gets inputs of shape (batch, num_choices, seqlen)), and load
    checkpoints through `AutoModel...`. Everything is restored on exit, so that other tests still see Hydra as
    remote code.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.dict(configuration_auto.CONFIG_MAPPING._extra_content))
        AutoConfig.register(HydraConfig.model_type, HydraConfig)
        for auto_class, (names_table, model_class) in HYDRA_AUTO_CLASSES.items():
            stack.enter_context(mock.patch.dict(auto_class._model_mapping._extra_content))
            auto_class.register(HydraConfig, model_class)
            stack.enter_context(mock.patch.dict(getattr(modeling_auto, names_table),
                                                {HydraConfig.model_type: model_class.__name__}))
        yield
