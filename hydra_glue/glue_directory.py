"""Load a task from a local copy of the GLUE distribution into the schema of the Hub's `nyu-mll/glue` datasets."""

import math
import os

import datasets

from .task_registry import STS_B_SCORE_RANGE, GlueTask
from .tsv_reader import GlueFormatError, read_tsv_columns


def glue_features(task: GlueTask) -> datasets.Features:
    """The Hub's features of `task`: its text columns, `label` (ClassLabel, or float32 for STS-B) and `idx`."""
    label = datasets.Value("float32") if task.is_regression else datasets.ClassLabel(names=list(task.label_names))
    features = {column: datasets.Value("string") for column in task.text_columns}
    features.update(label=label, idx=datasets.Value("int32"))
    return datasets.Features(features)


def _parse_label(task: GlueTask, raw: str, path: str, line: int):
    if task.is_regression:
        try:
            score = float(raw)
        except ValueError:
            score = math.nan
        low, high = STS_B_SCORE_RANGE
        if not low <= score <= high:
            raise GlueFormatError(f"{path}, line {line}: the {task.name} score {raw!r} is not a number in "
                                  f"[{low:g}, {high:g}]")
        return score
    if raw not in task.tsv_labels:
        raise GlueFormatError(f"{path}, line {line}: label {raw!r} is not one of the labels of task {task.name}: "
                              f"{', '.join(task.tsv_labels)}")
    return task.tsv_labels.index(raw)


def _parse_index(raw: str, path: str, line: int) -> int:
    try:
        return int(raw)
    except ValueError:
        raise GlueFormatError(f"{path}, line {line}: the example index {raw!r} is not an integer") from None


def read_glue_split(task: GlueTask, path: str, labelled: bool) -> dict:
    """Columns of one GLUE file in the Hub's schema: texts, `label` (-1 in test files) and `idx`."""
    text_columns = list(task.text_columns.values())
    if labelled:
        values, lines = read_tsv_columns(path, text_columns + [task.label_column], task.labelled_header)
        labels = [_parse_label(task, raw, path, line) for raw, line in zip(values[task.label_column], lines)]
        indices = list(range(len(lines)))
    else:
        values, lines = read_tsv_columns(path, [task.index_column] + text_columns)
        labels = [-1.0 if task.is_regression else -1] * len(lines)
        indices = [_parse_index(raw, path, line) for raw, line in zip(values[task.index_column], lines)]
    columns = {hub: values[tsv] for hub, tsv in task.text_columns.items()}
    columns.update(label=labels, idx=indices)
    return columns


def load_glue_directory(glue_dir: str, task: GlueTask, splits: list | None = None) -> datasets.DatasetDict:
    """The `splits` (default: all) of `task` from `glue_dir/<task directory>/` as a DatasetDict.

    Raises FileNotFoundError naming the missing file and GlueFormatError (a ValueError) naming file, line and the
    expected layout of a malformed one.
    """
    splits = list(task.splits) if splits is None else splits
    unknown = [s for s in splits if s not in task.splits]
    if unknown:
        raise ValueError(f"Task {task.name} has no split(s) {unknown}; its splits are {list(task.splits)}")
    folder = os.path.join(glue_dir, task.directory)
    missing = [os.path.join(folder, task.splits[s]) for s in splits if not os.path.isfile(
        os.path.join(folder, task.splits[s]))]
    if missing:
        raise FileNotFoundError(f"GLUE task {task.name}: missing file(s) {missing} (expected the official GLUE "
                                f"layout {task.directory}/{{{', '.join(task.splits.values())}}} under {glue_dir})")
    features = glue_features(task)
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict(
            read_glue_split(task, os.path.join(folder, task.splits[split]), labelled=not split.startswith("test")),
            features=features)
        for split in splits
    })
