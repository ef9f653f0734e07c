"""How one forward of a Hydra model runs, decided once at its top and passed down to every layer and mixer.

`build_execution_plan` resolves, from the config, the inputs' layout and the mode (train/eval, tracing/export/compile,
gradient checkpointing), every policy below; nothing under it decides again. None of these choices changes what the
model computes (tests check the results against a float64 oracle at many chunk lengths, layouts and with recompute
on and off); they trade time against memory.

- **Backend** (`config.ssd_backend`, the registry `ssd_backends.SSD_BACKENDS`): "auto" is the Triton kernels on CUDA
  tensors when triton is installed, the torch path otherwise. Under torch.export and torch.jit the graph may hold
  torch operators only: "auto" takes the torch path there and the kernel backends raise a ValueError.
- **Layout** (`sequence_layout.py`): padded rows with a mask, padding-free rows (`config.unpad_inputs`, eager only,
  when both the backend and the mixer family keep sequences apart), or packed rows given by the caller. The per-batch
  index tensors (the padding-free gather/scatter, the convolution's spread buffer, the SSD's chunk boundaries) are
  built here once, not per layer.
- **Chunk length** (`_chunk_length`). `config.chunk_size` is the largest chunk any backend uses. The Triton kernels
  take a power of two in [`TRITON_MIN_CHUNK`, `TRITON_MAX_CHUNK`]: the next power of two covering the row, capped
  at `chunk_size`. The torch path runs a row of up to `TORCH_ONE_CHUNK` tokens as a single chunk (if `chunk_size`
  allows): no state passing at all, and the padding-free layout fills rows of at most that many tokens
  (`sequence_layout.unpad`). Longer rows use chunks of `TORCH_CHUNK` tokens, longer where that keeps the number of
  chunks at most `TORCH_MAX_CHUNKS` (the chunk-to-chunk state passing is one (chunks x chunks) product), capped at
  `chunk_size`. Under tracing the chunk length must not depend on the sequence length: `TORCH_CHUNK`.
- **Compute dtype**: the SSD, the decays and the gated norm accumulate in float32 for float32/bfloat16/float16
  activations and in float64 for float64 ones.
- **Recompute** (`config.mixer_recompute`): "always" recomputes everything between a mixer's two projections in the
  backward pass (a layer then keeps only its in_proj output and out_proj input); "never" stores the intermediates;
  "auto" recomputes when a step's tokens times `d_inner` exceed `RECOMPUTE_MIN_ELEMENTS` (large steps, where storing
  costs several times BERT's memory; BENCHMARKS.md has the measurements). Never under gradient checkpointing (the
  layer is recomputed whole already), outside training, or under export/tracing (a threshold would be baked in).
- **Sequence isolation**: when several sequences share a row, a non-finite value of one (an inf or NaN input, an
  fp16 overflow) would reach the others through the products of the shared chunk (0 * inf). After each SSD call on
  such rows one reduction checks the output; only if something is non-finite is the SSD computed again with every
  sequence in a row of its own, which keeps each sequence's result exactly its own (NaN only where its own inputs
  make it so).
"""

from dataclasses import dataclass, field
from typing import Callable

import torch

from .depthwise_conv import depthwise_conv1d, spread_positions
from .sequence_layout import TokenLayout, global_sequence_ids, unpad
from .sequence_rows import SequenceRows
from .sequence_mixers import mixer_class
from .ssd_backends import resolve_ssd_backend
from .ssd_torch import chunk_boundaries
from .tracing import is_exporting, is_tracing

