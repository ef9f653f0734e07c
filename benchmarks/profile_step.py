"""Where one training step (and optionally one eval step) of a sequence classifier spends its CPU time.

Profiles the step with torch.profiler on a GLUE-shaped batch and prints markdown tables for BENCHMARKS.md: the ops
grouped as in issue 8 (convolution_backward, bmm, exp, copy_/fill_/where/cat, mm, ...) and the top ops by self CPU
time, each with its share of the step's wall time (profiled) and milliseconds per step. The batch is the first
`--batch_size` sentences of SST-2 (the embedded sample) padded dynamically by DataCollatorWithPadding, as the
Trainer sees them, or, with `--random_lengths LO HI`, random token ids with lengths drawn uniformly from LO..HI,
right-padded to the longest. A training step is what the Trainer runs: forward with labels, backward, and a step
of the optimizer the Trainer builds by default (fused AdamW).
Models are randomly initialized from a config (shared with benchmarks/benchmark.py's GLUE mode). Examples:

    python benchmarks/profile_step.py --config configs/hydra-small.json configs/bert-small.json --eval
    python benchmarks/profile_step.py --config configs/hydra-small.json --random_lengths 8 48
    python benchmarks/profile_step.py --config hydra-base --overrides '{"unpad_inputs": false}' --batch_size 8
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments
from transformers.utils import logging

from benchmark import (
    BUILTIN_CONFIGS,
    REPO_ROOT,
    build_classifier,
    json_dict,
    load_classifier_config,
    tokenized_glue_splits,
)

# Groups of the grouped table, in the order printed; an op belongs to the first group that names it. Ops no group
# names fall in "other aten ops", and events that are not aten ops (the autograd engine's nodes, the optimizer's
# record_function) in "framework (autograd nodes, optimizer wrapper)".
OP_GROUPS = {
    "convolution_backward": {"aten::convolution_backward", "aten::mkldnn_convolution_backward",
                             "aten::_slow_conv2d_backward", "aten::_convolution_backward"},
    "convolution (forward)": {"aten::convolution", "aten::_convolution", "aten::conv1d", "aten::conv2d",
                              "aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::thnn_conv2d",
                              "aten::_mkldnn_convolution"},
    "bmm": {"aten::bmm", "aten::baddbmm"},
    "mm / addmm / linear (projections)": {"aten::mm", "aten::addmm", "aten::linear", "aten::matmul", "aten::mv",
                                          "aten::addmv", "aten::dot", "aten::einsum"},
    "exp": {"aten::exp", "aten::exp_"},
    "copy_ / fill_ / where / cat (layouts, masks)": {
        "aten::copy_", "aten::fill_", "aten::zero_", "aten::where", "aten::cat", "aten::clone", "aten::contiguous",
        "aten::masked_fill", "aten::masked_fill_", "aten::index", "aten::index_put_", "aten::_index_put_impl_",
        "aten::constant_pad_nd", "aten::pad", "aten::flip", "aten::stack", "aten::_to_copy", "aten::to",
        "aten::tril", "aten::triu", "aten::zeros", "aten::zeros_like", "aten::ones", "aten::ones_like",
        "aten::full", "aten::full_like", "aten::new_zeros", "aten::new_ones", "aten::new_full", "aten::scatter",
        "aten::scatter_", "aten::gather", "aten::index_select", "aten::repeat", "aten::masked_select",
        "aten::masked_scatter", "aten::nonzero", "aten::roll", "aten::split_with_sizes_copy", "aten::unfold_backward",
        "aten::select_backward", "aten::slice_backward", "aten::as_strided_scatter", "aten::slice_scatter",
        "aten::select_scatter", "aten::_unsafe_view", "aten::tril_", "aten::triu_"},
    "softmax / attention (sdpa)": {"aten::_softmax", "aten::softmax", "aten::_softmax_backward_data",
                                   "aten::scaled_dot_product_attention",
                                   "aten::_scaled_dot_product_flash_attention_for_cpu",
                                   "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
                                   "aten::_scaled_dot_product_efficient_attention",
                                   "aten::_scaled_dot_product_efficient_attention_backward",
                                   "aten::_scaled_dot_product_attention_math"},
    "layer norm": {"aten::layer_norm", "aten::native_layer_norm", "aten::native_layer_norm_backward",
                   "aten::rms_norm", "aten::_fused_rms_norm", "aten::_fused_rms_norm_backward"},
    "elementwise math and reductions": {
        "aten::mul", "aten::mul_", "aten::add", "aten::add_", "aten::sub", "aten::sub_", "aten::div", "aten::div_",
        "aten::neg", "aten::rsub", "aten::silu", "aten::silu_backward", "aten::sigmoid", "aten::sigmoid_backward",
        "aten::softplus", "aten::softplus_backward", "aten::gelu", "aten::gelu_backward", "aten::tanh",
        "aten::tanh_backward", "aten::pow", "aten::rsqrt", "aten::sqrt", "aten::log", "aten::log1p", "aten::abs",
        "aten::clamp", "aten::clamp_min", "aten::clamp_max", "aten::maximum", "aten::minimum", "aten::sum",
        "aten::mean", "aten::cumsum", "aten::cumsum_", "aten::addcmul", "aten::addcmul_", "aten::addcdiv",
        "aten::addcdiv_", "aten::lerp_", "aten::reciprocal", "aten::threshold_backward", "aten::relu",
        "aten::mse_loss", "aten::mse_loss_backward", "aten::nll_loss_forward", "aten::nll_loss_backward",
        "aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::ge", "aten::gt", "aten::le", "aten::lt",
        "aten::eq", "aten::ne", "aten::logical_not", "aten::bitwise_not", "aten::square", "aten::var_mean",
        "aten::exp2", "aten::sign", "aten::max", "aten::min", "aten::argmax", "aten::prod"},
    "dropout": {"aten::dropout", "aten::native_dropout", "aten::native_dropout_backward", "aten::bernoulli_",
                "aten::feature_dropout"},
    "embedding": {"aten::embedding", "aten::embedding_backward", "aten::embedding_dense_backward",
                  "aten::index_add_", "aten::embedding_renorm_"},
    "allocation (empty, resize)": {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::resize_",
                                   "aten::new_empty", "aten::new_empty_strided"},
    "views (view, reshape, transpose, ...)": {
        "aten::view", "aten::reshape", "aten::transpose", "aten::permute", "aten::expand", "aten::as_strided",
        "aten::slice", "aten::select", "aten::unsqueeze", "aten::squeeze", "aten::t", "aten::split",
        "aten::chunk", "aten::narrow", "aten::unflatten", "aten::flatten", "aten::unbind", "aten::alias",
        "aten::detach", "aten::detach_", "aten::expand_as", "aten::view_as", "aten::unfold", "aten::numpy_T",
        "aten::split_with_sizes", "aten::_reshape_alias", "aten::lift_fresh", "aten::result_type",
        "aten::is_nonzero", "aten::item", "aten::_local_scalar_dense", "aten::_has_compatible_shallow_copy_type",
        "aten::broadcast_tensors", "aten::movedim", "aten::squeeze_", "aten::unsqueeze_", "aten::set_"},
}
OTHER_ATEN = "other aten ops"
FRAMEWORK = "framework (autograd nodes, optimizer wrapper)"


def op_group(name: str) -> str:
    if name.startswith(("aten::_foreach_", "aten::_fused_adam")):
        return "optimizer (AdamW kernels)"
    for group, names in OP_GROUPS.items():
        if name in names:
            return group
    return OTHER_ATEN if name.startswith("aten::") else FRAMEWORK


def glue_batch(args, tokenizer, split: str, batch_size: int) -> dict:
    """A dynamically padded batch of the first `batch_size` sentences of SST-2's `split` (train or eval)."""
    train, dev, _ = tokenized_glue_splits(args.glue_dir, "sst2", tokenizer, args.max_length,
                                          batch_size if split == "train" else 1, batch_size if split == "eval" else 1)
    rows = (train if split == "train" else dev).to_list()
    return DataCollatorWithPadding(tokenizer)(rows)


