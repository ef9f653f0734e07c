"""Issue 18 §2: FLOP ceilings of the speed targets. Counts the forward FLOPs per computed position of Hydra and BERT
(`FlopCounterMode`: matmul, bmm, convolution; BERT's QK^T and PV are added by hand since CPU SDPA is not counted) on
(1) the GLUE batches (Hydra-small vs BERT-small, SST-2 train batches of 32 and dev batches of 64; Hydra computes the
slots of its padding-free bins, BERT the padded positions) and (2) the padded rows of benchmarks/benchmark.py's pairs.
BERT FLOPs / Hydra FLOPs is the Hydra/BERT speed ratio at equal FLOP efficiency.

    PYTHONPATH=. .venv/bin/python benchmarks/perf18/flop_ceilings.py
"""

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers.utils import logging

from _common import batches, benchmark, classifier, sst2
from modeling_hydra.sequence_layout import unpad


def attention_flops(config, batch: int, seqlen: int) -> int:
    return config.num_hidden_layers * batch * 4 * seqlen * seqlen * config.hidden_size


def flops(model, **inputs) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**inputs)
    return counter.get_total_flops()


def main():
    logging.set_verbosity_error()
    _, col, train, dev, nl = sst2()
    models = {n: classifier(n, nl) for n in ("hydra", "bert")}
    print("| batches | Hydra GFLOP | BERT GFLOP (attention incl.) | Hydra positions (real share) | BERT positions "
          "(real share) | ceiling |")
    print("|---|---:|---:|---|---|---:|")
    for name, bb in (("train x 32", batches(col, train, 32)), ("dev x 64", batches(col, dev, 64))):
        total = {"hydra": 0, "bert": 0}
        real = sum(int(b["attention_mask"].sum()) for b in bb)
        slots = sum(unpad(b["attention_mask"] != 0).seq_idx.numel() for b in bb)
        padded = sum(b["input_ids"].numel() for b in bb)
        for b in bb:
            total["hydra"] += flops(models["hydra"], **b)
            total["bert"] += flops(models["bert"], **b) + attention_flops(models["bert"].config, *b["input_ids"].shape)
        print(f"| {name} | {total['hydra'] / 1e9:.1f} | {total['bert'] / 1e9:.1f} | {slots} ({real / slots:.0%}) | "
              f"{padded} ({real / padded:.0%}) | **{total['bert'] / total['hydra']:.2f}** |")
    print("\n| pair | L x batch | Hydra MFLOP/token | BERT MFLOP/token | ceiling |")
    print("|---|---|---:|---:|---:|")
    for pair, L, b in (("small", 128, 32), ("small", 512, 8), ("base", 512, 4), ("base", 2048, 1), ("small", 8192, 1)):
        per = {}
        for kind in ("hydra", "bert"):
            model = benchmark.build(kind, pair, L, None).eval()
            ids = torch.randint(1, 30000, (b, L))
            per[kind] = flops(model, input_ids=ids, attention_mask=torch.ones_like(ids))
            if kind == "bert":
                per[kind] += attention_flops(model.config, b, L)
        print(f"| {pair} | {L} x {b} | {per['hydra'] / (b * L) / 1e6:.2f} | {per['bert'] / (b * L) / 1e6:.2f} | "
              f"**{per['bert'] / per['hydra']:.2f}** |")


if __name__ == "__main__":
    main()
