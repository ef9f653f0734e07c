"""transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`) on HydraVisionModel and
HydraForImageClassification, taken from the PyPI sdist of the installed transformers as in
test_transformers_common.py. Which tests apply is decided by transformers' own class attributes."""

import contextlib
import unittest

import torch

from configuration_hydra import HydraVisionConfig
from modeling_hydra import HydraForImageClassification, HydraVisionModel
from transformers_common.auto_registration import HYDRA_VISION_AUTO_CLASSES, hydra_in_transformers_auto_mappings
from transformers_common.hydra_vision_model_tester import HydraVisionModelTester
from transformers_common.sdist_tests import common_test_modules

modeling_common, configuration_common = common_test_modules()


class HydraVisionCommonModelTest(modeling_common.ModelTesterMixin, unittest.TestCase):
    """`ModelTesterMixin` over the vision classes, plus `ConfigTester`'s checks of HydraVisionConfig."""

    all_model_classes = (HydraVisionModel, HydraForImageClassification)
    has_attentions = False  # the sequence mixer is a state-space model: no attention, no attention maps
    test_can_init_all_missing_weights_before_2023 = True  # check `_init_weights` whatever the file's date
    test_resize_embeddings = False  # no token embeddings to resize (as ViT's tests say of ViT)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        registration = contextlib.ExitStack()
        registration.enter_context(hydra_in_transformers_auto_mappings(HydraVisionConfig, HYDRA_VISION_AUTO_CLASSES))
        cls.addClassCleanup(registration.close)
        cls.addClassCleanup(torch.set_num_threads, torch.get_num_threads())
        torch.set_num_threads(1)

    def setUp(self):
        self.model_tester = HydraVisionModelTester(self)
        self.config_tester = configuration_common.ConfigTester(
            self, config_class=HydraVisionConfig, has_text_modality=False, hidden_size=48, headdim=16,
            common_properties=["hidden_size", "num_hidden_layers", "num_channels", "image_size", "patch_size"])

    def test_model_get_set_embeddings(self):
        """As ViT's own version of this test: the input embedding is the patch projection, there is no output
        embedding (the mixin's version expects a token `nn.Embedding`)."""
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), torch.nn.Conv2d)
            self.assertIsNone(model.get_output_embeddings())

    def test_config(self):
        self.config_tester.run_common_tests()
