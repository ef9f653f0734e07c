"""Launch settings of every Triton SSD kernel: block sizes, num_warps and num_stages per kernel, target and dtype.

The one table of these choices. Each was checked by compiling for sm_80 and sm_90 with Triton's own compiler and
ptxas (benchmarks/triton_compile_matrix.py, tests/test_triton_compile.py): no register spills and shared memory within
the per-block limit at headdim 64/128, d_state 64/128, chunk 128/256, ngroups 1/2, float32/bfloat16/float16, with
and without sequence boundaries (sm_80 settings also fit the 99 KB of sm_86/sm_89). Tiles along the chunk stay at
64 rows (tensor-core sized) whenever the chunk allows, except float32 on sm_80 (below). The choices rest on compile
numbers only: no GPU was available to time alternatives (benchmarks/gpu_check.sh times the result).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .ssd_triton_runtime import block_size, target_arch

# The largest headdim and d_state the kernels hold in one tile (and the compile check covers).
MAX_HEADDIM = 128
MAX_D_STATE = 128


@dataclass(frozen=True)
class KernelLaunch:
    """Block sizes and schedule of one kernel.

    chunk_block: rows of the chunk per program (BLOCK_M); step_block: rows per step of its loop over the chunk
    (BLOCK_K; None: chunk_block); headdim_block: columns of headdim per program (BLOCK_P; None: all of headdim);
    reduction_block: columns per step of a loop over d_state (BLOCK_NS) or headdim (BLOCK_PS) that a tl.dot reduces
    over; num_warps, num_stages: Triton's.
    """

    chunk_block: int = 64
    step_block: int | None = None
    headdim_block: int | None = None
    reduction_block: int = 64
    num_warps: int = 4
    num_stages: int = 2


DEFAULT = KernelLaunch()
# (kernel, "fp32" or "16bit"[, "sm80" or "sm90"]) -> settings; the entry with the target wins, missing: DEFAULT.
# Why each differs from DEFAULT (spill bytes per thread at headdim = d_state = 128, chunk 256, sm_90, seq_idx):
# - chunk_state: all of headdim per program holds a (d_state, headdim) accumulator: 255 registers, spills in
#   bfloat16 (4 B) and float32 (1504 B); 64 columns per program: 134 registers (bf16, 4 warps).
# - 8 warps: at 4 warps the kernels spill in bfloat16 (chunk_scan_bwd_dx 32 B, _db 176 B, _dc 556 B,
#   chunk_state_grad 196 B) and all float32 ones do (tf32x3 splits every operand in two: about twice the
#   registers of 16-bit operands); chunk_scan bfloat16 fits 4 warps (182 registers), 8 leave more headroom (150).
# - reduction_block 32: chunk_scan_bwd_db/_dc and chunk_state_grad in float32 still spill at 8 warps with steps of
#   64 over headdim (664 / 884 / 316 B), not with 32.
# - sm_80 float32: mma.sync keeps both split operands of every dot in registers; 64-row loop steps spill there
#   (chunk_scan 736 B, chunk_scan_bwd_dx 76 B, _dc 48 B, _db at d_state 64: 28 B, chunk_state_grad 204 B), so these
#   take 32-row steps or programs and steps of 16-32 over d_state/headdim (final: 128-255 registers, no spills).
LAUNCH_TABLE: dict[tuple[str, ...], KernelLaunch] = {
    ("chunk_state", "16bit"): KernelLaunch(headdim_block=64),
    ("chunk_state", "fp32"): KernelLaunch(headdim_block=64, num_warps=8),
    ("chunk_cb", "fp32"): KernelLaunch(num_warps=8),
    ("chunk_scan", "16bit"): KernelLaunch(headdim_block=64, num_warps=8),
    ("chunk_scan", "fp32"): KernelLaunch(headdim_block=64, num_warps=8),
    ("chunk_scan_bwd_dx", "16bit"): KernelLaunch(num_warps=8),
    ("chunk_scan_bwd_dx", "fp32"): KernelLaunch(num_warps=8),
    ("chunk_scan_bwd_db", "16bit"): KernelLaunch(num_warps=8),
    ("chunk_scan_bwd_db", "fp32"): KernelLaunch(reduction_block=32, num_warps=8),
    ("chunk_scan_bwd_dc", "16bit"): KernelLaunch(num_warps=8),
    ("chunk_scan_bwd_dc", "fp32"): KernelLaunch(reduction_block=32, num_warps=8),
    ("chunk_state_grad", "16bit"): KernelLaunch(reduction_block=32, num_warps=8),
    ("chunk_state_grad", "fp32"): KernelLaunch(reduction_block=32, num_warps=8),
    # sm_80 (mma.sync: both tf32x3 operands of every dot in registers) needs smaller float32 tiles still.
    ("chunk_state", "fp32", "sm80"): KernelLaunch(headdim_block=64, step_block=32, num_warps=8),
    ("chunk_cb", "fp32", "sm80"): KernelLaunch(reduction_block=16, num_warps=8),
    ("chunk_scan", "fp32", "sm80"): KernelLaunch(headdim_block=32, step_block=32, reduction_block=32, num_warps=8),
    ("chunk_scan_bwd_dx", "fp32", "sm80"): KernelLaunch(step_block=32, reduction_block=16, num_warps=8),
    ("chunk_scan_bwd_db", "fp32", "sm80"): KernelLaunch(chunk_block=32, reduction_block=32, num_warps=8),
    ("chunk_scan_bwd_dc", "fp32", "sm80"): KernelLaunch(step_block=32, reduction_block=16, num_warps=8),
    ("chunk_state_grad", "fp32", "sm80"): KernelLaunch(chunk_block=32, reduction_block=16, num_warps=8),
}


def launch_config(name: str, kernel, dtype: torch.dtype, headdim: int, d_state: int, chunk_size: int,
                  blocks=("BLOCK_M", "BLOCK_K", "BLOCK_N", "BLOCK_P")) -> dict:
    """Keyword arguments of kernel `name` for inputs of `dtype` and these sizes, on the target Triton compiles
    `kernel` for: the `blocks` it takes (of BLOCK_M, BLOCK_K, BLOCK_N, BLOCK_NS, BLOCK_P, BLOCK_PS), num_warps and
    num_stages."""
    family = "sm90" if target_arch(kernel) >= 90 else "sm80"
    precision = "fp32" if dtype in (torch.float32, torch.float64) else "16bit"
    launch = LAUNCH_TABLE.get((name, precision, family), LAUNCH_TABLE.get((name, precision), DEFAULT))
    step_block = launch.chunk_block if launch.step_block is None else launch.step_block
    sizes = dict(BLOCK_M=block_size(chunk_size, cap=launch.chunk_block), BLOCK_K=block_size(chunk_size, cap=step_block),
                 BLOCK_N=block_size(d_state), BLOCK_NS=block_size(d_state, cap=launch.reduction_block),
                 BLOCK_P=block_size(headdim, cap=launch.headdim_block),
                 BLOCK_PS=block_size(headdim, cap=launch.reduction_block))
    return dict({name: sizes[name] for name in blocks}, num_warps=launch.num_warps, num_stages=launch.num_stages)


def seq_strides(seq_idx: torch.Tensor | None) -> tuple[int, int]:
    """Strides of seq_idx (batch, seqlen), or zeros when there is none (the kernels then never read it)."""
    return (0, 0) if seq_idx is None else seq_idx.stride()