def random_length_batch(batch_size: int, low: int, high: int, vocab_size: int, seed: int) -> dict:
    """Random token ids (no special tokens), lengths uniform in low..high, right-padded with 0 to the longest."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high + 1, (batch_size,), generator=generator)
    longest = int(lengths.max())
    attention_mask = (torch.arange(longest)[None, :] < lengths[:, None]).long()  # (batch, longest)
    input_ids = torch.randint(1000, vocab_size, (batch_size, longest), generator=generator) * attention_mask
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids),
                labels=torch.randint(0, 2, (batch_size,), generator=generator))


def trainer_optimizer(model, learning_rate: float = 1e-3):
    """The optimizer that the Trainer builds with default TrainingArguments (fused AdamW in transformers 5)."""
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = TrainingArguments(output_dir=output_dir, use_cpu=True, learning_rate=learning_rate,
                                          report_to="none")
    optimizer_class, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(training_args, model)
    return optimizer_class(model.parameters(), **optimizer_kwargs)


def make_train_step(model, batch: dict):
    optimizer = trainer_optimizer(model)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()
    return step


def make_eval_step(model, batch: dict):
    inputs = {name: value for name, value in batch.items() if name != "labels"}
    model.eval()

    def step():
        with torch.inference_mode():
            model(**inputs)
    return step


def profile_step(step, warmup: int, steps: int) -> dict:
    """Unprofiled median step time, profiled wall time per step, and self CPU time per step of every op."""
    for _ in range(warmup):
        step()
    unprofiled = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        unprofiled.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        profiled = (time.perf_counter() - start) / steps
    ops = {event.key: dict(self_ms=event.self_cpu_time_total / 1e3 / steps, calls=event.count / steps)
           for event in prof.key_averages() if event.self_cpu_time_total > 0}
    return dict(step_ms=statistics.median(unprofiled) * 1e3, profiled_step_ms=profiled * 1e3, ops=ops)


def grouped(ops: dict) -> dict:
    groups = {}
    for name, op in ops.items():
        group = groups.setdefault(op_group(name), dict(self_ms=0.0, calls=0.0, ops=[]))
        group["self_ms"] += op["self_ms"]
        group["calls"] += op["calls"]
        group["ops"].append(name)
    return dict(sorted(groups.items(), key=lambda item: -item[1]["self_ms"]))


def print_tables(title: str, result: dict, top: int):
    step_ms = result["profiled_step_ms"]
    in_ops = sum(op["self_ms"] for op in result["ops"].values())
    print(f"\n### {title}\n")
    print(f"Step: {result['step_ms']:.1f} ms unprofiled (median), {step_ms:.1f} ms profiled, of which "
          f"{in_ops / step_ms:.0%} inside ops.\n")
    print("| op group | share of the step | ms per step | calls per step | largest ops |")
    print("|---|---:|---:|---:|---|")
    for name, group in result["groups"].items():
        largest = sorted(group["ops"], key=lambda op: -result["ops"][op]["self_ms"])[:3]
        print(f"| {name} | {group['self_ms'] / step_ms:.1%} | {group['self_ms']:.1f} | {group['calls']:.0f} | "
              f"{', '.join(f'`{op}`' for op in largest)} |")
    print(f"| outside ops (Python, dispatch, profiler) | {1 - in_ops / step_ms:.1%} | {step_ms - in_ops:.1f} | | |")
    print(f"\n| op (top {top} by self CPU time) | share of the step | ms per step | calls per step |")
    print("|---|---:|---:|---:|")
    for name, op in sorted(result["ops"].items(), key=lambda item: -item[1]["self_ms"])[:top]:
        print(f"| `{name}` | {op['self_ms'] / step_ms:.1%} | {op['self_ms']:.2f} | {op['calls']:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=[str(REPO_ROOT / "configs" / "hydra-small.json")],
                        help=f"model config JSON file(s) (model_type hydra, bert, ...) or {sorted(BUILTIN_CONFIGS)}; "
                             "several are profiled one after the other")
    parser.add_argument("--overrides", type=json_dict, default={}, help="JSON object of config fields to change")
    parser.add_argument("--batch_size", type=int, default=32, help="training batch")
    parser.add_argument("--eval", action="store_true", help="also profile an eval step (forward, inference_mode)")
    parser.add_argument("--eval_batch_size", type=int, default=64)
    parser.add_argument("--random_lengths", nargs=2, type=int, default=None, metavar=("LO", "HI"),
                        help="random token ids with lengths uniform in LO..HI instead of SST-2 sentences")
    parser.add_argument("--max_length", type=int, default=128, help="truncation of the SST-2 sentences")
    parser.add_argument("--glue_dir", default=str(REPO_ROOT / "assets" / "glue_sample"))
    parser.add_argument("--tokenizer", default=str(REPO_ROOT / "assets" / "tokenizer" / "bert-base-uncased"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="unprofiled steps first")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (times are per step)")
    parser.add_argument("--top", type=int, default=15, help="rows of the top-ops table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the per-op times to this JSON file")
    args = parser.parse_args()
    for name in ("batch_size", "eval_batch_size", "threads", "steps", "top", "max_length"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    if args.random_lengths and not 1 <= args.random_lengths[0] <= args.random_lengths[1]:
        parser.error(f"--random_lengths needs 1 <= LO <= HI, got {args.random_lengths}")

    logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, CPU (load average "
          f"{os.getloadavg()[0]:.1f}); config overrides "
          f"{json.dumps(args.overrides)}; {args.warmup} warm-up steps, then {args.steps} steps timed and "
          f"{args.steps} profiled")
    results = {source: profile_model(args, source, tokenizer) for source in args.config}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(overrides=args.overrides, threads=torch.get_num_threads(), models=results), f, indent=1)


def profile_model(args, source: str, tokenizer) -> dict:
    """Profile the train step (and the eval step with --eval) of a fresh model of config `source`; print tables."""
    torch.manual_seed(args.seed)
    model = build_classifier(load_classifier_config(source, args.overrides))
    description = f"{type(model).__name__} ({source}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M)"
    phases = {"train": (args.batch_size, make_train_step)}
    if args.eval:
        phases["eval"] = (args.eval_batch_size, make_eval_step)
    results = {}
    for phase, (batch_size, make_step) in phases.items():
        if args.random_lengths:
            batch = random_length_batch(batch_size, *args.random_lengths, len(tokenizer), args.seed)
            source_text = f"random lengths {args.random_lengths[0]}-{args.random_lengths[1]}"
        else:
            batch = glue_batch(args, tokenizer, phase, batch_size)
            source_text = f"the first {batch_size} SST-2 {'train' if phase == 'train' else 'dev'} sentences"
        mask = batch["attention_mask"]  # (batch, padded length)
        result = profile_step(make_step(model, batch), args.warmup, args.steps)
        result["groups"] = grouped(result["ops"])
        result.update(batch_size=mask.shape[0], padded_length=mask.shape[1],
                      real_token_share=float(mask.float().mean()))
        what = "forward + backward + the Trainer's optimizer step" if phase == "train" else "forward, inference_mode"
        print_tables(f"{description}, {phase} step ({what}): batch {mask.shape[0]} of {source_text}, padded to "
                     f"{mask.shape[1]}, {result['real_token_share']:.0%} real tokens", result, args.top)
        results[phase] = result
    return results

if __name__ == "__main__":
    main()
