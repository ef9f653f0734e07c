"""scripts/run_glue.py under `torchrun --nproc_per_node 2` (DDP over gloo on CPU) on a tiny slice."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from glue_test_helpers import (
    GLUE_SAMPLE,
    QUIET,
    SCRIPTS,
    TINY_HYDRA,
    predict_with_saved_model,
    read_official_tsv,
    subprocess_env,
)


def test_two_processes_split_the_data_and_report_the_usual_metrics(tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(SCRIPTS / "run_glue.py"), "--use_cpu", "--task_name", "sst2", "--glue_dir", str(GLUE_SAMPLE),
               *TINY_HYDRA, "--do_train", "--do_eval", "--max_train_samples", "32", "--max_eval_samples", "30",
               "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--learning_rate", "1e-3",
               "--num_train_epochs", "1", "--save_strategy", "no", "--output_dir", str(out), *QUIET]
    completed = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "Process 1 of 2" in completed.stdout + completed.stderr

    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4  # 32 examples over 2 processes x batch 4
    results = json.loads((out / "eval_results.json").read_text())
    assert {"eval_accuracy", "eval_loss", "eval_samples", "epoch"} <= set(results)
    assert results["eval_samples"] == 30

    texts, labels = read_official_tsv(GLUE_SAMPLE / "SST-2" / "dev.tsv", ["sentence"], "label", limit=30)
    predictions, _ = predict_with_saved_model(out, texts)
    assert results["eval_accuracy"] == pytest.approx(np.mean(predictions == np.array(labels, dtype=int)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="with GPUs torchrun without --use_cpu is distributed (nccl)")
def test_a_launch_without_distributed_training_is_refused(tmp_path):
    """torchrun without --use_cpu would make both processes train alone on all the data: one clear error."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(SCRIPTS / "run_glue.py"), "--task_name", "sst2", "--glue_dir", str(GLUE_SAMPLE), *TINY_HYDRA,
               "--do_train", "--output_dir", str(tmp_path / "out"), *QUIET]
    completed = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert completed.returncode != 0
    assert "2 processes were launched but the Trainer is not distributed" in completed.stderr
