"""The sequence-mixer fields shared by every Hydra config (text and vision), defined once.

`MIXER_FIELDS` maps each field to its default and its rule (see `config_field_rules.py`). A config class takes them
by inheriting `HydraMixerConfigMixin` and calling `init_mixer_fields(kwargs)` in its `__init__`: the fields are then
keyword arguments of the constructor, stored, serialized and validated like its own. Every field named in a class's
`FIELD_RULES` (its own and these) is checked on assignment, so `config.d_state = -1` raises at once; the relations
between fields (headdim dividing d_inner, ...) are checked by `validate()`, which runs when a model is built and
before a config is written.
"""

from .config_field_rules import boolean, bounds_pair, integer, name, one_of, real

MIXER_RECOMPUTE = ("auto", "always", "never")
# The sequence mixers of the paper's matrix-mixer framework (Hwang et al. 2024, §5; the authors' code:
# hydra/modules/matrix_mixer.py). "hydra" is the Hydra module itself.
MATRIX_MIXER_TYPES = ("hydra", "dense", "toeplitz", "vandermonde", "cauchy", "low_rank", "attention",
                      "quasiseparable")
# The matrix mixers that read qk_dim (N = nheads * qk_dim) in their data-dependent (dd) and data-independent (di)
# forms. Vandermonde di is the DFT (no q/k); dense and Toeplitz have none.
USES_QK_DIM = {"dd": ("vandermonde", "cauchy", "low_rank", "attention", "quasiseparable"),
               "di": ("cauchy", "low_rank", "attention", "quasiseparable")}
# Largest accepted dt_max: a step of 1000 already makes a decay exp(A * dt) (A <= -1 at init) underflow to 0 even in
# float64 (below exp(-745)), and larger ones overflow dt * x in float32 long before 1e30. The release uses 0.1.
DT_MAX_LIMIT = 1e3


def _qk_dim(value):
    """qk_dim: an integer >= 1, or -1 ("no q/k", as the authors' configs of the families without q/k write it)."""
    if value == -1 and not isinstance(value, bool):
        return -1
    return integer()(value)


# name -> (default, rule). The defaults build the authors' released hydra-bert-base mixer.
MIXER_FIELDS = {
    "d_state": (64, integer()),
    "d_conv": (7, integer(odd=True, reason=" (the convolution is centred, padding d_conv // 2 on both sides)")),
    "expand": (2, integer()),
    "headdim": (64, integer()),
    "ngroups": (1, integer()),
    "chunk_size": (256, integer()),
    "dt_min": (0.001, real(above=0.0)),
    "dt_max": (0.1, real(above=0.0, at_most=DT_MAX_LIMIT)),
    "dt_init_floor": (1e-4, real(at_least=0.0)),
    "dt_limit": ((0.0, float("inf")), bounds_pair),
    "conv_bias": (True, boolean),
    "proj_bias": (False, boolean),
    "matrix_mixer_type": ("hydra", one_of(MATRIX_MIXER_TYPES)),
    "is_data_dependent": (True, boolean),
    "qk_dim": (16, _qk_dim),
    "ssd_backend": ("auto", name),  # the model checks the name against the registered kernels
    "unpad_inputs": (True, boolean),
    "mixer_recompute": ("auto", one_of(MIXER_RECOMPUTE)),
}

