"""What the Trainer scripts in scripts/ share: GLUE task definitions, the offline reader of the official TSV files,
the GLUE metrics, submission files, and config/model loading for Hydra and other transformers models."""

from .glue_directory import glue_features, load_glue_directory, read_glue_split
from .metrics import compute_glue_metrics, with_combined_score
from .model_loading import build_model, check_model_head, load_config
from .submission import write_glue_submission
from .task_registry import GLUE_TASKS, LOCAL_GLUE_TASKS, GlueTask, get_glue_task
from .tsv_reader import GlueFormatError, read_tsv_columns

__all__ = [
    "GLUE_TASKS",
    "LOCAL_GLUE_TASKS",
    "GlueFormatError",
    "GlueTask",
    "build_model",
    "check_model_head",
    "compute_glue_metrics",
    "get_glue_task",
    "glue_features",
    "load_config",
    "load_glue_directory",
    "read_glue_split",
    "read_tsv_columns",
    "with_combined_score",
    "write_glue_submission",
]
