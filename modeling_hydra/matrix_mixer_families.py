"""The structured matrices of the paper's matrix-mixer framework (Hwang et al. 2024, §5 and Table 2; the authors'
code: github.com/goombalab/hydra, `hydra/modules/matrix_mixers/`), computed with their structure.

Each family module maps the value stream v to `std * M v` per head, where M is the family's (L, L) matrix and the
wrapper (`matrix_mixer.py`) adds the identity term `+ v`. The inputs are *sequence rows*: one sequence per row,
starting at position 0, right-padded; `keep` (rows, L) bool marks real tokens (None: no padding). Every family is
exact on them when v (and any position-indexed input) is zero at the pads, so the wrapper gives every sequence its
stand-alone result whatever the padding or packing of the batch.

Data-independent matrices have `max_len` (= `max_position_embeddings`) rows; a sequence of length L <= max_len uses
the leading (L, L) block, which equals the authors' output for the same sequence right-padded to max_len with the
pads masked out. Longer sequences raise a ValueError.

Memory: no family materializes a (batch, heads, L, L) tensor. Toeplitz is an FFT convolution (O(L log L)), low rank
is Q (K^T v) (O(L)), attention is `F.scaled_dot_product_attention` with a key mask; Vandermonde and Cauchy form
their matrices tile by tile of output rows (recomputed in the backward pass), so activation memory is linear in L.
The dense matrix and the stored DFT matrix are (L, L) parameters/buffers shared by the batch.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .tracing import is_tracing

# Elements of one tile of the Vandermonde / Cauchy kernels (rows * tile * L * heads * qk_dim).
TILE_ELEMENTS = 1 << 22
# The Vandermonde frequency scale: the authors' `eps = 1e-3`, omega = 2 pi eps.
VANDERMONDE_OMEGA = 2 * math.pi * 1e-3
CAUCHY_EPS = 1e-8


def check_length(family: str, seqlen: int, max_len: int) -> None:
    """Data-independent matrices (and Toeplitz) have `max_len` positions: refuse longer sequences (under tracing the
    bound becomes a constraint of the captured graph)."""
    if is_tracing():
        torch._check(seqlen <= max_len)
        return
    if seqlen > max_len:
        raise ValueError(f"The {family} matrix mixer has a fixed maximum length max_position_embeddings={max_len}, "
                         f"but got a sequence of {seqlen} tokens: truncate the inputs or raise "
                         "max_position_embeddings (and retrain).")


def _row_tiles(fn, seqlen: int, per_row: int, *tensors) -> torch.Tensor:
    """Concatenate `fn(start, stop, *tensors)` over tiles of output rows [start, stop) along dim 1.

    `per_row`: elements one output row's kernel takes; tiles hold about TILE_ELEMENTS. When gradients are needed,
    each tile is recomputed in the backward pass, so the stored activations stay O(L). Under tracing the tile count
    may not depend on the shapes: one tile (O(L^2) memory).
    """
    if is_tracing():
        return fn(0, seqlen, *tensors)
    tile = max(1, min(seqlen, TILE_ELEMENTS // max(per_row, 1)))
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    outs = []
    for start in range(0, seqlen, tile):
        stop = min(start + tile, seqlen)
        if grad:
            outs.append(checkpoint(fn, start, stop, *tensors, use_reentrant=False))
        else:
            outs.append(fn(start, stop, *tensors))
    return torch.cat(outs, dim=1)


class DenseMatrix(nn.Module):
    """Dense (data-independent only): `M_h[t, s] = M[h, t, s]`, std 1 / sqrt(max_len)."""

    def __init__(self, nheads: int, max_len: int, qk_dim: int, data_dependent: bool):
        super().__init__()
        assert not data_dependent, "the config refuses a data-dependent dense mixer"
        self.max_len = max_len
        self.std = 1.0 / math.sqrt(max_len)
        self.M = nn.Parameter(torch.empty(nheads, max_len, max_len))  # (nheads, max_len, max_len)

    def reset_parameters(self):
        nn.init.xavier_normal_(self.M)

    def forward(self, v, q, k, keep):
        """v: (rows, L, nheads, headdim) -> std * M v, same shape."""
        seqlen = v.shape[1]
        check_length("dense", seqlen, self.max_len)
        M = self.M[:, :seqlen, :seqlen].to(v.dtype).contiguous()  # (contiguous: no size guard under export)
        return self.std * torch.einsum("hts,bshp->bthp", M, v)


class ToeplitzMatrix(nn.Module):
    """Toeplitz: `M[t, s] = c[(t - s + max_len) mod (2 max_len - 1)]` with a length-(2 max_len - 1) kernel c per head,
    std 0.5 / sqrt(max_len).

    di: c = conv_params[h]. dd: c = [r[max_len-1], ..., r[1], f[0], ..., f[max_len-1]] from the per-token f, r
    channels (zero beyond the sequence). This is the authors' index alignment: the diagonal reads f[1], the first
    superdiagonal f[0], superdiagonals s - t >= 2 read r[s-t-1], and for a full-length sequence the corner
    (t = max_len-1, s = 0) wraps round to c[0] = r[max_len-1]. Computed as a linear convolution by real FFT of
    size 2L; the authors cast to float32 for their FFT, here the FFT runs in v's dtype (float64 stays float64).
    """

    def __init__(self, nheads: int, max_len: int, qk_dim: int, data_dependent: bool):
        super().__init__()
        self.max_len = max_len
        self.std = 0.5 / math.sqrt(max_len)
        self.data_dependent = data_dependent
        if not data_dependent:
            self.conv_params = nn.Parameter(torch.empty(nheads, 2 * max_len - 1))  # (nheads, 2 max_len - 1)

    def reset_parameters(self):
        if not self.data_dependent:
            nn.init.xavier_uniform_(self.conv_params)

    def kernel(self, f, r) -> torch.Tensor:
        """The kernel c: (1, nheads, 2 max_len - 1) for di, (rows, nheads, 2 max_len - 1) for dd from f, r
        (rows, L, nheads)."""
        if not self.data_dependent:
            return self.conv_params.unsqueeze(0)
        pad = self.max_len - f.shape[1]
        f = F.pad(f, (0, 0, 0, pad)).transpose(1, 2)  # (rows, nheads, max_len)
        r = F.pad(r, (0, 0, 0, pad)).transpose(1, 2)
        return torch.cat([r[..., 1:].flip(-1), f], dim=-1)

    def forward(self, v, f, r, keep):
        """v: (rows, L, nheads, headdim); f, r: (rows, L, nheads) or None (di) -> std * M v, like v."""
        rows, seqlen, nheads, headdim = v.shape
        check_length("toeplitz", seqlen, self.max_len)
        c = self.kernel(f, r).to(v.dtype)  # (rows or 1, nheads, 2 max_len - 1)
        n = 2 * seqlen
        lags = torch.arange(n, device=v.device)
        lags = torch.where(lags < seqlen, lags, lags - n)  # circular index j holds lag j (j < L) or j - n
        g = c[..., (lags + self.max_len) % (2 * self.max_len - 1)]  # (rows or 1, nheads, n): g[lag mod n] = k(lag)
        g = torch.where((lags.abs() < seqlen), g, 0.0)
        v_hat = torch.fft.rfft(v.permute(0, 2, 3, 1), n=n)  # (rows, nheads, headdim, n // 2 + 1)
        g_hat = torch.fft.rfft(g, n=n).unsqueeze(2)  # (rows or 1, nheads, 1, n // 2 + 1)
        y = torch.fft.irfft(v_hat * g_hat, n=n)[..., :seqlen]  # (rows, nheads, headdim, L)
        return self.std * y.permute(0, 3, 1, 2)


class VandermondeMatrix(nn.Module):
    """Vandermonde.

    dd: `M[t, s] = sum_d cos(w q_d[t] s) - cos(w k_d[s] t)`, w = 2 pi 1e-3, std 1 / sqrt(2 max_len qk_dim), any
    length; formed tile by tile of output rows. di: the authors' module is always the DFT (their `is_dft`
    default), `M_h = W` with the stored buffer `dft_matrix[t, s] = cos(2 pi t s / max_len)` evaluated in float32 as
    ((2 pi t) s) / max_len (parity needs these float32 values), std 1 / sqrt(max_len).
    """

    def __init__(self, nheads: int, max_len: int, qk_dim: int, data_dependent: bool):
        super().__init__()
        self.max_len = max_len
        self.data_dependent = data_dependent
        if data_dependent:
            self.std = 1.0 / math.sqrt(2 * max_len * qk_dim)
        else:
            self.std = 1.0 / math.sqrt(max_len)
            self.register_buffer("dft_matrix", self.dft(max_len), persistent=True)  # (max_len, max_len)

    @staticmethod
    def dft(max_len: int, device=None) -> torch.Tensor:
        """cos(((2 pi t) s) / max_len) in float32, as the authors compute it."""
        t = torch.arange(max_len, dtype=torch.float32, device=device)
        return torch.cos((2 * math.pi * t).unsqueeze(1) * t.unsqueeze(0) / max_len)

    def reset_parameters(self):
        if not self.data_dependent and not getattr(self.dft_matrix, "_is_hf_initialized", False):
            with torch.no_grad():
                self.dft_matrix.copy_(self.dft(self.max_len, self.dft_matrix.device))

    @staticmethod
    def _tile(start, stop, q, k, v):
        """Rows [start, stop) of M v. q, k: (rows, L, nheads, qk); v: (rows, L, nheads, headdim)."""
        seqlen = v.shape[1]
        pos = torch.arange(seqlen, device=v.device, dtype=v.dtype)
        out_pos = pos[start:stop]
        # (rows, T, L, nheads): sum_d cos(w q_d[t] s) - cos(w k_d[s] t)
        first = torch.cos(VANDERMONDE_OMEGA * q[:, start:stop, None] * pos[None, None, :, None, None]).sum(-1)
        second = torch.cos(VANDERMONDE_OMEGA * k[:, None] * out_pos[None, :, None, None, None]).sum(-1)
        return torch.einsum("btsh,bshp->bthp", first - second, v)

    def forward(self, v, q, k, keep):
        """v: (rows, L, nheads, headdim); q, k: (rows, L, nheads, qk_dim) or None (di) -> std * M v."""
        rows, seqlen, nheads, _ = v.shape
        if not self.data_dependent:
            check_length("vandermonde (DFT)", seqlen, self.max_len)
            W = self.dft_matrix[:seqlen, :seqlen].to(v.dtype).contiguous()
            return self.std * torch.einsum("ts,bshp->bthp", W, v)
        y = _row_tiles(self._tile, seqlen, rows * seqlen * nheads * q.shape[-1], q, k, v)
        return self.std * y


class _LearnedQKMatrix(nn.Module):
    """Base of the families whose di variant learns the (max_len, nheads, qk_dim) `q_matrix` and `k_matrix`
    (Cauchy, low rank, attention), Xavier-normal initialized as in the authors' code."""

    def __init__(self, nheads: int, max_len: int, qk_dim: int, data_dependent: bool, std: float):
        super().__init__()
        self.max_len = max_len
        self.std = std
        self.data_dependent = data_dependent
        if not data_dependent:
            self.q_matrix = nn.Parameter(torch.empty(max_len, nheads, qk_dim))  # (max_len, nheads, qk_dim)
            self.k_matrix = nn.Parameter(torch.empty(max_len, nheads, qk_dim))

    def reset_parameters(self):
        if not self.data_dependent:
            nn.init.xavier_normal_(self.q_matrix)
            nn.init.xavier_normal_(self.k_matrix)


