"""Hydra for vision: a pre-norm ViT whose attention is replaced by the Hydra mixer (Hwang et al., 2024, arXiv
2407.09941, §4.2), with no position embeddings, no class token and mean pooling.

The authors released no vision code; their repository (github.com/goombalab/hydra) points to the ViT recipe of
github.com/state-spaces/s4 with Hydra in place of attention. The bidirectional scan sees every patch from both
sides, so the patches are read once, row-major, with no extra scan directions.
"""


import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

from configuration_hydra.configuration_hydra_vision import HydraVisionConfig

from .execution_plan import build_execution_plan
from .head_losses import pop_loss_kwargs, sequence_classification_loss
from .pretrained_base import HydraPreTrainedBase
from .sequence_mixers import build_mixer, init_mixer_weights


def _validate_pixel_values(config: HydraVisionConfig, pixel_values) -> None:
    """Raise ValueError unless `pixel_values` is a float (batch, num_channels, height, width) tensor whose height
    and width are positive multiples of `patch_size`. Shape checks only: under torch.export they become guards."""
    if pixel_values is None:
        raise ValueError("pixel_values is required: a (batch, num_channels, height, width) float tensor, as an "
                         "image processor (e.g. ViTImageProcessor) returns it.")
    if not torch.is_tensor(pixel_values) or pixel_values.dim() != 4:
        shape = tuple(pixel_values.shape) if torch.is_tensor(pixel_values) else type(pixel_values).__name__
        raise ValueError(f"pixel_values must be a 4-D tensor (batch, num_channels, height, width), got {shape}")
    if not pixel_values.dtype.is_floating_point:
        raise ValueError(f"pixel_values must be a float tensor (normalized pixels), got dtype {pixel_values.dtype}: "
                         "run the image processor first.")
    _, channels, height, width = pixel_values.shape
    if channels != config.num_channels:
        raise ValueError(f"pixel_values has {channels} channels but the model takes config.num_channels="
                         f"{config.num_channels} (shape {tuple(pixel_values.shape)}, channels first).")
    patch = config.patch_size
    if height % patch != 0 or width % patch != 0 or height == 0 or width == 0:
        raise ValueError(f"The image is {height}x{width} pixels; height and width must be positive multiples of "
                         f"patch_size={patch} (any such size runs: there is no position table).")


class HydraVisionEmbeddings(nn.Module):
    """Non-overlapping patches by a strided convolution, flattened row-major, then dropout. No position embeddings
    and no class token."""

    def __init__(self, config: HydraVisionConfig):
        super().__init__()
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=config.patch_size,
                                    stride=config.patch_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, pixel_values):
        patches = self.projection(pixel_values)  # (batch, hidden, height / patch, width / patch)
        return self.dropout(patches.flatten(2).transpose(1, 2))  # (batch, num_patches, hidden), row by row


class HydraDropPath(nn.Module):
    """Stochastic depth: in training, drops a residual branch for whole samples with probability `rate` and scales
    the kept ones by 1 / (1 - rate)."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, hidden_states):
        if self.rate == 0.0 or not self.training:
            return hidden_states
        keep = 1.0 - self.rate
        mask = hidden_states.new_empty((hidden_states.shape[0], 1, 1)).bernoulli_(keep)  # (batch, 1, 1)
        return hidden_states * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class HydraVisionMLP(nn.Module):
    """The ViT MLP: fc2(act(fc1(h))), then dropout."""

    def __init__(self, config: HydraVisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states):
        return self.dropout(self.fc2(self.act(self.fc1(hidden_states))))


class HydraVisionLayer(GradientCheckpointingLayer):
    """A pre-norm ViT block with the sequence mixer of `config.matrix_mixer_type` (the Hydra mixer by default) in
    place of attention: `h = h + drop_path(mixer(LN(h)))`, then `h = h + drop_path(MLP(LN(h)))`."""

    def __init__(self, config: HydraVisionConfig, layer_idx: int, drop_path_rate: float):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mixer = build_mixer(config, layer_idx)
        self.mixer_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = HydraVisionMLP(config)
        self.drop_path = HydraDropPath(drop_path_rate)

    def forward(self, hidden_states, plan):
        """hidden_states: (batch, num_patches, hidden) -> the same shape; plan: the forward's `ExecutionPlan`."""
        mixed = self.mixer_dropout(self.mixer(self.layernorm_before(hidden_states), plan))
        hidden_states = hidden_states + self.drop_path(mixed)
        return hidden_states + self.drop_path(self.mlp(self.layernorm_after(hidden_states)))


