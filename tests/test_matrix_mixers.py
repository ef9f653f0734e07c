"""The paper's matrix mixers against an independent float64 reference (materialized matrices, one sequence alone):
every family dd and di, the authors' quirks, padding invariance and packed sequences."""

import dataclasses
import math

import pytest
import torch

import modeling_hydra.matrix_mixer_families as families
from configuration_hydra import HydraConfig
from matrix_mixer_reference import make_plan, reference_mixer, toeplitz_official
from modeling_hydra.matrix_mixer import MatrixMixer

MAX_LEN = 10
# (family, data-dependent, config overrides); attention di needs nheads == max_position_embeddings (8 heads of 4).
VARIANTS = [
    ("dense", False, {"qk_dim": -1}),
    ("toeplitz", True, {"qk_dim": -1}),
    ("toeplitz", False, {"qk_dim": -1}),
    ("vandermonde", True, {"qk_dim": 3}),
    ("vandermonde", False, {"qk_dim": -1}),
    ("cauchy", True, {"qk_dim": 3}),
    ("cauchy", False, {"qk_dim": 3}),
    ("low_rank", True, {"qk_dim": 3}),
    ("low_rank", False, {"qk_dim": 3}),
    ("attention", True, {"qk_dim": 3}),
    ("attention", False, {"qk_dim": 3, "headdim": 4, "max_position_embeddings": 8}),
    ("quasiseparable", True, {"qk_dim": 3}),
    ("quasiseparable", False, {"qk_dim": 3}),
]
IDS = [f"{family}-{'dd' if dd else 'di'}" for family, dd, _ in VARIANTS]
ANY_LENGTH = {("vandermonde", True), ("cauchy", True), ("low_rank", True), ("attention", True),
              ("quasiseparable", True)}
# Every computation is float64 and O(L) terms deep: agreement to a few ulps times L; 1e-10 leaves room.
TOL = 1e-10


def build_mixer(family, dd, overrides, seed=0):
    kwargs = dict(hidden_size=16, expand=2, headdim=8, d_conv=3, max_position_embeddings=MAX_LEN,
                  matrix_mixer_type=family, is_data_dependent=dd)
    kwargs.update(overrides)
    config = HydraConfig(**kwargs)
    torch.manual_seed(seed)
    mixer = MatrixMixer(config)
    mixer.matrix_mixer.reset_parameters()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in mixer.named_parameters():  # move the SSD parameters and biases off their init values
            if name.split(".")[-1] in ("dt_bias", "A_log", "D", "bias") and "conv1d" not in name:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return mixer.double()


def max_len_of(mixer):
    return mixer.matrix_mixer.max_len


def relative(actual, expected):
    return ((actual - expected).abs().max() / expected.abs().max().clamp(min=1.0)).item()


@pytest.mark.parametrize("family, dd, overrides", VARIANTS, ids=IDS)
def test_matches_materialized_reference(family, dd, overrides):
    mixer = build_mixer(family, dd, overrides)
    lengths = [max_len_of(mixer), max_len_of(mixer) - 3]
    if (family, dd) in ANY_LENGTH:
        lengths.append(max_len_of(mixer) + 5)
    for L in lengths:
        u = torch.randn(2, L, 16, dtype=torch.float64)
        out = mixer(u, make_plan(mixer, 2, L))
        expected = torch.stack([reference_mixer(mixer, u[b]) for b in range(2)])
        assert relative(out, expected) < TOL, (L, relative(out, expected))


@pytest.mark.parametrize("dd", [True, False], ids=["dd", "di"])
def test_toeplitz_follows_the_official_fft_recipe(dd):
    """At full length, the index alignment and the corner term equal the authors' zero-pad-before + circular FFT."""
    mixer = build_mixer("toeplitz", dd, {"qk_dim": -1})
    mm = mixer.matrix_mixer
    v = torch.randn(2, MAX_LEN, mixer.nheads, mixer.headdim, dtype=torch.float64)
    f = torch.randn(2, MAX_LEN, mixer.nheads, dtype=torch.float64) if dd else None
    r = torch.randn(2, MAX_LEN, mixer.nheads, dtype=torch.float64) if dd else None
    out = mm(v, f, r, None)
    for b in range(2):
        for h in range(mixer.nheads):
            if dd:  # c = [r[L-1], ..., r[1], f[0], ..., f[L-1]]
                c = torch.cat([r[b, 1:, h].flip(0), f[b, :, h]])
            else:
                c = mm.conv_params[h]
            expected = mm.std * toeplitz_official(v[b, :, h], c, MAX_LEN)
            assert relative(out[b, :, h], expected) < TOL