MIXER_FIELDS_DOC = """
        d_state (`int`, defaults to 64): SSM state size `N` of the Hydra mixer.
        d_conv (`int`, defaults to 7): kernel of the non-causal depthwise convolution (odd).
        expand (`int`, defaults to 2): `d_inner = expand * hidden_size`.
        headdim (`int`, defaults to 64): channels per head `P`; `nheads = d_inner / headdim`.
        ngroups (`int`, defaults to 1): groups sharing B and C (`nheads % ngroups == 0`).
        chunk_size (`int`, defaults to 256): the largest chunk of the chunked SSD. It does not change results.
        dt_min (`float`, defaults to 1e-3), dt_max (`float`, defaults to 0.1), dt_init_floor (`float`, defaults
            to 1e-4): the log-uniform range and floor of the initial step size `dt` (0 < dt_min <= dt_max <= 1000).
        dt_limit (`tuple[float, float]`, defaults to `(0.0, inf)`): clamp of the step size after softplus. In JSON
            an infinite upper bound is written `null`.
        conv_bias (`bool`, defaults to True): bias of the depthwise convolution.
        proj_bias (`bool`, defaults to False): bias of the mixer's in/out projections.
        matrix_mixer_type (`str`, defaults to `"hydra"`): the sequence mixer, by the names of the authors' configs:
            `"hydra"` (this model), or one of the paper's matrix mixers `"dense"`, `"toeplitz"`, `"vandermonde"`,
            `"cauchy"`, `"low_rank"`, `"attention"`, `"quasiseparable"`.
        is_data_dependent (`bool`, defaults to True): matrix mixers only: the matrix is computed from the input
            (True, "dd") or learned per position (False, "di"; `max_position_embeddings` positions, and longer
            sequences are refused). `"dense"` is di only; `"vandermonde"` di is the DFT, as in the authors' code.
        qk_dim (`int`, defaults to 16): matrix mixers only: query/key width per head (the quasiseparable state size
            is `nheads * qk_dim`); -1 ("no q/k") is accepted for the families that do not read it (dense, toeplitz,
            vandermonde di) and refused by the others. Attention di reads its learned q/k as (head, position, qk_dim),
            as the authors' code does, so it needs `nheads == max_position_embeddings`.
        Fields a family ignores: the matrix mixers do not read `d_state`, `ngroups` and `dt_limit` (the
            quasiseparable mixer uses one group of `nheads * qk_dim` and no clamp), and only the quasiseparable one
            reads `chunk_size` and `dt_*`; the Hydra mixer ignores `qk_dim`.
        ssd_backend (`str`, defaults to `"auto"`): kernel of the bidirectional SSD: `"auto"` or a name of the
            registry `SSD_BACKENDS` in `modeling_hydra/ssd_backends.py` (`"torch"`, `"triton"`, `"mamba_ssm"`),
            checked when the model is built. Can be overridden with `from_pretrained(..., ssd_backend=...)`.
        unpad_inputs (`bool`, defaults to True): when an attention_mask has padding, eager forward runs the encoder
            on the real tokens only (padding-free); tracing/export always take the masked path.
        mixer_recompute (`str`, defaults to `"auto"`): recompute the mixer interior in backward: `"auto"` decides by
            the number of tokens (see `modeling_hydra/execution_plan.py`), `"always"`, `"never"`."""

# Fields that only steer how a forward runs: they may change after a model is built. Every other field of a config
# shapes the modules and is frozen when the model is built (`HydraMixerConfigMixin.frozen_fields`), except those a
# config class lists in its `UNFROZEN_FIELDS` (read only when weights are created, or by nothing after).
RUNTIME_FIELDS = ("chunk_size", "ssd_backend", "unpad_inputs", "mixer_recompute")
_INIT_ONLY_MIXER_FIELDS = ("dt_min", "dt_max", "dt_init_floor")


def checked(config_name: str, field: str, rule, value):
    """`rule(value)`, with the config's and the field's name put in front of the rule's message."""
    try:
        return rule(value)
    except ValueError as error:
        raise ValueError(f"{config_name}.{field} {error}") from None