class HydraVisionEncoder(nn.Module):
    """A stack of `HydraVisionLayer`s with stochastic depth rising linearly from 0 to `drop_path_rate`."""

    def __init__(self, config: HydraVisionConfig):
        super().__init__()
        depth = config.num_hidden_layers
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.layer = nn.ModuleList([HydraVisionLayer(config, i, rates[i]) for i in range(depth)])

    def forward(self, hidden_states, plan, output_hidden_states=False):
        """hidden_states: (batch, num_patches, hidden) -> the last state and, if asked, the input and every block's."""
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for layer in self.layer:
            hidden_states = layer(hidden_states, plan)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states


class HydraVisionPreTrainedModel(HydraPreTrainedBase):
    """Weight initialization (ViT's for the ViT parts, the original Hydra's for the mixer); checks and saving as
    `HydraPreTrainedBase`."""

    config_class = HydraVisionConfig
    base_model_prefix = "hydra"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["HydraVisionLayer"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):  # as ViT
            nn.init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        else:
            init_mixer_weights(module)


class HydraVisionModel(HydraVisionPreTrainedModel):
    """The bare Hydra vision encoder: patch embedding, `num_hidden_layers` blocks, a final LayerNorm and mean
    pooling over the patches (`pooler_output`)."""

    def __init__(self, config: HydraVisionConfig):
        super().__init__(config)
        self.embeddings = HydraVisionEmbeddings(config)
        self.encoder = HydraVisionEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.projection

    def forward(self, pixel_values=None, output_hidden_states=None, return_dict=None, interpolate_pos_encoding=None,
                **kwargs):
        r"""
        pixel_values: (batch, num_channels, height, width) float, height and width multiples of `patch_size`; any
            such size runs.
        interpolate_pos_encoding: accepted for drop-in compatibility with ViT and ignored: there is no position
            table to interpolate.
        output_hidden_states: the patch embeddings and the output of every block (before the final LayerNorm), as
            ViT's.
        """
        if kwargs.get("output_attentions"):
            raise ValueError("Hydra has no attention maps: its sequence mixer is a state-space model, so "
                             "output_attentions=True is not supported.")
        self.check_config_unchanged()
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        _validate_pixel_values(self.config, pixel_values)
        weight_dtype = self.embeddings.projection.weight.dtype
        if pixel_values.dtype != weight_dtype:
            pixel_values = pixel_values.to(weight_dtype)  # e.g. float32 processor output into a bfloat16 model

        hidden_states = self.embeddings(pixel_values)  # (batch, num_patches, hidden)
        # every row is one whole image: no mask, no sequence boundaries
        plan = build_execution_plan(
            self.config, batch=hidden_states.shape[0], seqlen=hidden_states.shape[1], device=hidden_states.device,
            dtype=weight_dtype, training=self.training,
            gradient_checkpointing=any(layer.gradient_checkpointing for layer in self.encoder.layer),
        )
        hidden_states, all_hidden_states = self.encoder(hidden_states, plan, output_hidden_states)
        last_hidden_state = self.layernorm(hidden_states)  # (batch, num_patches, hidden)
        pooled = last_hidden_state.mean(dim=1)  # (batch, hidden)
        if not return_dict:
            return (last_hidden_state, pooled) + ((all_hidden_states,) if output_hidden_states else ())
        return BaseModelOutputWithPooling(last_hidden_state=last_hidden_state, pooler_output=pooled,
                                          hidden_states=all_hidden_states)


class HydraForImageClassification(HydraVisionPreTrainedModel):
    """Hydra vision encoder with a linear classifier on the mean-pooled patches; regression, single- or multi-label
    by `config.problem_type`, as ViT's."""

    def __init__(self, config: HydraVisionConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.hydra = HydraVisionModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(self, pixel_values=None, labels=None, output_hidden_states=None, return_dict=None,
                interpolate_pos_encoding=None, **kwargs):
        r"""labels: (batch,) class ids, floats for regression (num_labels == 1), or (batch, num_labels) multi-hot.
        num_items_in_batch (from the Trainer): the loss is the sum of this batch's per-entry losses divided by it,
            else their mean (see head_losses.py)."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        loss_kwargs = pop_loss_kwargs(kwargs)
        outputs = self.hydra(pixel_values, output_hidden_states=output_hidden_states, return_dict=True, **kwargs)
        logits = self.classifier(outputs.pooler_output)  # (batch, num_labels)
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(self.config, logits, labels, **loss_kwargs)
        if not return_dict:
            output = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


# Each model class with the transformers Auto class that loads it: the one list behind `__all__` and the `auto_map`
# that `save_pretrained` writes into config.json.
_AUTO_CLASSES = {
    "AutoModel": HydraVisionModel,
    "AutoModelForImageClassification": HydraForImageClassification,
}
AUTO_MAP = {"AutoConfig": f"configuration_hydra_vision.{HydraVisionConfig.__name__}",
            **{auto: f"modeling_hydra_vision.{cls.__name__}" for auto, cls in _AUTO_CLASSES.items()}}

__all__ = ["HydraVisionPreTrainedModel", *(cls.__name__ for cls in _AUTO_CLASSES.values())]
