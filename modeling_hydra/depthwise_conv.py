"""The mixer's non-causal depthwise convolution, channels-last, with optional sequence boundaries.

    out[b, t, c] = bias[c] + sum_j weight[c, j] * x[b, t + j - K // 2, c] * valid[b, t, j]

with zeros outside the row, and `valid[b, t, j]` zero where tap j of row t would read another sequence of a
padding-free row. K shifted multiply-adds with a hand-written backward: PyTorch's CPU depthwise `conv1d` backward
takes a slow path (about 20 ms for 5.5 M multiply-adds), and its forward cannot stop at sequence boundaries.
`depthwise_conv1d_reference` is the plain unfold form of the same sum, for the tests.
"""

import torch
import torch.nn.functional as F


def boundary_taps(seq_idx: torch.Tensor, kernel_size: int, dtype: torch.dtype) -> torch.Tensor:
    """(batch, seqlen, kernel_size) 0/1 in `dtype`: whether tap j of row t reads a token of the same sequence as t.

    seq_idx: (batch, seqlen) non-decreasing sequence ids of a padding-free row.
    """
    half = kernel_size // 2
    padded = F.pad(seq_idx, (half, half), value=-1)  # (batch, seqlen + K - 1); -1 never matches an id
    taps = padded.unfold(1, kernel_size, 1)  # (batch, seqlen, K)
    return (taps == seq_idx.unsqueeze(-1)).to(dtype)


def _masked(t: torch.Tensor, valid: torch.Tensor | None, j: int) -> torch.Tensor:
    """t * valid[:, :, j] (a float mask: much faster than torch.where); the centre tap is always valid."""
    return t if valid is None or j == valid.shape[-1] // 2 else t * valid[:, :, j:j + 1]


def _taps(x_pad: torch.Tensor, valid: torch.Tensor | None, j: int, seqlen: int) -> torch.Tensor:
    return _masked(x_pad[:, j:j + seqlen], valid, j)  # (batch, seqlen, channels)


def _forward(x, weight, bias, valid):
    seqlen, kernel_size = x.shape[1], weight.shape[1]
    x_pad = F.pad(x, (0, 0, kernel_size // 2, kernel_size // 2))  # (batch, seqlen + K - 1, channels)
    out = torch.mul(_taps(x_pad, valid, 0, seqlen), weight[:, 0])
    for j in range(1, kernel_size):
        out = torch.addcmul(out, _taps(x_pad, valid, j, seqlen), weight[:, j])
    return out if bias is None else out + bias


class DepthwiseConv1dFunction(torch.autograd.Function):
    """autograd Function of `depthwise_conv1d` with the K-tap backward written out."""

    @staticmethod
    def forward(ctx, x, weight, bias, valid):
        ctx.save_for_backward(x, weight, valid)
        ctx.has_bias = bias is not None
        return _forward(x, weight, bias, valid)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, valid = ctx.saved_tensors
        seqlen, kernel_size = x.shape[1], weight.shape[1]
        half = kernel_size // 2
        grad_out = grad_out.contiguous()
        x_pad = F.pad(x, (0, 0, half, half))
        grad_x_pad = torch.zeros_like(x_pad)  # (batch, seqlen + K - 1, channels)
        grad_weight = torch.empty_like(weight)  # (channels, K)
        for j in range(kernel_size):
            grad_j = _masked(grad_out, valid, j)
            grad_x_pad[:, j:j + seqlen].addcmul_(grad_j, weight[:, j])
            grad_weight[:, j] = (grad_j * x_pad[:, j:j + seqlen]).sum((0, 1))
        grad_bias = grad_out.sum((0, 1)) if ctx.has_bias else None
        return grad_x_pad[:, half:half + seqlen], grad_weight, grad_bias, None


def depthwise_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     valid: torch.Tensor | None = None) -> torch.Tensor:
    """Non-causal depthwise convolution of x (batch, seqlen, channels) with weight (channels, K), K odd.

    valid: None, or (batch, seqlen, K) 0/1 from `boundary_taps` for padding-free rows.
    """
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return DepthwiseConv1dFunction.apply(x, weight, bias, valid)
    return _forward(x, weight, bias, valid)  # plain ops: what tracing and export see


def depthwise_conv1d_reference(x, weight, bias, valid=None):
    """The same convolution as one unfold and einsum (autograd through plain ops), for tests."""
    kernel_size = weight.shape[1]
    taps = F.pad(x, (0, 0, kernel_size // 2, kernel_size // 2)).unfold(1, kernel_size, 1)  # (batch, L, C, K)
    if valid is not None:
        taps = taps * valid.unsqueeze(2)
    out = torch.einsum("blck,ck->blc", taps, weight)
    return out if bias is None else out + bias
