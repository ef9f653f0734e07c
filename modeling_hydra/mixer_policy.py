"""The one place that decides how the Hydra mixer runs: chunk length, compute dtype and recompute.

None of these choices changes what the model computes (tests check the results against a float64 oracle at many
chunk lengths and with recompute on and off); they only trade time against memory. The backend choice lives in
`ssd_backends.py`, the registry of SSD kernels.

- **Chunk length** (`ssd_chunk_length`). `config.chunk_size` is the largest chunk any backend uses. The Triton
  kernels take a power of two in [16, 256]: the next power of two covering the row, capped at `chunk_size`. The torch
  path runs a row of up to `_TORCH_ONE_CHUNK` tokens as a single chunk (if `chunk_size` allows) (no state passing at all: padding-free rows of
  GLUE sentences are laid out in such rows, see `sequence_layout.py`); longer rows use chunks of
  `_TORCH_CHUNK` tokens, longer where that keeps the number of chunks at most `_TORCH_MAX_CHUNKS` (the chunk-to-chunk
  state passing is one (chunks x chunks) product), capped at `chunk_size`. Under tracing, `torch.export` and
  `torch.compile` the chunk length must not depend on the sequence length: `_TORCH_CHUNK` is used.
- **Compute dtype** (`ssd_compute_dtype`): the SSD, the decays and the gated norm accumulate in float32 for
  float32/bfloat16/float16 activations and in float64 for float64 ones.
- **Recompute** (`recompute_mixer`, from `config.mixer_recompute`): "always" recomputes everything between the
  mixer's two projections in the backward pass (a layer then keeps only its in_proj output and out_proj input);
  "never" stores the intermediates; "auto" recomputes when a step's tokens (padding included) times `d_inner`
  exceed `_RECOMPUTE_MIN_ELEMENTS`. Measured (2026-11-29, peak growth of one training step, live tensors): hydra-base
  at 4 x 512 tokens needs 6.4 GB storing vs 1.5 GB recomputing (bert-base 3.1 GB); Hydra h256 x 7 layers at
  8192 tokens 2.9 GB vs 0.9 GB. GLUE batches (a few hundred real tokens of a small model) stay far below the
  threshold and skip the recomputation, which would cost a second forward of the mixer interior.
  `model.gradient_checkpointing_enable()` is independent of this: it recomputes whole layers.
"""

import torch

_TORCH_ONE_CHUNK = 256
_TORCH_CHUNK = 64
_TORCH_MAX_CHUNKS = 64
_TRITON_MIN_CHUNK, _TRITON_MAX_CHUNK = 16, 256
_RECOMPUTE_MIN_ELEMENTS = 2**20


def is_tracing() -> bool:
    """True under torch.jit tracing/scripting, torch.export and torch.compile: code must then be shape-static."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def ssd_chunk_length(backend: str, chunk_size: int, seqlen: int) -> int:
    """Chunk length of the SSD for rows of `seqlen` tokens on `backend` ("torch", "triton" or "mamba_ssm")."""
    if backend == "triton":
        cap = max(_TRITON_MIN_CHUNK, 1 << (chunk_size.bit_length() - 1))  # chunk_size rounded down to a power of 2
        return min(max(_TRITON_MIN_CHUNK, _next_power_of_two(seqlen)), _TRITON_MAX_CHUNK, cap)
    if backend == "mamba_ssm":
        return chunk_size
    if is_tracing():
        return min(_TORCH_CHUNK, chunk_size)
    if seqlen <= _TORCH_ONE_CHUNK:
        return min(seqlen, chunk_size)
    return min(chunk_size, max(_TORCH_CHUNK, _next_power_of_two(-(-seqlen // _TORCH_MAX_CHUNKS))))


def ssd_compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of the SSD and the gated norm for activations of `dtype`."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def recompute_mixer(policy: str, num_tokens: int, d_inner: int) -> bool:
    """Whether the mixer interior is recomputed in backward, for `config.mixer_recompute` and a step's size."""
    if torch.compiler.is_exporting() or torch.jit.is_tracing():
        return False  # an exported or traced graph serves every token count (a threshold on it would be baked in)
    if policy == "always":
        return True
    if policy == "never":
        return False
    return num_tokens * d_inner > _RECOMPUTE_MIN_ELEMENTS
