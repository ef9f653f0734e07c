"""The SSD with sequence boundaries (`seq_idx`): every sequence of a packed row gets exactly its stand-alone result,
against the float64 block-diagonal matrix (one block per sequence) and against each sequence run alone, gradients of
all nine inputs included."""

import pytest
import torch

from modeling_hydra.ssd_torch import ssd_bidirectional_torch
from packing_helpers import ids_from_lengths, relative_error, spans
from ssd_oracle import random_ssd_inputs, ssd_oracle

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny shapes: threads only contend

TOL = 1e-12
NHEADS, HEADDIM, D_STATE = 4, 3, 5
CHUNK_SIZES = (1, 2, 3, 4, 5, 8, 16, 64)

# Each layout: the sequence lengths of every row (all rows of a layout have the same total length).
LAYOUTS = {
    "length 1 only": [[1] * 7],
    "lengths 1 to 3": [[2, 3, 1, 2, 1], [3, 3, 3]],
    "exactly one chunk of 8": [[8, 8], [16]],
    "crossing chunk borders": [[5, 13, 3], [21]],
    "boundary inside a chunk": [[3, 9, 4]],
    "long sequence between short ones": [[1, 22, 2]],
    "30 sequences in one chunk of 64": [[1, 2, 3] * 10],
}


def packed_ids(row_lengths, dtype=torch.int64):
    """(batch, seqlen) sequence ids; the second row's ids continue after the first row's (as after unpadding)."""
    rows, first = [], 0
    for lengths in row_lengths:
        rows.append(ids_from_lengths(lengths, first, dtype))
        first += len(lengths)
    return torch.stack(rows)


def packed_inputs(row_lengths, ngroups, seed=0):
    seqlen = sum(row_lengths[0])
    assert all(sum(lengths) == seqlen for lengths in row_lengths)
    return random_ssd_inputs(len(row_lengths), seqlen, NHEADS, HEADDIM, ngroups, D_STATE, seed=seed)


def grads_of(inputs, run):
    """Outputs of `run(leaves)` (a list of (output, cotangent) pairs) and the gradients of the nine inputs."""
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    pairs = run(leaves)
    sum((y * w).sum() for y, w in pairs).backward()
    return pairs, [leaf.grad for leaf in leaves]


def per_sequence_pairs(leaves, row_lengths, cotangent, chunk_size):
    """Each sequence of each row run alone (no seq_idx) on slices of the same leaves."""
    x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag = leaves
    pairs = []
    for b, lengths in enumerate(row_lengths):
        for start, end in spans(lengths):
            part = lambda t: t[b:b + 1, start:end]
            y = ssd_bidirectional_torch(part(x), part(dt_f), part(dt_b), A, part(B_f), part(C_f), part(B_b),
                                        part(C_b), part(diag), chunk_size)
            pairs.append((y, cotangent[b:b + 1, start:end]))
    return pairs


@pytest.mark.parametrize("ngroups", [1, 2])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_packed_ssd_equals_each_sequence_alone(layout, ngroups):
    row_lengths = LAYOUTS[layout]
    inputs = packed_inputs(row_lengths, ngroups)
    seq_idx = packed_ids(row_lengths)
    expected = ssd_oracle(*inputs, seq_idx=seq_idx)
    assert expected.abs().max() > 1.0  # not degenerate
    cotangent = torch.randn(inputs[0].shape, dtype=torch.float64)
    for chunk_size in CHUNK_SIZES:
        packed_pairs, packed_grads = grads_of(
            inputs, lambda leaves: [(ssd_bidirectional_torch(*leaves, chunk_size, seq_idx=seq_idx), cotangent)])
        alone_pairs, alone_grads = grads_of(
            inputs, lambda leaves: per_sequence_pairs(leaves, row_lengths, cotangent, chunk_size))
        packed = packed_pairs[0][0].detach()
        assert packed.shape == inputs[0].shape and packed.dtype == torch.float64
        err = relative_error(packed, expected)
        assert err <= TOL, f"chunk_size={chunk_size}: packed output vs oracle {err:.2e}"
        alone = torch.zeros_like(expected)
        pieces = iter(alone_pairs)
        for b, lengths in enumerate(row_lengths):
            for start, end in spans(lengths):
                alone[b:b + 1, start:end] = next(pieces)[0].detach()
        err = relative_error(alone, expected)
        assert err <= TOL, f"chunk_size={chunk_size}: sequences alone vs oracle {err:.2e}"
        names = ("x", "dt_f", "dt_b", "A", "B_f", "C_f", "B_b", "C_b", "diag")
        for name, got, want in zip(names, packed_grads, alone_grads):
            assert got is not None and torch.isfinite(got).all(), f"chunk_size={chunk_size}: grad of {name}"
            err = relative_error(got, want)
            assert err <= TOL, f"chunk_size={chunk_size}: grad of {name} differs by {err:.2e}"


@pytest.mark.parametrize("chunk_size", [3, 8, 64])
def test_sequence_ids_need_not_start_at_zero_nor_be_consecutive(chunk_size):
    """Only equality of neighbouring ids matters: int32 ids 5, 9, 10, 42 give the same result as 0, 1, 2, 3."""
    row_lengths = [[4, 1, 7, 3]]
    inputs = packed_inputs(row_lengths, ngroups=2, seed=1)
    ids = torch.repeat_interleave(torch.tensor([5, 9, 10, 42], dtype=torch.int32), torch.tensor(row_lengths[0]))
    y = ssd_bidirectional_torch(*inputs, chunk_size, seq_idx=ids[None])
    assert relative_error(y, ssd_oracle(*inputs, seq_idx=ids_from_lengths(row_lengths[0])[None])) <= TOL


def test_the_oracle_sees_a_missing_boundary():
    """Without seq_idx the packed row mixes its sequences: far from the per-sequence oracle (so the tests above can
    fail)."""
    row_lengths = LAYOUTS["boundary inside a chunk"]
    inputs = packed_inputs(row_lengths, ngroups=1)
    expected = ssd_oracle(*inputs, seq_idx=packed_ids(row_lengths))
    assert relative_error(ssd_bidirectional_torch(*inputs, 8), expected) > 1e-2
