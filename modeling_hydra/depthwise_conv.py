"""The mixer's non-causal depthwise convolution, channels-last, that stops at sequence boundaries.

    out[b, t, c] = bias[c] + sum_j weight[c, j] * x[b, t + j - K // 2, c]

where x reads as zero outside the row and, with `seq_idx`, outside the sequence of token t. Sequences of a packed
row are kept apart by spreading them over a wider buffer with K // 2 zero slots after each, so one plain depthwise
convolution serves every case. The backward pass is written out: oneDNN's depthwise forward is fast on CPU, its
autograd backward is not (over 10x slower than the forward), so the input gradient is the forward convolution of
the output gradient with the flipped kernel and the weight gradient is K multiply-and-sums.
"""

import torch
import torch.nn.functional as F


def spread_positions(seq_idx: torch.Tensor, kernel_size: int) -> tuple[torch.Tensor, int]:
    """Where each token goes in a buffer that holds K // 2 zero slots after every sequence of its row.

    seq_idx: (batch, seqlen) non-decreasing sequence ids. Returns the flat buffer rows (batch * seqlen,) long of
    the tokens and the buffer width (rows of the buffer per batch row).
    """
    batch, seqlen = seq_idx.shape
    starts = F.pad(seq_idx[:, 1:] != seq_idx[:, :-1], (1, 0))  # (batch, seqlen): first token of a later sequence
    gaps_before = starts.long().cumsum(-1) * (kernel_size // 2)
    width = seqlen + int(gaps_before[:, -1].max())
    positions = torch.arange(seqlen, device=seq_idx.device) + gaps_before
    positions = positions + torch.arange(batch, device=seq_idx.device).unsqueeze(1) * width
    return positions.flatten(), width


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise convolution along dim 1 of a channels-last (batch, L, C) tensor.

    Run as a channels-last conv2d over a (batch, C, 1, L) view: oneDNN then reads and writes our layout directly,
    about 15x faster than conv1d on the transposed tensor.
    """
    channels, kernel_size = weight.shape
    out = F.conv2d(x.unsqueeze(1).permute(0, 3, 1, 2), weight.view(channels, 1, 1, kernel_size), bias,
                   padding=(0, kernel_size // 2), groups=channels)  # (batch, C, 1, L)
    return out.permute(0, 2, 3, 1).squeeze(1)


def _spread(t: torch.Tensor, index: torch.Tensor | None, width: int) -> torch.Tensor:
    """(batch, seqlen, C) -> (batch, width, C): token rows at the flat buffer rows `index`, zeros elsewhere."""
    if index is None:
        return t
    channels = t.shape[-1]
    flat = t.new_zeros(t.shape[0] * width, channels).index_copy_(0, index, t.reshape(-1, channels))
    return flat.view(t.shape[0], width, channels)


def _collect(t: torch.Tensor, index: torch.Tensor | None, seqlen: int) -> torch.Tensor:
    """Inverse of `_spread`: (batch, width, C) -> (batch, seqlen, C)."""
    if index is None:
        return t
    channels = t.shape[-1]
    return t.reshape(-1, channels).index_select(0, index).view(t.shape[0], seqlen, channels)


class DepthwiseConv1dFunction(torch.autograd.Function):
    """autograd Function of `depthwise_conv1d` (index: flat buffer rows of the tokens, or None)."""

    @staticmethod
    def forward(ctx, x, weight, bias, index, width):
        # In the dtype of x (under autocast, the projection's output dtype), whatever the weights' dtype.
        spread = _spread(x, index, width)  # (batch, width, C)
        ctx.save_for_backward(spread, weight, index)
        ctx.has_bias, ctx.width, ctx.seqlen = bias is not None, width, x.shape[1]
        with torch.autocast(x.device.type, enabled=False):
            out = _conv(spread, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))
        return _collect(out, index, ctx.seqlen)

    @staticmethod
    def backward(ctx, grad_out):
        spread, weight, index = ctx.saved_tensors
        kernel_size, half = weight.shape[1], weight.shape[1] // 2
        grad_spread = _spread(grad_out.to(spread.dtype), index, ctx.width)  # (batch, width, C)
        with torch.autocast(grad_out.device.type, enabled=False):
            grad_x = _collect(_conv(grad_spread, weight.flip(-1).to(spread.dtype), None), index, ctx.seqlen)
        padded = F.pad(spread, (0, 0, half, half)).to(weight.dtype)  # (batch, width + K - 1, C)
        grad_spread = grad_spread.to(weight.dtype)
        width = grad_spread.shape[1]
        grad_weight = torch.stack(
            [(grad_spread * padded[:, j:j + width]).sum((0, 1)) for j in range(kernel_size)], dim=1)  # (C, K)
        grad_bias = grad_spread.sum((0, 1)) if ctx.has_bias else None
        return grad_x, grad_weight, grad_bias, None, None


def depthwise_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     seq_idx: torch.Tensor | None = None, spread: tuple | None = None) -> torch.Tensor:
    """Non-causal depthwise convolution of x (batch, seqlen, channels) with weight (channels, K), K odd.

    seq_idx: None, or (batch, seqlen) non-decreasing sequence ids: taps never cross from one sequence to another.
    spread: `spread_positions(seq_idx, K)` computed once for many calls (the execution plan's), instead of seq_idx.
    """
    if spread is None and seq_idx is not None:
        spread = spread_positions(seq_idx, weight.shape[1])
    index, width = spread if spread is not None else (None, x.shape[1])
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return DepthwiseConv1dFunction.apply(x, weight, bias, index, width)
    return _collect(_conv(_spread(x, index, width), weight, bias), index, x.shape[1])  # what tracing sees
