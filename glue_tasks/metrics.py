"""GLUE metrics as the benchmark defines them, computed with scikit-learn and SciPy.

Matthews correlation (CoLA), accuracy and F1 of the positive class (MRPC, QQP), Pearson and Spearman correlation
(STS-B), accuracy (the others). These are the computations of the Hub-hosted `evaluate` "glue" metric, which is
used instead when the `evaluate` package is installed and the metric can be loaded.
"""

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef
from transformers.utils import logging

from .task_registry import GlueTask

logger = logging.get_logger(__name__)


def compute_glue_metrics(task: GlueTask, predictions, references) -> dict:
    """The metrics of `task` for class ids (or STS-B scores) `predictions` against `references`."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.shape != references.shape:
        raise ValueError(f"predictions {predictions.shape} and references {references.shape} differ in shape")
    functions = {
        "accuracy": lambda: float((predictions == references).mean()),
        "f1": lambda: float(f1_score(references, predictions)),
        "matthews_correlation": lambda: float(matthews_corrcoef(references, predictions)),
        "pearson": lambda: float(pearsonr(predictions, references)[0]),
        "spearmanr": lambda: float(spearmanr(predictions, references)[0]),
    }
    return {name: functions[name]() for name in task.metrics}


def glue_metric_function(task: GlueTask, hub_config: str | None = None):
    """A function `(predictions, references) -> dict` for `task`: the Hub's `evaluate` metric when it loads,
    else `compute_glue_metrics`. `hub_config` names the evaluate configuration (e.g. "mnli_mismatched")."""
    try:
        import evaluate
    except ImportError:
        return lambda predictions, references: compute_glue_metrics(task, predictions, references)
    try:
        metric = evaluate.load("glue", hub_config or task.name)
    except Exception as error:  # network, cache or Hub errors all mean the same: compute it here
        logger.warning(f"Could not load the Hub's glue metric ({error}); computing it with scikit-learn/scipy.")
        return lambda predictions, references: compute_glue_metrics(task, predictions, references)
    return lambda predictions, references: metric.compute(predictions=predictions, references=references)


def with_combined_score(metrics: dict) -> dict:
    """Add GLUE's `combined_score`, the mean of a task's metrics, when it has more than one."""
    if len(metrics) > 1:
        metrics = dict(metrics, combined_score=float(np.mean(list(metrics.values()))))
    return metrics
