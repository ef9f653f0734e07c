"""How the tokens of a batch reach the Hydra layers: padded, padding-free (unpadded) or packed.

- **Padded** (the shape-static path): rows of equal length with an `attention_mask`; the mixers zero the padded
  positions' inputs, so real tokens get what they would get alone. Tracing, `torch.export` and `torch.compile` always
  take this path.
- **Padding-free** (`Unpadded`): in eager mode, when the mask has padding and `config.unpad_inputs` is set, the real
  tokens of all rows are gathered into one row whose `seq_idx` tells the rows apart, the encoder runs on that row, and
  the results are scattered back (zeros at padded positions). Rows whose mask has holes (zeros between real tokens)
  keep the padded path, where a hole is a blank position: the scans pass over it (no input, no decay) and the
  convolution reads zeros there. Backends that cannot keep sequences apart (see the registry) always take the
  padded path.
- **Packed** (`packed_sequence_ids`): rows that already hold several sequences back to back, as made by
  transformers' `DataCollatorWithFlattening`. A row counts as packed when
    1. explicit boundaries are given: `seq_idx` (batch, seqlen), or `cu_seq_lens_q` / `cu_seq_lens_k` (cumulative
       lengths over the flattened batch, every row end a boundary); these win over everything else; or
    2. with no explicit boundaries and no padding in the mask, rows carry `position_ids` that restart: a sequence
       starts wherever the position id is not the previous one plus one, and must then start at the row's first
       position id (0 by default, the collator's `position_ids_start`). Every row is split at its own restarts.
  Position ids that restart inside the real tokens of a padded batch are refused (a ValueError): such a batch is
  neither padded rows nor packed ones. Under tracing only explicit boundaries are honoured (the position-id rule
  depends on the data).

`TokenLayout` is the result for one forward, computed once by the execution plan: the mask of the padded path, or the
`seq_idx` of rows that hold several sequences (with the gather/scatter of the padding-free path).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _check_cu_seqlens(name: str, cu: torch.Tensor, total: int) -> None:
    if cu.dim() != 1 or cu.numel() < 2 or cu.dtype.is_floating_point or cu.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D integer tensor of cumulative sequence lengths [0, ..., total], got "
                         f"shape {tuple(cu.shape)} and dtype {cu.dtype}")
    values = cu.tolist()
    if values[0] != 0:
        raise ValueError(f"{name} must start at 0, got {values[0]}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be strictly increasing (no empty sequences), got {values}")
    if values[-1] != total:
        raise ValueError(f"{name} must end at the number of tokens in the batch ({total}), got {values[-1]}")


def _ids_from_cu_seqlens(cu: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """(batch, seqlen) sequence ids from cumulative lengths over the flattened batch."""
    positions = torch.arange(batch * seqlen, device=cu.device)
    ids = torch.searchsorted(cu[1:].to(positions.dtype), positions, right=True).view(batch, seqlen)
    return ids.to(torch.int32)


def _restarts(position_ids: torch.Tensor) -> torch.Tensor:
    """(batch, seqlen) bool: where a new sequence starts (the first token, or a position id that is not the previous
    plus one)."""
    step_ok = position_ids[:, 1:] == position_ids[:, :-1] + 1
    return F.pad(~step_ok, (1, 0), value=True)


def _ids_from_restarts(starts: torch.Tensor) -> torch.Tensor:
    return (starts.long().cumsum(-1) - 1).to(torch.int32)


def packed_sequence_ids(batch, seqlen, attention_mask, position_ids, seq_idx, cu_seq_lens_q, cu_seq_lens_k,
                        tracing: bool):
    """(batch, seqlen) int32 sequence ids when the rows are packed (rules in the module docstring), else None.

    Raises ValueError for malformed boundaries and for packed rows combined with padding.
    """
    ids = None
    if cu_seq_lens_q is not None or cu_seq_lens_k is not None:
        if cu_seq_lens_q is not None and cu_seq_lens_k is not None and not tracing:
            if cu_seq_lens_q.shape != cu_seq_lens_k.shape or not torch.equal(cu_seq_lens_q, cu_seq_lens_k):
                raise ValueError("cu_seq_lens_q and cu_seq_lens_k must be equal: Hydra mixes each sequence with itself")
        cu = cu_seq_lens_q if cu_seq_lens_q is not None else cu_seq_lens_k
        if not tracing:
            _check_cu_seqlens("cu_seq_lens_q" if cu_seq_lens_q is not None else "cu_seq_lens_k", cu, batch * seqlen)
            row_ends = set(range(seqlen, batch * seqlen + 1, seqlen))
            if not row_ends <= set(cu.tolist()):
                raise ValueError("cu_seq_lens_q must have a boundary at the end of every row: a sequence cannot "
                                 "continue into the next row")
        ids = _ids_from_cu_seqlens(cu, batch, seqlen)
    if seq_idx is not None:
        if tuple(seq_idx.shape) != (batch, seqlen) or seq_idx.dtype.is_floating_point or seq_idx.dtype == torch.bool:
            raise ValueError(f"seq_idx must be an integer tensor of shape (batch, seqlen) = {(batch, seqlen)}, got "
                             f"shape {tuple(seq_idx.shape)} and dtype {seq_idx.dtype}")
        if not tracing and seqlen > 1 and bool((seq_idx[:, 1:] < seq_idx[:, :-1]).any()):
            raise ValueError("seq_idx must be non-decreasing along each row (tokens of one sequence are contiguous)")
        # Renumbered from its boundaries, compared in the caller's integer type: ids that differ only above 32 bits
        # (e.g. by 2**32) stay different sequences.
        renumbered = _ids_from_restarts(_boundaries(seq_idx))
        if ids is not None and not tracing and not torch.equal(renumbered, ids):
            raise ValueError("seq_idx and cu_seq_lens_q describe different sequence boundaries")
        ids = renumbered
    explicit = ids is not None
    if not explicit and (tracing or position_ids is None or seqlen == 1):
        return None
    if not explicit:
        starts = _restarts(position_ids)
        restarting = starts[:, 1:]
        if attention_mask is not None and not bool(attention_mask.all()):
            real = attention_mask.bool()
            if bool((restarting & real[:, 1:] & real[:, :-1]).any()):
                raise ValueError("position_ids restart inside the real tokens of a padded batch: pass either packed "
                                 "rows without padding (e.g. DataCollatorWithFlattening) or padded rows whose "
                                 "position_ids count up through each row's real tokens.")
            return None  # a padded batch: never split by its position ids
        if not bool(restarting.any()):
            return None  # ordinary position ids
        ids = _ids_from_restarts(starts)
    if attention_mask is not None and not tracing and not bool(attention_mask.all()):
        raise ValueError("Packed rows (sequence boundaries from seq_idx, cu_seq_lens_* or restarting position_ids) "
                         "cannot also carry padding in attention_mask: pass either a padded batch with its mask or "
                         "packed rows without padding.")
    if position_ids is not None and not tracing:
        _check_packed_positions(position_ids, ids)
    return ids


def _boundaries(ids: torch.Tensor) -> torch.Tensor:
    """(batch, seqlen) bool: the first token of each sequence of `ids`."""
    return F.pad(ids[:, 1:] != ids[:, :-1], (1, 0), value=True)


def _check_packed_positions(position_ids: torch.Tensor, ids: torch.Tensor) -> None:
    starts = _boundaries(ids)
    first = position_ids[:, :1].expand_as(position_ids)
    wrong_start = starts & (position_ids != first)
    wrong_step = ~starts & (position_ids != F.pad(position_ids[:, :-1], (1, 0)) + 1)
    if bool((wrong_start | wrong_step).any()):
        where = int((wrong_start | wrong_step).flatten().nonzero()[0])
        raise ValueError(
            f"position_ids of packed rows must restart at {int(first.flatten()[0])} where each sequence starts and "
            f"count up by one inside it; token {where} breaks that"
        )


def positions_in_sequence(ids: torch.Tensor) -> torch.Tensor:
    """(batch, seqlen) long: each token's index inside its sequence."""
    index = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    start = torch.cummax(torch.where(_boundaries(ids), index, 0), dim=-1).values
    return index - start


