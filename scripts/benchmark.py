"""Throughput and memory of HydraModel against transformers' BertModel (SDPA) at matched encoder parameters.

Runs in one process with interleaved timings (Hydra, BERT, Hydra, BERT, ...) and reports medians, the ratio
Hydra/BERT, the fraction of this machine's measured fp32 matmul rate (model FLOPs: the forward's matmul FLOPs counted
by torch's FlopCounterMode, times 3 for training, so recomputation is not counted as work), and peak memory of one step, each measured in a fresh subprocess as the growth of the resident set:
once with glibc's default allocator settings ("rss") and once with MALLOC_MMAP_THRESHOLD_=65536, which returns freed
blocks to the system at once so that the peak counts live tensors only ("live"). Example (BENCHMARKS.md):

    python scripts/benchmark.py --pairs small base --lengths 128 512 2048 8192 --tokens 8192
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel

from configuration_hydra import HydraConfig
from modeling_hydra import HydraModel

# name: (hydra kwargs, bert kwargs); matched encoder parameter counts (printed at start).
PAIRS = {
    "small": (dict(hidden_size=256, num_hidden_layers=7),
              dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)),
    "base": (dict(hidden_size=768, num_hidden_layers=23),
             dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)),
}


def build(kind: str, pair: str, seqlen: int, chunk_size: int | None):
    hydra_kwargs, bert_kwargs = PAIRS[pair]
    if kind == "hydra":
        cfg = HydraConfig(vocab_size=30528, hidden_dropout_prob=0.0, ssd_backend="torch", **hydra_kwargs)
        if chunk_size:
            cfg.chunk_size = chunk_size
        model = HydraModel(cfg, add_pooling_layer=False)
    else:
        cfg = BertConfig(vocab_size=30522, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                         max_position_embeddings=max(512, seqlen), attn_implementation="sdpa", **bert_kwargs)
        model = BertModel(cfg, add_pooling_layer=False)
    return model


def encoder_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith("encoder."))


def make_step(model, batch: int, seqlen: int, train: bool):
    ids = torch.randint(1, 30000, (batch, seqlen))
    mask = torch.ones(batch, seqlen, dtype=torch.long)
    if train:
        model.train()

        def step():
            model.zero_grad(set_to_none=True)
            model(input_ids=ids, attention_mask=mask).last_hidden_state.float().pow(2).mean().backward()
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                model(input_ids=ids, attention_mask=mask)
    return step


def count_flops(model, batch: int, seqlen: int, train: bool) -> int:
    """Model FLOPs of one step: the forward's matmul FLOPs (counted by torch), times 3 for forward+backward."""
    with FlopCounterMode(display=False) as counter:
        make_step(model, batch, seqlen, train=False)()
    return counter.get_total_flops() * (3 if train else 1)


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times)


def peak_memory_mb(kind, pair, seqlen, batch, train, chunk_size, live: bool) -> float:
    """Peak RSS growth of one step (MB), measured in a fresh process so that peaks of other runs do not mask it."""
    args = json.dumps([kind, pair, seqlen, batch, train, chunk_size])
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536") if live else None
    out = subprocess.run([sys.executable, __file__, "--_peak", args], capture_output=True, text=True, check=True,
                         env=env)
    return float(out.stdout.strip().splitlines()[-1])


def _rss_kb(field: str) -> int:
    """VmRSS or VmHWM (peak) of this process in kB (ru_maxrss would inherit the parent's peak across exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _peak_child(args_json: str):
    kind, pair, seqlen, batch, train, chunk_size = json.loads(args_json)
    torch.set_num_threads(2)
    model = build(kind, pair, seqlen, chunk_size)
    step = make_step(model, batch, seqlen, train)
    base = max(_rss_kb("VmRSS"), _rss_kb("VmHWM"))
    step()
    print((_rss_kb("VmHWM") - base) / 1024)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="+", default=["small", "base"], choices=sorted(PAIRS))
    parser.add_argument("--lengths", nargs="+", type=int, default=[128, 512, 2048, 8192])
    parser.add_argument("--tokens", type=int, default=8192, help="tokens per batch (batch = tokens // length)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per model (median reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["forward", "train"], choices=["forward", "train"])
    parser.add_argument("--chunk_size", type=int, default=None, help="override Hydra's chunk size")
    parser.add_argument("--no_memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--_peak", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._peak:
        return _peak_child(args._peak)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rate = matmul_rate()
    print(f"# torch {torch.__version__}, {args.threads} threads, fp32 matmul rate {rate / 1e9:.1f} GFLOP/s")
    mem_head = "" if args.no_memory else (" hydra rss MB | bert rss MB | ratio | hydra live MB | bert live MB |"
                                           " ratio |")
    print("| pair | mode | L x batch | hydra tok/s | bert tok/s | ratio | hydra mm-frac | bert mm-frac |" + mem_head)
    print("|---" * (8 if args.no_memory else 14) + "|")
    rows = []
    for pair in args.pairs:
        models = {kind: build(kind, pair, max(args.lengths), args.chunk_size) for kind in ("hydra", "bert")}
        print(f"# pair {pair}: encoder params hydra {encoder_params(models['hydra']) / 1e6:.2f}M, "
              f"bert {encoder_params(models['bert']) / 1e6:.2f}M")
        for seqlen in args.lengths:
            batch = max(1, args.tokens // seqlen)
            for mode in args.modes:
                train = mode == "train"
                flops = {kind: count_flops(m, batch, seqlen, train) for kind, m in models.items()}
                steps = {kind: make_step(m, batch, seqlen, train) for kind, m in models.items()}
                times = {kind: [] for kind in steps}
                for kind, step in steps.items():  # warm-up
                    step()
                for _ in range(args.repeats):
                    for kind, step in steps.items():
                        t0 = time.perf_counter()
                        step()
                        times[kind].append(time.perf_counter() - t0)
                row = dict(pair=pair, seqlen=seqlen, batch=batch, mode=mode)
                for kind in steps:
                    t = statistics.median(times[kind])
                    row[f"{kind}_tok_s"] = batch * seqlen / t
                    row[f"{kind}_mm_frac"] = flops[kind] / t / rate
                    for live in ([] if args.no_memory else [False, True]):
                        row[f"{kind}_{'live' if live else 'rss'}_mb"] = peak_memory_mb(
                            kind, pair, seqlen, batch, train, args.chunk_size, live)
                row["ratio"] = row["hydra_tok_s"] / row["bert_tok_s"]
                mem = ""
                if not args.no_memory:
                    for key in ("rss", "live"):
                        row[f"{key}_ratio"] = row[f"hydra_{key}_mb"] / max(row[f"bert_{key}_mb"], 1.0)
                    mem = (f" | {row['hydra_rss_mb']:6.0f} | {row['bert_rss_mb']:6.0f} | {row['rss_ratio']:5.2f}"
                           f" | {row['hydra_live_mb']:6.0f} | {row['bert_live_mb']:6.0f} | {row['live_ratio']:5.2f}")
                rows.append(row)
                print(f"| {pair:5s} | {mode:7s} | {seqlen:5d} x {batch:3d} | {row['hydra_tok_s']:9.0f} | "
                      f"{row['bert_tok_s']:9.0f} | {row['ratio']:5.2f} | {row['hydra_mm_frac']:5.2f} | "
                      f"{row['bert_mm_frac']:5.2f}{mem} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
