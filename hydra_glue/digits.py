"""scikit-learn's 8x8 digits as an offline image-classification task for the stock Trainer (tests/test_vision.py,
benchmarks/vision_digits.py).

`digits_examples(scramble=True)` adds, for every image, a copy whose 2x2 patches are put in one fixed shuffled order,
labelled `SCRAMBLED`, with both copies of an image on the same side of the split. A copy holds the same bag of patches
as its original, so a model that sees each patch alone and then averages (a Hydra whose mixer is bypassed) gives both
the same prediction and can get at most half of such a test set right; telling them apart needs sequence mixing.
"""

import torch

SCRAMBLED = 10  # the label of a digit whose patches were shuffled
PATCH = 2
TRAIN_IMAGES = 1400  # of 1797; the other 397 are the test set


def _to_patches(images):  # (n, 8, 8) -> (n, 16, 2, 2), row-major patches
    return images.reshape(-1, 4, PATCH, 4, PATCH).permute(0, 1, 3, 2, 4).reshape(-1, 16, PATCH, PATCH)


def _from_patches(patches):  # (n, 16, 2, 2) -> (n, 8, 8)
    return patches.reshape(-1, 4, 4, PATCH, PATCH).permute(0, 1, 3, 2, 4).reshape(-1, 8, 8)


def digits_examples(scramble: bool, seed: int = 0):
    """(train, test) lists of {"pixel_values": (1, 8, 8) float in [-0.5, 0.5], "labels": int}: 10 digit classes, plus
    the class `SCRAMBLED` of patch-shuffled copies when `scramble`. The split and the shuffle depend on `seed`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0 - 0.5  # (1797, 8, 8)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(16, generator=generator)
    shuffled = _from_patches(_to_patches(images)[:, order])
    split = torch.randperm(len(images), generator=generator)

    def examples(indices):
        rows = [{"pixel_values": images[i].unsqueeze(0), "labels": int(digits.target[i])} for i in indices]
        if scramble:
            rows += [{"pixel_values": shuffled[i].unsqueeze(0), "labels": SCRAMBLED} for i in indices]
        return rows

    return examples(split[:TRAIN_IMAGES].tolist()), examples(split[TRAIN_IMAGES:].tolist())


def train_and_evaluate(model, train, test, output_dir, epochs: int = 12, learning_rate: float = 3e-3,
                       batch_size: int = 64, seed: int = 0) -> float:
    """Train `model` on `train` with the stock Trainer (AdamW, cosine schedule, CPU) and return its accuracy on
    `test`."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(output_dir), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
                             per_device_eval_batch_size=256, learning_rate=learning_rate, warmup_steps=0.05,
                             weight_decay=0.01, lr_scheduler_type="cosine", save_strategy="no", report_to=[],
                             logging_strategy="no", use_cpu=True, seed=seed, dataloader_num_workers=0,
                             disable_tqdm=True)

    def accuracy(prediction):
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=test, compute_metrics=accuracy)
    trainer.train()
    return trainer.evaluate()["eval_accuracy"]
