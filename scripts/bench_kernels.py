"""Correctness and speed of the bidirectional SSD backends: torch, triton (ours, fused), mamba_ssm (the official
Hydra's flip approach), and a single-direction Mamba-2 SSD for scale.

(a) Correctness: every backend against the torch path in float64, in float32 and bfloat16, on fresh random inputs
    with padded rows (dt = 0 and x = 0 at pads), the output and all nine input gradients, with the allocator's memory
    poisoned with NaN before each call (an output element a kernel forgets to write shows up as NaN); plus the whole
    HydraMixer on each backend against the torch-backend mixer.
(b) Speed: forward and forward+backward of the SSD op and of the whole HydraMixer (batch 8, d_model 768, d_state 64,
    headdim 64, chunk 256, bfloat16), CUDA events, median of --repeats, and the peak memory of one forward+backward.
(c) One table on stdout and everything in a JSON file.

On a GPU machine (mamba_ssm optional; without it its column is skipped with a note):

    python scripts/bench_kernels.py --json bench_kernels.json

Dry run on CPU, tiny shapes, Triton in its interpreter (proves the script runs; the times mean nothing):

    python scripts/bench_kernels.py --dry-run
"""

import argparse
import datetime
import functools
import json
import os
import platform
import statistics
import sys
import time

BACKENDS = ("torch", "triton", "mamba_ssm")
GPU_SHAPES = dict(batch=8, d_model=768, d_state=64, headdim=64, chunk_size=256, lengths=(512, 2048, 8192, 32768))
DRY_SHAPES = dict(batch=2, d_model=32, d_state=16, headdim=16, chunk_size=16, lengths=(19, 40))
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2}  # relative RMS error against float64


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU with Triton's interpreter")
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu (implies interpreter)")
    parser.add_argument("--lengths", type=int, nargs="*", default=None, help="sequence lengths to time")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions per cell (median reported)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed repetitions per cell")
    parser.add_argument("--skip-correctness", action="store_true")
    parser.add_argument("--json", default="bench_kernels.json", help="where to write the results")
    return parser.parse_args()


def main():
    args = parse_args()
    if args.dry_run and args.device is None:
        args.device = "cpu"
    if args.device == "cpu":
        # Read when triton is first imported (by torch/transformers below), so it must be set before.
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("on CPU the Triton kernels need the interpreter: run with --device cpu or --dry-run")
    shapes = dict(DRY_SHAPES if args.dry_run else GPU_SHAPES)
    if args.lengths:
        shapes["lengths"] = tuple(args.lengths)
    repeats = args.repeats or (1 if args.dry_run else 10)
    warmup = args.warmup if args.warmup is not None else (0 if args.dry_run else 2)
    bench = KernelBench(torch, device, shapes, repeats, warmup)

    report = bench.environment()

    def save():  # after every measurement, so that a run cut short keeps what it measured
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)

    for note in report["notes"]:
        print(f"note: {note}")
    if not args.skip_correctness:
        report["correctness"] = bench.correctness()
        save()
        print_correctness(report["correctness"])
    report["timing"] = []
    bench.timing(report["timing"], save)
    print_timing(report["timing"], device.type == "cuda")
    report["targets"] = targets(report["timing"])
    for line in report["targets"]:
        print(line)
    save()
    print(f"wrote {args.json}")
    if any(not row["ok"] for row in report.get("correctness", [])):
        sys.exit("correctness check failed")


