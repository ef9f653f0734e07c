"""Shared fixtures: tiny Hydra configs, the paths of the repository's assets, a Hub-cache layout helper."""

import hashlib
import os
from pathlib import Path

import pytest
import torch

import modeling_hydra
from configuration_hydra import HydraConfig, HydraVisionConfig

# pytest's assertion messages in transformers' common tests (test_transformers_common.py,
# test_vision_transformers_common.py), registered before either imports them
pytest.register_assert_rewrite("transformers_sdist_tests")

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_DIR = REPO_ROOT / "assets" / "tokenizer" / "bert-base-uncased"
SHARED_DIR = REPO_ROOT.parent / "shared"
# HydraModel and every text task head (the vision classes have their own tests, tests/test_vision*.py)
MODEL_CLASSES = [getattr(modeling_hydra, name) for name in modeling_hydra.modeling_hydra.__all__
                 if name != "HydraPreTrainedModel"]


def tiny_config(**overrides) -> HydraConfig:
    """A 2-layer Hydra small enough for CPU tests (hidden 32, 8 heads of 8, 2 groups, chunk 8)."""
    kwargs = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, d_state=8, headdim=8, ngroups=2,
                  chunk_size=8, hidden_dropout_prob=0.0)
    kwargs.update(overrides)
    return HydraConfig(**kwargs)


def tiny_vision_config(**overrides) -> HydraVisionConfig:
    """configs/hydra-vit-tiny.json: 2 layers, hidden 32, 4x4 patches of 32x32 RGB images, MLP 64, no dropout."""
    kwargs = dict(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, intermediate_size=64, d_state=8,
                  headdim=8, ngroups=2, chunk_size=8)
    kwargs.update(overrides)
    return HydraVisionConfig(**kwargs)


def run_mixer(mixer, u, attention_mask=None, seq_idx=None):
    """One mixer alone on u (batch, seqlen, hidden), through the execution plan a model's forward would build."""
    from modeling_hydra.execution_plan import build_execution_plan

    plan = build_execution_plan(mixer.config, batch=u.shape[0], seqlen=u.shape[1], device=u.device, dtype=u.dtype,
                                training=mixer.training, gradient_checkpointing=False,
                                attention_mask=attention_mask, packed_ids=seq_idx)
    rows = plan.layout.unpadded  # the padding-free layout, as HydraModel lays out a padded batch
    return mixer(u, plan) if rows is None else rows.scatter(mixer(rows.gather(u), plan))


def perturb_ssm_parameters(model, seed=0):
    """Move every layer's A_log, D and dt_bias off their init values, so that a re-initialization would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.base_model.encoder.layer:
            for p in (layer.mixer.A_log, layer.mixer.D, layer.mixer.dt_bias):
                p.add_(torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def single_thread():
    """Run a test with one intra-op thread: tiny models gain nothing from more, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def lay_out_as_hub_cache(folder: Path, cache: Path, repo_id: str) -> str:
    """Copy `folder` into `cache` the way huggingface_hub stores a downloaded model repo; returns the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()  # any 40-hex revision
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for file in sorted(folder.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    return commit