TORCH_ONE_CHUNK = 256
TORCH_CHUNK = 64
TORCH_MAX_CHUNKS = 64
TRITON_MIN_CHUNK, TRITON_MAX_CHUNK = 16, 256
RECOMPUTE_MIN_ELEMENTS = 2**20


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _chunk_length(backend: str, chunk_size: int, seqlen: int, tracing: bool) -> int:
    """Chunk length of the SSD for rows of `seqlen` tokens on `backend` (policy in the module docstring)."""
    if backend == "triton":
        cap = max(TRITON_MIN_CHUNK, 1 << (chunk_size.bit_length() - 1))  # chunk_size rounded down to a power of 2
        return min(max(TRITON_MIN_CHUNK, _next_power_of_two(seqlen)), TRITON_MAX_CHUNK, cap)
    if backend == "mamba_ssm":
        return chunk_size
    if tracing:
        return min(TORCH_CHUNK, chunk_size)
    if seqlen <= TORCH_ONE_CHUNK:
        return min(seqlen, chunk_size)
    return min(chunk_size, max(TORCH_CHUNK, _next_power_of_two(-(-seqlen // TORCH_MAX_CHUNKS))))


def compute_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of the SSD and the gated norm for activations of `dtype`."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _recompute(policy: str, num_tokens: int, d_inner: int, training: bool, gradient_checkpointing: bool) -> bool:
    if not training or gradient_checkpointing or is_exporting() or not torch.is_grad_enabled():
        return False
    if policy == "always":
        return True
    if policy == "never":
        return False
    return num_tokens * d_inner > RECOMPUTE_MIN_ELEMENTS


@dataclass
class ExecutionPlan:
    """Every decision of one forward: read by the layers and mixers, never made again below the model's forward.

    layout: where the tokens sit (padded with a mask, or rows of several sequences with `seq_idx`).
    backend / chunk / compute_dtype / recompute_mixer / tracing: see the module docstring.
    """

    layout: TokenLayout
    backend: str
    ssd_function: Callable
    chunk: int
    compute_dtype: torch.dtype
    recompute_mixer: bool
    tracing: bool
    chunk_cap: int  # config.chunk_size, the largest chunk
    _conv_spread: tuple | None = field(default=None, repr=False)  # (flat buffer rows, width) for seq_idx rows
    _ssd_bounds: object = field(default=None, repr=False)  # what the backend takes as seq_idx
    _sequence_rows: SequenceRows | None = field(default=None, repr=False)  # built on first need

    def mask_padding(self, t: torch.Tensor) -> torch.Tensor:
        """(batch, seqlen, C): zeros at padded positions (selected, so non-finite values there cannot leak)."""
        if self.layout.mask is None:
            return t
        return torch.where(self.layout.mask.unsqueeze(-1), t, 0.0)

    def conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The non-causal depthwise convolution (batch, seqlen, C) with weight (C, K), stopping at sequence ends."""
        return depthwise_conv1d(x, weight, bias, spread=self._conv_spread)

    def ssd(self, x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag):
        """The bidirectional SSD (shapes of `ssd_torch.ssd_bidirectional_torch`) with this plan's backend, chunk and
        sequence boundaries; sequences that share a row stay isolated (module docstring)."""
        inputs = (x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag)
        y = self._call_ssd(inputs, self.chunk, self._ssd_bounds)
        if self.layout.seq_idx is None or self.tracing or bool(torch.isfinite(y).all()):
            return y
        rows = self.sequence_rows(*x.shape[:2], x.device)
        per_sequence = [t if t is A else rows.gather(t) for t in inputs]  # (sequences, longest, ...); A per head
        chunk = _chunk_length(self.backend, self.chunk_cap, rows.width, False)
        return rows.scatter(self._call_ssd(per_sequence, chunk, None))

    def sequence_rows(self, batch: int, seqlen: int, device: torch.device) -> SequenceRows:
        """This forward's tokens (batch, seqlen) as one sequence per row (`sequence_rows.py`), built once."""
        if self._sequence_rows is None:
            self._sequence_rows = SequenceRows(self.layout, batch, seqlen, device, static=self.tracing)
        return self._sequence_rows

    def _call_ssd(self, inputs, chunk, bounds):
        if self.backend == "torch":
            return self.ssd_function(*inputs, chunk, seq_idx=bounds, compute_dtype=self.compute_dtype)
        return self.ssd_function(*inputs, chunk, seq_idx=bounds)


def build_execution_plan(config, *, batch: int, seqlen: int, device: torch.device, dtype: torch.dtype,
                         training: bool, gradient_checkpointing: bool, attention_mask: torch.Tensor | None = None,
                         packed_ids: torch.Tensor | None = None, sequence_level_head: str | None = None
                         ) -> ExecutionPlan:
    """The plan of one forward over (batch, seqlen) tokens whose activations are of `dtype`.

    attention_mask: None or (batch, seqlen), nonzero at real tokens. packed_ids: None, or the (batch, seqlen) sequence
    ids of packed rows (`sequence_layout.packed_sequence_ids`). sequence_level_head: the name of the calling head when it
    scores whole rows (sequence classification, QA, multiple choice): rows holding several sequences are refused.
    """
    tracing = is_tracing()
    backend, ssd_function = resolve_ssd_backend(config.ssd_backend, device)
    mixer = mixer_class(config)
    keeps_sequences_apart = backend.honours_boundaries and mixer.honours_boundaries
    if packed_ids is not None:
        if sequence_level_head and (tracing or global_sequence_ids(packed_ids)[2] != batch):
            raise ValueError(f"{sequence_level_head} scores one sequence per row, but got packed rows holding several "
                             "sequences (seq_idx, cu_seq_lens_* or restarting position_ids): give it a padded batch "
                             "with an attention_mask (e.g. DataCollatorWithPadding) instead.")
        if not keeps_sequences_apart:
            culprit = (f"ssd_backend={backend.name!r}" if not backend.honours_boundaries
                       else f"matrix_mixer_type={config.matrix_mixer_type!r}")
            raise ValueError(f"{culprit} cannot keep packed sequences apart (seq_idx, cu_seq_lens_* or restarting "
                             "position_ids); give padded batches with an attention_mask"
                             + (", or use ssd_backend='torch' or 'triton'." if not backend.honours_boundaries
                                else "."))
        layout = TokenLayout(seq_idx=packed_ids, packed_ids=packed_ids)
    else:
        mask = attention_mask.to(device) != 0 if attention_mask is not None else None  # (batch, seqlen) bool
        if mask is not None and not tracing and bool(mask.all()):
            mask = None  # nothing to mask: skip the masking work (eager only: a traced graph keeps the mask)
        unpadded = None
        if mask is not None and config.unpad_inputs and not tracing and keeps_sequences_apart:
            unpadded = unpad(mask, TRITON_MAX_CHUNK if backend.name == "triton" else TORCH_ONE_CHUNK)
        layout = (TokenLayout(seq_idx=unpadded.seq_idx, unpadded=unpadded, batch_mask=mask) if unpadded is not None
                  else TokenLayout(mask=mask, batch_mask=mask))
    rows, width = layout.seq_idx.shape if layout.unpadded is not None else (batch, seqlen)
    compute_dtype = compute_dtype_for(dtype)
    chunk = _chunk_length(backend.name, config.chunk_size, width, tracing)
    plan = ExecutionPlan(
        layout=layout, backend=backend.name, ssd_function=ssd_function, chunk=chunk, compute_dtype=compute_dtype,
        recompute_mixer=_recompute(config.mixer_recompute, rows * width, config.d_inner, training,
                                   gradient_checkpointing),
        tracing=tracing, chunk_cap=config.chunk_size,
    )
    if layout.seq_idx is not None:
        plan._conv_spread = spread_positions(layout.seq_idx, config.d_conv)
        plan._ssd_bounds = (chunk_boundaries(layout.seq_idx, chunk, compute_dtype) if backend.name == "torch"
                            else layout.seq_idx)
    return plan
