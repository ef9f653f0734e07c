"""The sequence mixers a Hydra layer can hold, keyed by `config.matrix_mixer_type`, and the one place that builds one.

Every mixer takes `forward(hidden_states, plan)` with hidden_states (batch, seqlen, hidden_size) and the forward's
`ExecutionPlan`, and returns the same shape. Its class attribute `honours_boundaries` says whether it mixes rows that
hold several sequences block-diagonally (`plan.layout.seq_idx`): the execution plan gives the padding-free layout
only to mixers that do, and refuses packed inputs for the others.
"""

import math

from torch import nn

from .hydra_mixer import HydraMixer, HydraRMSNormGated
from .matrix_mixer import MATRIX_MODULES, MatrixMixer

MIXER_CLASSES = {
    "hydra": HydraMixer,
    # The paper's matrix mixers (one wrapper, the family picked inside from the same config field).
    **{family: MatrixMixer for family in ("dense", "toeplitz", "vandermonde", "cauchy", "low_rank", "attention",
                                          "quasiseparable")},
}


def mixer_class(config):
    """The mixer class of `config.matrix_mixer_type`; ValueError for a type this version does not implement."""
    try:
        return MIXER_CLASSES[config.matrix_mixer_type]
    except KeyError:
        raise ValueError(f"matrix_mixer_type={config.matrix_mixer_type!r} is not implemented; available: "
                         f"{', '.join(MIXER_CLASSES)}") from None


def build_mixer(config, layer_idx: int):
    """The sequence mixer of layer `layer_idx`."""
    return mixer_class(config)(config, layer_idx)


def init_mixer_weights(module) -> bool:
    """The authors' initialization of a mixer's own modules (what a model's `_init_weights` does not cover with its
    Linear/LayerNorm rules); returns whether `module` was one of them."""
    if isinstance(module, nn.Conv1d):  # the depthwise convolution: PyTorch's default, as the original
        nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        if module.bias is not None:
            bound = 1.0 / math.sqrt(module.weight.shape[1] * module.weight.shape[2])
            nn.init.uniform_(module.bias, -bound, bound)
    elif isinstance(module, HydraRMSNormGated):
        nn.init.ones_(module.weight)
    elif isinstance(module, HydraMixer):
        module.reset_ssm_parameters()
    elif isinstance(module, MATRIX_MODULES):
        module.reset_parameters()
    else:
        return False
    return True
