"""Optional Triton import shared by the Triton SSD kernels, and the one place that decides how their tl.dot runs.

Every file of the Triton path imports triton only through this module, inside `try:`, so the files import on
machines without triton; the kernels then stay plain functions and the backend registry refuses the "triton" backend
before any of them could be launched.

Precision of the dots (`dot_config`):
- bfloat16 / float16 inputs: 16-bit tensor-core operands, float32 accumulation.
- float32 inputs: tensor cores as well, at float32 accuracy by default. With torch's default float32 matmul
  precision ("highest"), the dots run as "tf32x3": each operand is split into a TF32 high part and a TF32
  remainder and three TF32 products are summed, which keeps about 21-22 bits of each product (relative error of a
  dot ~1e-6 against ~1e-7 for exact float32, and ~1e-3 for plain TF32) at 3x the TF32 tensor-core work, still far
  faster than float32 on CUDA cores (which is also what made the "ieee" dots spill). When the user allows reduced
  precision for float32 matmuls (`torch.set_float32_matmul_precision("high")` or "medium", as
  `torch.backends.cuda.matmul.allow_tf32 = True` does), the dots run as plain "tf32", as torch's own matmuls then do.
- GPUs before sm_80 have no TF32: float32 dots run as "ieee" there (CUDA cores; untested, no compile check).
- Triton's CPU interpreter ignores input_precision (it multiplies in numpy float32), so on CPU every setting gives
  float32 results; the GPU check (benchmarks/gpu_check.sh) measures the tf32x3 accuracy on a GPU.
- float64 inputs are computed in float32 (ssd_bidirectional_triton casts them).
"""

import torch

try:
    import triton
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
except ImportError:
    triton = None
    tl = None
    InterpretedFunction = None

TRITON_INSTALL_HINT = "install it with `pip install triton` (or `pip install 'hydra-transformers[triton]'`)"
# Compute capability assumed for block choices when the kernels run in Triton's interpreter (no GPU target).
INTERPRETER_ARCH = 90


def triton_jit(fn):
    """`triton.jit(fn)` when triton is installed (an interpreted kernel under TRITON_INTERPRET=1), else `fn`."""
    return fn if triton is None else triton.jit(fn)


def is_interpreted(kernel) -> bool:
    """True when `kernel` was compiled by Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return InterpretedFunction is not None and isinstance(kernel, InterpretedFunction)


def target_arch(kernel) -> int:
    """Compute capability (80, 86, 90, ...) that Triton compiles `kernel` for: the current device's target, or
    `INTERPRETER_ARCH` in the interpreter."""
    if is_interpreted(kernel):
        return INTERPRETER_ARCH
    return triton.runtime.driver.active.get_current_target().arch


def block_size(n: int, floor: int = 16, cap: int | None = None) -> int:
    """Power-of-two block covering `n` (at least `floor`, the smallest tl.dot operand on GPUs; at most `cap`)."""
    size = max(floor, 1 << max(n - 1, 0).bit_length())
    return size if cap is None else min(size, cap)


def float32_dot_precision() -> str:
    """input_precision of float32 tl.dot: "tf32x3" (float32 accuracy on tensor cores) unless torch's float32 matmul
    precision allows TF32 ("high" or "medium"), then "tf32"."""
    return "tf32x3" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def dot_config(dtype: torch.dtype, kernel) -> dict:
    """Constexpr tl.dot settings of `kernel` for inputs of `dtype`: DOT_DTYPE, the operand dtype (the input's 16-bit
    type, else float32), and PRECISION, which only matters for float32 operands (see the module docstring).

    Triton's CPU interpreter multiplies bfloat16 operands wrongly, so interpreted kernels get float32 operands then.
    """
    operand = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}.get(dtype, tl.float32)
    if dtype == torch.bfloat16 and is_interpreted(kernel):
        operand = tl.float32
    precision = float32_dot_precision() if target_arch(kernel) >= 80 else "ieee"
    return dict(DOT_DTYPE=operand, PRECISION=precision)
