"""Speed and memory of the paper's matrix mixers (Hwang et al. 2024, §5; github.com/goombalab/hydra) against the
materialized algorithm of the authors' code, in the same process.

For every family, dd and di, and every length L (data-independent mixers get max_position_embeddings = L), one
MatrixMixer (in_proj, conv, family, gated norm, out_proj) runs
  - "ours": `MatrixMixer.forward` through the model's execution plan (FFT Toeplitz, Q (K^T v), SDPA, tiled
    Vandermonde/Cauchy, chunked SSD), and
  - "materialized": the same weights with M built as the authors build it: (batch, heads, L, L) matrices, and for
    Vandermonde and Cauchy dd the (batch, heads, qk, L, L) / (batch, heads, L, L, qk) kernel tensors,
forward (no grad) and forward+backward. Peak memory: on CUDA `torch.cuda.max_memory_allocated` over the cell (cells
run in this process); on CPU each cell runs in a process of its own (glibc's mmap threshold at 64 KiB, so freed
blocks go back to the system) and reports the growth of its resident-set high-water mark (VmHWM, reset after the
mixer is built) over its size before the first run. Times are the median of --repeats after
--warmup runs. A cell whose materialized tensors would exceed --max-materialized-gb is skipped (reported as such).
Both paths' outputs are compared (relative max difference) as a sanity check.

    python benchmarks/bench_matrix_mixers.py --lengths 128 512 2048 8192 --out-dir bench_matrix_mixers

writes bench_matrix_mixers.json and bench_matrix_mixers.md (one table per mode). `--quick` runs a tiny matrix for
the tests (the times then mean nothing).
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (family, data-dependent, qk_dim): the authors' yamls' variants (vandermonde di is the DFT).
VARIANTS = [("dense", False, -1), ("toeplitz", True, -1), ("toeplitz", False, -1), ("vandermonde", True, 16),
            ("vandermonde", False, -1), ("cauchy", True, 16), ("cauchy", False, 16), ("low_rank", True, 16),
            ("low_rank", False, 16), ("attention", True, 16), ("attention", False, 16), ("quasiseparable", True, 16),
            ("quasiseparable", False, 16)]
MODES = ("forward", "fwd+bwd")
PATHS = ("ours", "materialized")


def variant_name(family, dd):
    return f"{family} {'dd' if dd else 'di'}"


def build(family, dd, qk_dim, L, hidden, headdim, device, dtype):
    """A MatrixMixer of this variant at length L (attention di: nheads = L, so headdim = 2 hidden / L)."""
    import torch

    from configuration_hydra import HydraConfig
    from modeling_hydra.matrix_mixer import MatrixMixer

    if family == "attention" and not dd:
        if (2 * hidden) % L:
            return None
        headdim = 2 * hidden // L
    config = HydraConfig(hidden_size=hidden, headdim=headdim, d_conv=7, matrix_mixer_type=family,
                         is_data_dependent=dd, qk_dim=qk_dim, max_position_embeddings=L, chunk_size=256)
    torch.manual_seed(0)
    mixer = MatrixMixer(config)
    mixer.matrix_mixer.reset_parameters()
    return mixer.to(device=device, dtype=dtype)


def materialized_bytes(family, dd, qk_dim, batch, L, nheads, itemsize):
    """Bytes of the largest L x L tensor the materialized path holds."""
    per = batch * nheads * L * L * itemsize
    if family in ("vandermonde", "cauchy") and dd:
        return 2 * per * qk_dim
    if family == "cauchy":
        return per * qk_dim // batch
    return per


def materialized_matrix(mixer, parts, dt):
    """(batch or 1, nheads, L, L) M of the mixer as the authors' code builds it (identity term included)."""
    import torch
    import torch.nn.functional as F

    family, dd, H = mixer.family, mixer.data_dependent, mixer.nheads
    mm = mixer.matrix_mixer
    v = parts["v"]
    batch, L = v.shape[:2]
    dtype, device = v.dtype, v.device
    eye = torch.eye(L, dtype=dtype, device=device)
    if family == "dense":
        return (mm.std * mm.M + eye).unsqueeze(0)
    if family == "toeplitz":
        if dd:
            f, r = parts["f"].transpose(1, 2), parts["r"].transpose(1, 2)  # (batch, H, L)
            c = torch.cat([r[..., 1:].flip(-1), f], dim=-1)
        else:
            c = mm.conv_params.unsqueeze(0)
        t = torch.arange(L, device=device)
        index = (t[:, None] - t[None, :] + L) % (2 * L - 1)
        return mm.std * c[..., index] + eye
    if family == "vandermonde" and not dd:
        return (mm.std * mm.dft_matrix + eye)[None, None]
    if family == "quasiseparable":
        N = mm.d_state
        if dd:
            B, C = parts["B"], parts["C"]
            dt = F.softplus(dt + mm.dt_bias.repeat(2))
        else:
            B, C = mm.BC[:, :N].expand(batch, L, N), mm.BC[:, N:].expand(batch, L, N)
            dt = F.softplus(mm.dt_bias).repeat(2).expand(batch, L, 2 * H)
        dt_f, dt_b = dt[..., :H].transpose(1, 2), dt[..., H:].transpose(1, 2)  # (batch, H, L)
        A = -torch.exp(mm.A_log)[None, :, None]
        cum_f, cum_b = (dt_f * A).cumsum(-1), (dt_b * A).cumsum(-1)
        zero = torch.zeros_like(C[:, :1])
        CB_f = torch.cat([zero, C[:, :-1]], 1) @ B.transpose(1, 2)  # (batch, L, L): C[t-1] . B[s]
        CB_b = torch.cat([C[:, 1:], zero], 1) @ B.transpose(1, 2)
        t = torch.arange(L, device=device)
        lower, upper = t[:, None] > t[None, :], t[:, None] < t[None, :]
        prev = (t - 1).clamp(min=0)
        decay_f = torch.exp((cum_f[..., prev][..., :, None] - cum_f[..., None, :]).masked_fill(~lower, -math.inf))
        decay_b = torch.exp((cum_b[..., prev][..., None, :] - cum_b[..., :, None]).masked_fill(~upper, -math.inf))
        diag = mixer.matrix_mixer.fc_D(v) + mm.D  # (batch, L, H)
        return (CB_f[:, None] * decay_f * dt_f[..., None, :] + CB_b[:, None] * decay_b * dt_b[..., None, :]
                + torch.diag_embed(diag.transpose(1, 2)))
    if dd:
        qk = parts["q"].shape[-1] // H
        q = parts["q"].view(batch, L, H, qk)
        k = parts["k"].view(batch, L, H, qk)
    elif family == "attention":
        q, k = mm.q_matrix.unsqueeze(0), mm.k_matrix.unsqueeze(0)  # (1, H=L, L, qk) read as (head, position)
        qk = q.shape[-1]
        scores = torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(qk)
        return torch.softmax(scores, dim=-1) + eye
    else:
        q, k = mm.q_matrix.unsqueeze(0), mm.k_matrix.unsqueeze(0)  # (1, L, H, qk)
        qk = q.shape[-1]
    if family == "vandermonde":  # the authors' two (batch, H, qk, L, L) cosine tensors
        pos = torch.arange(L, dtype=dtype, device=device)
        qt = q.permute(0, 2, 3, 1)[..., :, None] * pos  # (batch, H, qk, L_t, L_s)
        ks = k.permute(0, 2, 3, 1)[..., None, :] * pos[:, None]
        return mm.std * (torch.cos(0.002 * math.pi * qt) - torch.cos(0.002 * math.pi * ks)).sum(2) + eye
    if family == "cauchy":  # the authors' (batch, H, L, L, qk) reciprocals
        bias = mm.bias if dd else 0.0
        qe, ke = torch.exp(q) + bias, torch.exp(k) + bias
        kernel = 1.0 / (qe.permute(0, 2, 1, 3)[:, :, :, None] + ke.permute(0, 2, 1, 3)[:, :, None] + 1e-8)
        return mm.std * kernel.sum(-1) + eye
    scores = torch.einsum("bthd,bshd->bhts", q, k)
    if family == "low_rank":
        return mm.std * scores + eye
    return torch.softmax(scores / math.sqrt(qk), dim=-1) + eye


