"""Throughput of Hydra against transformers' BERT (SDPA) on CPU, in two modes.

Encoder mode (the default; BENCHMARKS.md section 1): HydraModel against BertModel at matched encoder parameters on
full-length random batches. Runs in one process with interleaved timings (Hydra, BERT, Hydra, BERT, ...) and
reports medians, the ratio Hydra/BERT, the fraction of this machine's measured fp32 matmul rate (model FLOPs: the
forward's matmul FLOPs counted by torch's FlopCounterMode, times 3 for training, so recomputation is not counted as
work), and peak memory of one step, each measured in a fresh subprocess as the growth of the resident set: once with
glibc's default allocator settings ("rss") and once with MALLOC_MMAP_THRESHOLD_=65536, which returns freed blocks to
the system at once so that the peak counts live tensors only ("live"). Example:

    python benchmarks/benchmark.py --pairs small base --lengths 128 512 2048 8192 --tokens 8192

GLUE mode (`--glue`): fine-tuning as users run it. The stock transformers `Trainer` with `DataCollatorWithPadding`
trains a sequence classifier from scratch on the first N sentences of a GLUE task's train.tsv (default: the
embedded SST-2 sample, N = 1024; batch 32, max_length 128, one epoch) and evaluates it on the dev set (batch 64).
Hydra-small (configs/hydra-small.json) runs against BERT-small (configs/bert-small.json, sdpa). `--pair base` runs
hydra-base (HydraConfig() defaults) against bert-base-uncased's architecture, both randomly initialized, on only
128 training and 256 dev sentences by default, to keep a run within minutes on two cores. Each repeat times
`trainer.train()` and `trainer.evaluate()` with the wall clock, for every model in turn (A B A B ...), after an
untimed warm-up of a few batches; no saving, logging, reporting or dataloader workers. Prints medians with their
min-max, the ratio Hydra/BERT of the medians and the share of real (non-pad) tokens per batch. `--hydra_overrides`
and `--variants` compare Hydra configurations in the same process:

    python benchmarks/benchmark.py --glue
    python benchmarks/benchmark.py --glue --variants default='{}' nounpad='{"unpad_inputs": false}' --json glue.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datasets
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertModel,
    DataCollatorWithPadding,
    PrinterCallback,
    Trainer,
    TrainingArguments,
)
from transformers import __version__ as transformers_version
from transformers.utils import logging

from configuration_hydra import HydraConfig
from hydra_transformers.glue import get_glue_task, load_glue_directory
from modeling_hydra import HydraForSequenceClassification, HydraModel

REPO_ROOT = Path(__file__).resolve().parent.parent
# Model sources of the GLUE mode: a config JSON file, or a name in BUILTIN_CONFIGS (random init either way).
BUILTIN_CONFIGS = {"hydra-base": HydraConfig, "bert-base": BertConfig}  # HydraConfig() = hydra-bert-base,
# BertConfig() = bert-base-uncased's architecture
GLUE_PAIRS = {
    "small": (str(REPO_ROOT / "configs" / "hydra-small.json"), str(REPO_ROOT / "configs" / "bert-small.json")),
    "base": ("hydra-base", "bert-base"),
}
GLUE_DEFAULT_TRAIN_SAMPLES = {"small": 1024, "base": 128}
GLUE_DEFAULT_EVAL_SAMPLES = {"small": None, "base": 256}  # None: the whole dev set

# name: (hydra kwargs, bert kwargs); matched encoder parameter counts (printed at start).
PAIRS = {
    "small": (dict(hidden_size=256, num_hidden_layers=7),
              dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)),
    "base": (dict(hidden_size=768, num_hidden_layers=23),
             dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)),
}


def build(kind: str, pair: str, seqlen: int, chunk_size: int | None):
    hydra_kwargs, bert_kwargs = PAIRS[pair]
    if kind == "hydra":
        cfg = HydraConfig(vocab_size=30528, hidden_dropout_prob=0.0, ssd_backend="torch", **hydra_kwargs)
        if chunk_size:
            cfg.chunk_size = chunk_size
        model = HydraModel(cfg, add_pooling_layer=False)
    else:
        cfg = BertConfig(vocab_size=30522, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                         max_position_embeddings=max(512, seqlen), attn_implementation="sdpa", **bert_kwargs)
        model = BertModel(cfg, add_pooling_layer=False)
    return model


def encoder_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith("encoder."))


def make_step(model, batch: int, seqlen: int, train: bool):
    ids = torch.randint(1, 30000, (batch, seqlen))
    mask = torch.ones(batch, seqlen, dtype=torch.long)
    if train:
        model.train()

        def step():
            model.zero_grad(set_to_none=True)
            model(input_ids=ids, attention_mask=mask).last_hidden_state.float().pow(2).mean().backward()
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                model(input_ids=ids, attention_mask=mask)
    return step


def count_flops(model, batch: int, seqlen: int, train: bool) -> int:
    """Model FLOPs of one step: the forward's matmul FLOPs (counted by torch), times 3 for forward+backward."""
    with FlopCounterMode(display=False) as counter:
        make_step(model, batch, seqlen, train=False)()
    return counter.get_total_flops() * (3 if train else 1)


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times)


