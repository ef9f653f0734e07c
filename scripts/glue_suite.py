#!/usr/bin/env python
"""Run scripts/run_glue.py over several models, GLUE tasks and learning rates; write one results table and plot.

Each model is `NAME=PATH`: a config JSON (trained from scratch with --tokenizer_name) or a checkpoint folder
(fine-tuned). Every (model, task, learning rate) is one run_glue.py process with the same steps, batch size and
seed; the best learning rate per model and task is chosen on the dev score (as in the GLUE papers). Finished runs
(an eval_results.json in their folder) are reused, so an interrupted suite can simply be started again.
Without --tasks, the suite runs those of the six smaller GLUE tasks (CoLA, SST-2, MRPC, STS-B, RTE, WNLI) whose
files are in --glue_dir, and says which are missing. Writes OUTPUT_DIR/results.json, results.md and results.png (the
plot needs matplotlib: pip install -e ".[plots]"). Example (the mini-table of BENCHMARKS.md):

    OMP_NUM_THREADS=1 python scripts/glue_suite.py --glue_dir ../shared/glue_data \
        --models hydra=configs/hydra-small.json bert=configs/bert-small.json --learning_rates 1e-3 3e-4 \
        --max_steps 150 --batch_size 16 --max_seq_length 64 --output_dir outputs/glue_suite
"""

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
import time

from hydra_transformers.glue import (
    LOCAL_GLUE_TASKS,
    build_model,
    compute_glue_metrics,
    get_glue_task,
    load_config,
    load_glue_directory,
    with_combined_score,
)

SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
RUN_GLUE = os.path.join(SCRIPTS_DIR, "run_glue.py")
TOKENIZER_DIR = os.path.join(os.path.dirname(SCRIPTS_DIR), "assets", "tokenizer", "bert-base-uncased")
GLUE_DOWNLOAD_HINT = "download the official GLUE TSV files from gluebenchmark.com/tasks"


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue_dir", required=True, help="Folder of the official GLUE TSV files.")
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME=PATH",
                        help="Models to compare: a config JSON (from scratch) or a checkpoint folder each.")
    parser.add_argument("--tasks", nargs="+", default=None,
                        help="GLUE tasks to run (default: those of " + ", ".join(LOCAL_GLUE_TASKS) + " in --glue_dir).")
    parser.add_argument("--learning_rates", nargs="+", type=float, default=[1e-3, 3e-4])
    parser.add_argument("--max_steps", type=int, default=200, help="Optimizer steps per run.")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--warmup", type=float, default=0.1, help="Warmup steps, or a fraction (< 1) of the steps.")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tokenizer_name", default=TOKENIZER_DIR, help="Tokenizer of the from-scratch models.")
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    models = {}
    for spec in args.models:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            parser.error(f"--models takes NAME=PATH items, got {spec!r}")
        if not os.path.exists(path):
            parser.error(f"model {name}: {path} does not exist")
        models[name] = path
    args.models = models
    if not os.path.isdir(args.glue_dir):
        parser.error(f"--glue_dir {args.glue_dir} is not a folder; {GLUE_DOWNLOAD_HINT}")
    if args.tasks is None:
        args.tasks, missing = [], []
        for name in LOCAL_GLUE_TASKS:
            (args.tasks if task_files_missing(args.glue_dir, get_glue_task(name)) == [] else missing).append(name)
        if not args.tasks:
            parser.error(f"--glue_dir {args.glue_dir} holds none of the tasks {', '.join(LOCAL_GLUE_TASKS)}; "
                         f"{GLUE_DOWNLOAD_HINT}")
        if missing:
            print(f"Running {', '.join(args.tasks)}; the files of {', '.join(missing)} are not in {args.glue_dir} "
                  f"(to run them, {GLUE_DOWNLOAD_HINT} and put each task in its folder, e.g. "
                  f"{os.path.join(args.glue_dir, get_glue_task(missing[0]).directory)}/).", flush=True)
    else:
        args.tasks = [get_glue_task(task).name for task in args.tasks]
        for name in args.tasks:
            missing = task_files_missing(args.glue_dir, get_glue_task(name))
            if missing:
                parser.error(f"task {name}: missing {', '.join(missing)}; {GLUE_DOWNLOAD_HINT}")
    if args.max_steps <= 0:
        parser.error(f"--max_steps must be positive, got {args.max_steps}")
    return args


