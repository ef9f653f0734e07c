"""The heads' losses under transformers' loss contract (modeling_hydra/head_losses.py).

The real `transformers.Trainer` takes one optimizer step with gradient accumulation 2 x batch 8 and with one batch of
16: for every head the logged loss and the gradients are the same. `num_items_in_batch` is honoured by every head
(also as the tensor shapes the Trainer hands over), a run_swag-style fine-tuning of a saved multiple-choice checkpoint
works through remote code, and the span loss ignores answer positions outside the sequence or on padding (BERT's
ignore index) and is 0, not NaN, when every position is ignored.
"""

import math
import os
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F
from transformers import (AutoModelForMultipleChoice, AutoTokenizer, DataCollatorForMultipleChoice, Trainer,
                          TrainerCallback, TrainingArguments)

from conftest import REPO_ROOT, TOKENIZER_DIR, tiny_config
from modeling_hydra import (HydraForMaskedLM, HydraForMultipleChoice, HydraForQuestionAnswering,
                            HydraForSequenceClassification, HydraForTokenClassification)
from modeling_hydra.head_losses import cross_entropy_loss, question_answering_loss, sequence_classification_loss
from packing_helpers import randomize_weights

pytestmark = pytest.mark.usefixtures("single_thread")

NUM_LABELS = 3
NUM_CHOICES = 3
EXAMPLES = 16
# (head, config overrides): every head and every problem type of sequence classification
HEADS = {
    "masked_lm": (HydraForMaskedLM, {}),
    "token_classification": (HydraForTokenClassification, {"num_labels": NUM_LABELS}),
    "single_label": (HydraForSequenceClassification, {"num_labels": NUM_LABELS}),
    "multi_label": (HydraForSequenceClassification, {"num_labels": NUM_LABELS,
                                                     "problem_type": "multi_label_classification"}),
    "regression": (HydraForSequenceClassification, {"num_labels": 1}),
    "question_answering": (HydraForQuestionAnswering, {}),
    "multiple_choice": (HydraForMultipleChoice, {}),
}


def make_examples(head, vocab_size, seed=0):
    """EXAMPLES unpadded examples of random lengths (2-13 tokens) with labels. Token-level heads score a random number
    of tokens per example (0 for some), so the two halves of a batch score different numbers of tokens and a
    per-micro-batch mean would differ from the mean over the step."""
    g = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(EXAMPLES):
        n = int(torch.randint(2, 14, (1,), generator=g))
        if head == "multiple_choice":
            lengths = torch.randint(2, 14, (NUM_CHOICES,), generator=g).tolist()
            examples.append({"input_ids": [torch.randint(1, vocab_size, (m,), generator=g).tolist() for m in lengths],
                             "labels": int(torch.randint(0, NUM_CHOICES, (1,), generator=g))})
            continue
        example = {"input_ids": torch.randint(1, vocab_size, (n,), generator=g).tolist()}
        if head in ("masked_lm", "token_classification"):
            high = vocab_size if head == "masked_lm" else NUM_LABELS
            labels = torch.randint(0, high, (n,), generator=g)
            scored = torch.rand(n, generator=g) < (0.0 if i % 5 == 0 else 0.4)  # no scored token in every 5th
            example["labels"] = labels.masked_fill(~scored, -100).tolist()
        elif head == "single_label":
            example["labels"] = int(torch.randint(0, NUM_LABELS, (1,), generator=g))
        elif head == "multi_label":
            example["labels"] = torch.randint(0, 2, (NUM_LABELS,), generator=g).float().tolist()
        elif head == "regression":
            example["labels"] = float(torch.randn(1, generator=g))
        else:  # question answering: every example answerable (the Trainer gives QA no count, see head_losses.py)
            start = int(torch.randint(0, n, (1,), generator=g))
            example["start_positions"] = start
            example["end_positions"] = int(torch.randint(start, n, (1,), generator=g))
        examples.append(example)
    return examples