def test_toeplitz_corner_is_the_only_wrap():
    """M[L-1, 0] reads c[0] = r[L-1] (the corner); a shorter sequence has no corner (the entry is f[L] = 0)."""
    mixer = build_mixer("toeplitz", True, {"qk_dim": -1})
    mm = mixer.matrix_mixer
    for L, expected in ((MAX_LEN, 7.0), (MAX_LEN - 1, 0.0)):
        v = torch.zeros(1, L, mixer.nheads, mixer.headdim, dtype=torch.float64)
        v[0, 0] = 1.0  # M[:, 0]
        f = torch.zeros(1, L, mixer.nheads, dtype=torch.float64)
        r = torch.zeros(1, L, mixer.nheads, dtype=torch.float64)
        r[0, L - 1] = 7.0
        out = mm(v, f, r, None) / mm.std
        assert out[0, L - 1].sub(expected).abs().max() < 1e-12
        assert out[0, :L - 1].abs().max() < 1e-12


def test_dft_buffer_is_the_float32_recipe():
    """The stored DFT matrix holds cos(((2 pi t) s) / L) evaluated in float32, off from exact cosines by 1e-5."""
    mixer = build_mixer("vandermonde", False, {"qk_dim": -1, "max_position_embeddings": 128})
    buffer = mixer.matrix_mixer.dft_matrix
    assert buffer.dtype == torch.float64  # the model's dtype; values from float32 arithmetic
    t = torch.arange(128, dtype=torch.float64)
    exact = torch.cos(2 * math.pi * torch.outer(t, t) / 128)
    t32 = torch.arange(128, dtype=torch.float32)
    recipe = torch.cos(torch.outer(2 * math.pi * t32, t32) / 128).double()
    assert torch.equal(buffer, recipe)
    assert (buffer - exact).abs().max() > 1e-5
    assert "matrix_mixer.dft_matrix" in mixer.state_dict()


def pad_batch(u_list, sides, total, fill=float("nan")):
    """Rows of length `total` holding each sequence left or right aligned, `fill` at pads; returns (u, mask)."""
    u = torch.full((len(u_list), total, u_list[0].shape[-1]), fill, dtype=torch.float64)
    mask = torch.zeros(len(u_list), total, dtype=torch.bool)
    for b, (seq, side) in enumerate(zip(u_list, sides)):
        L = seq.shape[0]
        sl = slice(0, L) if side == "right" else slice(total - L, total)
        u[b, sl], mask[b, sl] = seq, True
    return u, mask


@pytest.mark.parametrize("path", ["padded", "padded-static", "padding-free"])
@pytest.mark.parametrize("family, dd, overrides", VARIANTS, ids=IDS)
def test_padding_invariance(family, dd, overrides, path):
    """Real tokens get the stand-alone output whatever the amount and side of padding, NaN at the pads; on the
    padded path (eager, and static shapes as under tracing) and on padding-free rows."""
    mixer = build_mixer(family, dd, overrides)
    mixer.config.unpad_inputs = path == "padding-free"
    Lmax = max_len_of(mixer)
    seqs = [torch.randn(L, 16, dtype=torch.float64) for L in (Lmax, 3, Lmax - 2, 1)]
    u, mask = pad_batch(seqs, ["right", "left", "right", "left"], Lmax)
    plan = make_plan(mixer, 4, Lmax, attention_mask=mask)
    if path == "padded-static":
        plan = dataclasses.replace(plan, tracing=True)
    assert (plan.layout.seq_idx is not None) == (path == "padding-free")
    if path == "padding-free":  # run on the plan's rows, as the encoder does
        out = plan.layout.unpadded.scatter(mixer(plan.layout.unpadded.gather(u), plan))
    else:
        out = mixer(u, plan)
    assert torch.isfinite(out[mask]).all()
    for b, seq in enumerate(seqs):
        assert relative(out[b][mask[b]], reference_mixer(mixer, seq)) < TOL, b