class CauchyMatrix(_LearnedQKMatrix):
    """Cauchy: `M[t, s] = sum_d 1 / (q~_d[t] + k~_d[s] + 1e-8)`, std 1 / sqrt(max_len qk_dim).

    dd: q~ = exp(q) + bias, k~ = exp(k) + bias with the learned 0-dim `bias` (init 0.5), any length. di:
    q~ = exp(q_matrix[t, h]), k~ = exp(k_matrix[s, h]) (q_matrix, k_matrix: (max_len, nheads, qk_dim)). Formed tile by
    tile of output rows.
    """

    def __init__(self, nheads: int, max_len: int, qk_dim: int, data_dependent: bool):
        super().__init__(nheads, max_len, qk_dim, data_dependent, std=1.0 / math.sqrt(max_len * qk_dim))
        if data_dependent:
            self.bias = nn.Parameter(torch.empty(()))  # 0-dim, as the authors'

    def reset_parameters(self):
        super().reset_parameters()
        if self.data_dependent:
            nn.init.constant_(self.bias, 0.5)

    @staticmethod
    def _tile(start, stop, q, k, v):
        """Rows [start, stop) of M v; q, k: (rows or 1, L, nheads, qk) already exponentiated."""
        kernel = (1.0 / (q[:, start:stop, None] + k[:, None] + CAUCHY_EPS)).sum(-1)  # (rows or 1, T, L, nheads)
        return torch.einsum("btsh,bshp->bthp", kernel, v)

    def forward(self, v, q, k, keep):
        """v: (rows, L, nheads, headdim); q, k: (rows, L, nheads, qk_dim) or None (di) -> std * M v."""
        rows, seqlen, nheads, _ = v.shape
        if self.data_dependent:
            q = torch.exp(q) + self.bias.to(v.dtype)
            k = torch.exp(k) + self.bias.to(v.dtype)
        else:
            check_length("cauchy", seqlen, self.max_len)
            q = torch.exp(self.q_matrix[:seqlen].to(v.dtype)).unsqueeze(0)
            k = torch.exp(self.k_matrix[:seqlen].to(v.dtype)).unsqueeze(0)
            if keep is not None:  # pads must meet a finite kernel (v is zero there)
                k = torch.where(keep[..., None, None], k, 1.0)
        y = _row_tiles(self._tile, seqlen, rows * seqlen * nheads * q.shape[-1], q, k, v)
        return self.std * y