def materialized_forward(mixer, u):
    """The mixer with M materialized (the authors' algorithm); unpadded rows."""
    import torch
    import torch.nn.functional as F

    batch, L, _ = u.shape
    projected = mixer.in_proj(u)
    z, stream, dt = torch.split(projected, [mixer.d_inner, mixer.conv_dim, mixer.extra], dim=-1)
    K = mixer.conv1d.weight.shape[-1]
    stream = F.conv1d(stream.transpose(1, 2), mixer.conv1d.weight, mixer.conv1d.bias, padding=K // 2,
                      groups=mixer.conv_dim).transpose(1, 2)
    parts = dict(zip(mixer.stream, torch.split(stream, list(mixer.stream.values()), dim=-1)))
    parts = {n: F.silu(t) if mixer.silu_all or n == "v" else t for n, t in parts.items()}
    M = materialized_matrix(mixer, parts, dt)  # (batch or 1, H, L, L)
    v = parts["v"].view(batch, L, mixer.nheads, mixer.headdim)
    y = torch.einsum("bhts,bshp->bthp", M, v).reshape(batch, L, mixer.d_inner)
    return mixer.out_proj(mixer.norm(y, z, torch.float32 if u.dtype != torch.float64 else torch.float64))


def _vm_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def run_cell(variant, L, path, mode, opts):
    """One (variant, L, path, mode) cell: median time (ms), peak memory (MiB, None when not measured), output."""
    import torch

    from modeling_hydra.execution_plan import build_execution_plan

    torch.set_num_threads(opts["threads"])
    family, dd, qk_dim = variant
    device = torch.device(opts["device"])
    dtype = getattr(torch, opts["dtype"])
    mixer = build(family, dd, qk_dim, L, opts["hidden"], opts["headdim"], device, dtype)
    gen = torch.Generator(device="cpu").manual_seed(1)
    u = torch.randn(opts["batch"], L, opts["hidden"], generator=gen).to(device=device, dtype=dtype)
    train = mode == "fwd+bwd"
    mixer.train(train)

    def once():
        x = u.detach().requires_grad_(train)
        with torch.set_grad_enabled(train):
            if path == "ours":
                plan = build_execution_plan(mixer.config, batch=u.shape[0], seqlen=L, device=device, dtype=dtype,
                                            training=train, gradient_checkpointing=False)
                out = mixer(x, plan)
            else:
                out = materialized_forward(mixer, x)
            if train:
                out.float().square().mean().backward()
        return out.detach()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if opts["isolated"]:  # forget the high-water mark of building the mixer (e.g. the DFT buffer's temporaries)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    start_rss = _vm_kib("VmRSS")
    for _ in range(opts["warmup"]):
        once()
    mixer.zero_grad(set_to_none=True)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    out = None
    for _ in range(opts["repeats"]):
        mixer.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        out = once()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    elif opts["isolated"]:
        peak = max(0, _vm_kib("VmHWM") - start_rss) / 1024
    else:
        peak = None
    return dict(ms=statistics.median(times), peak_mib=peak, out=out.float().cpu())


