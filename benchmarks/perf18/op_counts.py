"""Issue 18 §2(a, c): aten ops and host reads per eval forward (one SST-2 dev batch of 64) and the fixed cost of a
forward (CPU time of a forward of 2 short sentences, min of 60), Hydra-small vs BERT-small, 1 thread; then the aten
calls of Hydra's forward with patches/01 and 02 applied.

    PYTHONPATH=. .venv/bin/python benchmarks/perf18/op_counts.py
"""

import tempfile
from pathlib import Path

import time

import torch
from torch.profiler import ProfilerActivity, profile
from transformers.utils import logging

from _common import REPO, batches, benchmark, classifier, sst2
from ab_patches import patched_package


def main():
    logging.set_verbosity_error()
    torch.set_num_threads(1)
    _, col, _, dev, nl = sst2()
    batch = batches(col, dev, 64)[0]
    tiny = dict(col([dev[i] for i in range(2)]))
    for name in ("hydra", "bert"):
        model = classifier(name, nl)
        with torch.no_grad():
            model(**batch)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                model(**batch)
            counts = {e.key: e.count for e in prof.key_averages()}
            times = []
            for _ in range(60):
                c = time.process_time()
                model(**tiny)
                times.append(time.process_time() - c)
        aten = sum(c for k, c in counts.items() if k.startswith("aten::"))
        print(f"{name}: {aten} aten calls per forward ({model.config.num_hidden_layers} layers), host reads "
              f"(_local_scalar_dense) {counts.get('aten::_local_scalar_dense', 0)}, nonzero "
              f"{counts.get('aten::nonzero', 0)}; forward of 2 sentences {tuple(tiny['input_ids'].shape)}: "
              f"{min(times) * 1e3:.2f} ms CPU (min of 60)")
    config = benchmark.load_classifier_config(str(REPO / "configs/hydra-small.json"), {}, nl)
    package = patched_package("ops01_02", ["01", "02"], Path(tempfile.mkdtemp()))
    torch.manual_seed(0)
    model = package.HydraForSequenceClassification(config).eval()
    with torch.no_grad():
        model(**batch)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(**batch)
    aten = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
    print(f"hydra with patches 01 + 02: {aten} aten calls per forward")
    print(f"# loadavg {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
