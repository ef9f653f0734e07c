"""Issue 18 §2: ms per eval batch by component, Hydra-small vs BERT-small (SST-2 dev, batch 64, model alone).

Times every component of one eval forward (no_grad, eval mode) with module hooks and wrapped functions, summed
over the 14 dev batches and divided by 14; "rest" is the whole forward minus the named parts (the model's
top-of-forward checks, splits, activations, residuals, ...). Wall and process CPU time; run at each thread count.

    PYTHONPATH=. .venv/bin/python benchmarks/perf18/components.py --threads 1 2 --repeats 3
"""

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import AutoTokenizer, DataCollatorWithPadding
from transformers.utils import logging

import modeling_hydra.hydra_mixer as hm
import modeling_hydra.modeling_hydra as mh

from _common import REPO, benchmark

build_classifier = benchmark.build_classifier
load_classifier_config = benchmark.load_classifier_config
tokenized_glue_splits = benchmark.tokenized_glue_splits

ACC = defaultdict(lambda: [0.0, 0.0])
STACK = []


def start():
    STACK.append((time.perf_counter(), time.process_time()))


def stop(name):
    w, c = STACK.pop()
    ACC[name][0] += time.perf_counter() - w
    ACC[name][1] += time.process_time() - c


def hook(module, name):
    module.register_forward_pre_hook(lambda *a: start())
    module.register_forward_hook(lambda *a: stop(name))


def wrap(fn, name):
    def timed(*a, **k):
        start()
        out = fn(*a, **k)
        stop(name)
        return out
    return timed


def instrument_hydra(model):
    mh.unpad = wrap(mh.unpad, "unpad (layout)")
    hm.depthwise_conv1d = wrap(hm.depthwise_conv1d, "conv (spread, conv, collect)")
    resolve = hm.resolve_ssd_backend
    hm.resolve_ssd_backend = lambda *a: (lambda b: (b[0], wrap(b[1], "ssd")))(resolve(*a))
    hook(model.hydra.embeddings, "embeddings")
    for layer in model.hydra.encoder.layer:
        hook(layer.mixer.in_proj, "in_proj")
        hook(layer.mixer.out_proj, "out_proj")
        hook(layer.mixer.fc_D, "fc_D")
        hook(layer.mixer.norm, "gated norm")
        hook(layer.norm, "layer norm")
    hook(model.hydra.pooler, "pooler")
    hook(model.classifier, "classifier")


def instrument_bert(model):
    hook(model.bert.embeddings, "embeddings")
    for layer in model.bert.encoder.layer:
        hook(layer.attention.self, "self-attention (qkv + sdpa)")
        hook(layer.attention.output, "attention output (dense, LN)")
        hook(layer.intermediate, "FFN up + GELU")
        hook(layer.output, "FFN down + LN")
    hook(model.bert.pooler, "pooler")
    hook(model.classifier, "classifier")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(REPO / "assets/tokenizer/bert-base-uncased")
    _, dev, nl = tokenized_glue_splits(str(REPO / "assets/glue_sample"), "sst2", tok, 128, 32, None)
    col = DataCollatorWithPadding(tok)
    batches = [dict(col([dev[i] for i in range(s, min(s + 64, len(dev)))])) for s in range(0, len(dev), 64)]
    models = {}
    for n, src in (("hydra", "configs/hydra-small.json"), ("bert", "configs/bert-small.json")):
        torch.manual_seed(0)
        models[n] = build_classifier(load_classifier_config(str(REPO / src), {}, nl)).eval()
    instrument_hydra(models["hydra"])
    instrument_bert(models["bert"])
    for threads in args.threads:
        torch.set_num_threads(threads)
        runs = {n: defaultdict(list) for n in models}
        with torch.no_grad():
            for r in range(args.repeats + 1):
                for n, m in models.items():
                    ACC.clear()
                    start()
                    for b in batches:
                        m(**b)
                    stop("whole forward")
                    if r:
                        for k, (w, c) in ACC.items():
                            runs[n][k].append((w * 1e3 / len(batches), c * 1e3 / len(batches)))
        load = open("/proc/loadavg").read().split()[0]
        for n, parts in runs.items():
            med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in parts.items()}
            named = [k for k in med if k != "whole forward"]
            rest = (med["whole forward"][0] - sum(med[k][0] for k in named),
                    med["whole forward"][1] - sum(med[k][1] for k in named))
            print(f"\n## {n}, {threads} thread(s), ms per batch (median of {args.repeats}), loadavg {load}")
            print("| component | wall ms | CPU ms | share of wall |")
            print("|---|---:|---:|---:|")
            for k in sorted(named, key=lambda k: -med[k][0]) + ["rest", "whole forward"]:
                w, c = rest if k == "rest" else med[k]
                print(f"| {k} | {w:.2f} | {c:.2f} | {w / med['whole forward'][0]:.0%} |")


if __name__ == "__main__":
    main()
