"""The scripts at their edges: input errors named in one line before any work (missing label column, unseen labels,
empty corpora, read-only or busy --output_dir, truncated checkpoints, mistyped paths, a core-only install), and what
a run says about its plan and about a resume with nothing left to do."""

import json
import logging
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from glue_test_helpers import GLUE_SAMPLE, QUIET, SCRIPTS, TINY_HYDRA, script_function, subprocess_env

from hydra_transformers.glue import script_setup


def write_csv(path, rows, header="sentence,label"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return str(path)


def csv_run(tmp_path, train_rows, dev_rows, header="sentence,label", dev_header=None):
    train = write_csv(tmp_path / "train.csv", train_rows, header)
    dev = write_csv(tmp_path / "dev.csv", dev_rows, dev_header or header)
    return ["--train_file", train, "--validation_file", dev, *TINY_HYDRA, "--do_train", "--do_eval",
            "--max_steps", "1", "--output_dir", str(tmp_path / "out"), *QUIET]


def test_run_glue_names_a_missing_label_column(tmp_path):
    argv = csv_run(tmp_path, ["a good film,pos", "a bad film,neg"], ["dull,neg"], header="sentence,gold")
    with pytest.raises(ValueError, match=r"the train data has no 'label' column \(its columns: sentence, gold\)"):
        script_function("run_glue")(argv)


def test_run_glue_names_a_label_unseen_in_training(tmp_path):
    argv = csv_run(tmp_path, ["a good film,pos", "a bad film,neg"], ["dull,neg", "so so,neutral"])
    with pytest.raises(ValueError, match=r"the validation data has label\(s\) 'neutral' that the train data does "
                                         r"not have \(its labels: 'neg', 'pos'\)"):
        script_function("run_glue")(argv)
    assert not (tmp_path / "out" / "trainer_state.json").exists()


@pytest.mark.parametrize("text", ["", "\n  \n\t\n"], ids=["empty", "blank"])
def test_run_mlm_refuses_an_empty_or_blank_file(tmp_path, text):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    argv = ["--train_file", str(corpus), "--line_by_line", *TINY_HYDRA, "--do_train", "--max_steps", "1",
            "--output_dir", str(tmp_path / "out"), *QUIET]
    with pytest.raises(ValueError, match=rf"--train_file {corpus} holds no text \(the file is empty or blank\)"):
        script_function("run_mlm")(argv)


def sst2_argv(output_dir, *extra):
    return ["--task_name", "sst2", "--glue_dir", str(GLUE_SAMPLE), *TINY_HYDRA, "--do_train",
            "--max_train_samples", "16", "--per_device_train_batch_size", "8", "--output_dir", str(output_dir),
            *QUIET, *extra]


def test_a_read_only_output_dir_fails_before_training(tmp_path, monkeypatch):
    if os.geteuid() == 0:  # root writes through permission bits; sysfs refuses new files even to root
        read_only = "/sys/kernel"
    else:
        read_only = tmp_path / "read_only"
        read_only.mkdir()
        read_only.chmod(0o555)
    monkeypatch.setattr(script_setup, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("work was started"))
    with pytest.raises(ValueError, match=rf"--output_dir {read_only} is not writable"):
        script_function("run_glue")(sst2_argv(read_only))
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    with pytest.raises(ValueError, match=rf"--output_dir {blocked}/out cannot be created"):
        script_function("run_glue")(sst2_argv(blocked / "out"))


def test_a_second_run_in_the_same_output_dir_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(script_setup, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("work was started"))
    args = script_setup.parse_arguments(script_function("run_glue", "DataTrainingArguments"), sst2_argv(out))[2]
    with script_setup.output_dir_claimed(args):  # the first run, still going
        with pytest.raises(ValueError, match=rf"--output_dir {out} is in use by another run \(process {os.getpid()}\)"):
            script_function("run_glue")(sst2_argv(out))
    with script_setup.output_dir_claimed(args):  # released when the first run ends
        pass


def test_a_mistyped_local_path_is_named_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    for flag, value in (("--model_name_or_path", "outputs/mlmm"), ("--model_name_or_path", "./mlm"),
                        ("--config_name", "configs/hydra-smal.json"), ("--tokenizer_name", "/no/such/tokenizer")):
        with pytest.raises(ValueError, match=rf"{flag} {value}: no such file or folder"):
            script_setup.check_local_path(value, flag)
    script_setup.check_local_path("google-bert/bert-base-uncased", "--model_name_or_path")  # a Hub id: left alone
    argv = ["--task_name", "sst-2", "--glue_dir", str(GLUE_SAMPLE), "--model_name_or_path", "outputs/sst2_typo",
            "--do_eval", "--output_dir", str(tmp_path / "out"), *QUIET]
    with pytest.raises(ValueError, match="--model_name_or_path outputs/sst2_typo: no such file or folder"):
        script_function("run_glue")(argv)


def test_task_name_spellings_are_normalised_or_refused_with_the_valid_names():
    data_class = script_function("run_glue", "DataTrainingArguments")
    assert data_class(task_name="SST-2").task_name == "sst2" and data_class(task_name="sts-b").task_name == "stsb"
    with pytest.raises(ValueError, match="Unknown GLUE task 'sst'; known tasks: cola, sst2, mrpc, qqp, stsb"):
        data_class(task_name="sst")


def run_script(*args, code=None, cwd=REPO_ROOT):
    command = [sys.executable, *(["-c", code] if code else []), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=subprocess_env(), cwd=cwd)


def test_argument_errors_print_one_line_without_a_traceback(tmp_path):
    completed = run_script(SCRIPTS / "run_glue.py", *sst2_argv(tmp_path / "out", "--max_seq_length", "0"))
    assert completed.returncode == 2 and "Traceback" not in completed.stderr, completed.stderr[-3000:]
    assert completed.stderr.strip().splitlines()[-1] == \
        "run_glue.py: error: --max_seq_length must be a positive number of tokens, got 0"
    completed = run_script(SCRIPTS / "run_mlm.py", "--train_file", tmp_path / "missing.txt", *TINY_HYDRA,
                           "--do_train", "--output_dir", tmp_path / "mlm")
    assert completed.returncode == 2 and "Traceback" not in completed.stderr, completed.stderr[-3000:]
    assert completed.stderr.strip().splitlines()[-1] == \
        f"run_mlm.py: error: --train_file {tmp_path / 'missing.txt'}: no such file"


CORE_ONLY = """
import runpy, sys
for name in ("datasets", "accelerate", "sklearn", "scipy"):  # a core-only install has none of the [glue] extra
    sys.modules[name] = None
sys.argv = [sys.argv[1], "--help"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("script", ["run_glue", "run_mlm"])
def test_a_core_only_install_says_which_extra_to_install(script):
    completed = run_script(SCRIPTS / f"{script}.py", code=CORE_ONLY)
    assert completed.returncode == 1 and "Traceback" not in completed.stderr, completed.stderr[-3000:]
    assert completed.stderr.strip() == (f"{script}.py: error: the package 'datasets' is not installed; the "
                                        f"{'GLUE scripts need' if script == 'run_glue' else 'pre-training script needs'}"
                                        ' the [glue] extra: pip install -e ".[glue]" (from the repository root)')


def test_a_run_states_its_plan_and_a_finished_resume_says_so(tmp_path, caplog):
    out = tmp_path / "out"
    argv = sst2_argv(out, "--max_steps", "3", "--save_steps", "3")
    with caplog.at_level(logging.WARNING):
        script_function("run_glue")(argv)
    assert "Training 3 steps (16 examples" in caplog.text
    assert "Estimated time: " in caplog.text and "for the remaining" in caplog.text
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        script_function("run_glue")(argv)  # again: checkpoint-3 holds every planned step
    assert f"{out / 'checkpoint-3'} already completed all 3 planned steps: nothing left to train" in caplog.text
    assert "Training 3 steps" not in caplog.text and "'train_loss': 0.0" not in caplog.text
