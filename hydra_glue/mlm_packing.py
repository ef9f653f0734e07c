"""Masked-LM batches as packed rows: every example is masked as `DataCollatorForLanguageModeling` masks it, then the
batch is flattened into one row of whole sequences with no padding, in the layout of `DataCollatorWithFlattening`
(`position_ids` restarting at `position_ids_start` for each sequence; optionally `seq_idx` and the flash-attention
kwargs `cu_seq_lens_q/k`, `max_length_q/k`).

The stock `DataCollatorWithFlattening` cannot be used for MLM: it writes causal-LM labels (the inputs shifted, a
separator at each sequence start). Here the labels are MLM labels: the original token at the selected positions,
-100 everywhere else.

    collator = DataCollatorForPackedLanguageModeling(tokenizer, mlm_probability=0.15)
    batch = collator([tokenizer(text, return_special_tokens_mask=True) for text in texts])
    loss = HydraForMaskedLM(...)(**batch).loss   # each sequence computed as if it were alone

Only models that keep the sequences of a packed row apart may be fed these batches (Hydra does, from the restarting
`position_ids`); an attention model without flash-attention varlen kernels would let the sequences see each other.
"""

from dataclasses import dataclass

import torch
from transformers import DataCollatorForLanguageModeling


@dataclass
class DataCollatorForPackedLanguageModeling(DataCollatorForLanguageModeling):
    """`DataCollatorForLanguageModeling` (MLM only) whose batches are one packed row of whole sequences.

    The masking is the parent's, drawn on the padded batch, so with the same random state a packed batch holds
    exactly the masked tokens and labels of the padded batch the parent collator would return. Examples whose
    attention_mask is all zero are left out. Returns (1, total_tokens) `input_ids`, `labels`, `position_ids` and
    `token_type_ids` (when the examples have them); with `return_seq_idx` an int32 `seq_idx`; with
    `return_flash_attn_kwargs` int32 `cu_seq_lens_q` = `cu_seq_lens_k` and the int `max_length_q` = `max_length_k`.
    """

    return_flash_attn_kwargs: bool = False
    return_seq_idx: bool = False
    position_ids_start: int = 0

    def __post_init__(self):
        if not self.mlm:
            raise ValueError("DataCollatorForPackedLanguageModeling makes masked-LM batches (mlm=True); for causal-LM "
                             "packing use transformers' DataCollatorWithFlattening.")
        if self.return_tensors != "pt":
            raise ValueError(f"DataCollatorForPackedLanguageModeling returns torch tensors (return_tensors='pt'), got "
                             f"return_tensors={self.return_tensors!r}")
        super().__post_init__()

    def numpy_call(self, examples):
        raise ValueError("DataCollatorForPackedLanguageModeling returns torch tensors only: call it with "
                         "return_tensors='pt'.")

    def torch_call(self, examples):
        padded = super().torch_call(examples)  # (batch, longest) input_ids, labels, attention_mask, ...
        input_ids = padded["input_ids"]
        if "attention_mask" in padded:
            real = padded["attention_mask"].bool()  # (batch, longest)
        else:  # examples given as bare token lists of a tokenizer without attention masks
            lengths = torch.tensor([len(e["input_ids"] if isinstance(e, dict) else e) for e in examples])
            positions = torch.arange(input_ids.shape[1])
            if self.tokenizer.padding_side == "left":
                real = positions[None] >= input_ids.shape[1] - lengths[:, None]
            else:
                real = positions[None] < lengths[:, None]
        lengths = real.sum(1)
        lengths = lengths[lengths > 0]
        if lengths.numel() == 0:
            raise ValueError("DataCollatorForPackedLanguageModeling received a batch in which every example is empty.")

        batch = {name: padded[name][real][None] for name in ("input_ids", "labels", "token_type_ids")
                 if name in padded}  # (1, total): the real tokens in order, row by row
        starts = torch.cumsum(lengths, 0) - lengths  # (num_sequences,) first slot of each sequence
        seq_idx = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)  # (total,)
        batch["position_ids"] = (torch.arange(int(lengths.sum())) - starts[seq_idx] + self.position_ids_start)[None]
        if self.return_seq_idx:
            batch["seq_idx"] = seq_idx.to(torch.int32)[None]
        if self.return_flash_attn_kwargs:
            cu_seq_lens = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).to(torch.int32)
            batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = cu_seq_lens
            batch["max_length_q"] = batch["max_length_k"] = int(lengths.max())
        return batch
