"""transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`) run on Hydra's package classes.

The tests come from the PyPI sdist of the installed transformers version, fetched at test time into a cache
(see `transformers_common/sdist_tests.py`); without network or sdist the module is skipped with the reason. Which
tests apply is decided by transformers' own class attributes describing the model (`has_attentions = False`: Hydra
has no attention), never by a list of ours.
"""

import contextlib
import inspect
import unittest

import torch
from transformers import PreTrainedConfig

from conftest import MODEL_CLASSES
from configuration_hydra import HydraConfig
from transformers_common.auto_registration import hydra_in_transformers_auto_mappings
from transformers_common.hydra_model_tester import HydraModelTester
from transformers_common.sdist_tests import common_test_modules
from transformers_common.standin_configuration_utils import config_common_kwargs

modeling_common, configuration_common = common_test_modules()


class HydraCommonModelTest(modeling_common.ModelTesterMixin, unittest.TestCase):
    """`ModelTesterMixin` over HydraModel and its five heads, plus `ConfigTester`'s checks of HydraConfig."""

    all_model_classes = tuple(MODEL_CLASSES)
    has_attentions = False  # the sequence mixer is a state-space model: no attention, no attention maps
    # `_init_weights` initializes every weight: check it although the config file carries no "# Copyright 20xx"
    # line, from which transformers dates its models to exempt those older than 2023
    test_can_init_all_missing_weights_before_2023 = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        registration = contextlib.ExitStack()
        registration.enter_context(hydra_in_transformers_auto_mappings())
        cls.addClassCleanup(registration.close)
        # one intra-op thread: the tiny models gain nothing from more, and lose a lot on a busy machine
        cls.addClassCleanup(torch.set_num_threads, torch.get_num_threads())
        torch.set_num_threads(1)

    mixer_overrides: dict = {}  # the sequence mixer's config fields (the default: the Hydra mixer)

    def setUp(self):
        self.model_tester = HydraModelTester(self, mixer_overrides=self.mixer_overrides)
        # no num_attention_heads among the common properties: Hydra has no attention
        self.config_tester = configuration_common.ConfigTester(
            self, config_class=HydraConfig, hidden_size=48, headdim=16,
            common_properties=["hidden_size", "num_hidden_layers"])

    def test_config(self):
        self.config_tester.run_common_tests()


# The same tests on one config per family of the paper's matrix mixers (dd and di alternate over the families;
# attention dd, as di needs nheads == max_position_embeddings). The tester's rows are 7 tokens long.
class DenseMixerCommonModelTest(HydraCommonModelTest):
    mixer_overrides = dict(matrix_mixer_type="dense", is_data_dependent=False, qk_dim=-1, max_position_embeddings=8)


class ToeplitzMixerCommonModelTest(HydraCommonModelTest):
    mixer_overrides = dict(matrix_mixer_type="toeplitz", is_data_dependent=True, qk_dim=-1, max_position_embeddings=8)


class VandermondeMixerCommonModelTest(HydraCommonModelTest):
    mixer_overrides = dict(matrix_mixer_type="vandermonde", is_data_dependent=False, qk_dim=-1,
                           max_position_embeddings=8)


class CauchyMixerCommonModelTest(HydraCommonModelTest):
    mixer_overrides = dict(matrix_mixer_type="cauchy", is_data_dependent=True, qk_dim=4)


class LowRankMixerCommonModelTest(HydraCommonModelTest):
    mixer_overrides = dict(matrix_mixer_type="low_rank", is_data_dependent=False, qk_dim=4, max_position_embeddings=8)


class AttentionMixerCommonModelTest(HydraCommonModelTest):
    mixer_overrides = dict(matrix_mixer_type="attention", is_data_dependent=True, qk_dim=4)


class QuasiseparableMixerCommonModelTest(HydraCommonModelTest):
    mixer_overrides = dict(matrix_mixer_type="quasiseparable", is_data_dependent=False, qk_dim=4,
                           max_position_embeddings=8)


def test_config_common_kwargs_standin_matches_installed_transformers():
    """The stand-in's kwargs are `PreTrainedConfig`'s own settings, as in transformers' tests, each set to a value
    other than its default, so that `check_config_arguments_init` really checks that they pass through."""
    init_arguments = set(inspect.signature(PreTrainedConfig.__init__).parameters) - {"self", "kwargs"}
    # output_attentions is a property set through **kwargs; the version and is_encoder_decoder are not per-model
    expected = init_arguments - {"transformers_version", "is_encoder_decoder"} | {"output_attentions"}
    assert set(config_common_kwargs) == expected
    default = PreTrainedConfig()
    configured = PreTrainedConfig(**config_common_kwargs)
    for key in config_common_kwargs:
        assert getattr(configured, key) != getattr(default, key), key
