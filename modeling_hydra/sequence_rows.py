"""One sequence per row: the layout in which every matrix mixer is block-diagonal by construction.

A batch may have padding (an attention mask, on any side) and rows holding several sequences (`seq_idx`). The
matrix-mixer families index their matrices by the position inside a sequence, so they run on *sequence rows*:
each sequence moved to a row of its own, starting at position 0, right-padded to the longest one. `gather` builds
that layout, `scatter` puts the results back (zeros at padded positions). Without `seq_idx` the rows are the batch's
rows with their real tokens moved to the front by a stable sort, cut to the longest sequence in eager mode; with
`static` (tracing/export) they keep the full row width, so no shape depends on the data.
"""

import torch


class SequenceRows:
    """The map between a (batch, seqlen) layout and one-sequence-per-row, right-padded rows.

    mask: None or (batch, seqlen) bool, True at real tokens; seq_idx: None or (batch, seqlen) non-decreasing
    sequence ids (eager mode only: the number and length of the sequences are read on the host).
    """

    def __init__(self, batch: int, seqlen: int, mask: torch.Tensor | None, seq_idx: torch.Tensor | None,
                 device: torch.device, static: bool = False):
        self.batch, self.seqlen = batch, seqlen
        self.mask = mask
        self.identity = mask is None and seq_idx is None
        self.flat = seq_idx is not None
        positions = torch.arange(seqlen, device=device)
        if self.identity:
            self.keep = None
            self.width = seqlen
            self.position = positions.expand(batch, seqlen)
        elif not self.flat:
            # Real tokens first, in order: a stable sort of "is pad".
            self.order = torch.sort(~mask, dim=1, stable=True).indices  # (batch, seqlen)
            counts = mask.sum(dim=1, keepdim=True)  # (batch, 1)
            self.width = seqlen if static else int(counts.max())
            self.keep = positions[:self.width] < counts  # (batch, width)
            self.position = (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (batch, seqlen)
        else:
            real = mask if mask is not None else torch.ones(batch, seqlen, dtype=torch.bool, device=device)
            self.tokens = real.flatten().nonzero().squeeze(1)  # (n_real,) flat indices of the real tokens
            row = self.tokens // seqlen
            ids = seq_idx.flatten()[self.tokens]
            starts = torch.ones_like(self.tokens, dtype=torch.bool)
            starts[1:] = (row[1:] != row[:-1]) | (ids[1:] != ids[:-1])
            segment = starts.long().cumsum(0) - 1  # (n_real,) sequence number of each real token
            first = torch.nonzero(starts).squeeze(1)  # (n_seq,) where each sequence starts
            offset = torch.arange(self.tokens.numel(), device=device) - first[segment]  # position in the sequence
            lengths = torch.bincount(segment)
            self.rows = int(lengths.numel())
            self.width = int(lengths.max()) if self.rows else 0
            self.slots = segment * self.width + offset  # (n_real,) flat slot in (rows, width)
            self.keep = torch.zeros(self.rows * self.width, dtype=torch.bool, device=device)
            self.keep[self.slots] = True
            self.keep = self.keep.view(self.rows, self.width)
            self.position = torch.zeros(batch * seqlen, dtype=torch.long, device=device)
            self.position[self.tokens] = offset
            self.position = self.position.view(batch, seqlen)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """(batch, seqlen, *rest) -> (rows, width, *rest), zero-padded on the right."""
        if self.identity:
            return t
        if not self.flat:
            index = self.order.view(self.batch, self.seqlen, *([1] * (t.dim() - 2))).expand_as(t)
            return t.gather(1, index)[:, :self.width]
        rest = t.shape[2:]
        out = t.new_zeros(self.rows * self.width, *rest)
        out = out.index_copy(0, self.slots, t.flatten(0, 1).index_select(0, self.tokens))
        return out.view(self.rows, self.width, *rest)

    def scatter(self, t: torch.Tensor) -> torch.Tensor:
        """(rows, width, *rest) -> (batch, seqlen, *rest), zeros at padded positions."""
        if self.identity:
            return t
        if not self.flat:
            t = torch.cat([t, t.new_zeros(self.batch, self.seqlen - self.width, *t.shape[2:])], dim=1)
            index = self.order.view(self.batch, self.seqlen, *([1] * (t.dim() - 2))).expand_as(t)
            out = torch.zeros_like(t).scatter(1, index, t)
            return torch.where(self.mask.view(self.batch, self.seqlen, *([1] * (t.dim() - 2))), out, 0.0)
        rest = t.shape[2:]
        out = t.new_zeros(self.batch * self.seqlen, *rest)
        out = out.index_copy(0, self.tokens, t.flatten(0, 1).index_select(0, self.slots))
        return out.view(self.batch, self.seqlen, *rest)
