"""Helpers of the packed-sequence tests: sequence ids from lengths, random weights, error measures."""

import torch


def ids_from_lengths(lengths, first_id=0, dtype=torch.int64) -> torch.Tensor:
    """(sum(lengths),) sequence ids: `first_id` repeated lengths[0] times, then first_id + 1, ..."""
    return torch.repeat_interleave(torch.arange(first_id, first_id + len(lengths)), torch.tensor(lengths)).to(dtype)


def spans(lengths):
    """[(start, end)] of consecutive sequences of the given lengths."""
    out, start = [], 0
    for n in lengths:
        out.append((start, start + n))
        start += n
    return out


def randomize_weights(module, seed=0, scale=0.5):
    """Every parameter drawn from N(0, scale^2): A far from -1, large steps, strong mixing, so that any crossing of a
    boundary or any change of path shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max(1, max |expected|): absolute for small values, relative for large ones."""
    scale = max(1.0, expected.abs().max().item())
    return (actual.double() - expected.double()).abs().max().item() / scale
