"""Export a Hydra checkpoint to ONNX, check onnxruntime against eager PyTorch, and optionally time both.

    python scripts/export_onnx.py CHECKPOINT [--output model.onnx] [--task auto] [--atol 1e-4] [--benchmark]

CHECKPOINT is a folder written by `save_pretrained`, a Hub model id, or a config .json (a randomly initialized model,
for benchmarks). The model is loaded with this repository's classes on the pure-PyTorch SSD path
(`ssd_backend="torch"`, float32) and captured with `torch.onnx.export(..., dynamo=True)` with a dynamic batch size
and sequence length (and number of choices). The graph takes `input_ids`, `attention_mask` and `token_type_ids`
(int64, (batch, sequence); (batch, choices, sequence) for multiple choice) and returns the head's outputs under their
transformers names (`last_hidden_state` and `pooler_output`, `logits`, or `start_logits` and `end_logits`). It always
runs the padded path: padded positions are masked, so real tokens get what they get alone; per-token outputs at padded
positions are unspecified (the eager model's padding-free path returns zeros there).

The parity check runs the graph in onnxruntime and the eager model in PyTorch on padded batches of several shapes,
none of them the export example: the checkpoint's tokenizer on sample sentences when the folder has one, else random
ids, plus batches longer than one 64-token chunk and of a single token. It prints the largest absolute difference per
output (over real tokens for per-token outputs) and exits with 1 when one exceeds --atol. A folder without a model
exits with 2 and one line on stderr.

--benchmark then times onnxruntime against eager PyTorch on CPU (median and minimum of --repeats runs after three
warm-ups, taken in turn, all on --threads threads) at --bench-batch rows per batch and each of --bench-lengths, with
rows of random lengths between a quarter of the length and the length, padded to it (the shape of dynamically padded
GLUE batches). Eager runs twice: padding-free (`config.unpad_inputs`, the default) and padded (the path the exported
graph takes).

A vision checkpoint (`model_type` "hydra_vision": `HydraVisionModel`, `HydraForImageClassification`; tasks
"vision-base" and "image-classification") exports with one input, `pixel_values` (float32, (batch, channels, height,
width)), dynamic in the batch and in height and width (multiples of the patch size, at least two patches each way),
and is checked on random images of several sizes; --benchmark then times batches of --bench-batch images at the
config's image size.
"""

import argparse
import contextlib
import functools
import logging as py_logging
import math
import os
import statistics
import tempfile
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoTokenizer
from transformers.utils import logging

import modeling_hydra
from configuration_hydra import HydraConfig, HydraVisionConfig

TASKS = {
    "base": "HydraModel",
    "masked-lm": "HydraForMaskedLM",
    "sequence-classification": "HydraForSequenceClassification",
    "token-classification": "HydraForTokenClassification",
    "question-answering": "HydraForQuestionAnswering",
    "multiple-choice": "HydraForMultipleChoice",
}
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
SAMPLE_TEXTS = [
    "Hydra mixes a sequence in both directions with a quasiseparable matrix.",
    "A short one.",
    "State-space encoders read long inputs in linear time; " * 6,
    "Exported graphs serve every batch size and sequence length.",
]
SAMPLE_CHOICES = ["it is exportable.", "it needs triton kernels at inference time."]
RANDOM_SHAPES = [(3, 23), (2, 70), (1, 1)]  # (batch, sequence); 70 spans two chunks of 64 tokens
_WARMUPS = 3


class CheckpointError(Exception):
    """CHECKPOINT holds no Hydra model that this script can load."""


class OnnxSignature(nn.Module):
    """The model with the graph's signature: (input_ids, attention_mask, token_type_ids) -> its named outputs."""

    def __init__(self, model: nn.Module, output_names: list[str]):
        super().__init__()
        self.model = model
        self.output_names = output_names

    def forward(self, input_ids, attention_mask, token_type_ids):
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             return_dict=True)
        return tuple(outputs[name] for name in self.output_names)


