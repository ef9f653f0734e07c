"""Generate the README.md model card of a converted Hydra folder from the template hydra-bert-base.md.

    python model_cards/generate_model_card.py --model_dir out/hydra-bert-base --model_id org/hydra-bert-base \
        [--results results.json] [--source "hydra.pt (sha256 ...)"]

convert/convert_original_checkpoint.py calls `render_model_card` when it writes a folder; this command regenerates
the card, e.g. once evaluation results exist. The card holds no number that was not measured: the architecture is
read from config.json, the parameter count from model.safetensors, and evaluation numbers only from a results file:

    {"source": "how and where they were measured (command, date, hardware)",
     "results": [{"task": "SST-2", "metric": "accuracy", "value": 0.912, "split": "dev"}, ...]}

(`split` is optional; `{"SST-2": {"accuracy": 0.912}, ...}` is accepted as well); every value must be a finite
number. The card is written atomically (a temporary file in the folder, then renamed over README.md): a README.md
that is a symlink is replaced by the new file, never written through. Standard library only.
"""

import argparse
import json
import math
import os
import struct
import sys
import tempfile
from pathlib import Path
from string import Template

TEMPLATE = Path(__file__).with_name("hydra-bert-base.md")

FILL_MASK_USAGE = '''```python
from transformers import AutoModelForSequenceClassification, pipeline

fill_mask = pipeline("fill-mask", model="$model_id", trust_remote_code=True)
print(fill_mask("The capital of France is [MASK]."))

# Fine-tuning starts from the pretrained encoder with a new classification head:
model = AutoModelForSequenceClassification.from_pretrained("$model_id", trust_remote_code=True, num_labels=2)
```'''

CLASSIFICATION_USAGE = '''```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("$model_id", trust_remote_code=True)
model = AutoModelForSequenceClassification.from_pretrained("$model_id", trust_remote_code=True)
inputs = tokenizer(["A first sentence.", "A second, longer sentence."], padding=True, return_tensors="pt")
with torch.no_grad():
    probabilities = model(**inputs).logits.softmax(-1)
```'''

# architectures[0] of config.json -> (pipeline tag, usage snippet)
TASKS = {
    "HydraForMaskedLM": ("fill-mask", FILL_MASK_USAGE),
    "HydraForSequenceClassification": ("text-classification", CLASSIFICATION_USAGE),
}


def count_parameters(safetensors_path) -> int:
    """Number of values stored in a .safetensors file, read from its JSON header."""
    with open(safetensors_path, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_size))
    return sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")


