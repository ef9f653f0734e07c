"""Property-based tests (hypothesis) of the SSD, the mixer and the model: random shapes, chunk lengths, ngroups,
padding masks (left, right, all-padding rows) and packed sequence boundaries; every draw against the float64
materialized-matrix oracle and against each row or sequence run alone.

Profiles: "ci" (the default: a few dozen examples per property, derandomized, so CI is reproducible) and "long"
(many random examples), chosen by the environment variable HYPOTHESIS_PROFILE:

    HYPOTHESIS_PROFILE=long python -m pytest -q tests/test_properties.py
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import tiny_config, run_mixer
from modeling_hydra import HydraModel
from modeling_hydra.hydra_mixer import HydraMixer
from modeling_hydra.ssd_torch import ssd_bidirectional_torch
from packing_helpers import randomize_weights, relative_error
from ssd_oracle import module_oracle, random_ssd_inputs, ssd_oracle

pytestmark = pytest.mark.usefixtures("single_thread")

PROFILES = {
    "ci": settings(max_examples=50, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]),
    "long": settings(max_examples=1000, deadline=None, database=None, print_blob=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]),
}
PROFILE_NAME = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE_NAME not in PROFILES:
    raise ValueError(f"HYPOTHESIS_PROFILE must be one of {sorted(PROFILES)}, got {PROFILE_NAME!r}")
PROFILE = PROFILES[PROFILE_NAME]

TOL = 1e-12


@st.composite
def row_layouts(draw, batch, seqlen, packed, padded):
    """For each row, its segments (start, end, left_pads, right_pads): the sequences of a packed row (one segment
    per row when not `packed`), each with optional padding at its start or end (possibly all padding)."""
    rows = []
    for _ in range(batch):
        cuts = sorted(draw(st.sets(st.integers(1, seqlen - 1), max_size=seqlen - 1))) if packed and seqlen > 1 else []
        bounds = [0, *cuts, seqlen]
        segments = []
        for start, end in zip(bounds, bounds[1:]):
            kind = draw(st.sampled_from(["none", "left", "right", "all"])) if padded else "none"
            pads = {"none": 0, "all": end - start}.get(kind) or draw(st.integers(1, end - start))
            segments.append((start, end, pads if kind == "left" else 0,
                             pads if kind in ("right", "all") else 0))
        rows.append(segments)
    return rows


def real_mask(rows, seqlen):
    """(batch, seqlen) bool: True at the real tokens."""
    mask = torch.zeros(len(rows), seqlen, dtype=torch.bool)
    for b, segments in enumerate(rows):
        for start, end, left, right in segments:
            mask[b, start + left:end - right] = True
    return mask


def sequence_ids(rows, seqlen, continue_across_rows):
    ids = torch.empty(len(rows), seqlen, dtype=torch.int32)
    next_id = 0
    for b, segments in enumerate(rows):
        next_id = next_id if continue_across_rows else 0
        for start, end, _, _ in segments:
            ids[b, start:end] = next_id
            next_id += 1
    return ids


def real_spans(rows):
    """(row, start, end) of the real tokens of every segment that has any."""
    return [(b, start + left, end - right) for b, segments in enumerate(rows)
            for start, end, left, right in segments if end - right > start + left]


# ----------------------------------------------------------------------------------------------------------
# The SSD


@st.composite
def ssd_cases(draw):
    nheads = draw(st.sampled_from([1, 2, 4]))
    ngroups = draw(st.sampled_from([g for g in (1, 2, 4) if nheads % g == 0]))
    batch, seqlen = draw(st.integers(1, 3)), draw(st.integers(1, 24))
    rows = draw(row_layouts(batch, seqlen, packed=draw(st.booleans()), padded=draw(st.booleans())))
    return dict(nheads=nheads, ngroups=ngroups, headdim=draw(st.integers(1, 3)), d_state=draw(st.integers(1, 4)),
                seqlen=seqlen, rows=rows, chunk_size=draw(st.integers(1, 32)), seed=draw(st.integers(0, 2 ** 16)),
                continue_ids=draw(st.booleans()))


@PROFILE
@given(case=ssd_cases())
def test_ssd_property(case):
    rows, seqlen = case["rows"], case["seqlen"]
    inputs = list(random_ssd_inputs(len(rows), seqlen, case["nheads"], case["headdim"], case["ngroups"],
                                    case["d_state"], seed=case["seed"]))
    mask = real_mask(rows, seqlen)
    for i in (0, 1, 2):  # x, dt_f, dt_b are zero at padding (what the mixer feeds the SSD)
        inputs[i] = torch.where(mask.view(*mask.shape, *[1] * (inputs[i].dim() - 2)), inputs[i], 0.0)
    seq_idx = sequence_ids(rows, seqlen, case["continue_ids"])
    y = ssd_bidirectional_torch(*inputs, case["chunk_size"], seq_idx=seq_idx)
    assert torch.isfinite(y).all()

    for b, start, end in real_spans(rows):
        part = [t if t.dim() == 1 else t[b:b + 1, start:end] for t in inputs]
        want = ssd_oracle(*part)
        err = relative_error(y[b:b + 1, start:end], want)
        assert err <= TOL, f"row {b} tokens {start}:{end}: {err:.2e} from the oracle"
    for b in range(len(rows)):  # each row alone gives the same numbers as in the batch (padding included)
        alone = ssd_bidirectional_torch(*[t if t.dim() == 1 else t[b:b + 1] for t in inputs], case["chunk_size"],
                                        seq_idx=seq_idx[b:b + 1])
        assert relative_error(y[b:b + 1], alone) <= TOL, f"row {b} alone"


# ----------------------------------------------------------------------------------------------------------
# The mixer: padded rows (attention_mask) or packed rows (seq_idx)


@st.composite
def mixer_cases(draw):
    hidden_size, headdim = draw(st.sampled_from([(4, 4), (8, 4), (8, 8)]))
    nheads = 2 * hidden_size // headdim
    packed = draw(st.booleans())
    batch, seqlen = draw(st.integers(1, 3)), draw(st.integers(1, 16))
    config = dict(hidden_size=hidden_size, headdim=headdim,
                  ngroups=draw(st.sampled_from([g for g in (1, 2) if nheads % g == 0])),
                  d_state=draw(st.integers(1, 4)), d_conv=draw(st.sampled_from([3, 5, 7])),
                  chunk_size=draw(st.integers(1, 16)))
    rows = draw(row_layouts(batch, seqlen, packed=packed, padded=not packed))
    return dict(config=config, packed=packed, seqlen=seqlen, rows=rows, seed=draw(st.integers(0, 2 ** 16)))


@PROFILE
@given(case=mixer_cases())
def test_mixer_property(case):
    mixer = randomize_weights(HydraMixer(tiny_config(**case["config"])), seed=case["seed"]).double()
    rows, seqlen = case["rows"], case["seqlen"]
    g = torch.Generator().manual_seed(case["seed"])
    u = torch.randn(len(rows), seqlen, mixer.hidden_size, generator=g, dtype=torch.float64)
    mask = real_mask(rows, seqlen)
    with torch.no_grad():
        if case["packed"]:
            out = run_mixer(mixer, u, seq_idx=sequence_ids(rows, seqlen, continue_across_rows=True))
        else:
            out = run_mixer(mixer, u, attention_mask=mask)
        assert torch.isfinite(out).all()
        for b, start, end in real_spans(rows):
            piece = u[b:b + 1, start:end]
            got = out[b:b + 1, start:end]
            err = relative_error(got, module_oracle(mixer, piece))
            assert err <= TOL, f"row {b} tokens {start}:{end}: {err:.2e} from the float64 oracle"
            err = relative_error(got, run_mixer(mixer, piece))
            assert err <= TOL, f"row {b} tokens {start}:{end}: {err:.2e} from the sequence alone"


# ----------------------------------------------------------------------------------------------------------
# The model: padded batches (either path) or one packed row (position_ids, seq_idx or cu_seq_lens)


@st.composite
def model_cases(draw):
    config = dict(num_hidden_layers=draw(st.integers(1, 2)), ngroups=draw(st.sampled_from([1, 2])),
                  d_conv=draw(st.sampled_from([3, 7])), chunk_size=draw(st.integers(1, 16)),
                  is_prenorm=draw(st.booleans()), use_position_embeddings=draw(st.booleans()),
                  classifier_pooling=draw(st.sampled_from(["cls", "mean"])), unpad_inputs=draw(st.booleans()))
    packing = draw(st.sampled_from([None, "position_ids", "seq_idx", "cu_seq_lens"]))
    batch = 1 if packing else draw(st.integers(1, 3))
    seqlen = draw(st.integers(1, 20))
    rows = draw(row_layouts(batch, seqlen, packed=packing is not None, padded=packing is None))
    return dict(config=config, packing=packing, seqlen=seqlen, rows=rows, seed=draw(st.integers(0, 2 ** 16)))


def packing_kwargs(kind, rows, seqlen):
    ids = sequence_ids(rows, seqlen, continue_across_rows=True)
    if kind == "seq_idx":
        return {"seq_idx": ids}
    starts = [start for start, _, _, _ in rows[0]]
    if kind == "cu_seq_lens":
        cu = torch.tensor(starts + [seqlen], dtype=torch.int32)
        return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu}
    index = torch.arange(seqlen)
    return {"position_ids": (index - torch.tensor(starts)[ids[0].long()])[None]}


@PROFILE
@given(case=model_cases())
def test_model_property(case):
    model = randomize_weights(HydraModel(tiny_config(**case["config"])), seed=case["seed"]).double().eval()
    rows, seqlen = case["rows"], case["seqlen"]
    ids = torch.randint(1, model.config.vocab_size, (len(rows), seqlen),
                        generator=torch.Generator().manual_seed(case["seed"]))
    mask = real_mask(rows, seqlen)
    with torch.no_grad():
        if case["packing"]:
            out = model(ids, **packing_kwargs(case["packing"], rows, seqlen))
        else:
            out = model(ids, attention_mask=mask.long())
        assert torch.isfinite(out.last_hidden_state).all() and torch.isfinite(out.pooler_output).all()
        for number, (b, start, end) in enumerate(real_spans(rows)):
            alone = model(ids[b:b + 1, start:end])
            err = relative_error(out.last_hidden_state[b:b + 1, start:end], alone.last_hidden_state)
            assert err <= TOL, f"row {b} tokens {start}:{end}: {err:.2e} from the sequence alone"
            pooled = out.pooler_output[number if case["packing"] else b]
            err = relative_error(pooled, alone.pooler_output[0])
            assert err <= TOL, f"row {b}: pooled output {err:.2e} from the sequence alone"
