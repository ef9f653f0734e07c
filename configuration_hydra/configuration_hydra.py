"""Configuration of Hydra bidirectional state-space encoders (Hwang et al., 2024, arXiv 2407.09941)."""

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

from .config_field_rules import (
    boolean,
    bounds_pair,
    bounds_pair_to_json,
    integer,
    name,
    one_of,
    optional,
    real,
)

CLASSIFIER_POOLING = ("cls", "mean")
MIXER_RECOMPUTE = ("auto", "always", "never")
# Largest accepted dt_max: a step of 1000 already makes a decay exp(A * dt) (A <= -1 at init) underflow to 0 even in
# float64 (below exp(-745)), and larger ones overflow dt * x in float32 long before 1e30. The release uses 0.1.
DT_MAX_LIMIT = 1e3

# One rule per constructor field (see config_field_rules.py); a new field adds one line here.
FIELD_RULES = {
    "vocab_size": integer(),
    "hidden_size": integer(),
    "num_hidden_layers": integer(),
    "type_vocab_size": integer(),
    "pad_token_id": optional(integer(at_least=0)),
    "layer_norm_eps": real(above=0.0),
    "hidden_dropout_prob": real(at_least=0.0, below=1.0),
    "classifier_dropout": optional(real(at_least=0.0, below=1.0)),
    "initializer_range": real(at_least=0.0),
    "hidden_act": one_of(ACT2FN),
    "d_state": integer(),
    "d_conv": integer(odd=True, reason=" (the convolution is centred, padding d_conv // 2 on both sides)"),
    "expand": integer(),
    "headdim": integer(),
    "ngroups": integer(),
    "chunk_size": integer(),
    "dt_min": real(above=0.0),
    "dt_max": real(above=0.0, at_most=DT_MAX_LIMIT),
    "dt_init_floor": real(at_least=0.0),
    "dt_limit": bounds_pair,
    "conv_bias": boolean,
    "proj_bias": boolean,
    "use_position_embeddings": boolean,
    "max_position_embeddings": integer(),
    "is_prenorm": boolean,
    "classifier_pooling": one_of(CLASSIFIER_POOLING),
    "ssd_backend": name,  # the model checks the name against the registered kernels
    "unpad_inputs": boolean,
    "mixer_recompute": one_of(MIXER_RECOMPUTE),
    "tie_word_embeddings": boolean,
}


def checked(field: str, rule, value):
    """`rule(value)`, with the field's name put in front of the rule's message."""
    try:
        return rule(value)
    except ValueError as error:
        raise ValueError(f"HydraConfig.{field} {error}") from None