def collate(examples):
    """Right-pads to the longest sequence of the batch: ids with 0, token labels with -100."""
    def pad(rows, value):
        width = max(len(r) for r in rows)
        return torch.tensor([r + [value] * (width - len(r)) for r in rows])

    if isinstance(examples[0]["input_ids"][0], list):  # multiple choice: (batch, num_choices, seqlen)
        rows = [choice for e in examples for choice in e["input_ids"]]
        ids = pad(rows, 0).view(len(examples), NUM_CHOICES, -1)
        return {"input_ids": ids, "attention_mask": (pad([[1] * len(r) for r in rows], 0)).view_as(ids),
                "labels": torch.tensor([e["labels"] for e in examples])}
    batch = {"input_ids": pad([e["input_ids"] for e in examples], 0),
             "attention_mask": pad([[1] * len(e["input_ids"]) for e in examples], 0)}
    for key in examples[0].keys() - {"input_ids"}:
        values = [e[key] for e in examples]
        token_labels = isinstance(values[0], list) and isinstance(values[0][0], int)  # (multi-label: floats)
        batch[key] = pad(values, -100) if token_labels else torch.tensor(values)
    return batch


class GradientRecorder(TrainerCallback):
    """Keeps a copy of every gradient just before the optimizer step (after accumulation)."""

    def __init__(self):
        self.grads = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def one_trainer_step(model, examples, batch_size, accumulation, output_dir):
    """Logged loss and gradients of one optimizer step of the real Trainer (SGD with lr 0, no clipping)."""
    recorder = GradientRecorder()
    args = TrainingArguments(output_dir=str(output_dir), per_device_train_batch_size=batch_size,
                             gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=0.0, optim="sgd",
                             lr_scheduler_type="constant", max_grad_norm=0.0, logging_steps=1, save_strategy="no",
                             report_to="none", use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=collate, callbacks=[recorder])
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 1 and recorder.grads, (trainer.state.log_history, recorder.grads)
    return losses[0], recorder.grads


@pytest.mark.parametrize("head", list(HEADS))
def test_gradient_accumulation_gives_the_loss_and_gradients_of_one_large_batch(head, tmp_path):
    """2 x 8 with accumulation against 16 at once: the logged loss and every gradient agree, and both equal the
    model's own mean loss over the 16 examples in one forward (an independent, Trainer-free reference).

    Tolerances: float32 sums over at most a few hundred terms in a different order differ by well under 1e-5
    relatively; the bugs this catches are factors (2x the loss and gradients, or per-micro-batch means)."""
    model_class, overrides = HEADS[head]
    config = tiny_config(**overrides)
    weights = randomize_weights(model_class(config), scale=0.3).state_dict()
    examples = make_examples(head, config.vocab_size)

    def fresh_model():
        model = model_class(tiny_config(**overrides))
        model.load_state_dict(weights)
        return model

    reference_model = fresh_model().eval()
    with torch.no_grad():
        reference = reference_model(**collate(examples)).loss.item()
    loss_ga, grads_ga = one_trainer_step(fresh_model(), examples, 8, 2, tmp_path / "ga")
    loss_one, grads_one = one_trainer_step(fresh_model(), examples, EXAMPLES, 1, tmp_path / "one")

    assert loss_one == pytest.approx(reference, rel=1e-5)
    assert loss_ga == pytest.approx(reference, rel=1e-5), f"accumulated {loss_ga} vs one batch {reference}"
    assert grads_ga.keys() == grads_one.keys() and len(grads_one) > 10
    scale = max(g.abs().max().item() for g in grads_one.values())
    worst = max((grads_ga[n] - grads_one[n]).abs().max().item() for n in grads_one) / scale
    assert worst <= 1e-5, f"gradients differ by {worst:.2e} of their largest entry"


# ----------------------------------------------------------------------- num_items_in_batch, head by head


