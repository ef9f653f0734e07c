"""GLUE metrics as the benchmark defines them, computed with scikit-learn and SciPy.

Matthews correlation (CoLA), accuracy and F1 of the positive class (MRPC, QQP), Pearson and Spearman correlation
(STS-B), accuracy (the others): the computations of the Hub-hosted `evaluate` "glue" metric, done here so that
evaluation needs no network and runs no downloaded code.
"""

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

from .task_registry import GlueTask


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


def with_combined_score(metrics: dict) -> dict:
    """Add GLUE's `combined_score`, the mean of a task's metrics, when it has more than one."""
    if len(metrics) > 1:
        metrics = dict(metrics, combined_score=float(np.mean(list(metrics.values()))))
    return metrics