def check_output_path(checkpoint: str, output: str) -> Path:
    """The path to write `output` to (its folder resolved, its name kept: a symlink there is replaced, never written
    through); CheckpointError when that could destroy an input: an existing file inside the checkpoint folder, the
    checkpoint's config .json, or a folder."""
    given = Path(os.path.normpath(os.path.abspath(output)))
    target = given.parent.resolve() / given.name
    source = Path(checkpoint)
    if target.is_dir():
        raise CheckpointError(f"--output {output} is a folder; give the path of the .onnx file to write")
    if source.is_file() and target.resolve() == source.resolve():
        raise CheckpointError(f"--output {output} is the input {checkpoint}; choose another path")
    if source.is_dir() and os.path.lexists(target) and source.resolve() in target.parents:
        raise CheckpointError(f"--output {output} would replace the file {target.name} of the checkpoint folder "
                              f"{checkpoint}; choose a path that does not exist there, or one outside it")
    return target


def tolerance(text: str) -> float:
    """argparse type of --atol: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _model_class(task: str, architectures: list[str] | None):
    """The class of --task; for "auto" the config's first architecture if it is ours, else HydraModel."""
    if task != "auto":
        return getattr(modeling_hydra, TASKS[task])
    name = (architectures or ["HydraModel"])[0]
    return getattr(modeling_hydra, name if name in TASKS.values() else "HydraModel")


def load_model(checkpoint: str, task: str, seed: int) -> nn.Module:
    """The eval-mode float32 model of `checkpoint` on the torch SSD path; CheckpointError if there is none."""
    path = Path(checkpoint)
    if path.suffix == ".json" and path.is_file():
        config = HydraConfig.from_json_file(str(path))
        config.ssd_backend = "torch"
        torch.manual_seed(seed)
        return _model_class(task, config.architectures)(config).eval()
    if path.is_dir() and not (path / "config.json").is_file():
        raise CheckpointError(f"{checkpoint} holds no model (no config.json): give a folder written by "
                              "save_pretrained, a Hub model id or a config .json")
    if not path.exists() and (path.is_absolute() or checkpoint.startswith(".") or checkpoint.count("/") > 1):
        raise CheckpointError(f"{checkpoint} does not exist (and is not a Hub model id)")
    try:
        config_dict, _ = HydraConfig.get_config_dict(checkpoint)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read a model config from {checkpoint!r}: {_first_line(error)}") from None
    if config_dict.get("model_type") != "hydra":
        raise CheckpointError(f"{checkpoint!r} holds a {config_dict.get('model_type')!r} model, not a Hydra model")
    try:
        model = _model_class(task, config_dict.get("architectures")).from_pretrained(
            checkpoint, ssd_backend="torch", dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot load the weights of {checkpoint!r}: {_first_line(error)}") from None
    return model.eval()


def load_tokenizer(checkpoint: str, vocab_size: int):
    """The checkpoint's tokenizer, or None when it has none (or one with ids the model does not have)."""
    if Path(checkpoint).suffix == ".json":
        return None
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # a tokenizer-only load reads the model config too, and warns about its type
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=False)
    except (OSError, ValueError, TypeError):
        return None
    finally:
        logging.set_verbosity(verbosity)
    return tokenizer if len(tokenizer) <= vocab_size else None


