"""Configuration of Hydra bidirectional state-space encoders (Hwang et al., 2024, arXiv 2407.09941)."""

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

from .config_field_rules import boolean, bounds_pair_to_json, integer, one_of, optional, real
from .mixer_config import MIXER_FIELDS, MIXER_FIELDS_DOC, HydraMixerConfigMixin, checked

CLASSIFIER_POOLING = ("cls", "mean")

# One rule per constructor field (see config_field_rules.py), the shared mixer fields included; a new field adds one
# line here. Every field is checked on assignment and again by `validate()`.
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
    "use_position_embeddings": boolean,
    "max_position_embeddings": integer(),
    "is_prenorm": boolean,
    "classifier_pooling": one_of(CLASSIFIER_POOLING),
    "tie_word_embeddings": boolean,
    **{field: rule for field, (_, rule) in MIXER_FIELDS.items()},
}


class HydraConfig(HydraMixerConfigMixin, PreTrainedConfig):
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
        use_position_embeddings (`bool`, defaults to False): add learned absolute position embeddings.
        max_position_embeddings (`int`, defaults to 512): rows of the position embedding (only used when
            `use_position_embeddings`; without them the model has no length limit).
        is_prenorm (`bool`, defaults to False): pre-norm layers plus a final LayerNorm instead of post-norm.
        classifier_pooling (`str`, defaults to `"cls"`): `"cls"` pools the first token, `"mean"` the masked mean
            of all tokens (the original's `pool_all=True`; `pool_all` is accepted as an alias).
        tie_word_embeddings (`bool`, defaults to True): tie the MLM decoder to the word embeddings.

    The sequence-mixer fields (`d_state`, `d_conv`, `expand`, `headdim`, `ngroups`, `chunk_size`, `dt_*`, `conv_bias`,
    `proj_bias`, `matrix_mixer_type`, `is_data_dependent`, `qk_dim`, `ssd_backend`, `unpad_inputs`,
    `mixer_recompute`) are keyword arguments too; they are defined once, for every Hydra config, in
    `mixer_config.py`:
    """

    model_type = "hydra"
    FIELD_RULES = FIELD_RULES
    # read only when weights are created; vocab_size changes with resize_token_embeddings (the model checks its rows)
    UNFROZEN_FIELDS = ("initializer_range", "hidden_dropout_prob", "classifier_dropout", "vocab_size")

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
        use_position_embeddings=False,
        max_position_embeddings=512,
        is_prenorm=False,
        classifier_pooling="cls",
        tie_word_embeddings=True,
        **kwargs,
    ):
        pool_all = kwargs.pop("pool_all", None)
        if pool_all is not None:
            classifier_pooling = "mean" if checked("HydraConfig", "pool_all", boolean, pool_all) else "cls"
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.type_vocab_size = type_vocab_size
        self.layer_norm_eps = layer_norm_eps
        self.hidden_dropout_prob = hidden_dropout_prob
        self.classifier_dropout = classifier_dropout
        self.initializer_range = initializer_range
        self.hidden_act = hidden_act
        self.use_position_embeddings = use_position_embeddings
        self.max_position_embeddings = max_position_embeddings
        self.is_prenorm = is_prenorm
        self.classifier_pooling = classifier_pooling
        self.tie_word_embeddings = tie_word_embeddings
        self.init_mixer_fields(kwargs)
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.validate()

    @property
    def pool_all(self) -> bool:
        """The original's name for `classifier_pooling == "mean"`."""
        return self.classifier_pooling == "mean"

    def to_dict(self):
        """The fields as plain JSON values: `dt_limit`'s infinite upper bound becomes None (`null`)."""
        output = super().to_dict()
        output["dt_limit"] = bounds_pair_to_json(self.dt_limit)
        return output

    def validate_mixer_relations(self):
        super().validate_mixer_relations()
        if self.pad_token_id is not None and self.pad_token_id >= self.vocab_size:
            raise ValueError(
                f"HydraConfig.pad_token_id={self.pad_token_id} must lie in [0, vocab_size={self.vocab_size})"
            )


HydraConfig.__doc__ += MIXER_FIELDS_DOC.lstrip("\n") + "\n"

__all__ = ["HydraConfig"]