def run_isolated(variant, L, path, mode, opts):
    """`run_cell` in a child process of its own (CPU memory), results passed back through a temporary file."""
    import torch

    with tempfile.TemporaryDirectory() as folder:
        result_file = Path(folder) / "cell.pt"
        request = json.dumps(dict(variant=list(variant), L=L, path=path, mode=mode, opts=opts,
                                  result=str(result_file)))
        # glibc returns freed blocks of 64 KiB and more to the system: the resident set then follows live memory
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        subprocess.run([sys.executable, __file__, "--cell", request], check=True, env=env)
        return torch.load(result_file)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="*", default=[128, 512, 2048, 8192])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256, help="d_model (d_inner = 2 d_model)")
    parser.add_argument("--headdim", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    parser.add_argument("--device", default=None, help="cuda when available, else cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--variants", nargs="*", default=None, help="e.g. 'toeplitz dd' 'dense di' (default: all)")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--max-materialized-gb", type=float, default=4.0)
    parser.add_argument("--out-dir", default="bench_matrix_mixers")
    parser.add_argument("--quick", action="store_true", help="tiny shapes for the tests: the times mean nothing")
    parser.add_argument("--in-process", action="store_true", help="CPU: run every cell in this process (faster; "
                                                                   "no memory measurement)")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # internal: run one cell (JSON request) and exit
    args = parser.parse_args(argv)
    if args.cell:
        import torch

        request = json.loads(args.cell)
        result = run_cell(tuple(request["variant"]), request["L"], request["path"], request["mode"], request["opts"])
        torch.save(result, request["result"])
        return
    if args.quick:
        args.lengths, args.batch, args.hidden, args.headdim, args.repeats, args.warmup = [16], 1, 16, 8, 1, 0
        args.in_process = True
        args.variants = args.variants or ["toeplitz dd", "low_rank di", "attention dd", "quasiseparable di"]
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    variants = [v for v in VARIANTS if args.variants is None or variant_name(v[0], v[1]) in args.variants]
    isolated = device == "cpu" and not args.in_process
    opts = dict(device=device, dtype=args.dtype, batch=args.batch, hidden=args.hidden, headdim=args.headdim,
                repeats=args.repeats, warmup=args.warmup, threads=args.threads, isolated=isolated)
    itemsize = torch.empty((), dtype=getattr(torch, args.dtype)).element_size()
    run = run_isolated if isolated else run_cell
    rows = []
    for family, dd, qk_dim in variants:
        for L in args.lengths:
            nheads = L if family == "attention" and not dd else 2 * args.hidden // args.headdim
            if family == "attention" and not dd and (2 * args.hidden) % L:
                rows.append(dict(variant=variant_name(family, dd), L=L, skipped="needs nheads == L"))
                continue
            too_big = (materialized_bytes(family, dd, max(qk_dim, 1), args.batch, L, nheads, itemsize)
                       > args.max_materialized_gb * 2**30)
            for mode in args.modes:
                row = dict(variant=variant_name(family, dd), L=L, mode=mode)
                outs = {}
                for path in PATHS:
                    if path == "materialized" and too_big:
                        row[path] = None
                        continue
                    result = run((family, dd, qk_dim), L, path, mode, opts)
                    outs[path] = result.pop("out")
                    row[path] = result
                if len(outs) == 2:
                    ref = outs["materialized"]
                    row["rel_diff"] = float((outs["ours"] - ref).abs().max() / ref.abs().max().clamp(min=1e-30))
                if row.get("materialized") and row.get("ours"):
                    row["speedup"] = row["materialized"]["ms"] / row["ours"]["ms"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                command=" ".join(sys.argv), device=device, torch=torch.__version__, platform=platform.platform(),
                threads=args.threads, batch=args.batch, hidden=args.hidden, headdim=args.headdim, dtype=args.dtype)
    write_atomically(out_dir / "bench_matrix_mixers.json", json.dumps(dict(meta=meta, rows=rows), indent=1))
    write_atomically(out_dir / "bench_matrix_mixers.md", markdown(meta, rows))
    print(markdown(meta, rows))


def markdown(meta, rows) -> str:
    lines = [f"Matrix mixers vs the materialized algorithm: {meta['date']}, {meta['device']}, {meta['dtype']}, "
             f"batch {meta['batch']}, d_model {meta['hidden']}, headdim {meta['headdim']}, {meta['threads']} "
             f"threads, torch {meta['torch']}.", ""]
    for mode in MODES:
        lines += [f"**{mode}** (ms / peak MiB)", "",
                  "| variant | L | ours ms | materialized ms | speedup | ours MiB | materialized MiB | max rel diff |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in rows:
            if row.get("mode") != mode:
                continue
            ours, ref = row["ours"], row.get("materialized")
            ref_ms = f"{ref['ms']:.2f}" if ref else "skipped (memory)"
            mib = lambda cell: "-" if cell is None or cell["peak_mib"] is None else f"{cell['peak_mib']:.0f}"
            speed = f"{row['speedup']:.1f}x" if "speedup" in row else "-"
            diff = f"{row['rel_diff']:.1e}" if "rel_diff" in row else "-"
            lines.append(f"| {row['variant']} | {row['L']} | {ours['ms']:.2f} | {ref_ms} | {speed} | "
                         f"{mib(ours)} | {mib(ref)} | {diff} |")
        lines.append("")
    skipped = [f"{r['variant']} L={r['L']} ({r['skipped']})" for r in rows if "skipped" in r]
    if skipped:
        lines.append("Not run: " + "; ".join(skipped))
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str):
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
