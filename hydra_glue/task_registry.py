"""The GLUE tasks: their files in the official GLUE distribution, label sets, metrics and submission names."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task, described in the terms of both the official TSV files and the Hub's `nyu-mll/glue` copy.

    Args:
        name: the Hub configuration name (`"sst2"`), which is also the `--task_name` of run_glue.
        directory: the task's folder in the GLUE distribution (`"SST-2"`).
        text_columns: Hub column name -> TSV header name of the one or two input texts, in model order.
        label_column: TSV header name of the gold label (the score for STS-B).
        index_column: TSV header name of the example id in the unlabelled test files.
        tsv_labels: the label strings of the TSV files (and of submission files), in the order of the Hub's label
            ids; empty for the regression task STS-B.
        label_names: the Hub's label names, aligned with `tsv_labels`.
        metrics: the metrics GLUE reports for the task.
        splits: Hub split name -> file name; labelled splits are those not starting with "test".
        submissions: test split -> file name in a GLUE leaderboard submission.
        labelled_header: column names of labelled files that have no header row (CoLA); None when they have one.
    """

    name: str
    directory: str
    text_columns: dict
    label_column: str
    index_column: str
    tsv_labels: tuple
    label_names: tuple
    metrics: tuple
    splits: dict = field(default_factory=lambda: {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"})
    submissions: dict = field(default_factory=dict)
    labelled_header: tuple | None = None

    @property
    def is_regression(self) -> bool:
        return not self.tsv_labels

    @property
    def validation_splits(self) -> list:
        return [s for s in self.splits if s.startswith("validation")]

    @property
    def test_splits(self) -> list:
        return [s for s in self.splits if s.startswith("test")]


_BINARY = ("0", "1")
_NLI = ("entailment", "not_entailment")
_MNLI = ("entailment", "neutral", "contradiction")
STS_B_SCORE_RANGE = (0.0, 5.0)

GLUE_TASKS = {
    task.name: task
    for task in (
        GlueTask("cola", "CoLA", {"sentence": "sentence"}, "label", "index", _BINARY,
                 ("unacceptable", "acceptable"), ("matthews_correlation",), submissions={"test": "CoLA.tsv"},
                 labelled_header=("source", "label", "original_label", "sentence")),
        GlueTask("sst2", "SST-2", {"sentence": "sentence"}, "label", "index", _BINARY,
                 ("negative", "positive"), ("accuracy",), submissions={"test": "SST-2.tsv"}),
        GlueTask("mrpc", "MRPC", {"sentence1": "#1 String", "sentence2": "#2 String"}, "Quality", "index",
                 _BINARY, ("not_equivalent", "equivalent"), ("accuracy", "f1"), submissions={"test": "MRPC.tsv"}),
        GlueTask("qqp", "QQP", {"question1": "question1", "question2": "question2"}, "is_duplicate", "id",
                 _BINARY, ("not_duplicate", "duplicate"), ("accuracy", "f1"), submissions={"test": "QQP.tsv"}),
        GlueTask("stsb", "STS-B", {"sentence1": "sentence1", "sentence2": "sentence2"}, "score", "index", (), (),
                 ("pearson", "spearmanr"), submissions={"test": "STS-B.tsv"}),
        GlueTask("mnli", "MNLI", {"premise": "sentence1", "hypothesis": "sentence2"}, "gold_label", "index",
                 _MNLI, _MNLI, ("accuracy",),
                 splits={"train": "train.tsv", "validation_matched": "dev_matched.tsv",
                         "validation_mismatched": "dev_mismatched.tsv", "test_matched": "test_matched.tsv",
                         "test_mismatched": "test_mismatched.tsv"},
                 submissions={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"}),
        GlueTask("qnli", "QNLI", {"question": "question", "sentence": "sentence"}, "label", "index", _NLI, _NLI,
                 ("accuracy",), submissions={"test": "QNLI.tsv"}),
        GlueTask("rte", "RTE", {"sentence1": "sentence1", "sentence2": "sentence2"}, "label", "index", _NLI, _NLI,
                 ("accuracy",), submissions={"test": "RTE.tsv"}),
        GlueTask("wnli", "WNLI", {"sentence1": "sentence1", "sentence2": "sentence2"}, "label", "index", _BINARY,
                 ("not_entailment", "entailment"), ("accuracy",), submissions={"test": "WNLI.tsv"}),
    )
}

# The six smaller tasks, which scripts/glue_suite.py runs when their files are present (QQP, MNLI and QNLI, the
# large ones, are read too).
LOCAL_GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte", "wnli")


def get_glue_task(name: str) -> GlueTask:
    """The task called `name` (case-insensitive; "sst-2" and "sts-b" are accepted); ValueError listing the known."""
    key = name.lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise ValueError(f"Unknown GLUE task {name!r}; known tasks: {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[key]
