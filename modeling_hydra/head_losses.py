"""The task heads' losses, normalised so that gradient accumulation and data parallelism match one large batch.

transformers' `Trainer` counts the scored label entries of a whole optimizer step (`labels != -100` over every
micro-batch of the accumulation, and over every rank with `average_tokens_across_devices`) and passes that count to
the model as `num_items_in_batch`. A model that accepts it (`accepts_loss_kwargs`) must return

    loss = (sum of the per-entry losses of this micro-batch) / num_items_in_batch,

and the Trainer then neither divides by `gradient_accumulation_steps` nor averages the ranks' losses (it multiplies
by the number of processes to undo the data-parallel gradient mean). Summed over the micro-batches and ranks, this is
the mean over the scored entries of the whole step: the same loss and the same gradients as one batch holding them
all. (With `average_tokens_across_devices=False` the count is per process and the processes' gradients are averaged:
exact only when the processes score equal numbers of entries.) Without `num_items_in_batch` each loss is the mean
over the micro-batch's own scored entries, as BERT's.

An entry is what the Trainer counts, one element of `labels`: a token for masked LM and token classification, an
example for single-label classification, regression with one output and multiple choice, and one (example, label)
pair for multi-label classification and regression with several outputs (the mean of BCE and MSE is over these
pairs too). Entries whose label is -100 are ignored in every case, since the Trainer does not count them. An empty
count (every label ignored) gives a loss of 0 with zero gradients instead of 0 / 0.

Question answering has no `labels`, so the Trainer passes no count and divides the per-micro-batch mean by the
accumulation steps; it is exact for micro-batches with the same number of answerable examples. A caller that passes
`num_items_in_batch` for it gets `(sum of start losses + sum of end losses) / (2 * num_items_in_batch)`.
"""

import numbers

import torch
from torch.nn import functional as F

# The keyword arguments the Trainer adds to a model's inputs when the model accepts loss kwargs.
LOSS_KWARGS = ("num_items_in_batch",)

IGNORE_INDEX = -100


def pop_loss_kwargs(kwargs: dict) -> dict:
    """Remove the Trainer's loss kwargs from a head's `**kwargs` (in place) and return them, so that they never reach
    the base model."""
    return {name: kwargs.pop(name) for name in LOSS_KWARGS if name in kwargs}


def _loss_dtype(logits):
    """float32 for half-precision logits (a sum of many terms needs it), else the logits' own dtype."""
    return logits.dtype if logits.dtype in (torch.float32, torch.float64) else torch.float32


def _normalise(total, count, num_items_in_batch):
    """`total` divided by `num_items_in_batch` when given, else by `count` (this micro-batch's scored entries); a
    zero denominator becomes 1, so that a step without any scored entry has loss 0 (its `total` is 0)."""
    if num_items_in_batch is None:
        denominator = count
    elif isinstance(num_items_in_batch, torch.Tensor):
        if num_items_in_batch.numel() != 1:
            raise ValueError("num_items_in_batch must hold one number (the scored label count of the step), got a "
                             f"tensor of shape {tuple(num_items_in_batch.shape)}")
        denominator = num_items_in_batch.reshape(()).to(total.device)  # DataParallel hands each replica a (1, 1)
    elif isinstance(num_items_in_batch, numbers.Real) and not isinstance(num_items_in_batch, bool):
        if not num_items_in_batch >= 0:
            raise ValueError(f"num_items_in_batch must be a count >= 0, got {num_items_in_batch!r}")
        denominator = torch.tensor(float(num_items_in_batch), dtype=total.dtype, device=total.device)
    else:
        raise ValueError("num_items_in_batch must be a number or a one-element tensor, got "
                         f"{type(num_items_in_batch).__name__}")
    denominator = denominator.to(total.dtype)
    return total / torch.where(denominator == 0, torch.ones_like(denominator), denominator)


