"""Compile every Triton SSD kernel for real NVIDIA targets on a machine without a GPU, and check its resources.

Method: Triton's active driver is replaced by a stand-in whose target is `GPUTarget("cuda", 80 or 90, 32)` (device 0,
stream 0); every kernel launch becomes a warmup compile (nothing runs); the forward and backward of the autograd
Function run on CPU tensors, so every kernel of both passes is built, with and without sequence boundaries. For each
compiled kernel, `ptxas -v` (the ptxas inside the triton wheel, with Triton's own flags) gives registers and spill
bytes; `metadata.shared` gives the shared memory. The check: every kernel compiles, shared memory fits the target's
per-block limit, and there are zero bytes of spill stores and loads.

The full matrix (targets sm_80/sm_90, headdim 64/128, d_state 64/128, chunk 128/256, ngroups 1/2, fp32/bf16/fp16,
with and without seq_idx) takes long on a small CPU; split it over processes with --targets:

    python benchmarks/triton_compile_matrix.py --targets 90 --json sm90.json --markdown sm90.md
    python benchmarks/triton_compile_matrix.py --targets 80 --json sm80.json --markdown sm80.md

Exit status 1 when any check fails. Spills depend on the Triton version: the numbers hold for the triton of
.ci/pinned.txt (3.9.0). tests/test_triton_compile.py runs a subset of this matrix.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time

# Per-block shared memory limits (opt-in maximum) of the targets, in bytes.
SHARED_LIMIT = {80: 166912, 90: 232448}
DTYPES = ("float32", "bfloat16", "float16")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, nargs="+", default=[80, 90], choices=sorted(SHARED_LIMIT))
    parser.add_argument("--headdim", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--d-state", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--chunk-size", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--ngroups", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--seq-idx", nargs="+", default=["no", "yes"], choices=["no", "yes"],
                        help="build the kernels without and/or with sequence boundaries")
    parser.add_argument("--d-model", type=int, default=768, help="hidden size; nheads = 2 * d_model / headdim")
    parser.add_argument("--jobs", type=int, default=1, help="targets compiled at once, one process each")
    parser.add_argument("--json", default=None, help="write every kernel's numbers here")
    parser.add_argument("--markdown", default=None, help="write the markdown table here (it is printed as well)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: the interpreter does not compile for GPUs")
    import torch
    import triton

    configs = [dict(target=target, headdim=p, d_state=n, chunk_size=q, ngroups=g, dtype=dtype, seq_idx=s == "yes")
               for target, p, n, q, g, dtype, s in itertools.product(
                   args.targets, args.headdim, args.d_state, args.chunk_size, args.ngroups, args.dtypes, args.seq_idx)]
    start = time.perf_counter()
    if len(args.targets) == 1:
        rows = compile_target(args.targets[0], configs, args.d_model)
    else:
        rows = compile_targets_in_children(args, argv if argv is not None else sys.argv[1:])
    elapsed = time.perf_counter() - start
    table = summary_table(rows) + "\n\n" + markdown_table(rows)
    print(table)
    failures = [r for r in rows if not r["ok"]]
    summary = (f"{len(rows)} kernel builds in {len(configs)} configurations, {elapsed:.0f} s, triton "
               f"{triton.__version__}, torch {torch.__version__}: {len(failures)} failing")
    print(summary)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n\n" + summary + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"triton": triton.__version__, "seconds": elapsed, "rows": rows}, f, indent=1)
    return 1 if failures else 0


def compile_target(target, configs, d_model):
    """Rows of every kernel build of `configs` for one target (Triton's stand-in driver holds one target per
    process)."""
    compiler, rows, ptxas_cache = StandInCompiler(target), [], {}
    for config in configs:
        t0 = time.perf_counter()
        rows += compiler.compile_config(config, d_model, ptxas_cache)
        print(f"# compiled {config_name(config)} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return rows


def compile_targets_in_children(args, argv):
    """One child process per target, `--jobs` at a time; their rows, in target order."""
    rows, children = [], []
    with tempfile.TemporaryDirectory() as tmp:
        pending = list(args.targets)
        while pending or children:
            while pending and len(children) < args.jobs:
                target = pending.pop(0)
                out = os.path.join(tmp, f"sm{target}.json")
                child_argv = strip_options(argv, ("--targets", "--json", "--markdown", "--jobs"))
                command = [sys.executable, os.path.abspath(__file__), *child_argv, "--targets", str(target),
                           "--json", out]
                children.append((target, out, subprocess.Popen(command, stdout=subprocess.DEVNULL)))
            target, out, child = children.pop(0)
            child.wait()
            if not os.path.exists(out):
                sys.exit(f"the sm_{target} child failed (exit status {child.returncode})")
            with open(out) as f:
                rows.append((target, json.load(f)["rows"]))
    return [row for _, target_rows in sorted(rows, key=lambda item: item[0]) for row in target_rows]


def strip_options(argv, names):
    """`argv` without the options in `names` and their values."""
    kept, skipping = [], False
    for arg in argv:
        if arg.startswith("--"):
            skipping = arg in names
        if not skipping:
            kept.append(arg)
    return kept


def config_name(config) -> str:
    return (f"sm_{config['target']} {config['dtype']} P={config['headdim']} N={config['d_state']} "
            f"Q={config['chunk_size']} G={config['ngroups']}{' seq_idx' if config['seq_idx'] else ''}")


class StandInCompiler:
    """Builds the Triton SSD kernels for one GPU target without a GPU (see the module docstring)."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget
        from triton.backends.nvidia.compiler import get_ptxas
        from triton.backends.driver import DriverBase
        from triton.runtime.driver import driver
        from triton.runtime.jit import JITFunction

        class StandInDriver(DriverBase):
            """Triton driver whose only job is to name the target: device 0, stream 0, no launches."""

            @classmethod
            def is_active(cls):
                return False

            def map_python_to_cpp_type(self, ty: str) -> str:
                from triton.backends.nvidia.driver import ty_to_cpp
                return ty_to_cpp(ty)

            def get_current_target(self):
                return GPUTarget("cuda", arch, 32)

            def get_active_torch_device(self):
                import torch
                return torch.device("cpu")

            def get_benchmarker(self):
                raise NotImplementedError("the stand-in driver cannot run kernels")

            def get_current_device(self):
                return 0

            def get_current_stream(self, device):
                return 0

        self.arch = arch
        driver.set_active(StandInDriver())
        self.built = []
        built, original_run = self.built, JITFunction.run

        def warmup_run(kernel_self, *args, grid, warmup, **kwargs):
            compiled = original_run(kernel_self, *args, grid=grid, warmup=True, **kwargs)
            built.append(compiled)
            return compiled

        JITFunction.run = warmup_run
        self.ptxas = get_ptxas(arch).path

    def compile_config(self, config, d_model, ptxas_cache):
        """Build the forward and backward kernels of one configuration; one row per distinct kernel build."""
        import torch
        from modeling_hydra.ssd_triton import BidirectionalSSDTriton

        self.built.clear()
        headdim, d_state, ngroups = config["headdim"], config["d_state"], config["ngroups"]
        nheads, seqlen, batch = 2 * d_model // headdim, 4 * config["chunk_size"], 2
        dtype = getattr(torch, config["dtype"])
        x = torch.randn(batch, seqlen, nheads, headdim, dtype=dtype)
        dt_f, dt_b, diag = (torch.rand(batch, seqlen, nheads) for _ in range(3))
        A = -torch.rand(nheads)
        B_f, C_f, B_b, C_b = (torch.randn(batch, seqlen, ngroups, d_state, dtype=dtype) for _ in range(4))
        seq_idx = None
        if config["seq_idx"]:
            seq_idx = (torch.arange(seqlen) // 37).to(torch.int32).expand(batch, seqlen).contiguous()
        inputs = [t.requires_grad_() for t in (x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, diag)]
        error = None
        try:
            y = BidirectionalSSDTriton.apply(*inputs, seq_idx, config["chunk_size"])
            y.backward(torch.ones_like(y))
        except Exception as exc:  # a kernel that does not compile fails the check, the other configs go on
            error = f"{type(exc).__name__}: {str(exc)[:300]}"
        rows, seen = [], set()
        for compiled in self.built:
            key = compiled.hash
            if key in seen:
                continue
            seen.add(key)
            ptx = compiled.asm["ptx"]
            digest = hashlib.sha1(f"{self.arch}\n{ptx}".encode()).hexdigest()
            if digest not in ptxas_cache:
                ptxas_cache[digest] = self.ptxas_resources(ptx)
            usage = ptxas_cache[digest]
            meta = compiled.metadata
            row = dict(config, kernel=compiled.name, num_warps=meta.num_warps, num_stages=meta.num_stages,
                       shared=meta.shared, **usage)
            row["ok"] = (row["ptxas_ok"] and row["spill_stores"] == 0 and row["spill_loads"] == 0
                         and row["shared"] <= SHARED_LIMIT[self.arch])
            rows.append(row)
        if error is not None:
            rows.append(dict(config, kernel="(build failed)", num_warps=0, num_stages=0, shared=0, registers=0,
                             spill_stores=0, spill_loads=0, ptxas_ok=False, ok=False, error=error))
        return rows

    def ptxas_resources(self, ptx: str) -> dict:
        """Registers and spill bytes of one kernel from `ptxas -v`, with the flags Triton itself passes."""
        gpu_name = "sm_90a" if self.arch == 90 else f"sm_{self.arch}"
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "kernel.ptx")
            with open(src, "w") as f:
                f.write(ptx)
            result = subprocess.run([self.ptxas, "-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={gpu_name}",
                                     src, "-o", os.path.join(tmp, "kernel.o")], capture_output=True, text=True)
        log = result.stderr
        number = lambda pattern: int(m.group(1)) if (m := re.search(pattern, log)) else 0
        return dict(registers=number(r"Used (\d+) registers"), spill_stores=number(r"(\d+) bytes spill stores"),
                    spill_loads=number(r"(\d+) bytes spill loads"), ptxas_ok=result.returncode == 0)


