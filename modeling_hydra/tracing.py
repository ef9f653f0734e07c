"""The two questions every shape decision asks: is this forward being captured, and must the capture be torch ops."""

import torch


def is_tracing() -> bool:
    """True under torch.jit tracing/scripting, torch.export and torch.compile: the code must then be shape-static (no
    branch on a size or a value, no host sync)."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


def is_exporting() -> bool:
    """True under torch.export (and so torch.onnx.export) and torch.jit: the graph may hold torch operators only."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing() or torch.jit.is_scripting()