@pytest.mark.parametrize("family, dd, overrides", VARIANTS, ids=IDS)
def test_packed_sequences_are_exact(family, dd, overrides):
    """Rows holding several sequences (packed, seq_idx): every sequence gets its stand-alone output."""
    mixer = build_mixer(family, dd, overrides)
    Lmax = max_len_of(mixer)
    row_lengths = [[3, Lmax, 1, 2], [Lmax - 1, 2, 3]]
    total = max(sum(r) for r in row_lengths)
    u = torch.full((2, total, 16), float("nan"), dtype=torch.float64)
    mask = torch.zeros(2, total, dtype=torch.bool)
    seq_idx = torch.zeros(2, total, dtype=torch.long)
    seqs = []
    for b, lengths in enumerate(row_lengths):
        start = 0
        for i, L in enumerate(lengths):
            seq = torch.randn(L, 16, dtype=torch.float64)
            u[b, start:start + L], mask[b, start:start + L], seq_idx[b, start:start + L] = seq, True, i
            seqs.append((b, start, seq))
            start += L
    out = mixer(u, make_plan(mixer, 2, total, packed_ids=seq_idx))
    assert torch.isfinite(out[mask]).all()
    for b, start, seq in seqs:
        assert relative(out[b, start:start + seq.shape[0]], reference_mixer(mixer, seq)) < TOL


@pytest.mark.parametrize("family, dd, overrides", [v for v in VARIANTS if (v[0], v[1]) not in ANY_LENGTH],
                         ids=[i for i, v in zip(IDS, VARIANTS) if (v[0], v[1]) not in ANY_LENGTH])