class LowRankMatrix(_LearnedQKMatrix):
    """Low rank: `M_h[t, s] = q_h[t] . k_h[s]`, std 1 / sqrt(max_len qk_dim), computed as Q (K^T v).

    dd: q, k from the input (SiLU'd), any length. di: q_matrix, k_matrix (max_len, nheads, qk_dim).
    """

    def __init__(self, nheads: int, max_len: int, qk_dim: int, data_dependent: bool):
        super().__init__(nheads, max_len, qk_dim, data_dependent, std=1.0 / math.sqrt(max_len * qk_dim))

    def forward(self, v, q, k, keep):
        """v: (rows, L, nheads, headdim); q, k: (rows, L, nheads, qk_dim) or None (di) -> std * M v."""
        seqlen = v.shape[1]
        if not self.data_dependent:
            check_length("low_rank", seqlen, self.max_len)
            q = self.q_matrix[:seqlen].to(v.dtype).unsqueeze(0)
            k = self.k_matrix[:seqlen].to(v.dtype).unsqueeze(0)
        kv = torch.einsum("bshd,bshp->bhdp", k, v)  # (rows, nheads, qk_dim, headdim); v is zero at pads
        return self.std * torch.einsum("bthd,bhdp->bthp", q, kv)


class AttentionMatrix(_LearnedQKMatrix):
    """Softmax attention without scale factor std: `M_h = softmax_s(q_h[t] . k_h[s] / sqrt(qk_dim))`, through
    `F.scaled_dot_product_attention` with a key mask at pads (the authors' code has none).

    dd: q, k are the raw convolution outputs, any length. di: the authors declare q_matrix, k_matrix as
    (max_len, nheads, qk_dim) but read them as (nheads, position, qk_dim), so they only run when
    nheads == max_len (the config refuses anything else); the same reading is kept here.
    """

    def __init__(self, nheads: int, max_len: int, qk_dim: int, data_dependent: bool):
        super().__init__(nheads, max_len, qk_dim, data_dependent, std=1.0)  # di: read as (nheads, max_len, qk_dim)

    def forward(self, v, q, k, keep):
        """v: (rows, L, nheads, headdim); q, k: (rows, L, nheads, qk_dim) or None (di) -> M v."""
        rows, seqlen = v.shape[:2]
        v = v.transpose(1, 2)  # (rows, nheads, L, headdim)
        if self.data_dependent:
            q, k = q.transpose(1, 2), k.transpose(1, 2)  # (rows, nheads, L, qk_dim)
        else:
            check_length("attention", seqlen, self.max_len)
            q = self.q_matrix[:, :seqlen].to(v.dtype).contiguous().expand(rows, -1, -1, -1)  # (rows, nheads, L, qk)
            k = self.k_matrix[:, :seqlen].to(v.dtype).contiguous().expand(rows, -1, -1, -1)
        mask = None if keep is None else keep[:, None, None, :]  # (rows, 1, 1, L)
        # SDPA's fused (flash) kernels need one last dim for q, k and v; otherwise it falls back to materializing the
        # (rows, nheads, L, L) scores. Zero columns appended to q and k (or to v) leave every q . k and every output
        # column unchanged, so the narrower side is padded and the scale stays that of qk_dim.
        qk_dim, headdim = q.shape[-1], v.shape[-1]
        width = max(qk_dim, headdim)
        q, k, v = (F.pad(t, (0, width - t.shape[-1])) if t.shape[-1] < width else t for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=qk_dim ** -0.5)  # (rows, nheads, L, width)
        return y[..., :headdim].transpose(1, 2)


FAMILIES = {
    "dense": DenseMatrix,
    "toeplitz": ToeplitzMatrix,
    "vandermonde": VandermondeMatrix,
    "cauchy": CauchyMatrix,
    "low_rank": LowRankMatrix,
    "attention": AttentionMatrix,
}
