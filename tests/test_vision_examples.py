"""Fine-tuning a saved Hydra vision checkpoint on an imagefolder dataset as transformers' image-classification example
does it: `AutoConfig` with new labels, `AutoModelForImageClassification(..., ignore_mismatched_sizes=True,
trust_remote_code=True)` for a new head, `AutoImageProcessor`, the stock `Trainer` on `pixel_values` + `labels`; and
the upstream script `examples/pytorch/image-classification/run_image_classification.py` itself where it can be had."""

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    Trainer,
    TrainingArguments,
    ViTImageProcessor,
)

from conftest import perturb_ssm_parameters, tiny_vision_config
from modeling_hydra import HydraForImageClassification
from modeling_hydra.remote_code import write_file_atomically
from transformers_common.sdist_tests import cache_root

pytestmark = pytest.mark.usefixtures("single_thread")

EXAMPLE = "examples/pytorch/image-classification/run_image_classification.py"
CLASSES = ("horizontal", "vertical")


def write_imagefolder(root: Path, per_class: int = 8, seed: int = 0) -> Path:
    """root/train/<class>/<n>.png: 24x24 RGB noise with a bright horizontal or vertical bar."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for n in range(per_class):
            pixels = rng.integers(0, 80, (24, 24, 3), dtype=np.uint8)
            line = rng.integers(4, 20)
            if label == 0:
                pixels[line - 2:line + 2, :] = 255
            else:
                pixels[:, line - 2:line + 2] = 255
            Image.fromarray(pixels).save(folder / f"{n}.png")
    return root / "train"


def save_pretrained_checkpoint(folder: Path) -> None:
    """A 'pre-trained' tiny classifier with 3 labels (the new dataset has 2) and a ViTImageProcessor at 32x32."""
    model = perturb_ssm_parameters(HydraForImageClassification(tiny_vision_config(num_labels=3)))
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def test_fine_tune_on_an_imagefolder_with_a_new_head(tmp_path):
    datasets = pytest.importorskip("datasets")
    checkpoint = tmp_path / "pretrained"
    save_pretrained_checkpoint(checkpoint)
    train_dir = write_imagefolder(tmp_path / "data")

    dataset = datasets.load_dataset("imagefolder", data_dir=str(train_dir), split="train")
    labels = dataset.features["label"].names
    assert labels == sorted(CLASSES)
    config = AutoConfig.from_pretrained(checkpoint, num_labels=len(labels), trust_remote_code=True,
                                        id2label=dict(enumerate(labels)),
                                        label2id={name: i for i, name in enumerate(labels)},
                                        finetuning_task="image-classification")
    model = AutoModelForImageClassification.from_pretrained(checkpoint, config=config, trust_remote_code=True,
                                                            ignore_mismatched_sizes=True)
    assert model.classifier.out_features == 2
    pretrained = HydraForImageClassification.from_pretrained(checkpoint)
    assert torch.equal(model.hydra.embeddings.projection.weight, pretrained.hydra.embeddings.projection.weight)
    processor = AutoImageProcessor.from_pretrained(checkpoint)

    def transform(batch):
        batch["pixel_values"] = list(processor([image.convert("RGB") for image in batch["image"]],
                                               return_tensors="pt")["pixel_values"])
        return batch

    dataset.set_transform(transform)

    def collate(examples):
        return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
                "labels": torch.tensor([e["label"] for e in examples])}

    args = TrainingArguments(output_dir=str(tmp_path / "out"), num_train_epochs=3, per_device_train_batch_size=4,
                             learning_rate=3e-3, save_strategy="no", report_to=[], use_cpu=True,
                             remove_unused_columns=False, disable_tqdm=True, logging_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset, data_collator=collate)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    assert trainer.evaluate()["eval_loss"] < before
    trainer.save_model(str(tmp_path / "finetuned"))
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "finetuned", trust_remote_code=True)
    assert reloaded.config.id2label == {0: "horizontal", 1: "vertical"}


def upstream_example_script() -> Path:
    """The example script of the installed transformers version: from the cache, else from GitHub at the version's
    tag (the PyPI sdist does not ship examples/); skips when neither is available."""
    cached = cache_root() / transformers.__version__ / EXAMPLE
    if cached.is_file():
        return cached
    url = f"https://raw.githubusercontent.com/huggingface/transformers/v{transformers.__version__}/{EXAMPLE}"
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            source = response.read().decode("utf-8")
    except OSError as error:
        pytest.skip(f"transformers' {EXAMPLE} is not in {cached.parent} and cannot be downloaded ({error}); the PyPI "
                    "sdist does not ship examples/")
    cached.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(str(cached), source)
    return cached


def test_upstream_run_image_classification_script(tmp_path):
    """transformers' own example script fine-tunes the saved checkpoint (a new 2-class head) on an imagefolder with
    --trust_remote_code and --ignore_mismatched_sizes. It needs torchvision and evaluate (whose accuracy metric comes
    from the Hub)."""
    pytest.importorskip("torchvision", reason="the upstream example script imports torchvision")
    pytest.importorskip("evaluate", reason="the upstream example script imports evaluate")
    script = upstream_example_script()
    checkpoint = tmp_path / "pretrained"
    save_pretrained_checkpoint(checkpoint)
    train_dir = write_imagefolder(tmp_path / "data")
    output = tmp_path / "out"
    command = [sys.executable, str(script), "--model_name_or_path", str(checkpoint), "--trust_remote_code",
               "--ignore_mismatched_sizes", "--train_dir", str(train_dir), "--train_val_split", "0.25",
               "--output_dir", str(output), "--do_train", "--do_eval", "--num_train_epochs", "1",
               "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--use_cpu",
               "--remove_unused_columns", "False", "--report_to", "none", "--save_strategy", "no", "--seed", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert (output / "eval_results.json").is_file() and (output / "config.json").is_file()
    reloaded = AutoModelForImageClassification.from_pretrained(output, trust_remote_code=True)
    assert type(reloaded).__name__ == "HydraForImageClassification" and reloaded.config.num_labels == 2