def random_batch(shape: tuple, vocab_size: int, pad_token_id: int, generator: torch.Generator) -> dict:
    """Random ids of (batch, ..., sequence) rows of random lengths (the first full), padded with pad_token_id."""
    seqlen = shape[-1]
    lengths = torch.randint(max(seqlen // 4, 1), seqlen + 1, shape[:-1], generator=generator)
    lengths.view(-1)[0] = seqlen
    mask = (torch.arange(seqlen) < lengths.unsqueeze(-1)).long()
    ids = torch.randint(1, vocab_size, shape, generator=generator).masked_fill(mask == 0, pad_token_id)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def sample_batches(tokenizer, config, multiple_choice: bool, seed: int) -> list[dict]:
    """Padded (batch, [choices,] sequence) batches for the parity check: tokenized sample texts (with a tokenizer)
    and random ids at RANDOM_SHAPES."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    if tokenizer is not None:
        if multiple_choice:
            firsts = [text for text in SAMPLE_TEXTS for _ in SAMPLE_CHOICES]
            encoded = tokenizer(firsts, SAMPLE_CHOICES * len(SAMPLE_TEXTS), padding=True, return_tensors="pt")
            encoded = {k: v.view(len(SAMPLE_TEXTS), len(SAMPLE_CHOICES), -1) for k, v in encoded.items()}
        else:
            encoded = tokenizer(SAMPLE_TEXTS, padding=True, return_tensors="pt")
        batch = {name: encoded[name].long() for name in INPUT_NAMES if name in encoded}
        batch.setdefault("token_type_ids", torch.zeros_like(batch["input_ids"]))
        batches.append(batch)
    for shape in RANDOM_SHAPES:
        shape = (shape[0], 2, shape[1]) if multiple_choice else shape
        batches.append(random_batch(shape, config.vocab_size, config.pad_token_id or 0, generator))
    return batches


@contextlib.contextmanager
def exporter_notes_hidden(hidden: bool = True):
    """Hide the exporter's notes (Python warnings and the torch.onnx log below errors) unless `hidden` is False:
    torch prints a dozen of them for every export (optional torchvision ops, dynamic-axis renames, deprecations),
    none about this graph's correctness, which the parity check establishes."""
    if not hidden:
        yield
        return
    onnx_logger = py_logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(py_logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_logger.setLevel(level)


def export(model: nn.Module, output: Path, multiple_choice: bool, optimize: bool = True,
           opset: int | None = None) -> list[str]:
    """Write `model` as an ONNX graph with dynamic batch, sequence (and choices) to `output`; returns the names of
    its outputs."""
    example = random_batch((2, 3, 9) if multiple_choice else (2, 9), model.config.vocab_size,
                           model.config.pad_token_id or 0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        output_names = list(model(**example, return_dict=True).keys())
    names = ("batch", "choices", "sequence") if multiple_choice else ("batch", "sequence")
    dims = {axis: torch.export.Dim(name, min=1) for axis, name in enumerate(names)}
    with torch.no_grad():
        program = torch.onnx.export(OnnxSignature(model, output_names).eval(), tuple(example[n] for n in INPUT_NAMES),
                                    input_names=list(INPUT_NAMES), output_names=output_names,
                                    dynamic_shapes=(dims,) * len(INPUT_NAMES), dynamo=True, optimize=optimize,
                                    opset_version=opset, verbose=False)
    save_atomically(program, output)
    return output_names


def save_atomically(program, output: Path):
    """Save the ONNX program to a temporary file beside `output`, then rename it to `output` (a file or symlink
    there is replaced, never written through); nothing is left behind on a failure."""
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    try:
        program.save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it a plain file's permissions
        os.replace(tmp, output)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def onnx_session(path: Path, threads: int):
    """An onnxruntime CPU session of `path` on `threads` intra-op threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only (not the warnings of constant folding)
    # no busy-waiting of idle pool threads: it would take the cores from PyTorch when the two run in turn
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_differences(session, model: nn.Module, batches: list[dict]) -> dict[str, float]:
    """Largest |onnxruntime - eager| per output over `batches`, at real tokens for per-token outputs."""
    names = [output.name for output in session.get_outputs()]
    per_token = {output.name for output in session.get_outputs() if "sequence" in output.shape}
    worst = dict.fromkeys(names, 0.0)
    for batch in batches:
        with torch.no_grad():
            eager = model(**batch, return_dict=True)
        onnx_outputs = session.run(names, {name: batch[name].numpy() for name in INPUT_NAMES})
        mask = batch["attention_mask"].numpy().astype(bool)
        for name, value in zip(names, onnx_outputs):
            difference = np.abs(value - eager[name].numpy())
            if name in per_token:  # real tokens only
                difference = difference[mask]
            worst[name] = float(np.max([worst[name], difference.max()]))  # NaN propagates (Python's max drops it)
    return worst


def within_tolerance(differences: dict[str, float], atol: float) -> bool:
    """Whether every difference is at most `atol`; a NaN difference never is."""
    return all(difference <= atol for difference in differences.values())


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def benchmark(session, model: nn.Module, batch_size: int, lengths: list[int], repeats: int, seed: int) -> list[dict]:
    """(median, min) seconds per padded batch of onnxruntime and of eager PyTorch (padding-free and padded), per
    length. The three run in turn within each repeat, so that a load change on a shared machine hits them alike."""
    generator = torch.Generator().manual_seed(seed)
    unpad_inputs = model.config.unpad_inputs

    def eager(batch, unpad):
        model.config.unpad_inputs = unpad
        with torch.inference_mode():
            model(**batch)

    rows = []
    for seqlen in lengths:
        batch = random_batch((batch_size, seqlen), model.config.vocab_size, model.config.pad_token_id or 0,
                             generator)
        feed = {name: batch[name].numpy() for name in INPUT_NAMES}
        runs = {"eager_padding_free": functools.partial(eager, batch, True),
                "eager_padded": functools.partial(eager, batch, False),
                "onnxruntime": functools.partial(session.run, None, feed)}
        times = {name: [] for name in runs}
        for repeat in range(_WARMUPS + repeats):
            for name, run in runs.items():
                seconds = _seconds(run)
                if repeat >= _WARMUPS:
                    times[name].append(seconds)
        rows.append({"batch": batch_size, "length": seqlen, "real_tokens": int(batch["attention_mask"].sum()),
                     **{name: (statistics.median(values), min(values)) for name, values in times.items()}})
    model.config.unpad_inputs = unpad_inputs
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("checkpoint", help="folder written by save_pretrained, Hub model id, or a config .json")
    parser.add_argument("--output", default="model.onnx", help="path of the ONNX file (default: model.onnx)")
    parser.add_argument("--task", default="auto", choices=["auto", *TASKS, *VISION_TASKS],
                        help="head to export; auto: the config's architectures (default: auto)")
    parser.add_argument("--atol", type=tolerance, default=1e-4,
                        help="largest accepted |onnxruntime - eager|, a finite number >= 0 (1e-4)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's choice)")
    parser.add_argument("--no-optimize", dest="optimize", action="store_false",
                        help="skip onnxscript's graph optimization (faster export, larger graph)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of PyTorch and onnxruntime (2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample ids (and of a config's weights)")
    parser.add_argument("--verbose", action="store_true",
                        help="show the exporter's warnings and the weight-loading progress bar (hidden by default)")
    parser.add_argument("--benchmark", action="store_true", help="time onnxruntime against eager PyTorch on CPU")
    parser.add_argument("--bench-batch", type=int, default=32, help="rows per benchmark batch (32)")
    parser.add_argument("--bench-lengths", type=int, nargs="+", default=[64, 128],
                        help="padded lengths of the benchmark batches (64 128)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (20)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    bars = logging.is_progress_bar_enabled()
    if not args.verbose:
        logging.disable_progress_bar()
    try:
        return run(args)
    finally:
        if bars:
            logging.enable_progress_bar()


def onnx_packages_installed() -> bool:
    """Whether the exporter's packages (onnx, onnxscript) and the check's (onnxruntime) import; else says which to
    install."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        print(f"export_onnx.py: error: {error.name} is not installed: pip install onnx onnxscript onnxruntime",
              file=sys.stderr)
        return False
    return True


def run(args) -> int:
    """main() after parsing: export, check parity, benchmark; the exit status."""
    if args.task in VISION_TASKS or (args.task == "auto" and _is_vision_checkpoint(args.checkpoint)):
        return vision_main(args)
    try:
        output = check_output_path(args.checkpoint, args.output)
        model = load_model(args.checkpoint, args.task, args.seed)
    except CheckpointError as error:
        print(f"export_onnx.py: error: {error}", file=sys.stderr)
        return 2
    if not onnx_packages_installed():
        return 2
    torch.set_num_threads(args.threads)
    multiple_choice = isinstance(model, modeling_hydra.HydraForMultipleChoice)
    output.parent.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    with exporter_notes_hidden(not args.verbose):
        output_names = export(model, output, multiple_choice, optimize=args.optimize, opset=args.opset)
    print(f"exported {type(model).__name__} to {output} in {time.perf_counter() - start:.0f} s; "
          f"outputs: {', '.join(output_names)}")
    session = onnx_session(output, args.threads)
    fixed = [(i.name, i.shape) for i in session.get_inputs() if any(isinstance(d, int) for d in i.shape)]
    if fixed:
        print(f"export_onnx.py: error: the exporter fixed input dims {fixed}; the graph is not dynamic",
              file=sys.stderr)
        return 1

    tokenizer = load_tokenizer(args.checkpoint, model.config.vocab_size)
    batches = sample_batches(tokenizer, model.config, multiple_choice, args.seed)
    shapes = ", ".join("x".join(map(str, b["input_ids"].shape)) for b in batches)
    source = "the checkpoint's tokenizer and random ids" if tokenizer is not None else "random ids"
    print(f"parity on padded batches of {source} (shapes {shapes}):")
    differences = max_differences(session, model, batches)
    for name, difference in differences.items():
        print(f"  max |onnxruntime - eager| {name}: {difference:.2e}")
    if not within_tolerance(differences, args.atol):
        print(f"export_onnx.py: error: onnxruntime differs from eager by more than --atol {args.atol:g} (or by "
              "NaN)", file=sys.stderr)
        return 1

    if args.benchmark:
        rows = benchmark(session, model, args.bench_batch, args.bench_lengths, args.repeats, args.seed)
        print(f"\nCPU inference, {args.threads} threads: ms per batch, median (min) of {args.repeats} runs\n")
        print("| batch x length | real tokens | eager padding-free | eager padded | onnxruntime | eager pf / ort |")
        print("|---|---|---|---|---|---|")
        cell = lambda seconds: f"{seconds[0] * 1e3:.0f} ({seconds[1] * 1e3:.0f})"
        for row in rows:
            print(f"| {row['batch']} x {row['length']} | {row['real_tokens']} | {cell(row['eager_padding_free'])} "
                  f"| {cell(row['eager_padded'])} | {cell(row['onnxruntime'])} "
                  f"| {row['eager_padding_free'][0] / row['onnxruntime'][0]:.2f} |")
    return 0


# --- vision checkpoints -------------------------------------------------------------------------------------------

VISION_TASKS = {"vision-base": "HydraVisionModel", "image-classification": "HydraForImageClassification"}


def _is_vision_checkpoint(checkpoint: str) -> bool:
    try:
        config_dict, _ = HydraVisionConfig.get_config_dict(checkpoint)
    except (OSError, ValueError):
        return False
    return config_dict.get("model_type") == HydraVisionConfig.model_type


def load_vision_model(checkpoint: str, task: str, seed: int) -> nn.Module:
    """The eval-mode float32 vision model of `checkpoint` (folder or config .json) on the torch SSD path."""
    config = HydraVisionConfig.from_pretrained(checkpoint, ssd_backend="torch")
    name = VISION_TASKS.get(task) or (config.architectures or ["HydraVisionModel"])[0]
    model_class = getattr(modeling_hydra, name if name in VISION_TASKS.values() else "HydraVisionModel")
    if Path(checkpoint).suffix == ".json":
        torch.manual_seed(seed)
        return model_class(config).eval()
    return model_class.from_pretrained(checkpoint, config=config, dtype=torch.float32).eval()


def vision_shapes(config) -> list[tuple]:
    """(batch, channels, height, width) of the parity check: the config's size, non-square and two patches each way
    (none of them the export example)."""
    p, side, c = config.patch_size, config.image_size, config.num_channels
    return [(3, c, side, side), (2, c, 2 * p, 5 * p), (1, c, side + 2 * p, 2 * p)]


def vision_main(args) -> int:
    """Export, parity check and (with --benchmark) timing of a vision checkpoint; the exit codes of `main`."""
    try:
        output = check_output_path(args.checkpoint, args.output)
        model = load_vision_model(args.checkpoint, args.task, args.seed)
    except CheckpointError as error:
        print(f"export_onnx.py: error: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"export_onnx.py: error: cannot load a Hydra vision model from {args.checkpoint!r}: "
              f"{_first_line(error)}", file=sys.stderr)
        return 2
    if not onnx_packages_installed():
        return 2
    torch.set_num_threads(args.threads)
    config = model.config
    output.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(args.seed)
    example = torch.randn(2, config.num_channels, 3 * config.patch_size, 4 * config.patch_size, generator=generator)
    with torch.no_grad():
        output_names = list(model(pixel_values=example, return_dict=True).keys())
    rows, cols = (torch.export.Dim(name, min=2) for name in ("rows", "cols"))
    dims = {0: torch.export.Dim("batch", min=1), 2: config.patch_size * rows, 3: config.patch_size * cols}
    start = time.perf_counter()
    with torch.no_grad(), exporter_notes_hidden(not args.verbose):
        program = torch.onnx.export(_VisionSignature(model, output_names).eval(), (example,),
                                    input_names=["pixel_values"], output_names=output_names,
                                    dynamic_shapes=(dims,), dynamo=True, optimize=args.optimize,
                                    opset_version=args.opset, verbose=False)
    save_atomically(program, output)
    print(f"exported {type(model).__name__} to {output} in {time.perf_counter() - start:.0f} s; "
          f"outputs: {', '.join(output_names)}")
    session = onnx_session(output, args.threads)
    shapes = vision_shapes(config)
    worst = dict.fromkeys(output_names, 0.0)
    for shape in shapes:
        pixel_values = torch.randn(shape, generator=generator)
        with torch.no_grad():
            eager = model(pixel_values=pixel_values, return_dict=True)
        for name, value in zip(output_names, session.run(output_names, {"pixel_values": pixel_values.numpy()})):
            worst[name] = max(worst[name], float(np.abs(value - eager[name].numpy()).max()))
    print(f"parity on random images (shapes {', '.join('x'.join(map(str, s)) for s in shapes)}):")
    for name, difference in worst.items():
        print(f"  max |onnxruntime - eager| {name}: {difference:.2e}")
    if max(worst.values()) > args.atol:
        print(f"export_onnx.py: error: onnxruntime differs from eager by more than --atol {args.atol:g}",
              file=sys.stderr)
        return 1
    if args.benchmark:
        pixel_values = torch.randn(args.bench_batch, config.num_channels, config.image_size, config.image_size)
        feed = {"pixel_values": pixel_values.numpy()}

        def eager_run():
            with torch.inference_mode():
                model(pixel_values=pixel_values)

        times = {"eager": [], "onnxruntime": []}
        for repeat in range(_WARMUPS + args.repeats):
            for name, run in (("eager", eager_run), ("onnxruntime", functools.partial(session.run, None, feed))):
                seconds = _seconds(run)
                if repeat >= _WARMUPS:
                    times[name].append(seconds)
        print(f"\nCPU inference, {args.threads} threads, {args.bench_batch} images of {config.image_size}^2: ms per "
              f"batch, median (min) of {args.repeats} runs: " + ", ".join(
                  f"{name} {statistics.median(v) * 1e3:.0f} ({min(v) * 1e3:.0f})" for name, v in times.items()))
    return 0


class _VisionSignature(nn.Module):
    """The vision model with the graph's signature: pixel_values -> its named outputs."""

    def __init__(self, model: nn.Module, output_names: list[str]):
        super().__init__()
        self.model = model
        self.output_names = output_names

    def forward(self, pixel_values):
        outputs = self.model(pixel_values=pixel_values, return_dict=True)
        return tuple(outputs[name] for name in self.output_names)


if __name__ == "__main__":
    sys.exit(main())
