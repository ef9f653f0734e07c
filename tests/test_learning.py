"""A tiny HydraForSequenceClassification learns a task that only the backward scan can solve.

Each row is [CLS] followed by random filler, with two decisive tokens at positions 10 and 12; the label is the XOR
of their values. The classifier pools position 0. There the forward scan sees nothing (y_f[0] = 0) and the
non-causal convolutions (kernel 7, two layers) reach only positions 0..6, so without the backward scan the pooled
vector cannot depend on the decisive tokens. The same model with the backward scan switched off (its step sizes set
to zero by a test-local wrapper of the SSD function) is the control.
"""

import pytest
import torch

import modeling_hydra.execution_plan as execution_plan
from conftest import tiny_config
from modeling_hydra import HydraForSequenceClassification
from modeling_hydra.ssd_backends import SSD_BACKENDS
from modeling_hydra.ssd_torch import ssd_bidirectional_torch

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only contend

SEQLEN, CLS, VOCAB = 16, 1, 30
DECISIVE_POSITIONS = (10, 12)
TOKENS = ((2, 3), (4, 5))  # the two values of the first and of the second decisive token
STEPS, BATCH, LR = 300, 32, 3e-3


def xor_batch(n, generator):
    """(input_ids, labels): filler ids 6..29, [CLS] first, label = bit(first decisive) XOR bit(second)."""
    ids = torch.randint(6, VOCAB, (n, SEQLEN), generator=generator)
    ids[:, 0] = CLS
    bits = torch.randint(0, 2, (2, n), generator=generator)
    for position, values, bit in zip(DECISIVE_POSITIONS, TOKENS, bits):
        ids[:, position] = torch.tensor(values)[bit]
    return ids, bits[0] ^ bits[1]


def forward_scan_only(x, dt_f, dt_b, *args, **kwargs):
    """The SSD with the backward direction switched off (dt_b = 0: no input, decay 1)."""
    return ssd_bidirectional_torch(x, dt_f, torch.zeros_like(dt_b), *args, **kwargs)


def train_and_evaluate():
    torch.manual_seed(0)
    model = HydraForSequenceClassification(tiny_config(vocab_size=VOCAB, num_labels=2, chunk_size=16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    generator = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        ids, labels = xor_batch(BATCH, generator)
        loss = model(ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    ids, labels = xor_batch(1000, torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(ids).logits
        flipped = ids.clone()
        flipped[:, DECISIVE_POSITIONS[0]] = sum(TOKENS[0]) - ids[:, DECISIVE_POSITIONS[0]]
        flipped_logits = model(flipped).logits
    accuracy = (logits.argmax(-1) == labels).float().mean().item()
    return accuracy, (logits - flipped_logits).abs().max().item()


def test_bidirectional_model_learns_what_forward_only_cannot(monkeypatch):
    accuracy, sensitivity = train_and_evaluate()
    assert accuracy >= 0.9, f"the bidirectional model reached only {accuracy:.3f}"
    assert sensitivity > 0.1

    monkeypatch.setattr(execution_plan, "resolve_ssd_backend",
                        lambda name, device: (SSD_BACKENDS["torch"], forward_scan_only))
    accuracy, sensitivity = train_and_evaluate()
    assert sensitivity == pytest.approx(0.0, abs=1e-6), "the forward-only control sees the decisive tokens"
    assert abs(accuracy - 0.5) < 0.06, f"the forward-only control reached {accuracy:.3f}, not chance"