def cross_entropy_loss(logits, labels, num_items_in_batch=None):
    """Cross-entropy over the last dimension of `logits` for every entry of `labels` that is not -100: masked LM
    (batch, seqlen, vocab) / (batch, seqlen), token classification, single-label classification (batch, num_labels) /
    (batch,) and multiple choice (batch, num_choices) / (batch,)."""
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer class ids for a cross-entropy loss, got dtype {labels.dtype}")
    if labels.numel() * logits.shape[-1] != logits.numel():
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match logits of shape "
                         f"{tuple(logits.shape)}: one class id per row of logits is expected")
    logits = logits.reshape(-1, logits.shape[-1]).to(_loss_dtype(logits))  # (entries, classes)
    labels = labels.reshape(-1).to(logits.device).long()  # (entries,)
    total = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return _normalise(total, (labels != IGNORE_INDEX).sum(), num_items_in_batch)


def sequence_classification_loss(config, logits, labels, num_items_in_batch=None):
    """The loss of `config.problem_type` (inferred as BERT does when unset) for pooled `logits` (batch, num_labels):
    MSE for regression, cross-entropy for single-label and BCE-with-logits for multi-label classification, each a
    sum over the scored label entries normalised as described in this module's docstring."""
    num_labels = config.num_labels
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif num_labels > 1 and labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "single_label_classification":
        return cross_entropy_loss(logits, labels, num_items_in_batch)
    if config.problem_type not in ("regression", "multi_label_classification"):
        raise ValueError(f"Unknown problem_type {config.problem_type!r}; expected 'regression', "
                         "'single_label_classification' or 'multi_label_classification'.")
    labels = labels.to(logits.device)
    if num_labels == 1 and labels.numel() == logits.shape[0]:
        labels = labels.reshape(logits.shape)  # (batch,) or (batch, 1) targets of one output
    if labels.shape != logits.shape:
        raise ValueError(f"{config.problem_type} needs labels of the logits' shape {tuple(logits.shape)} "
                         f"(batch, num_labels), got {tuple(labels.shape)}")
    dtype = _loss_dtype(logits)
    logits, scored = logits.to(dtype), labels != IGNORE_INDEX  # (batch, num_labels)
    targets = torch.where(scored, labels, 0).to(dtype)
    if config.problem_type == "regression":
        per_entry = (logits - targets) ** 2
    else:
        per_entry = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    total = torch.where(scored, per_entry, 0).sum()
    return _normalise(total, scored.sum(), num_items_in_batch)


def question_answering_loss(start_logits, end_logits, start_positions, end_positions, attention_mask=None,
                            num_items_in_batch=None):
    """Span loss: the mean of the start and end cross-entropies over the positions of the sequence.

    start_logits, end_logits: (batch, seqlen); start_positions, end_positions: (batch,) (or (batch, 1)).
    As BERT does, positions are clamped to [0, seqlen] and a position at seqlen (at or past the end) is ignored.
    Padded positions (attention_mask 0) are no candidates, and a target on one is ignored too: once the padding is
    removed it lies outside the sequence. Start and end are averaged separately over their scored positions; a batch
    without any (every position ignored) has loss 0.
    """
    batch, seqlen = start_logits.shape
    real = attention_mask.to(start_logits.device) != 0 if attention_mask is not None else None  # (batch, seqlen)
    dtype = _loss_dtype(start_logits)
    totals, counts = [], []
    for name, logits, positions in (("start_positions", start_logits, start_positions),
                                    ("end_positions", end_logits, end_positions)):
        if positions.dtype.is_floating_point or positions.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer token indices, got dtype {positions.dtype}")
        if positions.numel() != batch:
            raise ValueError(f"{name} must hold one index per row (batch={batch}), got shape "
                             f"{tuple(positions.shape)}")
        positions = positions.reshape(-1).to(logits.device).long().clamp(0, seqlen)  # (batch,)
        logits = logits.to(dtype)
        scored = positions < seqlen  # (batch,)
        if real is not None:  # padded positions are no candidates: the loss does not depend on the padding
            logits = logits.masked_fill(~real, torch.finfo(dtype).min)
            scored &= real.gather(1, positions.clamp(max=seqlen - 1).unsqueeze(1)).squeeze(1)
        targets = torch.where(scored, positions, seqlen)  # seqlen is the ignored index
        totals.append(F.cross_entropy(logits, targets, ignore_index=seqlen, reduction="sum"))
        counts.append(scored.sum())
    if num_items_in_batch is None:
        return (_normalise(totals[0], counts[0], None) + _normalise(totals[1], counts[1], None)) / 2
    return _normalise(totals[0] + totals[1], None, num_items_in_batch) / 2
