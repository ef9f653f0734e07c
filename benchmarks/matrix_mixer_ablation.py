"""The paper's Table 2 protocol (Hwang et al. 2024: every matrix-mixer family as the sequence mixer of the same BERT,
data-dependent and data-independent, MLM pre-training then GLUE fine-tuning) at a size one machine can afford.

For each variant and seed:
1. MLM pre-training (15% of the tokens chosen; 80% [MASK], 10% random, 10% kept) on the training texts of the GLUE
   tasks present in --glue_dir (the paper pre-trains on C4: this is a far smaller, in-domain corpus), rows of at
   most --max_len tokens (= max_position_embeddings, the length of the data-independent matrices; the authors use
   128).
2. Fine-tuning of the pre-trained encoder on each task (CoLA, SST-2, MRPC, STS-B, RTE, WNLI when present; the
   paper's GLUE also has MNLI, QNLI and QQP) and evaluation on (the first --eval_samples of) its dev set with the
   GLUE metric: Matthews correlation (CoLA), mean of Pearson and Spearman (STS-B), mean of accuracy and F1 (MRPC),
   accuracy (the others), x100.
3. The GLUE score of a run is the mean over the tasks; the table gives mean +- std over the seeds beside the paper's
   Table 2 number (theirs: ~70M-parameter models, C4 pre-training, full GLUE; so only the ranking is comparable).

All variants share hidden_size, layers and expand; the parameter count of each is in the table (the data-independent
matrices add H x L^2 (dense), L x qk x H, ... parameters; the paper matched its variants by adjusting widths).

    python benchmarks/matrix_mixer_ablation.py --out-dir ablation            # every variant, 3 seeds
    python benchmarks/matrix_mixer_ablation.py --quick --out-dir /tmp/abl    # seconds: for the tests

writes matrix_mixer_ablation.json (every run) and matrix_mixer_ablation.md (the table, with the command and date)
after every run; `--resume` keeps the finished runs of --out-dir and runs the rest (the same settings required).
"""

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, DataCollatorForLanguageModeling, DataCollatorWithPadding

from configuration_hydra import HydraConfig
from hydra_transformers.glue.glue_directory import read_glue_split
from hydra_transformers.glue.metrics import compute_glue_metrics
from hydra_transformers.glue.task_registry import LOCAL_GLUE_TASKS, get_glue_task
from modeling_hydra import HydraForMaskedLM, HydraForSequenceClassification

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_GLUE = REPO_ROOT.parent / "shared" / "glue_data"
DEFAULT_TOKENIZER = REPO_ROOT / "assets" / "tokenizer" / "bert-base-uncased"