def task_files_missing(glue_dir: str, task) -> list:
    """The train and dev files of `task` that are not in `glue_dir` (the suite needs no test files)."""
    needed = ["train", *task.validation_splits]
    return [path for path in (os.path.join(glue_dir, task.directory, task.splits[split]) for split in needed)
            if not os.path.isfile(path)]


METRIC_LABELS = {"accuracy": "accuracy", "f1": "F1", "matthews_correlation": "Matthews corr.",
                 "pearson": "Pearson", "spearmanr": "Spearman"}


def main_score(task, metrics: dict, prefix: str = "eval_") -> tuple:
    """(metric label, value) that ranks runs: GLUE's combined score (the mean) when a task has two metrics."""
    if len(task.metrics) > 1:
        return "mean of " + " & ".join(METRIC_LABELS[m] for m in task.metrics), metrics[f"{prefix}combined_score"]
    return METRIC_LABELS[task.metrics[0]], metrics[f"{prefix}{task.metrics[0]}"]


def majority_class_score(args, task) -> float | None:
    """Dev score of always predicting the most frequent training label; None for STS-B (a constant prediction has
    no correlation)."""
    if task.is_regression:
        return None
    dev_split = task.validation_splits[0]
    data = load_glue_directory(args.glue_dir, task, ["train", dev_split])
    train_labels = data["train"]["label"][:args.max_train_samples]
    majority = max(set(train_labels), key=train_labels.count)
    references = data[dev_split]["label"][:args.max_eval_samples]
    metrics = with_combined_score(compute_glue_metrics(task, [majority] * len(references), references))
    return main_score(task, metrics, prefix="")[1]


def outranks(score: float, other: float) -> bool:
    """Whether `score` beats `other`; NaN (a correlation of constant predictions) ranks last."""
    return score > other or (math.isnan(other) and not math.isnan(score))


def parameter_count(path: str) -> int:
    """Parameters of the model (with a two-label head) of the config at `path` (a JSON file or a checkpoint)."""
    model = build_model("sequence_classification", load_config(path, num_labels=2))
    return sum(p.numel() for p in model.parameters())


def run_one(args, model_path, task, learning_rate, run_dir) -> dict:
    """Metrics of one run_glue.py run (reused when its eval_results.json exists)."""
    results_file = os.path.join(run_dir, "eval_results.json")
    if not os.path.isfile(results_file):
        model_flags = (["--config_name", model_path, "--tokenizer_name", args.tokenizer_name]
                       if model_path.endswith(".json") else ["--model_name_or_path", model_path])
        command = [sys.executable, RUN_GLUE, "--task_name", task.name, "--glue_dir", args.glue_dir, *model_flags,
                   "--do_train", "--do_eval", "--max_steps", str(args.max_steps),
                   "--per_device_train_batch_size", str(args.batch_size), "--per_device_eval_batch_size", "64",
                   "--learning_rate", str(learning_rate), "--warmup_steps", str(args.warmup),
                   "--max_seq_length", str(args.max_seq_length), "--seed", str(args.seed),
                   "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
                   "--logging_strategy", "no", "--overwrite_output_dir", "--output_dir", run_dir]
        for flag in ("max_train_samples", "max_eval_samples"):
            if getattr(args, flag) is not None:
                command += [f"--{flag}", str(getattr(args, flag))]
        os.makedirs(run_dir, exist_ok=True)
        start = time.time()
        with open(os.path.join(run_dir, "run.log"), "w") as log:
            completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
        if completed.returncode != 0:
            raise RuntimeError(f"run_glue.py failed (exit {completed.returncode}); see {run_dir}/run.log")
        with open(results_file) as f:
            metrics = json.load(f)
        metrics["wall_seconds"] = round(time.time() - start, 1)
        with open(results_file, "w") as f:
            json.dump(metrics, f, indent=2)
    with open(results_file) as f:
        return json.load(f)


