"""HydraConfig: defaults of the released model, validation errors naming the field, serialization."""

import inspect
import json
import math

import numpy as np
import pytest

from configuration_hydra import HydraConfig
from conftest import tiny_config


def test_defaults_are_the_released_hydra_bert_base():
    config = HydraConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.d_state, config.headdim, config.expand,
            config.d_conv, config.chunk_size, config.vocab_size, config.type_vocab_size) == \
        (768, 23, 64, 64, 2, 7, 256, 30528, 2)
    assert not config.is_prenorm and not config.use_position_embeddings and config.ngroups == 1
    assert config.d_inner == 1536 and config.nheads == 24
    assert config.model_type == "hydra"


@pytest.mark.parametrize("overrides, field", [
    (dict(hidden_size=30, headdim=8), "headdim"),  # d_inner = 60 is not a multiple of 8
    (dict(ngroups=3), "ngroups"),  # 8 heads
    (dict(hidden_size=0), "hidden_size"),
    (dict(d_state=-1), "d_state"),
    (dict(num_hidden_layers=0), "num_hidden_layers"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(headdim=2.5), "headdim"),
    (dict(d_conv=4), "d_conv"),
    (dict(classifier_pooling="max"), "classifier_pooling"),
    (dict(dt_min=0.2, dt_max=0.1), "dt_min"),
    (dict(dt_limit=(0.5, 0.1)), "dt_limit"),
    (dict(pad_token_id=500), "pad_token_id"),
    (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
])
def test_invalid_values_raise_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


def test_round_trip_through_json_keeps_every_field(tmp_path):
    config = tiny_config(dt_limit=(0.001, float("inf")), classifier_pooling="mean", ssd_backend="torch",
                         is_prenorm=True, num_labels=4)
    config.save_pretrained(tmp_path)
    json.loads((tmp_path / "config.json").read_text())  # valid JSON despite the infinity
    loaded = HydraConfig.from_pretrained(tmp_path)
    assert loaded.dt_limit == (0.001, math.inf) and isinstance(loaded.dt_limit, tuple)
    assert loaded.to_dict() == config.to_dict()
    assert HydraConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_pool_all_is_an_alias_of_mean_pooling():
    assert HydraConfig(pool_all=True).classifier_pooling == "mean"
    assert HydraConfig(pool_all=True).pool_all
    assert HydraConfig(pool_all=False).classifier_pooling == "cls"
    assert not HydraConfig().pool_all
    original = HydraConfig().to_dict()  # an original-style config.json that says pool_all
    original.pop("classifier_pooling")
    original["pool_all"] = True
    assert HydraConfig.from_dict(original).classifier_pooling == "mean"


@pytest.mark.parametrize("field, value", [
    ("layer_norm_eps", float("nan")),
    ("layer_norm_eps", 0.0),
    ("layer_norm_eps", "1e-12"),  # a string for a float field
    ("dt_min", "0.001"),
    ("dt_min", float("nan")),
    ("dt_max", float("inf")),
    ("dt_max", 1e30),
    ("dt_init_floor", float("nan")),
    ("dt_init_floor", -1e-4),
    ("initializer_range", -1.0),
    ("initializer_range", float("nan")),
    ("initializer_range", float("inf")),
    ("hidden_dropout_prob", float("nan")),
    ("classifier_dropout", "0.1"),
    ("is_prenorm", "false"),
    ("conv_bias", "no"),
    ("proj_bias", 1),
    ("use_position_embeddings", None),
    ("tie_word_embeddings", "yes"),
    ("unpad_inputs", 0),
    ("hidden_act", "bogus"),
    ("hidden_act", None),
    ("hidden_size", "32"),
    ("hidden_size", True),  # bools are not sizes
    ("d_state", 8.0),
    ("dt_limit", 5),
    ("dt_limit", (0.0,)),
    ("dt_limit", (0.0, 1.0, 2.0)),
    ("dt_limit", ("0", "1")),
    ("dt_limit", (0.0, float("nan"))),
    ("dt_limit", (float("-inf"), 1.0)),
    ("dt_limit", "01"),
    ("classifier_pooling", 1),
    ("ssd_backend", ""),
    ("ssd_backend", None),
    ("mixer_recompute", "sometimes"),
    ("mixer_recompute", True),
])
def test_values_that_build_a_broken_model_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        tiny_config(**{field: value})


def test_numpy_numbers_are_accepted_and_stored_as_python_numbers():
    config = tiny_config(hidden_size=np.int64(32), num_hidden_layers=np.int32(2), d_state=np.uint8(8),
                         layer_norm_eps=np.float32(1e-5), dt_max=np.float64(0.1), dt_limit=np.array([0.0, 5.0]))
    reference = tiny_config(layer_norm_eps=float(np.float32(1e-5)), dt_limit=(0.0, 5.0))
    for name in ("hidden_size", "num_hidden_layers", "d_state"):
        assert type(getattr(config, name)) is int
    assert type(config.layer_norm_eps) is float and type(config.dt_max) is float
    assert config.dt_limit == (0.0, 5.0) and all(type(v) is float for v in config.dt_limit)
    assert config.to_json_string() == reference.to_json_string()  # plain JSON: no numpy type left


def test_every_constructor_field_has_one_validation_rule():
    from configuration_hydra.configuration_hydra import FIELD_RULES
    from configuration_hydra.mixer_config import MIXER_FIELDS

    fields = set(inspect.signature(HydraConfig.__init__).parameters) - {"self", "kwargs"}
    assert fields.isdisjoint(MIXER_FIELDS) and fields | set(MIXER_FIELDS) == set(FIELD_RULES)
    assert all(f"{field} (`" in HydraConfig.__doc__ for field in FIELD_RULES)  # every field documented


def test_backend_names_are_left_to_the_model_and_new_fields_have_their_defaults():
    assert tiny_config(ssd_backend="a_future_kernel").ssd_backend == "a_future_kernel"
    config = HydraConfig()
    assert config.unpad_inputs is True and config.mixer_recompute == "auto"
    assert tiny_config(unpad_inputs=False, mixer_recompute="never").mixer_recompute == "never"


@pytest.mark.parametrize("dt_limit", [(0.0, float("inf")), (0.001, float("inf")), (0.0, 0.5)])
def test_saved_config_rebuilds_from_its_own_json(tmp_path, dt_limit):
    config = tiny_config(dt_limit=dt_limit, classifier_pooling="mean", is_prenorm=True, num_labels=3)
    config.save_pretrained(tmp_path)
    text = (tmp_path / "config.json").read_text()
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert "__float__" not in text  # plain JSON that any parser and the config itself can read back
    rebuilt = HydraConfig(**data)
    assert rebuilt.dt_limit == dt_limit and isinstance(rebuilt.dt_limit, tuple)
    assert rebuilt.to_dict() == config.to_dict()
    from_string = HydraConfig.from_dict(json.loads(config.to_json_string()))
    assert from_string.to_dict() == config.to_dict() and from_string.dt_limit == dt_limit
    assert HydraConfig.from_pretrained(tmp_path).to_dict() == config.to_dict()


def test_folders_saved_with_the_tagged_infinity_still_load(tmp_path):
    config = tiny_config()
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["dt_limit"] = [0.0, {"__float__": "Infinity"}]  # what the first version wrote
    (tmp_path / "config.json").write_text(json.dumps(data))
    assert HydraConfig.from_pretrained(tmp_path).dt_limit == (0.0, math.inf)
    assert HydraConfig(**data).dt_limit == (0.0, math.inf)
    assert HydraConfig(**data).to_dict() == config.to_dict()
