"""The sequence mixers a Hydra layer can hold, keyed by `config.matrix_mixer_type`, and the one place that builds one.

Every mixer takes `forward(hidden_states, plan)` with hidden_states (batch, seqlen, hidden_size) and the forward's
`ExecutionPlan`, and returns the same shape. Its class attribute `honours_boundaries` says whether it mixes rows that
hold several sequences block-diagonally (`plan.layout.seq_idx`): the execution plan gives the padding-free layout
only to mixers that do, and refuses packed inputs for the others.
"""

from .hydra_mixer import HydraMixer
from .matrix_mixer import MatrixMixer

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
