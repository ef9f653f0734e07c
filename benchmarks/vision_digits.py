"""Hydra vision against a ViT of matched parameters (and a Hydra whose mixer is bypassed) on scikit-learn's 8x8
digits through the stock Trainer, offline: a sanity check that the model learns, far from ImageNet.

Two tasks (hydra_glue/digits.py): "digits" (10 classes, 1400 train / 397 test images) and "scrambled" (the same
plus a patch-shuffled copy of every image as an 11th class; a model without sequence mixing cannot exceed 0.5). Every
model sees 8x8 grayscale images as 16 patches of 2x2, hidden size 32, 2 layers, and the same Trainer settings
(AdamW, lr 3e-3, cosine, batch 64, 12 epochs); the ViT's MLP width is chosen to match Hydra's parameter count. Each
cell is the mean test accuracy over --seeds (the min-max in brackets):

    python benchmarks/vision_digits.py --seeds 0 1 2 --json digits.json
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

import torch
from transformers import ViTConfig, ViTForImageClassification
from transformers.utils import logging

from configuration_hydra import HydraVisionConfig
from hydra_transformers.glue.digits import SCRAMBLED, digits_examples, train_and_evaluate
from modeling_hydra import HydraForImageClassification

HIDDEN, LAYERS = 32, 2


def hydra(num_labels, bypass_mixer=False):
    config = HydraVisionConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=HIDDEN,
                               num_hidden_layers=LAYERS, intermediate_size=64, d_state=8, headdim=8, ngroups=2,
                               chunk_size=8, num_labels=num_labels, ssd_backend="torch")
    model = HydraForImageClassification(config)
    if bypass_mixer:  # every block's mixer outputs zeros: patches never meet before the mean
        for layer in model.hydra.encoder.layer:
            layer.mixer.forward = lambda hidden_states, *args, **kwargs: torch.zeros_like(hidden_states)
    return model


def vit(num_labels, target_parameters):
    """ViT (class token, position embeddings, SDPA) of the same width, depth and patches, MLP width matched."""
    def build(intermediate):
        return ViTForImageClassification(ViTConfig(
            image_size=8, patch_size=2, num_channels=1, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
            num_attention_heads=4, intermediate_size=intermediate, num_labels=num_labels, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, attn_implementation="sdpa"))

    count = lambda intermediate: sum(p.numel() for p in build(intermediate).parameters())
    per_unit = (count(128) - count(64)) / 64
    return build(max(8, round(64 + (target_parameters - count(64)) / per_unit)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.set_verbosity_error()

    results = {}
    for task, scramble in (("digits", False), ("scrambled", True)):
        num_labels = SCRAMBLED + 1 if scramble else 10
        for seed in args.seeds:
            train, test = digits_examples(scramble=scramble, seed=seed)
            torch.manual_seed(seed)
            target = sum(p.numel() for p in hydra(num_labels).parameters())
            builders = {"hydra": lambda: hydra(num_labels), "vit": lambda: vit(num_labels, target),
                        "hydra, mixer bypassed": lambda: hydra(num_labels, bypass_mixer=True)}
            for name, build in builders.items():
                torch.manual_seed(seed)
                model = build()
                with tempfile.TemporaryDirectory() as output_dir:
                    accuracy = train_and_evaluate(model, train, test, output_dir, epochs=args.epochs, seed=seed)
                entry = results.setdefault(task, {}).setdefault(name, {"parameters": sum(
                    p.numel() for p in model.parameters()), "accuracy": []})
                entry["accuracy"].append(accuracy)
                print(f"{task} seed {seed} {name}: {accuracy:.4f} (load average {os.getloadavg()[0]:.1f})",
                      flush=True)

    print(f"\n| model | parameters | digits (10 classes) | digits + scrambled (11 classes, bag-of-patches ceiling 0.5) |")
    print("|---|---|---|---|")
    for name in results["digits"]:
        cells = []
        for task in ("digits", "scrambled"):
            values = results[task][name]["accuracy"]
            cells.append(f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        print(f"| {name} | {results['digits'][name]['parameters']:,} | {cells[0]} | {cells[1]} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