class HydraConfig(PreTrainedConfig):
    r"""
    Configuration of a [`HydraModel`]: a BERT-style encoder whose attention is replaced by the Hydra mixer, a
    bidirectional Mamba-2 SSD (a quasiseparable matrix mixer). The defaults build the authors' released
    hydra-bert-base (23 post-norm layers, hidden 768, no MLP, no position embeddings).

    Args:
        vocab_size (`int`, defaults to 30528): rows of the word embedding (bert-base-uncased's 30522 padded to a
            multiple of 8).
        hidden_size (`int`, defaults to 768): model width `d`.
        num_hidden_layers (`int`, defaults to 23): number of Hydra layers.
        type_vocab_size (`int`, defaults to 2): number of token types (segments).
        pad_token_id (`int`, defaults to 0): id of the padding token.
        layer_norm_eps (`float`, defaults to 1e-12): eps of the embedding LayerNorm and of the final `norm_f`
            (pre-norm only). The per-layer LayerNorm uses 1e-5 and the MLM transform 1e-12, as the original.
        hidden_dropout_prob (`float`, defaults to 0.1): dropout after the embeddings and before the classifier.
        classifier_dropout (`float`, *optional*): dropout before the classifier; `hidden_dropout_prob` when None.
        initializer_range (`float`, defaults to 0.02): std of the normal init of Linear and Embedding weights.
        hidden_act (`str`, defaults to `"gelu"`): activation of the MLM head transform (exact-erf GELU).
        d_state (`int`, defaults to 64): SSM state size `N`.
        d_conv (`int`, defaults to 7): kernel of the non-causal depthwise convolution (odd).
        expand (`int`, defaults to 2): `d_inner = expand * hidden_size`.
        headdim (`int`, defaults to 64): channels per SSM head `P`; `nheads = d_inner / headdim`.
        ngroups (`int`, defaults to 1): groups sharing B and C (`nheads % ngroups == 0`).
        chunk_size (`int`, defaults to 256): chunk length of the chunked SSD. It does not change results.
        dt_min (`float`, defaults to 1e-3), dt_max (`float`, defaults to 0.1), dt_init_floor (`float`, defaults
            to 1e-4): the log-uniform range and floor of the initial step size `dt` (0 < dt_min <= dt_max <= 1000).
        dt_limit (`tuple[float, float]`, defaults to `(0.0, inf)`): clamp of the step size after softplus. In JSON
            an infinite upper bound is written `null`.
        conv_bias (`bool`, defaults to True): bias of the depthwise convolution.
        proj_bias (`bool`, defaults to False): bias of the mixer's in/out projections.
        use_position_embeddings (`bool`, defaults to False): add learned absolute position embeddings.
        max_position_embeddings (`int`, defaults to 512): rows of the position embedding (only used when
            `use_position_embeddings`; without them the model has no length limit).
        is_prenorm (`bool`, defaults to False): pre-norm layers plus a final LayerNorm instead of post-norm.
        classifier_pooling (`str`, defaults to `"cls"`): `"cls"` pools the first token, `"mean"` the masked mean
            of all tokens (the original's `pool_all=True`; `pool_all` is accepted as an alias).
        ssd_backend (`str`, defaults to `"auto"`): kernel of the bidirectional SSD: `"auto"` or a name of the
            registry `SSD_BACKENDS` in `modeling_hydra/ssd_backends.py` (`"torch"`, `"triton"`, `"mamba_ssm"`), which
            is checked when the model is built. Can be overridden with `from_pretrained(..., ssd_backend=...)`.
        unpad_inputs (`bool`, defaults to True): when an attention_mask has padding, eager forward runs the encoder
            on the real tokens only (padding-free); tracing/export always take the masked path.
        mixer_recompute (`str`, defaults to `"auto"`): recompute the mixer interior in backward: `"auto"` decides by
            the number of tokens (see the modeling_hydra policy), `"always"`, `"never"`.
        tie_word_embeddings (`bool`, defaults to True): tie the MLM decoder to the word embeddings.
    """

    model_type = "hydra"

    def __init__(
        self,
        vocab_size=30528,
        hidden_size=768,
        num_hidden_layers=23,
        type_vocab_size=2,
        pad_token_id=0,
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.1,
        classifier_dropout=None,
        initializer_range=0.02,
        hidden_act="gelu",
        d_state=64,
        d_conv=7,
        expand=2,
        headdim=64,
        ngroups=1,
        chunk_size=256,
        dt_min=0.001,
        dt_max=0.1,
        dt_init_floor=1e-4,
        dt_limit=(0.0, float("inf")),
        conv_bias=True,
        proj_bias=False,
        use_position_embeddings=False,
        max_position_embeddings=512,
        is_prenorm=False,
        classifier_pooling="cls",
        ssd_backend="auto",
        unpad_inputs=True,
        mixer_recompute="auto",
        tie_word_embeddings=True,
        **kwargs,
    ):
        pool_all = kwargs.pop("pool_all", None)
        if pool_all is not None:
            classifier_pooling = "mean" if checked("pool_all", boolean, pool_all) else "cls"
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.type_vocab_size = type_vocab_size
        self.layer_norm_eps = layer_norm_eps
        self.hidden_dropout_prob = hidden_dropout_prob
        self.classifier_dropout = classifier_dropout
        self.initializer_range = initializer_range
        self.hidden_act = hidden_act
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.headdim = headdim
        self.ngroups = ngroups
        self.chunk_size = chunk_size
        self.dt_min = dt_min
        self.dt_max = dt_max
        self.dt_init_floor = dt_init_floor
        self.dt_limit = dt_limit
        self.conv_bias = conv_bias
        self.proj_bias = proj_bias
        self.use_position_embeddings = use_position_embeddings
        self.max_position_embeddings = max_position_embeddings
        self.is_prenorm = is_prenorm
        self.classifier_pooling = classifier_pooling
        self.ssd_backend = ssd_backend
        self.unpad_inputs = unpad_inputs
        self.mixer_recompute = mixer_recompute
        self.tie_word_embeddings = tie_word_embeddings
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.validate_hydra()

    @property
    def d_inner(self) -> int:
        return self.expand * self.hidden_size

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def pool_all(self) -> bool:
        """The original's name for `classifier_pooling == "mean"`."""
        return self.classifier_pooling == "mean"

    def to_dict(self):
        """The fields as plain JSON values: `dt_limit`'s infinite upper bound becomes None (`null`)."""
        output = super().to_dict()
        output["dt_limit"] = bounds_pair_to_json(self.dt_limit)
        return output

    def validate_hydra(self):
        """Check every field by its rule in `FIELD_RULES` (storing the canonical value), then the relations between
        fields; raise a ValueError naming the first field that is wrong."""
        for field, rule in FIELD_RULES.items():
            setattr(self, field, checked(field, rule, getattr(self, field)))
        if self.d_inner % self.headdim != 0:
            raise ValueError(
                f"HydraConfig.headdim={self.headdim} must divide d_inner = expand * hidden_size = {self.d_inner}"
            )
        if self.nheads % self.ngroups != 0:
            raise ValueError(
                f"HydraConfig.ngroups={self.ngroups} must divide the number of heads "
                f"d_inner / headdim = {self.nheads}"
            )
        if self.pad_token_id is not None and self.pad_token_id >= self.vocab_size:
            raise ValueError(
                f"HydraConfig.pad_token_id={self.pad_token_id} must lie in [0, vocab_size={self.vocab_size})"
            )
        if self.dt_min > self.dt_max:
            raise ValueError(f"HydraConfig.dt_min={self.dt_min} must be <= dt_max={self.dt_max}")


__all__ = ["HydraConfig"]