def split_batch_losses(model, batch, num_items):
    """The loss of each half of `batch`, given the count of the whole batch as the Trainer gives it."""
    half = batch["input_ids"].shape[0] // 2
    return [model(**{k: v[part] for k, v in batch.items()}, num_items_in_batch=num_items).loss
            for part in (slice(0, half), slice(half, None))]


@pytest.mark.parametrize("head", [h for h in HEADS if h != "question_answering"])
@pytest.mark.parametrize("as_type", ["tensor", "int", "dataparallel"])
def test_summed_half_batch_losses_equal_the_full_batch_loss(head, as_type):
    """With `num_items_in_batch` = the scored labels of the whole batch (the Trainer's count), the losses of the two
    halves add up to the loss of the whole batch, in float64 to rounding. The count may come as a 0-d tensor, an int
    or the (1, 1) tensor DataParallel hands each replica."""
    model_class, overrides = HEADS[head]
    model = randomize_weights(model_class(tiny_config(**overrides)), scale=0.3).double().eval()
    batch = collate(make_examples(head, model.config.vocab_size))
    batch = {k: v.double() if v.dtype == torch.float32 else v for k, v in batch.items()}
    count = batch["labels"].ne(-100).sum()
    num_items = {"tensor": count, "int": int(count), "dataparallel": count.reshape(1, 1)}[as_type]
    with torch.no_grad():
        whole = model(**batch).loss
        halves = split_batch_losses(model, batch, num_items)
    assert halves[0].shape == ()
    assert torch.allclose(halves[0] + halves[1], whole, rtol=1e-12, atol=0)


def test_question_answering_honours_num_items_in_batch():
    """For QA (where the Trainer passes no count) a given count normalises the summed start and end losses."""
    model = randomize_weights(HydraForQuestionAnswering(tiny_config()), scale=0.3).double().eval()
    batch = collate(make_examples("question_answering", model.config.vocab_size))
    with torch.no_grad():
        whole = model(**batch).loss
        halves = split_batch_losses(model, batch, EXAMPLES)
    assert torch.allclose(halves[0] + halves[1], whole, rtol=1e-12, atol=0)


def test_loss_kwargs_never_reach_the_base_model(monkeypatch):
    """The heads consume `num_items_in_batch`; the encoder does not see it."""
    model = HydraForTokenClassification(tiny_config(num_labels=NUM_LABELS)).eval()
    seen = {}
    original = type(model.hydra).forward

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model.hydra), "forward", spy)
    model(torch.tensor([[5, 6, 7]]), labels=torch.tensor([[1, -100, 2]]), num_items_in_batch=torch.tensor(2))
    assert seen and "num_items_in_batch" not in seen


def test_every_head_declares_that_it_accepts_loss_kwargs():
    for model_class, overrides in HEADS.values():
        assert model_class(tiny_config(**overrides)).accepts_loss_kwargs is True


@pytest.mark.parametrize("bad", [torch.tensor([3, 4]), -1, "8", float("nan")])
def test_a_malformed_count_is_refused(bad):
    logits, labels = torch.randn(4, NUM_LABELS), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="num_items_in_batch"):
        cross_entropy_loss(logits, labels, num_items_in_batch=bad)