def read_results(path) -> dict:
    """Parse a results file (format in the module docstring) into {"source": str, "results": [row, ...]}."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict) and "results" in data:
        rows, source = data["results"], data.get("source", "")
    elif isinstance(data, dict):
        rows, source = [], ""
        for task, metrics in data.items():
            if not isinstance(metrics, dict):
                raise ValueError(f"{path}: results of {task!r} must map metric names to numbers, got {metrics!r}")
            rows += [{"task": task, "metric": metric, "value": value} for metric, value in metrics.items()]
    else:
        raise ValueError(f"{path}: expected a JSON object with a 'results' list, got {type(data).__name__}")
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: 'results' must be a non-empty list")
    for row in rows:
        if not isinstance(row, dict) or not {"task", "metric", "value"} <= set(row):
            raise ValueError(f"{path}: each result needs 'task', 'metric' and 'value', got {row!r}")
        if not isinstance(row["value"], (int, float)) or isinstance(row["value"], bool):
            raise ValueError(f"{path}: the value of {row['task']} {row['metric']} is not a number: {row['value']!r}")
        if not math.isfinite(row["value"]):
            raise ValueError(f"{path}: the value of {row['task']} {row['metric']} is not finite: {row['value']!r}; "
                             "a model card holds measured numbers only")
    return {"source": str(source), "results": rows}


def _results_section(results) -> str:
    if results is None:
        return ("No evaluation results are included with this conversion. The authors report GLUE results for "
                "their pretrained Hydra in the paper ([arXiv:2407.09941](https://arxiv.org/abs/2407.09941)).")
    lines = ["| Task | Split | Metric | Value |", "|---|---|---|---|"]
    lines += [f"| {r['task']} | {r.get('split', '')} | {r['metric']} | {r['value']:.4g} |" for r in results["results"]]
    if results["source"]:
        lines += ["", f"Measured with this conversion: {results['source']}"]
    return "\n".join(lines)


def _architecture_rows(config: dict, n_parameters: int) -> str:
    d_inner = config["expand"] * config["hidden_size"]
    norm = "pre-norm with a final LayerNorm" if config["is_prenorm"] else "post-norm"
    positions = (f"learned, up to {config['max_position_embeddings']} tokens" if config["use_position_embeddings"]
                 else "none (the model itself has no length limit)")
    rows = [
        ("class", f"`{config['architectures'][0]}`"),
        ("layers", f"{config['num_hidden_layers']} Hydra layers ({norm}, no MLP)"),
        ("hidden size", config["hidden_size"]),
        ("Hydra mixer", f"d_state {config['d_state']}, {d_inner // config['headdim']} heads of {config['headdim']}, "
                        f"expand {config['expand']}, convolution width {config['d_conv']}"),
        ("position embeddings", positions),
        ("vocabulary", f"{config['vocab_size']} rows (bert-base-uncased tokenizer, padded to a multiple of 8)"),
        ("parameters", f"{n_parameters:,}"),
    ]
    if config["architectures"][0] == "HydraForSequenceClassification":
        rows.append(("labels", ", ".join(str(v) for v in config.get("id2label", {}).values())))
        rows.append(("pooling", "mean of all tokens" if config["classifier_pooling"] == "mean" else "first token"))
    return "\n".join(f"| {name} | {value} |" for name, value in rows)


def render_model_card(model_dir, model_id: str, license: str = "mit", source: str = "the original checkpoint",
                      results=None) -> str:
    """The model card of the converted folder `model_dir` (config.json and model.safetensors must exist)."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    architecture = config["architectures"][0]
    if architecture not in TASKS:
        raise ValueError(f"no model card for {architecture}; known: {', '.join(TASKS)}")
    pipeline_tag, usage = TASKS[architecture]
    task_note = ("It has a sequence-classification head with "
                 f"{len(config.get('id2label', {}))} labels, converted from a fine-tuned original checkpoint."
                 if architecture == "HydraForSequenceClassification" else
                 "It has the masked-language-modeling head of pretraining.")
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        license=license,
        pipeline_tag=pipeline_tag,
        model_id=model_id,
        task_note=task_note,
        architecture_rows=_architecture_rows(config, count_parameters(model_dir / "model.safetensors")),
        usage=Template(usage).substitute(model_id=model_id),
        results_section=_results_section(results),
        source=source,
    )


def write_model_card(model_dir, card: str) -> Path:
    """Write `card` to model_dir/README.md atomically; a README.md symlink is replaced, its target left alone."""
    path = Path(model_dir) / "README.md"
    fd, tmp = tempfile.mkstemp(prefix=".README.md.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(card)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it a plain file's permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write README.md, the model card of a converted Hydra folder.")
    parser.add_argument("--model_dir", required=True, help="converted folder (config.json, model.safetensors)")
    parser.add_argument("--model_id", required=True,
                        help="Hub id used in the card's examples, e.g. org/hydra-bert-base")
    parser.add_argument("--results",
                        help="JSON file of measured evaluation results (format: see this file's docstring)")
    parser.add_argument("--license", default="mit", help="license in the card's metadata (default: mit)")
    parser.add_argument("--source", default="the original checkpoint", help="what the weights were converted from")
    args = parser.parse_args(argv)
    try:
        results = read_results(args.results) if args.results else None
        card = render_model_card(args.model_dir, args.model_id, args.license, args.source, results)
        write_model_card(args.model_dir, card)
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
