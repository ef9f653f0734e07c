"""Issue 18 §3: before/after of patches/*.patch on the model-alone eval forward, interleaved in one process.

Copies modeling_hydra/ to a temporary package per variant, applies the variant's patch files there (`git apply`),
imports it under its own name, builds HydraForSequenceClassification (configs/hydra-small.json) with the same
weights in every variant, checks the variants' logits agree with main's, and times the eval forward (no_grad, eval
mode) over the 14 SST-2 dev batches of 64, variants taking turns. Process CPU time and wall clock; min and median.

    PYTHONPATH=. .venv/bin/python benchmarks/perf18/ab_patches.py --variants main= ssd=01 norm=02 both=01,02
"""

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, DataCollatorWithPadding
from transformers.utils import logging

from _common import REPO, benchmark, load_package

load_classifier_config, tokenized_glue_splits = benchmark.load_classifier_config, benchmark.tokenized_glue_splits


def patched_package(name: str, patches: list[str], root: Path):
    """Import modeling_hydra with `patches` (prefixes of files in patches/) applied, as package `name`."""
    target = root / name
    shutil.copytree(REPO / "modeling_hydra", target / "modeling_hydra")
    for prefix in patches:
        (patch,) = sorted((REPO / "patches").glob(f"{prefix}*.patch"))
        subprocess.run(["git", "apply", str(patch)], cwd=target, check=True)
    return load_package(f"mh_{name}", target / "modeling_hydra")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--variants", nargs="+", default=["main=", "ssd=01", "norm=02", "both=01,02"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batch_size", type=int, default=64)
    args = p.parse_args()
    logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(REPO / "assets/tokenizer/bert-base-uncased")
    _, dev, nl = tokenized_glue_splits(str(REPO / "assets/glue_sample"), "sst2", tok, 128, 32, None)
    col = DataCollatorWithPadding(tok)
    bs = args.batch_size
    batches = [dict(col([dev[i] for i in range(s, min(s + bs, len(dev)))])) for s in range(0, len(dev), bs)]
    config = load_classifier_config(str(REPO / "configs/hydra-small.json"), {}, nl)
    root = Path(tempfile.mkdtemp())
    models, state = {}, None
    for spec in args.variants:
        name, _, patches = spec.partition("=")
        package = patched_package(name, [q for q in patches.split(",") if q], root)
        torch.manual_seed(0)
        model = package.HydraForSequenceClassification(config).eval()
        if state is None:
            state = model.state_dict()
        model.load_state_dict(state)
        models[name] = model
    with torch.no_grad():
        ref = [models[next(iter(models))](**b).logits for b in batches[:3]]
        for name, m in models.items():
            err = max((m(**b).logits - r).abs().max().item() for b, r in zip(batches, ref))
            print(f"# {name}: max |logits - first variant's| over 3 batches = {err:.1e}")
        times = {n: [] for n in models}
        for r in range(args.repeats + 1):
            for n, m in models.items():
                w, c = time.perf_counter(), time.process_time()
                for b in batches:
                    m(**b)
                if r:
                    times[n].append(((time.process_time() - c) * 1e3 / len(batches),
                                     (time.perf_counter() - w) * 1e3 / len(batches)))
    first = next(iter(times))
    base = statistics.median(c for c, _ in times[first])
    print(f"# {args.threads} thread(s), dev batches of {bs}, ms per batch, {args.repeats} interleaved repeats, loadavg "
          f"{open('/proc/loadavg').read().strip()}")
    print("| variant | CPU min | CPU median | wall median | CPU median vs first |")
    print("|---|---:|---:|---:|---:|")
    for n, v in times.items():
        cm = statistics.median(c for c, _ in v)
        print(f"| {n} | {min(c for c, _ in v):.1f} | {cm:.1f} | {statistics.median(w for _, w in v):.1f} | "
              f"{base / cm:.2f}x |")


if __name__ == "__main__":
    main()
