"""One sequence per row: the layout in which every matrix mixer is block-diagonal by construction.

A forward's tokens sit in padded rows (an attention mask, padding on any side) or in rows that hold several
sequences (`seq_idx`: padding-free rows, whose unused end slots form one inert filler sequence, or the caller's packed
rows). The matrix-mixer families index their matrices by the position inside a sequence, so they run on *sequence
rows*: each real sequence moved to a row of its own, starting at position 0, right-padded to the longest one.
`gather` builds that layout, `scatter` puts the results back (zeros elsewhere). Padded rows keep their batch row: a
stable sort moves the real tokens to the front, the rows are cut to the longest sequence in eager mode and keep their
full width when `static` (tracing/export: no shape depends on the data).
"""

import torch

from .sequence_layout import Unpadded, global_sequence_ids, positions_in_sequence


class SequenceRows:
    """The map between a plan's token layout (batch, seqlen) and one-sequence rows (rows, width).

    keep: None (no padding) or (rows, width) bool, True at real tokens; position: (batch, seqlen) long, each token's
    index inside its sequence; width: the row length of the sequence rows (the longest sequence, eager mode).
    """

    def __init__(self, layout, batch: int, seqlen: int, device: torch.device, static: bool = False):
        self.batch, self.seqlen = batch, seqlen
        self.mask = layout.mask
        self.unpadded = None
        index = torch.arange(seqlen, device=device)
        if layout.seq_idx is not None:
            self.unpadded, self.keep, self.position = self._per_sequence(layout, batch, seqlen, device)
            self.width = self.keep.shape[1]
        elif self.mask is None:
            self.keep, self.width = None, seqlen
            self.position = index.expand(batch, seqlen)
        else:
            self.order = torch.sort(~self.mask, dim=1, stable=True).indices  # (batch, seqlen): real tokens first
            counts = self.mask.sum(dim=1, keepdim=True)  # (batch, 1)
            self.width = seqlen if static else int(counts.max())
            self.keep = index[:self.width] < counts  # (batch, width)
            self.position = (self.mask.long().cumsum(dim=1) - 1).clamp(min=0)

    @staticmethod
    def _per_sequence(layout, batch, seqlen, device):
        """Rows of several sequences -> one row per real sequence. The real slots of padding-free rows are those
        the plan filled (`layout.unpadded.dest`); the filler sequence at a row's end gets no row."""
        flat = batch * seqlen
        real = torch.ones(flat, dtype=torch.bool, device=device)
        if layout.unpadded is not None:
            real = torch.zeros(flat, dtype=torch.bool, device=device).index_fill(0, layout.unpadded.dest, True)
        position = positions_in_sequence(layout.seq_idx)  # (batch, seqlen)
        ids = global_sequence_ids(layout.seq_idx)[0]  # (flat,) sequence number of each slot
        src = real.nonzero().squeeze(-1)  # (n_real,)
        # renumber the real sequences 0..count-1
        starts = torch.ones_like(src, dtype=torch.bool)
        starts[1:] = ids[src[1:]] != ids[src[:-1]]
        number = starts.long().cumsum(0) - 1
        offset = position.flatten()[src]
        stats = torch.stack([number[-1] + 1, offset.max() + 1]).tolist() if src.numel() else [0, 0]  # one sync
        count, longest = stats
        dest = number * longest + offset
        keep = torch.zeros(count * longest, dtype=torch.bool, device=device).index_fill(0, dest, True)
        return Unpadded(src, dest, keep.view(count, longest), batch, seqlen), keep.view(count, longest), position

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """(batch, seqlen, *rest) -> (rows, width, *rest), zeros after each sequence's end."""
        if self.unpadded is not None:
            return self.unpadded.gather(t)
        if self.mask is None:
            return t
        index = self.order.view(self.batch, self.seqlen, *([1] * (t.dim() - 2))).expand_as(t)
        return torch.where(self._keep_like(t), t.gather(1, index)[:, :self.width], 0.0)

    def scatter(self, t: torch.Tensor) -> torch.Tensor:
        """(rows, width, *rest) -> (batch, seqlen, *rest), zeros at padded positions."""
        if self.unpadded is not None:
            return self.unpadded.scatter(t)
        if self.mask is None:
            return t
        t = torch.cat([t, t.new_zeros(self.batch, self.seqlen - self.width, *t.shape[2:])], dim=1)
        index = self.order.view(self.batch, self.seqlen, *([1] * (t.dim() - 2))).expand_as(t)
        out = torch.zeros_like(t).scatter(1, index, t)
        return torch.where(self.mask.view(self.batch, self.seqlen, *([1] * (t.dim() - 2))), out, 0.0)

    def _keep_like(self, t):
        return self.keep.view(*self.keep.shape, *([1] * (t.dim() - 2)))