def test_sequence_losses_ignore_minus_100_entries_against_a_float64_reference():
    """Multi-label BCE and two-output regression skip entries labelled -100 (the Trainer does not count them), and
    a zero count (nothing scored in the step) gives 0 with zero gradients, not 0 / 0."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, NUM_LABELS, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 2, (5, NUM_LABELS), generator=g).double()
    targets[1, 2] = targets[3, 0] = -100
    keep = targets != -100
    for problem_type in ("multi_label_classification", "regression"):
        config = tiny_config(num_labels=NUM_LABELS, problem_type=problem_type)
        x, y = logits[keep].detach(), targets[keep]
        if problem_type == "regression":
            expected = ((x - y) ** 2).mean()
        else:
            p = torch.sigmoid(x)
            expected = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
        assert torch.allclose(sequence_classification_loss(config, logits, targets), expected, rtol=1e-12)
        assert torch.allclose(sequence_classification_loss(config, logits, targets, num_items_in_batch=20),
                              expected * keep.sum() / 20, rtol=1e-12)
        nothing = sequence_classification_loss(config, logits, torch.full_like(targets, -100), num_items_in_batch=0)
        nothing.backward()
        assert nothing.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
        logits.grad = None


def test_cross_entropy_of_half_precision_logits_is_summed_in_float32():
    """bfloat16 logits: the loss is computed from their float32 values (a bfloat16 sum of many terms would lose
    about 3 digits)."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(512, 7, generator=g).bfloat16()
    labels = torch.randint(0, 7, (512,), generator=g)
    loss = cross_entropy_loss(logits, labels)
    assert loss.dtype == torch.float32
    expected = F.cross_entropy(logits.double(), labels)
    assert abs(loss.double() - expected).item() <= 1e-6 * expected.item()


# ------------------------------------------------------------------------------------- run_swag-style use


def test_run_swag_style_fine_tuning_of_a_saved_multiple_choice_model(tmp_path):
    """As transformers' examples/pytorch/multiple-choice/run_swag.py does it: a checkpoint loaded through remote code
    with AutoModelForMultipleChoice, features from the tokenizer on (context, ending) pairs,
    DataCollatorForMultipleChoice, and Trainer train + evaluate with gradient accumulation (the Trainer passes
    num_items_in_batch; HydraForMultipleChoice raised a ValueError on it)."""
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    HydraForMultipleChoice(tiny_config(vocab_size=tokenizer.vocab_size)).save_pretrained(tmp_path / "checkpoint")
    model = AutoModelForMultipleChoice.from_pretrained(tmp_path / "checkpoint", trust_remote_code=True)
    assert type(model).__module__ != HydraForMultipleChoice.__module__  # the saved copy, not this package
    contexts = ["a man sits at a piano.", "the dog runs across the park.", "she opens the book.",
                "two kids kick a ball.", "the chef slices onions.", "a car stops at the light."] * 2
    endings = ["he starts to play.", "it chases a ball.", "the rain falls.", "a bird sings."]
    features = []
    for i, context in enumerate(contexts):
        encoded = tokenizer([context] * 4, [endings[(i + k) % 4] for k in range(4)], truncation=True)
        features.append({**{k: v for k, v in encoded.items()}, "labels": i % 4})
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2,
                             per_device_eval_batch_size=4, gradient_accumulation_steps=2, max_steps=2,
                             learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                             disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=features, eval_dataset=features,
                      processing_class=tokenizer, data_collator=DataCollatorForMultipleChoice(tokenizer))
    assert trainer.model_accepts_loss_kwargs
    train_loss = trainer.train().training_loss
    metrics = trainer.evaluate()
    assert math.isfinite(train_loss) and 0 < train_loss < 2 * math.log(4)
    assert math.isfinite(metrics["eval_loss"]) and 0 < metrics["eval_loss"] < 2 * math.log(4)


# --------------------------------------------------------------------------------------- the span loss


def span_loss_by_hand(start_logits, end_logits, starts, ends, real):
    """float64: the mean of the start and end cross-entropies over the positions inside the real tokens, each a
    softmax over the real tokens only; 0 for a side without any such position."""
    def side(logits, positions):
        terms = [torch.logsumexp(logits[i][real[i]].double(), 0) - logits[i, p].double()
                 for i, p in enumerate(positions.tolist()) if 0 <= p < logits.shape[1] and real[i, p]]
        return torch.stack(terms).mean() if terms else torch.zeros((), dtype=torch.float64)
    return (side(start_logits, starts) + side(end_logits, ends)) / 2


