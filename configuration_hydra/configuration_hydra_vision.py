"""Configuration of Hydra vision encoders: ViT with its attention replaced by the Hydra mixer (Hwang et al., 2024,
arXiv 2407.09941, §4.2 "ImageNet-1K")."""

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

from .config_field_rules import bounds_pair_to_json, integer, one_of, real
from .mixer_config import MIXER_FIELDS, MIXER_FIELDS_DOC, HydraMixerConfigMixin

# One rule per constructor field (see config_field_rules.py), the shared mixer fields included; every field is
# checked on assignment and again by `validate()`.
FIELD_RULES = {
    "image_size": integer(),
    "patch_size": integer(),
    "num_channels": integer(),
    "hidden_size": integer(),
    "num_hidden_layers": integer(),
    "intermediate_size": integer(),
    "hidden_act": one_of(ACT2FN),
    "layer_norm_eps": real(above=0.0),
    "hidden_dropout_prob": real(at_least=0.0, below=1.0),
    "drop_path_rate": real(at_least=0.0, below=1.0),
    "initializer_range": real(at_least=0.0),
    **{field: rule for field, (_, rule) in MIXER_FIELDS.items()},
}


class HydraVisionConfig(HydraMixerConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a [`HydraVisionModel`]: a pre-norm ViT whose attention is replaced by the Hydra mixer (a
    bidirectional Mamba-2 SSD), with no position embeddings, no class token and mean pooling. The defaults build
    `hydra-vit-base` (hidden 768, 12 layers, 16x16 patches, 224x224 images; 90.2M parameters, 91.0M with a
    1000-class head). Any image whose height and width are multiples of `patch_size` runs; `image_size` is the
    training resolution, recorded for image processors and model cards.

    Args:
        image_size (`int`, defaults to 224): training resolution (height = width).
        patch_size (`int`, defaults to 16): side of the square patches (the stride of the patch convolution).
        num_channels (`int`, defaults to 3): channels of the input images.
        hidden_size (`int`, defaults to 768): model width `d`.
        num_hidden_layers (`int`, defaults to 12): number of blocks.
        intermediate_size (`int`, defaults to 2368): width of the MLP of each block (chosen so that hydra-vit-base
            has the paper's 91M parameters with the ImageNet head; see the README).
        hidden_act (`str`, defaults to `"gelu"`): activation of the MLP.
        layer_norm_eps (`float`, defaults to 1e-6): eps of the LayerNorms (ViT-B's timm value).
        hidden_dropout_prob (`float`, defaults to 0.0): dropout after the patch embedding and on the output of every
            mixer and MLP.
        drop_path_rate (`float`, defaults to 0.0): stochastic depth; block `i` of `L` drops its residual branches
            with probability `drop_path_rate * i / (L - 1)` in training.
        initializer_range (`float`, defaults to 0.02): std of the truncated normal init of Linear and Conv2d weights.
        num_labels, id2label, label2id, problem_type: the classifier's labels, as for every transformers model.

    The sequence-mixer fields (`d_state`, `d_conv`, `expand`, `headdim`, `ngroups`, `chunk_size`, `dt_*`, `conv_bias`,
    `proj_bias`, `matrix_mixer_type`, `is_data_dependent`, `qk_dim`, `ssd_backend`, `unpad_inputs`,
    `mixer_recompute`) are keyword arguments too, shared with the text config and defined once in
    `mixer_config.py` (`unpad_inputs` has no effect here: images have no padding):
    """

    model_type = "hydra_vision"
    FIELD_RULES = FIELD_RULES
    # image_size: any size divisible by the patch runs (no position table); the rest is read only at weight creation
    UNFROZEN_FIELDS = ("image_size", "initializer_range", "hidden_dropout_prob", "drop_path_rate")

    def __init__(
        self,
        image_size=224,
        patch_size=16,
        num_channels=3,
        hidden_size=768,
        num_hidden_layers=12,
        intermediate_size=2368,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        hidden_dropout_prob=0.0,
        drop_path_rate=0.0,
        initializer_range=0.02,
        **kwargs,
    ):
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.hidden_dropout_prob = hidden_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.initializer_range = initializer_range
        self.init_mixer_fields(kwargs)
        super().__init__(**kwargs)
        self.validate()

    def to_dict(self):
        """The fields as plain JSON values: `dt_limit`'s infinite upper bound becomes None (`null`)."""
        output = super().to_dict()
        output["dt_limit"] = bounds_pair_to_json(self.dt_limit)
        return output

    def validate_mixer_relations(self):
        super().validate_mixer_relations()
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"HydraVisionConfig.patch_size={self.patch_size} must divide image_size="
                             f"{self.image_size}")


HydraVisionConfig.__doc__ += MIXER_FIELDS_DOC.lstrip("\n") + "\n"

__all__ = ["HydraVisionConfig"]