class KernelBench:
    """Inputs, backends, poisoning and timers for one device."""

    def __init__(self, torch, device, shapes, repeats, warmup):
        from configuration_hydra import HydraConfig
        from modeling_hydra.hydra_mixer import HydraMixer
        from modeling_hydra.ssd_backends import resolve_ssd_backend
        from modeling_hydra.ssd_mamba_ssm import load_mamba_chunk_scan_combined
        from modeling_hydra.ssd_torch import ssd_bidirectional_torch

        self.torch, self.device, self.shapes = torch, device, shapes
        self.repeats, self.warmup = repeats, warmup
        self.HydraConfig, self.HydraMixer = HydraConfig, HydraMixer
        self.reference = ssd_bidirectional_torch
        self.nheads = 2 * shapes["d_model"] // shapes["headdim"]
        self.notes = []
        self.ssd = {}
        for name in BACKENDS:
            try:
                self.ssd[name] = resolve_ssd_backend(name, device)
            except ValueError as error:
                self.notes.append(f"backend {name!r} skipped: {error}")
        try:
            self.mamba_chunk_scan_combined = load_mamba_chunk_scan_combined()
        except ValueError:
            self.mamba_chunk_scan_combined = None
        if self.mamba_chunk_scan_combined is not None and device.type == "cuda":
            self.ssd["mamba2 one direction"] = self.one_direction_mamba
        elif "triton" in self.ssd:
            self.ssd["triton, bwd inputs zeroed"] = self.one_direction_triton
            self.notes.append("no mamba_ssm: the one-direction column is our fused kernel with the backward "
                              "direction's dt, B, C zeroed (same work as two directions, NOT a one-direction kernel)")

    def environment(self):
        torch = self.torch
        versions = {"python": platform.python_version(), "torch": torch.__version__}
        for package in ("triton", "mamba_ssm"):
            try:
                versions[package] = __import__(package).__version__
            except Exception as error:  # mamba_ssm raises more than ImportError without CUDA
                versions[package] = f"unavailable ({type(error).__name__})"
        gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": str(self.device),
                "gpu": gpu, "versions": versions, "shapes": {k: list(v) if isinstance(v, tuple) else v
                                                              for k, v in self.shapes.items()},
                "repeats": self.repeats, "warmup": self.warmup, "notes": self.notes,
                "interpreter": os.environ.get("TRITON_INTERPRET") == "1"}

    # ------------------------------------------------------------------ inputs and helpers

    def ssd_inputs(self, seqlen, dtype, seed, pad_rows=True, requires_grad=False):
        """Fresh SSD inputs shaped like the mixer's; the last row of the batch is padded over its last quarter."""
        torch, s = self.torch, self.shapes
        g = torch.Generator(device="cpu").manual_seed(seed)
        batch, H, P, N = s["batch"], self.nheads, s["headdim"], s["d_state"]
        rand = lambda *shape: torch.rand(*shape, generator=g)
        randn = lambda *shape: torch.randn(*shape, generator=g)
        x = randn(batch, seqlen, H, P)
        dt_f, dt_b = (torch.exp(rand(batch, seqlen, H) * 4.6 - 6.9) for _ in range(2))  # in [1e-3, 1e-1]
        A = -(1 + 7 * rand(H))
        B_f, C_f, B_b, C_b = (randn(batch, seqlen, 1, N) for _ in range(4))
        diag = randn(batch, seqlen, H)
        if pad_rows:
            for t in (x, dt_f, dt_b):
                t[-1, seqlen - seqlen // 4:] = 0
        out = [t if t is A else t.to(dtype) for t in (x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag)]
        return [t.to(self.device).requires_grad_(requires_grad) for t in out]

    def poison(self):
        """Fill freed allocator memory with NaN, so that torch.empty outputs start as NaN."""
        torch = self.torch
        if self.device.type == "cuda":
            free = torch.cuda.mem_get_info(self.device)[0]
            block = torch.full((max(1, int(free * 0.5)) // 4,), float("nan"), device=self.device)
            del block
        else:
            block = torch.full((1 << 22,), float("nan"))
            del block

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def one_direction_mamba(self, x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size):
        """Mamba-2's causal SSD on the batch of B sequences (scale reference: one direction, no shift/diagonal)."""
        return self.mamba_chunk_scan_combined(x, dt_f, A.float(), B_f, C_f, chunk_size=chunk_size, D=None, z=None)

    def one_direction_triton(self, x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag, chunk_size):
        """Our fused kernel with the backward direction's inputs zeroed (the kernel still does both directions)."""
        zero = lambda t: t * 0
        return self.ssd["triton"](x, dt_f, zero(dt_b), A, B_f, C_f, zero(B_b), zero(C_b), diag, chunk_size)

    # ------------------------------------------------------------------ (a) correctness

    def correctness(self):
        torch = self.torch
        seqlen = 777 if self.device.type == "cuda" else 37  # off the chunk grid
        chunk = self.shapes["chunk_size"]
        rows = []
        names = ("y", "x", "dt_f", "dt_b", "A", "B_f", "C_f", "B_b", "C_b", "diag")
        for dtype_name in ("float32", "bfloat16"):
            dtype = getattr(torch, dtype_name)
            for backend in BACKENDS:
                if backend not in self.ssd:
                    continue
                seed = 1000 + len(rows)
                inputs = self.ssd_inputs(seqlen, dtype, seed, requires_grad=True)
                exact = [t.detach().double().requires_grad_() for t in inputs]
                y_ref = self.reference(*exact, chunk)
                dy = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(seed)).to(self.device)
                grads_ref = torch.autograd.grad(y_ref, exact, dy.double())

                def compare():
                    self.poison()
                    y = self.ssd[backend](*inputs, chunk)
                    self.poison()
                    grads = torch.autograd.grad(y, inputs, dy.to(y.dtype))
                    return {n: rel_rms(torch, a, b) for n, a, b in zip(names, (y, *grads), (y_ref, *grads_ref))}

                rows.append(checked({"check": "ssd", "backend": backend, "dtype": dtype_name, "seqlen": seqlen},
                                    compare, TOLERANCE[dtype_name]))
            rows += self.mixer_correctness(dtype_name, seqlen, len(rows))
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return rows

    def mixer_correctness(self, dtype_name, seqlen, seed):
        """Each backend's HydraMixer (output and input gradient) against the torch-backend mixer in float64."""
        torch = self.torch
        dtype = getattr(torch, dtype_name)
        reference = self.mixer("torch", torch.float64, seed)
        hidden = torch.randn(self.shapes["batch"], seqlen, self.shapes["d_model"],
                             generator=torch.Generator().manual_seed(seed)).to(self.device)
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=self.device)
        mask[-1, seqlen - seqlen // 4:] = False
        h64 = hidden.double().requires_grad_()
        out_ref = reference(h64, mask)
        (grad_ref,) = torch.autograd.grad(out_ref, h64, torch.ones_like(out_ref))
        rows = []
        for backend in BACKENDS:
            if backend not in self.ssd:
                continue
            def compare():
                mixer = self.mixer(backend, dtype, seed)
                h = hidden.to(dtype).requires_grad_()
                self.poison()
                out = mixer(h, mask)
                (grad,) = torch.autograd.grad(out, h, torch.ones_like(out))
                return {"out": rel_rms(torch, out, out_ref), "d_hidden": rel_rms(torch, grad, grad_ref)}

            rows.append(checked({"check": "mixer", "backend": backend, "dtype": dtype_name, "seqlen": seqlen},
                                compare, TOLERANCE[dtype_name]))
        return rows

    def mixer(self, backend, dtype, seed):
        s = self.shapes
        config = self.HydraConfig(hidden_size=s["d_model"], d_state=s["d_state"], headdim=s["headdim"],
                                  chunk_size=s["chunk_size"], ssd_backend=backend)
        self.torch.manual_seed(seed)
        mixer = self.HydraMixer(config)
        mixer.reset_ssm_parameters()
        return mixer.to(device=self.device, dtype=dtype)

    # ------------------------------------------------------------------ (b) timing

    def timing(self, rows, save):
        """Append one row per (length, backend) to `rows`, calling `save` after each."""
        torch = self.torch
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        chunk = self.shapes["chunk_size"]
        for seqlen in self.shapes["lengths"]:
            for backend, ssd in self.ssd.items():
                row = {"seqlen": seqlen, "backend": backend, "dtype": str(dtype).removeprefix("torch.")}
                inputs = self.ssd_inputs(seqlen, dtype, seed=seqlen, pad_rows=False, requires_grad=True)
                row.update(self.measure("ssd", functools.partial(ssd, *inputs, chunk), inputs))
                del inputs
                if backend in BACKENDS:
                    mixer = self.mixer(backend, dtype, seed=0)
                    hidden = torch.randn(self.shapes["batch"], seqlen, self.shapes["d_model"], device=self.device,
                                         dtype=dtype, requires_grad=True)
                    row.update(self.measure("mixer", lambda: mixer(hidden), [hidden, *mixer.parameters()]))
                    del mixer, hidden
                rows.append(row)
                save()
                print(f"  timed L={seqlen} {backend}", flush=True)

    def measure(self, prefix, run, leaves):
        """Median forward and forward+backward times (ms) and the peak memory (MiB) of one forward+backward."""
        torch = self.torch
        try:
            grad = None

            def forward():
                with torch.no_grad():
                    run()

            def forward_backward():
                nonlocal grad
                out = run()
                grad = torch.ones_like(out) if grad is None else grad
                out.backward(grad)
                for leaf in leaves:
                    leaf.grad = None

            result = {f"{prefix}_fwd_ms": self.median_ms(forward),
                      f"{prefix}_fwdbwd_ms": self.median_ms(forward_backward)}
            result[f"{prefix}_peak_mib"] = self.peak_mib(forward_backward)
            return result
        except Exception as error:  # out of memory, or a kernel that fails to build: keep the other cells
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            what = "OOM" if isinstance(error, torch.OutOfMemoryError) else f"error: {error!r}"[:300]
            return {f"{prefix}_fwd_ms": what, f"{prefix}_fwdbwd_ms": what, f"{prefix}_peak_mib": what}

    def median_ms(self, fn):
        torch = self.torch
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.repeats):
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize(self.device)
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append(1e3 * (time.perf_counter() - t0))
        return statistics.median(times)

    def peak_mib(self, fn):
        torch = self.torch
        if self.device.type != "cuda":
            return None
        self.sync()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        fn()
        self.sync()
        return (torch.cuda.max_memory_allocated(self.device) - base) / 2**20


def checked(row, compare, tolerance):
    """`row` completed with the errors that `compare()` returns, the worst one and ok, or with the exception."""
    try:
        row["errors"] = compare()
    except Exception as error:  # a backend that fails to run is a failed check, not a crashed script
        row.update(errors={}, worst=float("inf"), ok=False, error=repr(error)[:500])
        return row
    row["worst"] = max(row["errors"].values())
    row["ok"] = row["worst"] < tolerance
    return row


def rel_rms(torch, actual, expected):
    actual, expected = actual.detach().double(), expected.detach().double()
    if not torch.isfinite(actual).all():
        return float("inf")
    return ((actual - expected).pow(2).mean().sqrt() / expected.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def print_correctness(rows):
    print("\n(a) correctness: relative RMS error against the torch path in float64 (worst of output and gradients)")
    for row in rows:
        worst_name = max(row["errors"], key=row["errors"].get) if row["errors"] else row["error"]
        print(f"  {row['check']:5} {row['backend']:10} {row['dtype']:8} L={row['seqlen']:<5} "
              f"worst {row['worst']:.2e} ({worst_name})  {'ok' if row['ok'] else 'FAIL'}")


def fmt(value, spec):
    """A number in `spec`, "-" for not measured, or the first characters of an error note."""
    if isinstance(value, (int, float)):
        return f"{value:{spec}}"
    return "-" if value is None else str(value)[:9]


def print_timing(rows, on_gpu):
    kind = "CUDA events" if on_gpu else "wall clock, CPU interpreter: NOT a performance number"
    print(f"\n(b) timing: median ms ({kind}); peak MiB of one forward+backward")
    header = (f"{'L':>6} {'backend':28} {'ssd fwd':>9} {'ssd f+b':>9} {'ssd MiB':>9} "
              f"{'mixer fwd':>10} {'mixer f+b':>10} {'mixer MiB':>10}")
    print(header)
    for r in rows:
        print(f"{r['seqlen']:>6} {r['backend']:28} {fmt(r.get('ssd_fwd_ms'), '9.2f'):>9} "
              f"{fmt(r.get('ssd_fwdbwd_ms'), '9.2f'):>9} {fmt(r.get('ssd_peak_mib'), '9.0f'):>9} "
              f"{fmt(r.get('mixer_fwd_ms'), '10.2f'):>10} {fmt(r.get('mixer_fwdbwd_ms'), '10.2f'):>10} "
              f"{fmt(r.get('mixer_peak_mib'), '10.0f'):>10}")


def targets(rows):
    """The issue's targets, where the needed columns were measured: fused fwd+bwd >= 1.5x the official flip approach
    at L >= 2048, within 1.25x of one-direction Mamba-2, peak memory <= the official approach."""
    lines = []
    by = {(r["seqlen"], r["backend"]): r for r in rows}
    for seqlen in sorted({r["seqlen"] for r in rows}):
        ours, official = by.get((seqlen, "triton")), by.get((seqlen, "mamba_ssm"))
        single = by.get((seqlen, "mamba2 one direction"))
        if ours is None or not isinstance(ours.get("ssd_fwdbwd_ms"), float):
            continue
        if official and isinstance(official.get("ssd_fwdbwd_ms"), float):
            speedup = official["ssd_fwdbwd_ms"] / ours["ssd_fwdbwd_ms"]
            lines.append(f"target L={seqlen}: ssd fwd+bwd speedup over official flip = {speedup:.2f}x (want >= 1.5 "
                         f"at L >= 2048); peak {fmt(ours['ssd_peak_mib'], '.0f')} vs "
                         f"{fmt(official['ssd_peak_mib'], '.0f')} MiB (want <=)")
        if single and isinstance(single.get("ssd_fwdbwd_ms"), float):
            ratio = ours["ssd_fwdbwd_ms"] / single["ssd_fwdbwd_ms"]
            lines.append(f"target L={seqlen}: ssd fwd+bwd / one-direction Mamba-2 = {ratio:.2f}x (want <= 1.25)")
    if not lines:
        lines.append("targets: not evaluated (needs CUDA timings of triton and mamba_ssm)")
    return lines


if __name__ == "__main__":
    main()
