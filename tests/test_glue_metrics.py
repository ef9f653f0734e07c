"""GLUE metrics against values worked out by hand."""

import math

import pytest

from hydra_transformers.glue import compute_glue_metrics, get_glue_task, with_combined_score

# predictions [1, 1, 0, 0, 1] against references [1, 0, 0, 1, 1]: TP = 2, FP = 1, FN = 1, TN = 1.
PREDICTIONS, REFERENCES = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
ACCURACY = 3 / 5
F1 = 2 * 2 / (2 * 2 + 1 + 1)  # 2 TP / (2 TP + FP + FN)
MATTHEWS = (2 * 1 - 1 * 1) / math.sqrt((2 + 1) * (2 + 1) * (1 + 1) * (1 + 1))  # (TP TN - FP FN) / sqrt(...)


@pytest.mark.parametrize("task", ["sst2", "qnli", "rte", "wnli", "mnli"])
def test_accuracy_tasks(task):
    assert compute_glue_metrics(get_glue_task(task), PREDICTIONS, REFERENCES) == pytest.approx({"accuracy": 0.6})


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_accuracy_and_f1_tasks(task):
    metrics = compute_glue_metrics(get_glue_task(task), PREDICTIONS, REFERENCES)
    assert metrics == pytest.approx({"accuracy": ACCURACY, "f1": F1})
    assert F1 == pytest.approx(2 / 3)
    assert with_combined_score(metrics)["combined_score"] == pytest.approx((0.6 + 2 / 3) / 2)


def test_cola_is_matthews_correlation():
    metrics = compute_glue_metrics(get_glue_task("cola"), PREDICTIONS, REFERENCES)
    assert metrics == pytest.approx({"matthews_correlation": MATTHEWS})
    assert MATTHEWS == pytest.approx(1 / 6)
    assert with_combined_score(metrics) == metrics  # one metric: no combined score


def test_stsb_is_pearson_and_spearman():
    # x = [1, 2, 3], y = [1, 4, 2]: deviations [-1, 0, 1] and [-4/3, 5/3, -1/3]; covariance sum 1,
    # sums of squares 2 and 42/9, so Pearson = 1 / sqrt(2 * 42 / 9) = 3 / sqrt(84). Spearman is the Pearson of the
    # ranks [1, 2, 3] and [1, 3, 2]: deviations [-1, 0, 1] and [-1, 1, 0], covariance sum 1, sums of squares 2 and 2.
    metrics = compute_glue_metrics(get_glue_task("stsb"), [1.0, 2.0, 3.0], [1.0, 4.0, 2.0])
    assert metrics == pytest.approx({"pearson": 3 / math.sqrt(84), "spearmanr": 0.5})


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        compute_glue_metrics(get_glue_task("sst2"), [1, 0], [1, 0, 1])
