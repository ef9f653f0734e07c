"""Shared fixtures: tiny Hydra configs and the paths of the repository's assets."""

from pathlib import Path

import pytest
import torch

from configuration_hydra import HydraConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_DIR = REPO_ROOT / "assets" / "tokenizer" / "bert-base-uncased"
SHARED_DIR = REPO_ROOT.parent / "shared"


def tiny_config(**overrides) -> HydraConfig:
    """A 2-layer Hydra small enough for CPU tests (hidden 32, 8 heads of 8, 2 groups, chunk 8)."""
    kwargs = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, d_state=8, headdim=8, ngroups=2,
                  chunk_size=8, hidden_dropout_prob=0.0)
    kwargs.update(overrides)
    return HydraConfig(**kwargs)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