# name -> (matrix_mixer_type, is_data_dependent, qk_dim, the paper's Table 2 GLUE average)
VARIANTS = {
    "hydra": ("hydra", True, 16, None),
    "quasiseparable dd": ("quasiseparable", True, 16, 79.7),
    "quasiseparable di": ("quasiseparable", False, 16, 75.1),
    "attention dd": ("attention", True, 16, 78.8),
    "attention di": ("attention", False, 16, 71.9),
    "low_rank dd": ("low_rank", True, 16, 78.4),
    "low_rank di": ("low_rank", False, 16, 74.9),
    "cauchy dd": ("cauchy", True, 16, 78.2),
    "cauchy di": ("cauchy", False, 16, 74.2),
    "vandermonde dd": ("vandermonde", True, 16, 76.0),
    "vandermonde di (DFT)": ("vandermonde", False, -1, 71.7),  # the code's vandermonde di is the DFT (70.8/71.7)
    "toeplitz dd": ("toeplitz", True, -1, 77.7),
    "toeplitz di": ("toeplitz", False, -1, 75.8),
    "dense di": ("dense", False, -1, 74.7),
}
RESUMABLE_ARGS = ("variants", "seeds", "threads", "out_dir", "resume")  # --resume accepts other values of these
TASK_DATA = {}  # (task, max_len, train_samples, eval_samples) -> tokenized examples, shared by variants and seeds


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue_dir", default=str(DEFAULT_GLUE))
    parser.add_argument("--tokenizer_dir", default=str(DEFAULT_TOKENIZER))
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help=f"any of: {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="*", default=None, help="default: the six local GLUE tasks (--quick: sst2 stsb)")
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--num_hidden_layers", type=int, default=4)
    parser.add_argument("--headdim", type=int, default=32)
    parser.add_argument("--max_len", type=int, default=128, help="row length and max_position_embeddings")
    parser.add_argument("--pretrain_steps", type=int, default=2000)
    parser.add_argument("--pretrain_batch", type=int, default=32)
    parser.add_argument("--pretrain_lr", type=float, default=1e-3)
    parser.add_argument("--finetune_steps", type=int, default=300)
    parser.add_argument("--finetune_batch", type=int, default=32)
    parser.add_argument("--finetune_lr", type=float, default=1e-4)
    parser.add_argument("--eval_samples", type=int, default=1000, help="dev examples evaluated per task (first n)")
    parser.add_argument("--train_samples", type=int, default=None,
                        help="training examples read per task, for pre-training and fine-tuning (default: all)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out-dir", default="matrix_mixer_ablation")
    parser.add_argument("--resume", action="store_true",
                        help="keep the finished (variant, seed) runs of --out-dir (same settings) and run the rest")
    parser.add_argument("--quick", action="store_true", help="a tiny run for the tests: the numbers mean nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.variants = [v for v in args.variants if v in ("low_rank dd", "toeplitz di")] or args.variants[:2]
        args.seeds, args.tasks = args.seeds[:2], args.tasks or ["sst2", "stsb"]
        args.hidden_size, args.num_hidden_layers, args.headdim, args.max_len = 16, 1, 8, 32
        args.pretrain_steps, args.pretrain_batch, args.finetune_steps, args.finetune_batch = 2, 4, 2, 4
        args.eval_samples, args.train_samples = 16, 64
    args.tasks = args.tasks or list(LOCAL_GLUE_TASKS)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    return args


def variant_config(name, args, vocab_size, **extra) -> HydraConfig:
    family, dd, qk_dim, _ = VARIANTS[name]
    headdim = args.headdim
    if family == "attention" and not dd:  # the authors' attention di needs nheads == max_position_embeddings
        headdim = 2 * args.hidden_size // args.max_len
        if headdim < 1 or 2 * args.hidden_size % args.max_len:
            raise ValueError(f"attention di needs 2 * hidden_size ({2 * args.hidden_size}) divisible by max_len "
                             f"({args.max_len}), nheads = max_len")
    return HydraConfig(vocab_size=-(-vocab_size // 8) * 8, hidden_size=args.hidden_size,
                       num_hidden_layers=args.num_hidden_layers, headdim=headdim, d_state=16, chunk_size=64,
                       max_position_embeddings=args.max_len, matrix_mixer_type=family, is_data_dependent=dd,
                       qk_dim=qk_dim if qk_dim > 0 or family in ("dense", "toeplitz", "vandermonde") else 16,
                       hidden_dropout_prob=0.1, **extra)


def task_texts(task, split):
    columns = read_glue_split(task, split, labelled=True)
    return columns, list(task.text_columns)


def pretraining_rows(args, tokenizer) -> list:
    texts = []
    for name in args.tasks:
        task = get_glue_task(name)
        path = Path(args.glue_dir) / task.directory / "train.tsv"
        columns, keys = task_texts(task, str(path))
        for key in keys:
            texts.extend(columns[key][:args.train_samples])
    encoded = tokenizer(texts, truncation=True, max_length=args.max_len)["input_ids"]
    return [dict(input_ids=ids) for ids in encoded]


def batches(rows, batch_size, steps, generator):
    """`steps` random batches (with replacement across epochs) of `rows`."""
    order = []
    for _ in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(rows), generator=generator).tolist()
        yield [rows[i] for i in order[:batch_size]]
        order = order[batch_size:]


def pretrain(name, args, tokenizer, rows, seed) -> tuple:
    torch.manual_seed(seed)
    model = HydraForMaskedLM(variant_config(name, args, len(tokenizer)))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.pretrain_lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_linear(args.pretrain_steps))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for examples in batches(rows, args.pretrain_batch, args.pretrain_steps, generator):
        batch = collator(examples)
        labels = batch.pop("labels")
        hidden = model.hydra(**batch).last_hidden_state  # (batch, seqlen, hidden_size)
        scored = labels != -100
        # the MLM head on the scored positions only: the loss model(**batch, labels=labels) gives, at ~1/6 the cost
        loss = torch.nn.functional.cross_entropy(model.cls(hidden[scored]), labels[scored])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    tail = losses[-max(1, len(losses) // 10):]
    return model, sum(tail) / len(tail)


def warmup_then_linear(steps):
    warmup = max(1, steps // 10)
    return lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup)))


def task_score(task, metrics) -> float:
    return 100.0 * statistics.mean(metrics.values())


def task_data(task, args, tokenizer) -> dict:
    """{"train": [...], "dev": [...]}: the examples used, tokenized once per task for every variant and seed."""
    key = (task.name, args.max_len, args.train_samples, args.eval_samples)
    if key not in TASK_DATA:
        folder = Path(args.glue_dir) / task.directory
        data = {}
        for split, limit in (("train", args.train_samples), ("dev", args.eval_samples)):
            columns, keys = task_texts(task, str(folder / f"{split}.tsv"))
            encoded = tokenizer(*[columns[k][:limit] for k in keys], truncation=True, max_length=args.max_len)
            data[split] = [dict(input_ids=ids, token_type_ids=types, labels=label) for ids, types, label in
                           zip(encoded["input_ids"], encoded["token_type_ids"], columns["label"][:limit])]
        TASK_DATA[key] = data
    return TASK_DATA[key]


