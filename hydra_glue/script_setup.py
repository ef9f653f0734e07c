"""What scripts/run_glue.py and scripts/run_mlm.py share: model arguments, argument parsing, logging, the claim on
--output_dir, resuming, loading of the model and tokenizer, the training plan, the Hub check of --push_to_hub, and
the command-line entry point that reports input errors in one line."""

import contextlib
import json
import logging
import math
import os
import re
import struct
import sys
import time
from dataclasses import dataclass, field

import datasets
import huggingface_hub
import transformers
from huggingface_hub.errors import HfHubHTTPError
from transformers import AutoTokenizer, HfArgumentParser, PreTrainedConfig, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import CONFIG_NAME

from .model_loading import build_model, load_config

# Files of a checkpoint's model weights, one of which a complete checkpoint holds.
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin")
TRAINER_STATE_FILE = "trainer_state.json"
# Held (flock) by the run writing to --output_dir; "_"-prefixed names are not uploaded by the Trainer's push_to_hub.
LOCK_FILE = "_run.lock"
# Errors that mean the user's input is wrong; the command line reports them in one line while no training has started.
INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
_progress = {"training_started": False}


class HubUnavailableError(RuntimeError):
    """--push_to_hub cannot reach the Hub (offline, not logged in, or no connection); the scripts print the message
    as one line instead of a traceback."""


@dataclass
class ModelArguments:
    """Which model, config and tokenizer to train: a checkpoint, or a model from scratch from a config."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "A checkpoint folder or Hub id. Leave out to train from scratch from --config_name/--model_type."})
    config_name: str | None = field(default=None, metadata={
        "help": "Config folder, JSON file or Hub id, if not the model's (e.g. configs/hydra-small.json)."})
    model_type: str | None = field(default=None, metadata={
        "help": "Train from scratch from this model type's default config (e.g. hydra, bert)."})
    config_overrides: str | None = field(default=None, metadata={
        "help": "Override config fields, e.g. 'hidden_size=128,num_hidden_layers=4'."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer folder or Hub id."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to store downloads from the Hub."})
    use_fast_tokenizer: bool = field(default=True, metadata={"help": "Use a fast (tokenizers) tokenizer."})
    model_revision: str = field(default="main", metadata={"help": "Model version: branch, tag or commit."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Allow models whose code lives in their Hub repository (not needed for Hydra)."})
    ignore_mismatched_sizes: bool = field(default=False, metadata={
        "help": "Re-initialize checkpoint weights whose shapes differ (e.g. a head with another number of labels)."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Train from scratch even if --output_dir holds checkpoints (otherwise resume from the last)."})


def run_command_line(main, script_name: str):
    """Run `main()` as a command: an input error (INPUT_ERRORS) raised before training starts, or a Hub problem,
    prints `<script>: error: <message>` on one line and exits with 2; anything later keeps its traceback."""
    _progress["training_started"] = False
    try:
        main()
    except HubUnavailableError as error:
        sys.exit(f"{script_name}: {error}")
    except INPUT_ERRORS as error:
        if _progress["training_started"]:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{script_name}: error: {message}", file=sys.stderr)
        sys.exit(2)


def training_starts():
    """Mark that the inputs were accepted: from now on errors are not the user's input and keep their traceback."""
    _progress["training_started"] = True


def start_script(data_arguments_class, argv, logger: logging.Logger):
    """Parse the arguments, set up logging, refuse an undistributed multi-process launch, check the Hub when
    pushing, and seed everything; returns (model_args, data_args, training_args)."""
    model_args, data_args, training_args, given = parse_arguments(data_arguments_class, argv)
    setup_logging(training_args, logger)
    check_distributed_launch(training_args)
    if training_args.push_to_hub:
        check_hub_access(training_args.hub_token or model_args.token)
    if "dataloader_pin_memory" not in given and training_args.device.type == "cpu":
        training_args.dataloader_pin_memory = False  # pinned memory only helps copies to an accelerator
    logger.info(f"Training/evaluation parameters {training_args}")
    set_seed(training_args.seed)
    return model_args, data_args, training_args