def summary_table(rows) -> str:
    """One line per kernel, target and dtype: the worst registers, spills and shared memory over all configurations
    (headdim, d_state, chunk, ngroups, with and without seq_idx)."""
    lines = ["| kernel | target | dtype | builds | warps | max registers | max spill bytes (st/ld) | max shared bytes "
             "(limit) | ok |", "|---|---|---|---:|---|---:|---:|---:|---|"]
    groups = {}
    for r in rows:
        groups.setdefault((r["kernel"], r["target"], r["dtype"]), []).append(r)
    for (kernel, target, dtype), group in sorted(groups.items(), key=lambda item: (item[0][1], item[0][2],
                                                                                   item[0][0])):
        warps = "/".join(str(w) for w in sorted({r["num_warps"] for r in group}))
        lines.append(f"| {kernel} | sm_{target} | {dtype} | {len(group)} | {warps} | "
                     f"{max(r['registers'] for r in group)} | {max(r['spill_stores'] for r in group)}/"
                     f"{max(r['spill_loads'] for r in group)} | {max(r['shared'] for r in group)} "
                     f"({SHARED_LIMIT[target]}) | {'ok' if all(r['ok'] for r in group) else '**FAIL**'} |")
    return "\n".join(lines)


def markdown_table(rows) -> str:
    """One line per kernel and configuration group: kernels with the same numbers across ngroups are merged."""
    lines = ["| kernel | target | dtype | P | N | Q | seq_idx | warps | stages | registers | spill bytes "
             "(st/ld) | shared bytes | ok |", "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    merged = {}
    for r in rows:
        key = (r["kernel"], r["target"], r["dtype"], r["headdim"], r["d_state"], r["chunk_size"], r["seq_idx"],
               r["num_warps"], r["num_stages"], r["registers"], r["spill_stores"], r["spill_loads"], r["shared"],
               r["ok"])
        merged.setdefault(key, r)
    for (kernel, target, dtype, p, n, q, seq, warps, stages, regs, st, ld, shared, ok) in merged:
        lines.append(f"| {kernel} | sm_{target} | {dtype} | {p} | {n} | {q} | {'yes' if seq else 'no'} | {warps} | "
                     f"{stages} | {regs} | {st}/{ld} | {shared} | {'ok' if ok else '**FAIL**'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
