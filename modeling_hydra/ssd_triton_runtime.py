"""Optional Triton import shared by the Triton SSD kernels, and their block-size and precision choices.

Every file of the Triton path imports triton only through this module, inside `try:`, so the files (and the torch
`_ref` references beside the kernels) import on machines without triton; the kernels then stay plain functions and
`resolve_ssd_backend` refuses the "triton" backend before any of them could be launched.
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


def triton_jit(fn):
    """`triton.jit(fn)` when triton is installed (an interpreted kernel under TRITON_INTERPRET=1), else `fn`."""
    return fn if triton is None else triton.jit(fn)


def is_interpreted(kernel) -> bool:
    """True when `kernel` was compiled by Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return InterpretedFunction is not None and isinstance(kernel, InterpretedFunction)


def block_size(n: int, floor: int = 16, cap: int | None = None) -> int:
    """Power-of-two block covering `n` (at least `floor`, the smallest tl.dot operand on GPUs; at most `cap`)."""
    size = max(floor, 1 << max(n - 1, 0).bit_length())
    return size if cap is None else min(size, cap)


def dot_config(dtype: torch.dtype, kernel) -> dict:
    """Constexpr tl.dot settings of `kernel` for inputs of `dtype`: DOT_DTYPE, the operand dtype (the input's 16-bit
    type, else float32), and PRECISION, which only matters for float32 operands ("ieee" unless torch allows TF32
    for float32 matmuls).

    Triton's CPU interpreter multiplies bfloat16 operands wrongly, so interpreted kernels get float32 operands then.
    """
    operand = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}.get(dtype, tl.float32)
    if dtype == torch.bfloat16 and is_interpreted(kernel):
        operand = tl.float32
    exact = operand == tl.float32 and torch.get_float32_matmul_precision() == "highest"
    return dict(DOT_DTYPE=operand, PRECISION="ieee" if exact else "tf32")