def peak_memory_mb(kind, pair, seqlen, batch, train, chunk_size, live: bool) -> float:
    """Peak RSS growth of one step (MB), measured in a fresh process so that peaks of other runs do not mask it."""
    args = json.dumps([kind, pair, seqlen, batch, train, chunk_size])
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536") if live else None
    out = subprocess.run([sys.executable, __file__, "--_peak", args], capture_output=True, text=True, check=True,
                         env=env)
    return float(out.stdout.strip().splitlines()[-1])


def _rss_kb(field: str) -> int:
    """VmRSS or VmHWM (peak) of this process in kB (ru_maxrss would inherit the parent's peak across exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _peak_child(args_json: str):
    kind, pair, seqlen, batch, train, chunk_size = json.loads(args_json)
    torch.set_num_threads(2)
    model = build(kind, pair, seqlen, chunk_size)
    step = make_step(model, batch, seqlen, train)
    base = max(_rss_kb("VmRSS"), _rss_kb("VmHWM"))
    step()
    print((_rss_kb("VmHWM") - base) / 1024)


def load_classifier_config(source: str, overrides: dict, num_labels: int = 2):
    """The config of a sequence classifier: `source` is a config JSON file or a name in BUILTIN_CONFIGS, updated
    with the dict `overrides`. Fields the config class does not know are kept as attributes of the config."""
    if source in BUILTIN_CONFIGS:
        return BUILTIN_CONFIGS[source].from_dict({**overrides, "num_labels": num_labels})
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"Model config {source!r} is neither a config JSON file nor one of {sorted(BUILTIN_CONFIGS)}")
    config_dict = {**json.loads(path.read_text()), **overrides, "num_labels": num_labels}
    model_type = config_dict.get("model_type")
    if model_type is None:
        raise ValueError(f"Model config {source} has no 'model_type' (e.g. \"hydra\" or \"bert\")")
    if model_type == "hydra":
        return HydraConfig.from_dict(config_dict)
    return AutoConfig.for_model(**config_dict)


def build_classifier(config):
    """A randomly initialized sequence classifier: HydraForSequenceClassification for a HydraConfig, else the Auto
    class with `attn_implementation="sdpa"`."""
    if isinstance(config, HydraConfig):
        return HydraForSequenceClassification(config)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")


def model_name(source: str) -> str:
    return source if source in BUILTIN_CONFIGS else Path(source).stem


def tokenized_glue_splits(glue_dir: str, task_name: str, tokenizer, max_length: int, train_samples: int | None,
                          eval_samples: int | None):
    """(train, dev, number of labels): the first `train_samples` / `eval_samples` (None: all) examples of the task's
    train and first validation split, tokenized without padding (truncated to `max_length`), with a `label`."""
    task = get_glue_task(task_name)
    dev_split = task.validation_splits[0]
    raw = load_glue_directory(glue_dir, task, ["train", dev_split])

    def tokenized(split, count):
        rows = raw[split]
        if count is not None:
            if not 0 < count <= len(rows):
                raise ValueError(f"Asked for {count} examples of {task.name} {split}, which has {len(rows)}")
            rows = rows.select(range(count))
        columns = rows.to_dict()
        encoded = tokenizer(*(columns[name] for name in task.text_columns), truncation=True, max_length=max_length)
        return datasets.Dataset.from_dict({**encoded, "label": columns["label"]})

    num_labels = 1 if task.is_regression else len(task.label_names)
    return tokenized("train", train_samples), tokenized(dev_split, eval_samples), num_labels


def padding_statistics(dataloader) -> dict:
    """Share of real (non-pad) tokens among the positions of the padded batches of one pass over `dataloader`."""
    real = positions = sequences = 0
    batch_shares = []
    for batch in dataloader:
        mask = batch["attention_mask"]  # (batch, padded length)
        real += int(mask.sum())
        positions += mask.numel()
        sequences += mask.shape[0]
        batch_shares.append(float(mask.float().mean()))
    return dict(real_token_share=real / positions, batch_share_min=min(batch_shares),
                batch_share_max=max(batch_shares), mean_real_tokens=real / sequences,
                mean_padded_length=positions / sequences, batches=len(batch_shares))


def glue_trainer(model, args: TrainingArguments, train, dev, collator) -> Trainer:
    """A stock Trainer that prints nothing (no PrinterCallback: evaluate() would print its metrics)."""
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev, data_collator=collator)
    trainer.remove_callback(PrinterCallback)
    return trainer


def glue_models(args, num_labels: int) -> dict:
    """name -> (kind, config, what it is) of every model of the GLUE mode, in the order they run: the Hydra
    variants, then BERT."""
    hydra_source = args.hydra_config or GLUE_PAIRS[args.pair][0]
    bert_source = args.bert_config or GLUE_PAIRS[args.pair][1]
    models = {}
    for variant, variant_overrides in (args.variants or [("", {})]):
        overrides = {**args.hydra_overrides, **variant_overrides}
        name = model_name(hydra_source) + (f"[{variant}]" if variant else "")
        models[name] = ("hydra", load_classifier_config(hydra_source, overrides, num_labels),
                        f"{hydra_source} with {json.dumps(overrides)}")
    models[model_name(bert_source)] = ("bert", load_classifier_config(bert_source, args.bert_overrides, num_labels),
                                       f"{bert_source} with {json.dumps(args.bert_overrides)}, sdpa")
    return models


def summarize(values: list) -> dict:
    return dict(median=statistics.median(values), min=min(values), max=max(values), runs=values)


def glue_training_arguments(args, output_dir: str) -> TrainingArguments:
    """One epoch on CPU with everything that is not the model's work switched off: no evaluation during training,
    no saving, logging, reporting, progress bars, dataloader workers or pinned memory."""
    return TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=args.train_batch_size,
        per_device_eval_batch_size=args.eval_batch_size, num_train_epochs=1, learning_rate=args.learning_rate,
        seed=args.seed, use_cpu=True, eval_strategy="no", save_strategy="no", logging_strategy="no",
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False)


def time_interleaved(trainers: dict, warmups: dict, repeats: int) -> dict:
    """name -> samples/s of every timed `train()` and `evaluate()` (wall clock), the Trainer's own train samples/s
    and the training loss; models take turns (A B A B ...) after one untimed warm-up run each."""
    for name in trainers:
        warmups[name].train()
        warmups[name].evaluate()
    runs = {name: dict(train=[], eval=[], trainer_train_samples_per_s=[], train_loss=[]) for name in trainers}
    for repeat in range(repeats):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            output = trainer.train()
            runs[name]["train"].append(len(trainer.train_dataset) / (time.perf_counter() - start))
            runs[name]["trainer_train_samples_per_s"].append(output.metrics["train_samples_per_second"])
            runs[name]["train_loss"].append(output.training_loss)
            start = time.perf_counter()
            trainer.evaluate()
            runs[name]["eval"].append(len(trainer.eval_dataset) / (time.perf_counter() - start))
            print(f"# run {repeat + 1}/{repeats} {name}: train {runs[name]['train'][-1]:.1f} samples/s, eval "
                  f"{runs[name]['eval'][-1]:.1f} samples/s (load average {os.getloadavg()[0]:.1f})", flush=True)
    return runs


def run_glue_benchmark(args):
    logging.set_verbosity_error()
    datasets.disable_progress_bars()
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    train, dev, num_labels = tokenized_glue_splits(args.glue_dir, args.task_name, tokenizer, args.max_length,
                                                   args.train_samples or GLUE_DEFAULT_TRAIN_SAMPLES[args.pair],
                                                   args.eval_samples or GLUE_DEFAULT_EVAL_SAMPLES[args.pair])
    collator = DataCollatorWithPadding(tokenizer)
    configs = glue_models(args, num_labels)
    warmup_train = train.select(range(min(len(train), args.warmup_batches * args.train_batch_size)))
    warmup_dev = dev.select(range(min(len(dev), args.eval_batch_size)))
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = glue_training_arguments(args, output_dir)
        trainers, warmups, params = {}, {}, {}
        for name, (_, config, _) in configs.items():
            torch.manual_seed(args.seed)
            model = build_classifier(config)
            params[name] = sum(p.numel() for p in model.parameters())
            trainers[name] = glue_trainer(model, training_args, train, dev, collator)
            warmups[name] = glue_trainer(model, training_args, warmup_train, warmup_dev, collator)
        first = next(iter(trainers.values()))
        padding = {"train": padding_statistics(first.get_train_dataloader()),
                   "eval": padding_statistics(first.get_eval_dataloader())}
        print(f"# torch {torch.__version__}, transformers {transformers_version}, {torch.get_num_threads()} threads, "
              f"CPU (load average {os.getloadavg()[0]:.1f}); Trainer + DataCollatorWithPadding, task "
              f"{args.task_name} from {args.glue_dir}")
        print(f"# train: {len(train)} sentences, batch {args.train_batch_size}, 1 epoch; eval: {len(dev)} sentences, "
              f"batch {args.eval_batch_size}; max_length {args.max_length}; {args.repeats} repeats, interleaved, "
              f"after a warm-up of {args.warmup_batches} train batch(es) and 1 eval batch per model")
        for split, stats in padding.items():
            print(f"# {split} batches: real tokens {stats['real_token_share']:.1%} of the padded positions "
                  f"(per batch {stats['batch_share_min']:.0%}-{stats['batch_share_max']:.0%}); mean "
                  f"{stats['mean_real_tokens']:.1f} real tokens per sentence, padded to "
                  f"{stats['mean_padded_length']:.1f}")
        for name, (_, _, description) in configs.items():
            print(f"# {name}: {params[name] / 1e6:.2f}M parameters, random init from {description}", flush=True)
        runs = time_interleaved(trainers, warmups, args.repeats)
    results = {name: dict(kind=configs[name][0], parameters=params[name], train=summarize(runs[name]["train"]),
                          eval=summarize(runs[name]["eval"]),
                          trainer_train_samples_per_s=runs[name]["trainer_train_samples_per_s"],
                          train_loss=runs[name]["train_loss"])
               for name in trainers}
    bert = next(r for r in results.values() if r["kind"] == "bert")
    for result in results.values():
        for split in ("train", "eval"):
            result[f"{split}_ratio"] = result[split]["median"] / bert[split]["median"]
    print(f"# load average after the runs: {os.getloadavg()[0]:.1f} (over 1 minute; this process adds ~1)")
    print_glue_table(results)
    if args.json:
        setup = dict(torch=torch.__version__, transformers=transformers_version, threads=torch.get_num_threads(),
                     task=args.task_name, glue_dir=args.glue_dir, train_samples=len(train), eval_samples=len(dev),
                     train_batch_size=args.train_batch_size, eval_batch_size=args.eval_batch_size,
                     max_length=args.max_length, repeats=args.repeats, warmup_batches=args.warmup_batches,
                     configs={name: config.to_diff_dict() for name, (_, config, _) in configs.items()})
        with open(args.json, "w") as f:
            json.dump(dict(setup=setup, padding=padding, models=results), f, indent=1)


def print_glue_table(results: dict):
    print("| model | params | train samples/s | (min-max) | eval samples/s | (min-max) | train ratio | eval ratio |")
    print("|---|---:|---:|---|---:|---|---:|---:|")
    for name, r in results.items():
        ratios = [f"**{r[f'{split}_ratio']:.2f}**" if r["kind"] == "hydra" else "–" for split in ("train", "eval")]
        print(f"| {name} | {r['parameters'] / 1e6:.2f}M | {r['train']['median']:.1f} | "
              f"{r['train']['min']:.1f}-{r['train']['max']:.1f} | {r['eval']['median']:.1f} | "
              f"{r['eval']['min']:.1f}-{r['eval']['max']:.1f} | {ratios[0]} | {ratios[1]} |", flush=True)


def json_dict(text: str) -> dict:
    """argparse type: a JSON object of config overrides."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of config fields, got {text}")
    return value