class HydraMixerConfigMixin:
    """Mixer fields, validation on assignment and the relations every Hydra config checks.

    A subclass defines `FIELD_RULES` (field -> rule, its own fields and `MIXER_FIELDS`' rules) and calls
    `init_mixer_fields(kwargs)` before `PreTrainedConfig.__init__`.
    """

    FIELD_RULES: dict = {}
    UNFROZEN_FIELDS: tuple = ()  # the class's own fields that may change after a model is built

    def init_mixer_fields(self, kwargs: dict) -> None:
        """Set the mixer fields from `kwargs` (popping them) or their defaults."""
        for field, (default, _) in MIXER_FIELDS.items():
            setattr(self, field, kwargs.pop(field, default))

    def __setattr__(self, key, value):
        rule = type(self).FIELD_RULES.get(key)
        if rule is not None:
            value = checked(type(self).__name__, key, rule, value)
        super().__setattr__(key, value)

    def frozen_fields(self) -> dict:
        """The fields that shape a model's modules, as they are now (a model keeps them from when it was built)."""
        free = (*RUNTIME_FIELDS, *_INIT_ONLY_MIXER_FIELDS, *type(self).UNFROZEN_FIELDS)
        return {field: getattr(self, field) for field in type(self).FIELD_RULES if field not in free}

    def check_unchanged(self, built_with: dict) -> None:
        """ValueError naming the first field that differs from `built_with` (the model's `frozen_fields` when it was
        built): the modules would ignore the change, and a saved folder would not load back into their weights."""
        for field, built in built_with.items():
            if getattr(self, field) != built:
                raise ValueError(
                    f"config.{field} was changed to {getattr(self, field)!r} after the model was built with "
                    f"{built!r}: it shapes the modules, so it cannot change now. Build a new model from the changed "
                    f"config instead (or set it back to {built!r}). {', '.join(RUNTIME_FIELDS)} may change."
                )

    @property
    def d_inner(self) -> int:
        return self.expand * self.hidden_size

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    def validate(self):
        """transformers' checks, every field by its rule, then the relations between fields (also before saving);
        a ValueError names the first field that is wrong."""
        super().validate()
        for field, rule in type(self).FIELD_RULES.items():
            checked(type(self).__name__, field, rule, getattr(self, field))
        self.validate_mixer_relations()

    def validate_mixer_relations(self):
        config = type(self).__name__
        if self.d_inner % self.headdim != 0:
            raise ValueError(f"{config}.headdim={self.headdim} must divide d_inner = expand * hidden_size = "
                             f"{self.d_inner}")
        if self.nheads % self.ngroups != 0:
            raise ValueError(f"{config}.ngroups={self.ngroups} must divide the number of heads d_inner / headdim = "
                             f"{self.nheads}")
        if self.dt_min > self.dt_max:
            raise ValueError(f"{config}.dt_min={self.dt_min} must be <= dt_max={self.dt_max}")
        family = self.matrix_mixer_type
        if family == "hydra" and not self.is_data_dependent:
            raise ValueError(f"{config}.is_data_dependent=False needs a matrix mixer (matrix_mixer_type); the Hydra "
                             "mixer is data-dependent.")
        if family == "hydra":
            return
        if family == "dense" and self.is_data_dependent:
            raise ValueError(f"{config}.matrix_mixer_type='dense' is data-independent only: set "
                             "is_data_dependent=False (the authors' code has no data-dependent dense mixer).")
        variant = "dd" if self.is_data_dependent else "di"
        if family in USES_QK_DIM[variant] and self.qk_dim < 1:
            raise ValueError(f"{config}.qk_dim={self.qk_dim}: the {family} {variant} matrix mixer needs a query/key "
                             "width qk_dim >= 1 (-1 is only for dense, toeplitz and vandermonde di).")
        max_len = getattr(self, "max_position_embeddings", None)
        if max_len is None:
            raise ValueError(f"{config} has no max_position_embeddings, which the matrix mixers need (the length "
                             "of their data-independent matrices).")
        if family == "attention" and not self.is_data_dependent and self.nheads != max_len:
            raise ValueError(f"{config}: the attention di mixer reads its learned q/k as (head, position, qk_dim), "
                             f"as the authors' code does, so it needs nheads = d_inner / headdim = {self.nheads} "
                             f"equal to max_position_embeddings={max_len}.")