def sequence_starts(ids: torch.Tensor) -> torch.Tensor:
    """Flat indices (over batch * seqlen) of the first token of each sequence."""
    return _boundaries(ids).flatten().nonzero().squeeze(-1)


@dataclass
class Unpadded:
    """The real tokens of a padded batch, re-laid without padding.

    Whole sequences are packed in order into rows of `width` slots (next fit), so that a row holds several short
    sequences and no sequence is split; the slots left at a row's end form one more, inert sequence. When the
    longest sequence is longer than `max_width`, all sequences share one row of exactly the real tokens.

    src: (total,) flat positions (over batch * seqlen) of the real tokens; dest: (total,) their flat slots (over
    rows * width); seq_idx: (rows, width) int32, non-decreasing along each row.
    """

    src: torch.Tensor
    dest: torch.Tensor
    seq_idx: torch.Tensor
    batch: int
    seqlen: int

    def gather(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """(batch, seqlen, ...) -> (rows, width, ...), zeros in the unused slots."""
        if t is None:
            return None
        rows, width = self.seq_idx.shape
        flat = t.new_zeros((rows * width, *t.shape[2:])).index_copy(0, self.dest, t.flatten(0, 1)[self.src])
        return flat.view(rows, width, *t.shape[2:])

    def scatter(self, t: torch.Tensor) -> torch.Tensor:
        """(rows, width, ...) -> (batch, seqlen, ...), zeros at padded positions."""
        real = t.flatten(0, 1)[self.dest]
        flat = t.new_zeros((self.batch * self.seqlen, *t.shape[2:])).index_copy(0, self.src, real)
        return flat.view(self.batch, self.seqlen, *t.shape[2:])


def unpad(mask: torch.Tensor, max_width: int) -> Unpadded | None:
    """The padding-free layout of a (batch, seqlen) bool mask; None when a row has holes or no row has a token.

    max_width: the widest row of whole sequences (the execution plan passes the longest row its backend runs as one
    SSD chunk, so that such rows need no state passing)."""
    batch, seqlen = mask.shape
    edges = (F.pad(mask, (1, 1)).int().diff(dim=1) != 0).sum(1)  # 2 for one run of real tokens, 0 for none
    lengths_t = mask.sum(1)
    first_t = mask.int().argmax(1)  # (batch,) first real position of each row
    stats = torch.cat([lengths_t, (edges > 2).any().view(1)]).tolist()  # one host sync
    lengths, holes = stats[:-1], stats[-1]
    total = sum(lengths)
    if holes or total == 0:
        return None
    longest = max(lengths)
    width = max(16, 1 << (longest - 1).bit_length())
    if width > max_width:
        width = total
    base, row, used = [], 0, 0
    for n in lengths:  # next fit
        if n and used + n > width:
            row, used = row + 1, 0
        base.append(row * width + used)
        used += n
    rows = row + 1
    device = mask.device
    src = mask.flatten().nonzero().squeeze(-1)  # (total,)
    owner = torch.div(src, seqlen, rounding_mode="floor")  # (total,) row of each real token
    dest = torch.tensor(base, device=device)[owner] + (src - owner * seqlen - first_t[owner])
    slots = torch.arange(rows * width, device=device)
    seq_idx = (batch + torch.div(slots, width, rounding_mode="floor")).index_copy(0, dest, owner)
    return Unpadded(src, dest, seq_idx.view(rows, width).to(torch.int32), batch, seqlen)


def global_sequence_ids(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """For (batch, seqlen) sequence ids: each token's sequence number over the whole batch (batch * seqlen,) long,
    the flat index of each sequence's first token (count,), and the number of sequences."""
    starts_mask = _boundaries(ids).flatten()
    starts = starts_mask.nonzero().squeeze(-1)
    return starts_mask.long().cumsum(0) - 1, starts, starts.numel()


@dataclass
class TokenLayout:
    """Where one forward's tokens sit, computed once (see the module docstring).

    mask: (batch, seqlen) bool, True at real tokens: the padded path with padding (what the mixers mask); else None.
    batch_mask: the caller's mask as (batch, seqlen) bool when it has padding, whatever the path (for pooling).
    seq_idx: (rows, width) int32 sequence ids of rows that hold several sequences (padding-free or packed); else None.
    unpadded: the gather/scatter between the caller's padded batch and the padding-free rows; else None.
    packed_ids: the caller's own packed rows' ids (batch, seqlen), for per-sequence pooling; else None.
    """

    mask: torch.Tensor | None = None
    batch_mask: torch.Tensor | None = None
    seq_idx: torch.Tensor | None = None
    unpadded: Unpadded | None = None
    packed_ids: torch.Tensor | None = None
