"""`HydraVisionModelTester`: the tiny config and inputs that transformers' `ModelTesterMixin` runs Hydra vision on."""

import torch

from configuration_hydra import HydraVisionConfig


class HydraVisionModelTester:
    """Builds a 2-layer Hydra vision config and a batch of images, in the manner of transformers' `ViTModelTester`.

    30x30 images of 3x3 patches: 100 patches, longer than `chunk_size` (8), so the chunked scan carries states across
    chunks and pads the last one.
    """

    def __init__(self, parent, batch_size=13, image_size=30, patch_size=3, num_channels=3, is_training=True,
                 hidden_size=32, num_hidden_layers=2, intermediate_size=37, d_state=8, headdim=8, ngroups=2,
                 chunk_size=8, num_labels=3, initializer_range=0.02):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.is_training = is_training
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.intermediate_size = intermediate_size
        self.d_state = d_state
        self.headdim = headdim
        self.ngroups = ngroups
        self.chunk_size = chunk_size
        self.num_labels = num_labels
        self.initializer_range = initializer_range
        self.seq_length = (image_size // patch_size) ** 2  # the mixin's expected length of the hidden states

    def get_config(self) -> HydraVisionConfig:
        return HydraVisionConfig(image_size=self.image_size, patch_size=self.patch_size,
                                 num_channels=self.num_channels, hidden_size=self.hidden_size,
                                 num_hidden_layers=self.num_hidden_layers, intermediate_size=self.intermediate_size,
                                 d_state=self.d_state, headdim=self.headdim, ngroups=self.ngroups,
                                 chunk_size=self.chunk_size, num_labels=self.num_labels,
                                 initializer_range=self.initializer_range, hidden_dropout_prob=0.1)

    def prepare_config_and_inputs_for_common(self):
        shape = (self.batch_size, self.num_channels, self.image_size, self.image_size)
        return self.get_config(), {"pixel_values": torch.randn(shape)}  # (batch, channels, height, width)