def test_fixed_length_families_refuse_longer_sequences(family, dd, overrides):
    mixer = build_mixer(family, dd, overrides)
    u = torch.randn(1, max_len_of(mixer) + 1, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        mixer(u, make_plan(mixer, 1, u.shape[1]))


@pytest.mark.parametrize("family", ["vandermonde", "cauchy"])
def test_tiled_kernels_gradients(family, monkeypatch):
    """Several recomputed row tiles: the gradients equal the reference's (autograd through materialized M)."""
    monkeypatch.setattr(families, "TILE_ELEMENTS", 200)
    mixer = build_mixer(family, True, {"qk_dim": 3})
    u = torch.randn(1, 9, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(1, 9, 16, dtype=torch.float64)
    (mixer(u, make_plan(mixer, 1, 9, training=True)) * weight).sum().backward()
    grads = {n: p.grad.clone() for n, p in mixer.named_parameters()}
    grad_u = u.grad.clone()
    mixer.zero_grad()
    u.grad = None
    (reference_mixer(mixer, u[0]) * weight[0]).sum().backward()
    assert relative(grad_u, u.grad) < TOL
    for n, p in mixer.named_parameters():
        assert relative(grads[n], p.grad) < TOL, n


@pytest.mark.parametrize("qk_dim, headdim", [(16, 64), (64, 16), (32, 32)])
def test_attention_runs_sdpa_fused_kernel_with_any_qk_dim(qk_dim, headdim):
    """q, k of qk_dim and v of headdim: SDPA takes its fused CPU kernel (no (L x L) scores in memory) forward and
    backward, with the padding mask, and the result is softmax(q k^T / sqrt(qk_dim)) v computed in float64."""
    attention = families.AttentionMatrix(nheads=2, max_len=64, qk_dim=qk_dim, data_dependent=True)
    q, k = (torch.randn(2, 40, 2, qk_dim, requires_grad=True) for _ in range(2))
    v = torch.randn(2, 40, 2, headdim, requires_grad=True)
    keep = torch.ones(2, 40, dtype=torch.bool)
    keep[1, 30:] = False
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        y = attention(v, q, k, keep)
        y.sum().backward()
    ops = {event.name for event in profiler.events()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops, sorted(o for o in ops if "scaled" in o)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu_backward" in ops
    assert not any("attention_math" in op for op in ops)
    scores = torch.einsum("bthd,bshd->bhts", q.double(), k.double()) / math.sqrt(qk_dim)
    scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    expected = torch.einsum("bhts,bshp->bthp", scores.softmax(-1), v.double())
    assert y.shape == (2, 40, 2, headdim)
    assert relative(y.double(), expected) < 1e-5


def test_float32_close_to_float64():
    """float32 activations compute the families in float32: close to the float64 result."""
    mixer = build_mixer("vandermonde", True, {"qk_dim": 3})
    u = torch.randn(2, 7, 16, dtype=torch.float64)
    expected = mixer(u, make_plan(mixer, 2, 7))
    out = mixer.float()(u.float(), make_plan(mixer, 2, 7, dtype=torch.float32))
    assert relative(out.double(), expected) < 1e-4


@pytest.mark.parametrize("kwargs, message", [
    (dict(matrix_mixer_type="dense", is_data_dependent=True), "data-independent only"),
    (dict(matrix_mixer_type="cauchy", qk_dim=-1), "qk_dim=-1"),
    (dict(matrix_mixer_type="low_rank", is_data_dependent=False, qk_dim=-1), "qk_dim=-1"),
    (dict(matrix_mixer_type="vandermonde", is_data_dependent=True, qk_dim=-1), "qk_dim=-1"),
    (dict(matrix_mixer_type="quasiseparable", qk_dim=-1), "qk_dim=-1"),
    (dict(matrix_mixer_type="attention", is_data_dependent=False, max_position_embeddings=12), "nheads"),
], ids=["dense-dd", "cauchy-no-qk", "low_rank-di-no-qk", "vandermonde-dd-no-qk", "quasiseparable-no-qk",
        "attention-di-shape"])
def test_config_refuses_invalid_combinations(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HydraConfig(hidden_size=16, headdim=8, **kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(matrix_mixer_type="dense", is_data_dependent=False, qk_dim=-1),
    dict(matrix_mixer_type="toeplitz", qk_dim=-1),
    dict(matrix_mixer_type="vandermonde", is_data_dependent=False, qk_dim=-1),
    dict(matrix_mixer_type="attention", is_data_dependent=False, max_position_embeddings=4),
], ids=["dense", "toeplitz", "vandermonde-di", "attention-di"])
def test_config_accepts_the_authors_combinations(kwargs):
    config = HydraConfig(hidden_size=16, headdim=8, **kwargs)
    assert config.matrix_mixer_type == kwargs["matrix_mixer_type"]


@pytest.mark.parametrize("family, dd, overrides", [v for v in VARIANTS if (v[0], v[1]) not in ANY_LENGTH],
                         ids=[i for i, v in zip(IDS, VARIANTS) if (v[0], v[1]) not in ANY_LENGTH])
def test_shorter_sequences_equal_right_padding_to_the_fixed_length(family, dd, overrides):
    """A fixed-length mixer on L < max_len tokens gives what it gives them right-padded to max_len with a mask."""
    mixer = build_mixer(family, dd, overrides)
    mixer.config.unpad_inputs = False
    Lmax = max_len_of(mixer)
    u = torch.randn(2, Lmax - 4, 16, dtype=torch.float64)
    short = mixer(u, make_plan(mixer, 2, Lmax - 4))
    padded = torch.cat([u, torch.randn(2, 4, 16, dtype=torch.float64)], dim=1)
    mask = torch.zeros(2, Lmax, dtype=torch.bool)
    mask[:, :Lmax - 4] = True
    plan = dataclasses.replace(make_plan(mixer, 2, Lmax, attention_mask=mask), tracing=True)  # full-width rows
    assert relative(mixer(padded, plan)[:, :Lmax - 4], short) < TOL