def finetune(name, args, tokenizer, encoder_state, task_name, seed) -> float:
    task = get_glue_task(task_name)
    data = task_data(task, args, tokenizer)
    num_labels = 1 if task.is_regression else len(task.tsv_labels)
    torch.manual_seed(seed)
    model = HydraForSequenceClassification(variant_config(name, args, len(tokenizer), num_labels=num_labels))
    missing = model.load_state_dict(encoder_state, strict=False).missing_keys
    assert all(k.startswith(("classifier.", "hydra.pooler.")) for k in missing), missing
    collator = DataCollatorWithPadding(tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.finetune_lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_linear(args.finetune_steps))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for examples in batches(data["train"], args.finetune_batch, args.finetune_steps, generator):
        batch = collator(examples)
        if task.is_regression:
            batch["labels"] = batch["labels"].float()
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    predictions = []
    with torch.no_grad():
        for start in range(0, len(data["dev"]), 64):
            batch = collator([{k: v for k, v in e.items() if k != "labels"} for e in data["dev"][start:start + 64]])
            logits = model(**batch).logits
            predictions += (logits[:, 0] if task.is_regression else logits.argmax(-1)).tolist()
    references = [e["labels"] for e in data["dev"]]
    return task_score(task, compute_glue_metrics(task, predictions, references))


def run(args, finished=(), on_run=None) -> dict:
    """Every (variant, seed) not in `finished`; `on_run(runs)` after each one, so an interrupted run can resume."""
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_dir)
    rows = pretraining_rows(args, tokenizer)
    runs = list(finished)
    done = {(r["variant"], r["seed"]) for r in runs}
    for name in args.variants:
        for seed in args.seeds:
            if (name, seed) in done:
                continue
            start = time.time()
            model, mlm_loss = pretrain(name, args, tokenizer, rows, seed)
            encoder_state = {k: v for k, v in model.state_dict().items() if k.startswith("hydra.")}
            n_params = sum(p.numel() for p in model.hydra.parameters())
            scores = {task: finetune(name, args, tokenizer, encoder_state, task, seed) for task in args.tasks}
            run_record = dict(variant=name, seed=seed, mlm_loss=mlm_loss, scores=scores,
                              glue=statistics.mean(scores.values()), encoder_parameters=n_params,
                              seconds=time.time() - start)
            runs.append(run_record)
            print(json.dumps(run_record), flush=True)
            if on_run is not None:
                on_run(runs, len(rows))
    return dict(runs=runs, pretraining_rows=len(rows))


def mean_std(values, digits: int = 1) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "nan"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def markdown(meta, runs, args) -> str:
    lines = [f"Matrix-mixer ablation, {meta['date']}: `{meta['command']}`", "",
             f"{len(args.seeds)} seeds; {args.num_hidden_layers} layers, hidden {args.hidden_size}, headdim "
             f"{args.headdim}, rows of {args.max_len} tokens; MLM pre-training {args.pretrain_steps} steps x "
             f"{args.pretrain_batch} rows on {meta['pretraining_rows']} GLUE training texts; fine-tuning "
             f"{args.finetune_steps} steps x {args.finetune_batch} per task; dev: first {args.eval_samples} "
             f"examples, training examples per task: {args.train_samples or 'all'}. The paper: ~70M parameters, C4 "
             "pre-training, full GLUE.", "",
             "| variant | encoder params | MLM loss | " + " | ".join(args.tasks) + " | GLUE (ours) | paper |",
             "|---|---|---|" + "---|" * len(args.tasks) + "---|---|"]
    for name in args.variants:
        mine = [r for r in runs if r["variant"] == name]
        if not mine:
            continue
        paper = VARIANTS[name][3]
        cells = [mean_std([r["scores"][t] for r in mine]) for t in args.tasks]
        lines.append(f"| {name} | {mine[0]['encoder_parameters']:,} | "
                     f"{mean_std([r['mlm_loss'] for r in mine], digits=2)} | " + " | ".join(cells)
                     + f" | {mean_std([r['glue'] for r in mine])} | {paper if paper is not None else '-'} |")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str):
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = out / "matrix_mixer_ablation.json"
    finished = []
    if args.resume and record.is_file():
        previous = json.loads(record.read_text())
        changed = {k for k, v in vars(args).items() if k not in RESUMABLE_ARGS and previous["args"].get(k) != v}
        if changed:
            raise SystemExit(f"--resume: {record} was run with other settings ({sorted(changed)}); use another "
                             "--out-dir")
        finished = previous["runs"]
    meta = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                command="python " + " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
                torch=torch.__version__)

    def save(runs, pretraining_rows):
        meta["pretraining_rows"] = pretraining_rows
        write_atomically(record, json.dumps(dict(meta=meta, args=vars(args), runs=runs), indent=1))
        write_atomically(out / "matrix_mixer_ablation.md", markdown(meta, runs, args))

    result = run(args, finished, on_run=save)
    save(result["runs"], result["pretraining_rows"])
    print(markdown(meta, result["runs"], args))


if __name__ == "__main__":
    main()
