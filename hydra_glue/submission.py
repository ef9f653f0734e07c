"""Prediction files in the format of a GLUE leaderboard submission (gluebenchmark.com)."""

import os

import numpy as np

from .task_registry import STS_B_SCORE_RANGE, GlueTask


def write_glue_submission(output_dir: str, task: GlueTask, split: str, indices, predictions) -> str:
    """Write `<output_dir>/<CoLA.tsv|MNLI-m.tsv|...>`: a header `index<TAB>prediction`, then one row per example.

    `predictions` are class ids (written as the task's TSV label, e.g. `1` or `not_entailment`) or STS-B scores
    (clipped to [0, 5], three decimals). Returns the path written.
    """
    if split not in task.submissions:
        raise ValueError(f"Task {task.name} has no submission file for split {split!r}; "
                         f"its test splits are {list(task.submissions)}")
    predictions = np.asarray(predictions)
    if len(indices) != len(predictions):
        raise ValueError(f"{len(indices)} example indices but {len(predictions)} predictions")
    if task.is_regression:
        labels = [f"{score:.3f}" for score in np.clip(predictions, *STS_B_SCORE_RANGE)]
    else:
        labels = [task.tsv_labels[int(label)] for label in predictions]
    path = os.path.join(output_dir, task.submissions[split])
    os.makedirs(output_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("index\tprediction\n")
        f.writelines(f"{index}\t{label}\n" for index, label in zip(indices, labels))
    return path
