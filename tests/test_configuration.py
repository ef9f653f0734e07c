"""HydraConfig: defaults of the released model, validation errors naming the field, serialization."""

import json
import math

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
    (dict(ssd_backend="cuda"), "ssd_backend"),
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
