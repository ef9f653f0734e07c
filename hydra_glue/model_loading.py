"""Configs and models for the Trainer scripts: a pretrained checkpoint, or a fresh model from a config.

A Hydra checkpoint (a saved folder or a Hub id) given with `--trust_remote_code` loads through the Auto classes and
the code saved with it, as any user of the checkpoint would load it. Without `--trust_remote_code`, and for config
files such as configs/hydra-small.json (which carry no code), Hydra loads with this repository's classes. Every
other model type goes through the Auto classes, as in transformers' example scripts.
"""

from transformers import AutoConfig, AutoModelForMaskedLM, AutoModelForSequenceClassification, PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
)

from configuration_hydra import HydraConfig
from modeling_hydra import HydraForMaskedLM, HydraForSequenceClassification

# head -> (Hydra class, Auto class, model types the Auto class supports, what the head is called in errors)
MODEL_HEADS = {
    "sequence_classification": (HydraForSequenceClassification, AutoModelForSequenceClassification,
                                MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES, "sequence-classification"),
    "masked_lm": (HydraForMaskedLM, AutoModelForMaskedLM, MODEL_FOR_MASKED_LM_MAPPING_NAMES, "masked-LM"),
}


def load_config(source: str | None = None, model_type: str | None = None, config_overrides: str | None = None,
                trust_remote_code: bool = False, hub_kwargs: dict | None = None, **config_kwargs):
    """The config at `source` (a folder, a config JSON file or a Hub id), or the default config of `model_type`,
    updated with `config_kwargs` and then with `config_overrides` ("hidden_size=128,num_hidden_layers=4").

    With `trust_remote_code`, a source whose config names its own code (`auto_map`) loads through AutoConfig.
    """
    hub_kwargs = hub_kwargs or {}
    if source:
        config_dict, _ = PreTrainedConfig.get_config_dict(source, **hub_kwargs)
        has_remote_code = "AutoConfig" in (config_dict.get("auto_map") or {})
        source_type = config_dict.get("model_type")
        if has_remote_code and trust_remote_code:
            config = AutoConfig.from_pretrained(source, trust_remote_code=True, **hub_kwargs, **config_kwargs)
        elif source_type == "hydra":
            config = HydraConfig.from_dict(config_dict, **config_kwargs)
        elif source_type in CONFIG_MAPPING:
            config = CONFIG_MAPPING[source_type].from_dict(config_dict, **config_kwargs)
        else:  # no model type, or code of its own: AutoConfig says what is missing
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **hub_kwargs,
                                                **config_kwargs)
    elif model_type == "hydra":
        config = HydraConfig(**config_kwargs)
    elif model_type:
        config = AutoConfig.for_model(model_type, **config_kwargs)
    else:
        raise ValueError("No model given: pass --model_name_or_path (a checkpoint), --config_name (a config to "
                         "train from scratch, e.g. configs/hydra-small.json) or --model_type (e.g. hydra).")
    if config_overrides:
        config.update_from_string(config_overrides)
        if config.model_type == "hydra":  # this package's HydraConfig, or the one saved with a checkpoint
            config.validate()
    return config


def check_model_head(config, head: str):
    """ValueError unless models of `config`'s type have a `head` ("sequence_classification" or "masked_lm")."""
    _, auto_class, supported, description = MODEL_HEADS[head]
    if isinstance(config, HydraConfig) or config.model_type in supported:
        return
    if auto_class.__name__ in (getattr(config, "auto_map", None) or {}):
        return
    raise ValueError(f"Model type {config.model_type!r} has no {description} head ({auto_class.__name__} cannot "
                     f"build one); use a model that does, e.g. a Hydra or BERT checkpoint or config.")


def build_model(head: str, config, model_name_or_path: str | None = None, trust_remote_code: bool = False,
                **load_kwargs):
    """A `head` model: loaded from `model_name_or_path` with `config`, or freshly initialized from `config`.

    A config of this package's HydraConfig class gets this package's model class; any other config (including a
    HydraConfig loaded as remote code) gets the Auto class.
    """
    check_model_head(config, head)
    hydra_class, auto_class, _, _ = MODEL_HEADS[head]
    if isinstance(config, HydraConfig):
        if model_name_or_path:
            return hydra_class.from_pretrained(model_name_or_path, config=config, **load_kwargs)
        return hydra_class(config)
    if model_name_or_path:
        return auto_class.from_pretrained(model_name_or_path, config=config, trust_remote_code=trust_remote_code,
                                          **load_kwargs)
    return auto_class.from_config(config, trust_remote_code=trust_remote_code)
