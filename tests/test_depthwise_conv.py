"""The mixer's depthwise convolution (its written-out backward) against PyTorch's conv1d, run on the whole
row or on each sequence of a packed row alone, and against the unfold reference: outputs and gradients."""

import pytest
import torch
import torch.nn.functional as F

from modeling_hydra.depthwise_conv import depthwise_conv1d
from packing_helpers import ids_from_lengths, relative_error, spans

pytestmark = pytest.mark.usefixtures("single_thread")

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
CHANNELS = 6
ROWS = [[1, 2, 3, 9, 1], [16]]  # sequences shorter than the half-width, and one long sequence


def depthwise_conv1d_reference(x, weight, bias, seq_idx=None):
    """The convolution as one unfold, mask and einsum (autograd through plain ops): the reference of the tests."""
    kernel_size, half = weight.shape[1], weight.shape[1] // 2
    taps = F.pad(x, (0, 0, half, half)).unfold(1, kernel_size, 1)  # (batch, seqlen, C, K)
    if seq_idx is not None:
        ids = F.pad(seq_idx, (half, half), value=-1).unfold(1, kernel_size, 1)  # (batch, seqlen, K)
        taps = taps * (ids == seq_idx.unsqueeze(-1)).unsqueeze(2).to(x.dtype)
    out = torch.einsum("blck,ck->blc", taps, weight)
    return out if bias is None else out + bias

def torch_conv(x, weight, bias):
    """PyTorch's depthwise conv1d with zero padding K // 2: (batch, seqlen, channels) -> same."""
    out = F.conv1d(x.transpose(1, 2), weight[:, None], bias, padding=weight.shape[1] // 2, groups=x.shape[-1])
    return out.transpose(1, 2)


def leaves(batch, seqlen, kernel_size, dtype, with_bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seqlen, CHANNELS, generator=g, dtype=dtype).requires_grad_(True)
    weight = torch.randn(CHANNELS, kernel_size, generator=g, dtype=dtype).requires_grad_(True)
    bias = torch.randn(CHANNELS, generator=g, dtype=dtype).requires_grad_(True) if with_bias else None
    return x, weight, bias


def output_and_grads(fn, x, weight, bias, cotangent):
    params = [t for t in (x, weight, bias) if t is not None]
    for t in params:
        t.grad = None
    out = fn(x, weight, bias)
    (out * cotangent).sum().backward()
    return [out.detach()] + [t.grad.clone() for t in params]


def assert_all_close(got, want, dtype, what):
    for name, a, b in zip(("output", "grad x", "grad weight", "grad bias"), got, want):
        err = relative_error(a, b)
        assert err <= TOL[dtype], f"{what}: {name} differs by {err:.2e}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kernel_size", [3, 5, 7])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv_without_boundaries_equals_torch_conv1d(kernel_size, dtype, with_bias):
    x, weight, bias = leaves(2, 11, kernel_size, dtype, with_bias)
    cotangent = torch.randn(x.shape, dtype=dtype)
    expected = output_and_grads(torch_conv, x, weight, bias, cotangent)
    assert_all_close(output_and_grads(depthwise_conv1d, x, weight, bias, cotangent), expected, dtype, "custom")
    assert_all_close(output_and_grads(depthwise_conv1d_reference, x, weight, bias, cotangent), expected, dtype,
                     "reference")
    with torch.no_grad():  # the plain-ops path (no autograd Function)
        assert relative_error(depthwise_conv1d(x, weight, bias), expected[0]) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kernel_size", [3, 7])
def test_conv_with_boundaries_equals_each_sequence_alone(kernel_size, dtype):
    seqlen = sum(ROWS[0])
    seq_idx = torch.stack([ids_from_lengths(lengths, first_id=i * 10) for i, lengths in enumerate(ROWS)])
    x, weight, bias = leaves(len(ROWS), seqlen, kernel_size, dtype, with_bias=True)
    cotangent = torch.randn(x.shape, dtype=dtype)

    def per_sequence(x, weight, bias):
        out = torch.zeros_like(x)
        for b, lengths in enumerate(ROWS):
            for start, end in spans(lengths):
                out[b:b + 1, start:end] = torch_conv(x[b:b + 1, start:end], weight, bias)
        return out

    expected = output_and_grads(per_sequence, x, weight, bias, cotangent)
    custom = output_and_grads(lambda *a: depthwise_conv1d(*a, seq_idx), x, weight, bias, cotangent)
    assert_all_close(custom, expected, dtype, "custom")
    reference = output_and_grads(lambda *a: depthwise_conv1d_reference(*a, seq_idx), x, weight, bias, cotangent)
    assert_all_close(reference, expected, dtype, "reference")
    with torch.no_grad():
        assert relative_error(depthwise_conv1d(x, weight, bias, seq_idx), expected[0]) <= TOL[dtype]
    # the boundaries matter: the same row without them reads its neighbours
    assert relative_error(depthwise_conv1d(x, weight, bias).detach(), expected[0]) > 1e-2