def test_span_targets_on_padding_or_outside_are_ignored():
    """A start or end position on a padded token (attention_mask 0) is ignored like one past the end: the loss stays
    of the order of log(seqlen), not ~1.7e38, and equals the float64 reference."""
    model = randomize_weights(HydraForQuestionAnswering(tiny_config()), scale=0.3).eval()
    mask = torch.tensor([[1] * 9 + [0] * 3, [1] * 5 + [0] * 7, [1] * 12, [0] * 4 + [1] * 8])
    ids = torch.randint(1, model.config.vocab_size, mask.shape)
    starts = torch.tensor([10, 2, 30, 1])  # on padding, real, past the end, on (left) padding
    ends = torch.tensor([4, 8, 11, 6])     # real, on padding, real, real
    with torch.no_grad():
        out = model(ids, attention_mask=mask, start_positions=starts, end_positions=ends)
    expected = span_loss_by_hand(out.start_logits, out.end_logits, starts, ends, mask.bool())
    assert out.loss.item() < 10
    assert torch.allclose(out.loss.double(), expected, rtol=1e-5)


def test_span_loss_without_any_scored_position_is_zero_with_zero_gradients():
    """Every position past the end or on padding: loss 0 and finite (zero) gradients, not NaN (0 / 0)."""
    model = randomize_weights(HydraForQuestionAnswering(tiny_config()), scale=0.3).train()
    mask = torch.tensor([[1] * 6 + [0] * 2, [1] * 8])
    ids = torch.randint(1, model.config.vocab_size, mask.shape)
    out = model(ids, attention_mask=mask, start_positions=torch.tensor([7, 8]), end_positions=torch.tensor([6, 50]))
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters() if p.grad is not None)


def test_span_loss_functions_refuse_malformed_positions():
    logits = torch.randn(2, 5)
    with pytest.raises(ValueError, match="start_positions must hold integer"):
        question_answering_loss(logits, logits, torch.tensor([1.0, 2.0]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="end_positions must hold one index per row"):
        question_answering_loss(logits, logits, torch.tensor([1, 2]), torch.tensor([1, 2, 3]))


# ---------------------------------------------------------------------------- data parallelism and sharding


def test_no_split_modules_keep_every_hydra_layer_on_one_device():
    """`device_map="auto"` places whole `HydraLayer`s (their residual adds the layer's input to the mixer's output,
    and the mixer reads its own A_log, D and dt_bias next to its submodules); without the declaration accelerate
    would split a layer across devices with this memory budget."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import compute_module_sizes

    model = HydraForSequenceClassification(tiny_config(num_hidden_layers=4))
    assert set(model._no_split_modules) == {"HydraLayer"}
    layer = compute_module_sizes(model)["hydra.encoder.layer.0"]
    budget = {"cpu": int(layer * 1.5), "disk": 10**9}
    placed = infer_auto_device_map(model, max_memory=budget, no_split_module_classes=model._no_split_modules)
    inside_a_layer = [name for name in placed if name.startswith("hydra.encoder.layer.") and name.count(".") > 3]
    assert not inside_a_layer, placed
    assert len(set(placed.values())) == 2  # the budget does force a split: between layers
    assert [n for n in infer_auto_device_map(model, max_memory=budget) if n.count(".") > 3]  # the test can fail


def test_two_process_ddp_and_fsdp2_give_the_loss_and_update_of_one_batch():
    """scripts/fsdp_cpu_check.py: the Trainer under torchrun (DDP over gloo, 2 x 8) and PyTorch FSDP2 sharding every
    HydraLayer (2 x 8) take the same SGD step and log the same loss as one process with batch 16. (The Trainer's own
    `--fsdp full_shard` is not sharded on CPU by accelerate; `python scripts/fsdp_cpu_check.py` reports it.)"""
    command = [sys.executable, str(REPO_ROOT / "scripts" / "fsdp_cpu_check.py"), "--modes", "ddp", "fsdp2"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600,
                               env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    lines = completed.stdout.splitlines()
    assert any(line.startswith("ddp:") and ": OK;" in line and "DistributedDataParallel" in line for line in lines)
    assert any(line.startswith("fsdp2:") and ": OK;" in line and "FSDPHydraLayer" in line for line in lines)
