"""What the Trainer scripts in scripts/ share (installed as `hydra_transformers.glue`): GLUE task definitions, the
offline reader of the official TSV files, the GLUE metrics, submission files, config/model loading for Hydra and
other transformers models, and the packed masked-LM collator.

The names below are loaded on first use, so that importing this package (or `.mlm_packing`, which needs only torch
and transformers) does not import the `[glue]` extra's packages (datasets, scikit-learn, scipy, accelerate).
"""

import importlib

# name -> submodule that defines it
_EXPORTS = {
    "glue_features": "glue_directory", "load_glue_directory": "glue_directory", "read_glue_split": "glue_directory",
    "compute_glue_metrics": "metrics", "with_combined_score": "metrics",
    "build_model": "model_loading", "check_model_head": "model_loading", "load_config": "model_loading",
    "write_glue_submission": "submission",
    "GLUE_TASKS": "task_registry", "LOCAL_GLUE_TASKS": "task_registry", "GlueTask": "task_registry",
    "get_glue_task": "task_registry",
    "GlueFormatError": "tsv_reader", "read_tsv_columns": "tsv_reader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