def named_json_dict(text: str) -> tuple:
    """argparse type: NAME=JSON-object."""
    name, sep, overrides = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME='{{...}}' (a name, '=' and a JSON object), got {text}")
    return name, json_dict(overrides)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per model (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    encoder = parser.add_argument_group("encoder mode (default)")
    encoder.add_argument("--pairs", nargs="+", default=["small", "base"], choices=sorted(PAIRS))
    encoder.add_argument("--lengths", nargs="+", type=int, default=[128, 512, 2048, 8192])
    encoder.add_argument("--tokens", type=int, default=8192, help="tokens per batch (batch = tokens // length)")
    encoder.add_argument("--modes", nargs="+", default=["forward", "train"], choices=["forward", "train"])
    encoder.add_argument("--chunk_size", type=int, default=None, help="override Hydra's chunk size")
    encoder.add_argument("--no_memory", action="store_true", help="skip the peak-memory subprocesses")
    encoder.add_argument("--_peak", default=None, help=argparse.SUPPRESS)
    glue = parser.add_argument_group("GLUE mode (--glue)")
    glue.add_argument("--glue", action="store_true", help="run the Trainer on GLUE sentences instead")
    glue.add_argument("--pair", default="small", choices=sorted(GLUE_PAIRS),
                      help="small: configs/hydra-small.json vs configs/bert-small.json; base: hydra-base vs bert-base")
    glue.add_argument("--hydra_config", default=None,
                      help="Hydra config JSON file (or hydra-base) instead of the pair's")
    glue.add_argument("--bert_config", default=None, help="BERT config JSON file (or bert-base) instead of the pair's")
    glue.add_argument("--hydra_overrides", type=json_dict, default={},
                      help="JSON object of Hydra config fields, e.g. '{\"unpad_inputs\": false}'")
    glue.add_argument("--bert_overrides", type=json_dict, default={}, help="JSON object of BERT config fields")
    glue.add_argument("--variants", nargs="+", type=named_json_dict, default=None, metavar="NAME='{...}'",
                      help="several Hydra models, each with these overrides on top of --hydra_overrides, "
                           "interleaved with BERT")
    glue.add_argument("--glue_dir", default=str(REPO_ROOT / "assets" / "glue_sample"))
    glue.add_argument("--task_name", default="sst2")
    glue.add_argument("--tokenizer", default=str(REPO_ROOT / "assets" / "tokenizer" / "bert-base-uncased"))
    glue.add_argument("--train_samples", type=int, default=None,
                      help="first N training sentences (default: 1024 for --pair small, 128 for base)")
    glue.add_argument("--eval_samples", type=int, default=None,
                      help="first N dev sentences (default: all for --pair small, 256 for base)")
    glue.add_argument("--train_batch_size", type=int, default=32)
    glue.add_argument("--eval_batch_size", type=int, default=64)
    glue.add_argument("--max_length", type=int, default=128)
    glue.add_argument("--learning_rate", type=float, default=1e-3)
    glue.add_argument("--warmup_batches", type=int, default=2, help="untimed training batches per model first")
    glue.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("repeats", "threads", "train_batch_size", "eval_batch_size", "max_length", "warmup_batches"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    for name in ("train_samples", "eval_samples"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    if args.variants and len(dict(args.variants)) != len(args.variants):
        parser.error("--variants: each variant needs its own name")
    return args


def main():
    args = parse_args()
    if args._peak:
        return _peak_child(args._peak)
    if args.glue:
        return run_glue_benchmark(args)
    return run_encoder_benchmark(args)


def run_encoder_benchmark(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rate = matmul_rate()
    print(f"# torch {torch.__version__}, {args.threads} threads, fp32 matmul rate {rate / 1e9:.1f} GFLOP/s")
    # the columns of BENCHMARKS.md's table (which adds a "run" column after "mode")
    mem_head = "" if args.no_memory else (" Hydra peak MB (rss) | BERT (rss) | rss ratio | Hydra peak MB (live) |"
                                           " BERT (live) | live ratio |")
    print("| pair | L x batch | mode | Hydra tok/s | BERT tok/s | Hydra/BERT | Hydra % of matmul rate | BERT % |"
          + mem_head)
    print("|---" * (8 if args.no_memory else 14) + "|")
    rows = []
    for pair in args.pairs:
        models = {kind: build(kind, pair, max(args.lengths), args.chunk_size) for kind in ("hydra", "bert")}
        print(f"# pair {pair}: encoder params hydra {encoder_params(models['hydra']) / 1e6:.2f}M, "
              f"bert {encoder_params(models['bert']) / 1e6:.2f}M")
        for seqlen in args.lengths:
            batch = max(1, args.tokens // seqlen)
            for mode in args.modes:
                train = mode == "train"
                flops = {kind: count_flops(m, batch, seqlen, train) for kind, m in models.items()}
                steps = {kind: make_step(m, batch, seqlen, train) for kind, m in models.items()}
                times = {kind: [] for kind in steps}
                for kind, step in steps.items():  # warm-up
                    step()
                for _ in range(args.repeats):
                    for kind, step in steps.items():
                        t0 = time.perf_counter()
                        step()
                        times[kind].append(time.perf_counter() - t0)
                row = dict(pair=pair, seqlen=seqlen, batch=batch, mode=mode)
                for kind in steps:
                    t = statistics.median(times[kind])
                    row[f"{kind}_tok_s"] = batch * seqlen / t
                    row[f"{kind}_mm_frac"] = flops[kind] / t / rate
                    for live in ([] if args.no_memory else [False, True]):
                        row[f"{kind}_{'live' if live else 'rss'}_mb"] = peak_memory_mb(
                            kind, pair, seqlen, batch, train, args.chunk_size, live)
                row["ratio"] = row["hydra_tok_s"] / row["bert_tok_s"]
                mem = ""
                if not args.no_memory:
                    for key in ("rss", "live"):
                        row[f"{key}_ratio"] = row[f"hydra_{key}_mb"] / max(row[f"bert_{key}_mb"], 1.0)
                    mem = (f" | {row['hydra_rss_mb']:6.0f} | {row['bert_rss_mb']:6.0f} | {row['rss_ratio']:5.2f}"
                           f" | {row['hydra_live_mb']:6.0f} | {row['bert_live_mb']:6.0f} | {row['live_ratio']:5.2f}")
                rows.append(row)
                print(f"| {pair:5s} | {seqlen:5d} x {batch:3d} | {mode:7s} | {row['hydra_tok_s']:9.0f} | "
                      f"{row['bert_tok_s']:9.0f} | {row['ratio']:5.2f} | {row['hydra_mm_frac']:4.0%} | "
                      f"{row['bert_mm_frac']:4.0%}{mem} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