def write_markdown(path, results, args, models):
    names = list(models)
    lines = ["| task | metric | " + " | ".join(names) + " | majority class |", "|---|---|" + "---|" * (len(names) + 1)]
    for task_name in args.tasks:
        task = get_glue_task(task_name)
        best = [results["best"][name][task_name] for name in names]
        cells = [f"{100 * run['score']:.1f} (lr {run['learning_rate']:g})" for run in best]
        baseline = results["majority_class"][task_name]
        cells.append("n/a" if baseline is None else f"{100 * baseline:.1f}")
        lines.append(f"| {task.directory} | {best[0]['metric']} | " + " | ".join(cells) + " |")
    averages = [100 * sum(results["best"][name][t]["score"] for t in args.tasks) / len(args.tasks) for name in names]
    lines.append("| **average** | | " + " | ".join(f"**{a:.1f}**" for a in averages) + " | |")
    lines += ["", "| model | parameters | config or checkpoint |", "|---|---|---|"]
    lines += [f"| {name} | {results['parameters'][name] / 1e6:.2f}M | `{models[name]}` |" for name in names]
    lines += ["", f"Dev-set scores x100 (Matthews corr. for CoLA, mean of accuracy and F1 for MRPC, mean of Pearson "
              f"and Spearman for STS-B, accuracy otherwise); best of learning rates {args.learning_rates} on dev. "
              f"{args.max_steps} steps of batch {args.batch_size}, max_seq_length {args.max_seq_length}, "
              f"train samples {args.max_train_samples or 'all'}, eval samples {args.max_eval_samples or 'all'}, "
              f"seed {args.seed}."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_plot(path, results, args, models):
    from matplotlib.figure import Figure  # the [plots] extra; only the plot needs it

    names = list(models)
    width = 0.8 / len(names)
    figure = Figure(figsize=(1.6 * len(args.tasks) + 2, 4.2))
    axes = figure.subplots()
    for i, name in enumerate(names):
        scores = [100 * results["best"][name][task]["score"] for task in args.tasks]
        positions = [t + (i - (len(names) - 1) / 2) * width for t in range(len(args.tasks))]
        bars = axes.bar(positions, scores, width, label=f"{name} ({results['parameters'][name] / 1e6:.1f}M)")
        axes.bar_label(bars, fmt="%.1f", fontsize=8)
    baselines = [(t, results["majority_class"][task]) for t, task in enumerate(args.tasks)]
    for i, (t, baseline) in enumerate((t, b) for t, b in baselines if b is not None):
        axes.hlines(100 * baseline, t - 0.45, t + 0.45, colors="black", linestyles="dashed",
                    label="majority class" if i == 0 else None)
    labels = [f"{get_glue_task(t).directory}\n{textwrap.fill(results['best'][names[0]][t]['metric'], 18)}"
              for t in args.tasks]
    axes.set_xticks(range(len(args.tasks)), labels, fontsize=8)
    axes.axhline(0, color="black", linewidth=0.6)
    axes.set_ylabel("dev score x100")
    axes.set_title(f"GLUE dev, from the same {args.max_steps} steps x batch {args.batch_size}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv=None):
    args = parse_arguments(argv)
    results = {"settings": vars(args), "runs": [], "best": {name: {} for name in args.models},
               "parameters": {name: parameter_count(path) for name, path in args.models.items()},
               "majority_class": {task: majority_class_score(args, get_glue_task(task)) for task in args.tasks}}
    for task_name in args.tasks:  # models interleaved, so that a partial suite still compares like with like
        task = get_glue_task(task_name)
        for learning_rate in args.learning_rates:
            for name, path in args.models.items():
                run_dir = os.path.join(args.output_dir, name, task_name, f"lr{learning_rate:g}")
                metrics = run_one(args, path, task, learning_rate, run_dir)
                metric, score = main_score(task, metrics)
                run = dict(model=name, task=task_name, learning_rate=learning_rate, metric=metric, score=score,
                           metrics=metrics)
                results["runs"].append(run)
                print(f"{name:>8} {task_name:>5} lr {learning_rate:g}: {metric} {score:.4f} "
                      f"({metrics.get('wall_seconds', 0):.0f} s)", flush=True)
                best = results["best"][name].get(task_name)
                if best is None or outranks(score, best["score"]):
                    results["best"][name][task_name] = run
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    write_markdown(os.path.join(args.output_dir, "results.md"), results, args, args.models)
    if importlib.util.find_spec("matplotlib") is None:
        print("No results.png: the plot needs matplotlib (pip install -e \".[plots]\").")
    else:
        write_plot(os.path.join(args.output_dir, "results.png"), results, args, args.models)
    print(open(os.path.join(args.output_dir, "results.md")).read())


if __name__ == "__main__":
    main()