def parse_arguments(data_arguments_class, argv=None):
    """(model_args, data_args, training_args, names of the arguments given) from `argv` (default sys.argv), or from
    a single .json file."""
    parser = HfArgumentParser((ModelArguments, data_arguments_class, TrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        path = os.path.abspath(argv[0])
        with open(path, encoding="utf-8") as f:
            given = set(json.load(f))
        return (*parser.parse_json_file(json_file=path), given)
    given = {re.sub(r"^--?(no_)?", "", item).split("=")[0] for item in argv if item.startswith("-")}
    return (*parser.parse_args_into_dataclasses(args=argv), given)


def setup_logging(training_args, logger: logging.Logger):
    """Log to stdout at the process's level: --log_level (--log_level_replica on the other processes), by default
    warnings only, so that a run shows its progress bar and metrics. With the default level the progress bars of
    datasets' preprocessing (and, once the model is loaded, of checkpoint writing) are off too."""
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    if log_level > logging.INFO:
        datasets.utils.disable_progress_bars()
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    distributed = training_args.parallel_mode.value == "distributed"
    # One line per process in a multi-process run shows that all of them started.
    logger.log(logging.WARNING if training_args.world_size > 1 else logging.INFO,
               f"Process {training_args.process_index} of {training_args.world_size}, device: "
               f"{training_args.device}, distributed training: {distributed}")


def check_hub_access(token: str | None):
    """HubUnavailableError, with what to do, unless the Hub answers and accepts the token (for --push_to_hub)."""
    endpoint = huggingface_hub.constants.ENDPOINT
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise HubUnavailableError("--push_to_hub needs the Hugging Face Hub, but offline mode is on "
                                  "(HF_HUB_OFFLINE=1). Unset it, or leave out --push_to_hub and upload --output_dir "
                                  "later with `hf upload`.")
    token = token or huggingface_hub.get_token()
    if token is None:
        raise HubUnavailableError("--push_to_hub needs a Hugging Face login: run `hf auth login` (or set HF_TOKEN, "
                                  "or pass --hub_token), or leave out --push_to_hub.")
    try:
        huggingface_hub.HfApi(endpoint=endpoint).whoami(token=token)
    except HfHubHTTPError as error:
        raise HubUnavailableError(f"--push_to_hub: the Hub at {endpoint} refused the token "
                                  f"({error.response.status_code if error.response is not None else error}); "
                                  "log in again with `hf auth login`, or leave out --push_to_hub.") from None
    except Exception as error:  # DNS, refused or timed-out connections: one answer for all of them
        raise HubUnavailableError(f"--push_to_hub: cannot reach the Hub at {endpoint} ({type(error).__name__}: "
                                  f"{error}); you seem to be offline. Leave out --push_to_hub and upload "
                                  "--output_dir later with `hf upload`.") from None


def check_distributed_launch(training_args):
    """ValueError when several processes were launched (torchrun) but the Trainer would not split the work."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.world_size != launched:
        raise ValueError(f"{launched} processes were launched but the Trainer is not distributed (world size "
                         f"{training_args.world_size}); each would train alone. On CPU pass --use_cpu (DDP over "
                         "gloo), or launch with `accelerate launch --cpu`.")


@contextlib.contextmanager
def output_dir_claimed(training_args):
    """Hold --output_dir for this run: create it, check that it is writable (before anything is trained), and lock
    it against a second run writing to it at the same time (ValueError naming the other process). Only the first
    process of a multi-process run holds the lock; the lock is released at exit from the block."""
    output_dir = training_args.output_dir
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise ValueError(f"--output_dir {output_dir} cannot be created: {error.strerror}") from None
    if not os.path.isdir(output_dir):
        raise ValueError(f"--output_dir {output_dir} is a file, not a folder")
    lock_path = os.path.join(output_dir, LOCK_FILE)
    try:
        lock = open(lock_path, "a+", encoding="utf-8")
    except OSError as error:
        raise ValueError(f"--output_dir {output_dir} is not writable ({error.strerror}); choose another folder or "
                         "fix its permissions") from None
    with lock:
        if training_args.process_index == 0:
            _lock_exclusively(lock, output_dir)
        yield


def _lock_exclusively(lock, output_dir: str):
    """flock `lock` (POSIX; elsewhere nothing is locked) and write this process's id into it."""
    try:
        import fcntl
    except ImportError:
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        raise ValueError(f"--output_dir {output_dir} is in use by another run (process {holder}); wait for it to "
                         "finish, or choose another --output_dir") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()


def safetensors_problem(path: str) -> str | None:
    """What is wrong with the .safetensors file at `path` (truncated, not safetensors), or None. Reads only the
    header: the file must be as long as the header says its tensors are."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                return f"{os.path.basename(path)} is truncated ({size} bytes)"
            (header_size,) = struct.unpack("<Q", prefix)
            if header_size > size - 8:
                return f"{os.path.basename(path)} is truncated or not a safetensors file ({size} bytes)"
            header = json.loads(f.read(header_size))
    except (ValueError, UnicodeDecodeError):
        return f"{os.path.basename(path)} is not a safetensors file (unreadable header)"
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    if 8 + header_size + max(ends, default=0) > size:
        return f"{os.path.basename(path)} is truncated ({size} bytes, its header describes " \
               f"{8 + header_size + max(ends)})"
    return None


def check_model_folder(folder: str | None, flag: str = "--model_name_or_path"):
    """ValueError naming the file when a local model folder's model.safetensors is truncated or damaged."""
    if folder is None or not os.path.isdir(folder):
        return
    weights = os.path.join(folder, "model.safetensors")
    if os.path.isfile(weights):
        problem = safetensors_problem(weights)
        if problem is not None:
            raise ValueError(f"{flag} {folder}: {problem}; the checkpoint was not written completely (a run "
                             "stopped while saving it?)")


def check_local_path(value: str | None, flag: str):
    """ValueError at once when `value` looks like a local path (starts with '.', '/' or '~', names a .json file, has
    more than one '/', or its first folder exists here) but does not exist; otherwise transformers would take it for
    a Hub id and fail only after trying to reach huggingface.co."""
    if value is None or os.path.exists(os.path.expanduser(value)):
        return
    first_folder = value.split("/")[0]
    if (value.startswith((".", "/", "~")) or value.endswith(".json") or value.count("/") > 1
            or ("/" in value and os.path.isdir(first_folder))):
        raise ValueError(f"{flag} {value}: no such file or folder (it looks like a local path, so it was not looked "
                         "up on the Hugging Face Hub)")


def checkpoint_problem(folder: str) -> str | None:
    """What is missing from the Trainer checkpoint `folder` (None when it is complete). The Trainer writes
    trainer_state.json last, so a run killed while saving leaves a folder without it (or with a truncated one)."""
    state_file = os.path.join(folder, TRAINER_STATE_FILE)
    if not os.path.isfile(state_file):
        return f"no {TRAINER_STATE_FILE}"
    try:
        with open(state_file, encoding="utf-8") as f:
            json.load(f)
    except (ValueError, UnicodeDecodeError):
        return f"{TRAINER_STATE_FILE} is truncated or corrupt"
    if not any(os.path.isfile(os.path.join(folder, name)) for name in WEIGHTS_FILES):
        return "no model weights"
    weights = os.path.join(folder, "model.safetensors")
    if os.path.isfile(weights):
        return safetensors_problem(weights)
    return None


def last_complete_checkpoint(folder: str, logger: logging.Logger) -> str | None:
    """The complete `checkpoint-<step>` in `folder` with the highest step, warning about each incomplete one that is
    skipped; None when there is none."""
    steps = {}
    for name in os.listdir(folder):
        match = re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", name)
        if match and os.path.isdir(os.path.join(folder, name)):
            steps[os.path.join(folder, name)] = int(match.group(1))
    for checkpoint in sorted(steps, key=steps.get, reverse=True):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        logger.warning(f"Skipping the incomplete checkpoint {checkpoint} ({problem}; was a run stopped while "
                       "saving it?).")
    return None


def checkpoint_to_resume(model_args, training_args, logger: logging.Logger) -> str | None:
    """--resume_from_checkpoint, else the last checkpoint in --output_dir (unless --overwrite_output_dir).

    An incomplete checkpoint is skipped with a warning for the last complete one beside it; a run that resumes says
    so in one line, with how to start afresh.
    """
    requested = training_args.resume_from_checkpoint
    if requested is not None:
        if not os.path.isdir(requested):
            raise ValueError(f"--resume_from_checkpoint {requested} is not a folder")
        problem = checkpoint_problem(requested)
        if problem is None:
            return requested
        parent = os.path.dirname(os.path.abspath(requested))
        fallback = last_complete_checkpoint(parent, logger)
        if fallback is None:
            raise ValueError(f"--resume_from_checkpoint {requested} is incomplete ({problem}) and {parent} holds no "
                             "complete checkpoint to resume from instead.")
        logger.warning(f"Resuming from {fallback}, the last complete checkpoint beside {requested}.")
        return fallback
    if not os.path.isdir(training_args.output_dir) or model_args.overwrite_output_dir:
        return None
    checkpoint = last_complete_checkpoint(training_args.output_dir, logger)
    if checkpoint is not None:
        with open(os.path.join(checkpoint, TRAINER_STATE_FILE), encoding="utf-8") as f:
            step = json.load(f).get("global_step")
        logger.warning(f"Resuming training from {checkpoint} (step {step}). To train from scratch, pass "
                       "--overwrite_output_dir or another --output_dir.")
    return checkpoint


def load_model_and_tokenizer(model_args, head: str, **config_kwargs):
    """(model, tokenizer) for `head` ("sequence_classification" or "masked_lm"); `config_kwargs` update the config.

    Raises ValueError before anything is trained when the model type has no such head or no tokenizer is given.
    """
    for flag in ("model_name_or_path", "config_name", "tokenizer_name"):
        check_local_path(getattr(model_args, flag), f"--{flag}")
    check_model_folder(model_args.model_name_or_path)
    hub_kwargs = dict(cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token)
    config = load_config(model_args.config_name or model_args.model_name_or_path, model_args.model_type,
                         model_args.config_overrides, model_args.trust_remote_code, hub_kwargs, **config_kwargs)
    tokenizer_source = model_args.tokenizer_name or model_args.model_name_or_path
    if tokenizer_source is None:
        raise ValueError("Training from scratch needs --tokenizer_name (e.g. assets/tokenizer/bert-base-uncased).")
    model = build_model(head, config, model_args.model_name_or_path, model_args.trust_remote_code,
                        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **hub_kwargs)
    # AutoTokenizer reads a model config first: give it the one already loaded when the tokenizer is the model's, and
    # an empty one (which it would otherwise build, and log) for a tokenizer folder without a config.json.
    tokenizer_config = {}
    if tokenizer_source == model_args.model_name_or_path:
        tokenizer_config["config"] = config
    elif os.path.isdir(tokenizer_source) and not os.path.isfile(os.path.join(tokenizer_source, CONFIG_NAME)):
        tokenizer_config["config"] = PreTrainedConfig()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, use_fast=model_args.use_fast_tokenizer,
                                              trust_remote_code=model_args.trust_remote_code, **tokenizer_config,
                                              **hub_kwargs)
    if logging.getLogger("transformers").getEffectiveLevel() > logging.INFO:
        transformers.utils.logging.disable_progress_bar()  # downloads are done; hide "Writing model shards" bars
    return model, tokenizer


def select_first(dataset, limit: int | None, description: str):
    """The first `limit` examples of `dataset` (all when None), as --max_train_samples and friends ask; ValueError
    naming `description` (e.g. "the train split of sst2") when nothing is left."""
    selected = dataset if limit is None else dataset.select(range(min(limit, len(dataset))))
    if len(selected) == 0:
        raise ValueError(f"{description} has no examples" + ("" if limit is None else f" (of the first {limit})"))
    return selected


def resumed_step(checkpoint: str | None) -> int:
    """The global step saved in the Trainer checkpoint `checkpoint` (0 without one)."""
    if checkpoint is None:
        return 0
    with open(os.path.join(checkpoint, TRAINER_STATE_FILE), encoding="utf-8") as f:
        return int(json.load(f).get("global_step") or 0)


def planned_steps(trainer, train_dataset) -> int:
    """The number of optimizer steps trainer.train() will take in all (max_steps, else the epochs' steps)."""
    args = trainer.args
    if args.max_steps > 0:
        return args.max_steps
    per_step = args.per_device_train_batch_size * max(args.world_size, 1)
    batches = math.ceil(len(train_dataset) / per_step) if not args.dataloader_drop_last else \
        len(train_dataset) // per_step
    return max(math.ceil(args.num_train_epochs * math.ceil(batches / args.gradient_accumulation_steps)), 1)


class TrainingPlanCallback(TrainerCallback):
    """Says at the start how many steps the run takes (and from where it resumes), and after the first steps
    (some seconds) how long the rest will take, measured at that point."""

    def __init__(self, logger: logging.Logger, total_steps: int, first_step: int, examples: int, report_after=10.0):
        self.logger, self.total, self.first, self.examples = logger, total_steps, first_step, examples
        self.report_after, self.start, self.reported = report_after, None, False

    def on_train_begin(self, args, state, control, **kwargs):
        resumed = f", resuming at step {self.first}" if self.first else ""
        self.logger.warning(f"Training {self.total} steps ({self.examples} examples, {args.num_train_epochs:g} "
                            f"epoch(s) unless --max_steps, batch {args.per_device_train_batch_size} per device"
                            f"{resumed}); an estimate of the time follows after the first steps.")
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        elapsed = time.perf_counter() - self.start
        done = state.global_step - self.first
        if self.reported or done <= 0 or (elapsed < self.report_after and state.global_step < self.total):
            return
        self.reported = True
        left = elapsed / done * (self.total - state.global_step)
        self.logger.warning(f"Estimated time: {_duration(left)} for the remaining {self.total - state.global_step} "
                            f"steps ({elapsed / done:.2f} s per step so far).")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else \
        f"{seconds / 3600:.1f} h"


def train_and_save(trainer, train_dataset, checkpoint: str | None, logger: logging.Logger):
    """trainer.train (from `checkpoint` when resuming), then save the model, metrics and state. A checkpoint that
    already holds every planned step is not trained again: the run says so instead of logging a loss of 0.0 over a
    bar of 0 steps."""
    total, first = planned_steps(trainer, train_dataset), resumed_step(checkpoint)
    if first >= total:
        logger.warning(f"{checkpoint} already completed all {total} planned steps: nothing left to train. Pass "
                       "--overwrite_output_dir (or another --output_dir) to train afresh, or a larger --max_steps / "
                       "--num_train_epochs to continue.")
        return
    trainer.add_callback(TrainingPlanCallback(logger, total, first, len(train_dataset)))
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = dict(train_result.metrics, train_samples=len(train_dataset))
    trainer.save_model()  # and the tokenizer
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
