"""What scripts/run_glue.py and scripts/run_mlm.py share: model arguments, argument parsing, logging, resuming,
loading of the model and tokenizer, and the Hub check of --push_to_hub."""

import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field

import datasets
import huggingface_hub
import transformers
from huggingface_hub.errors import HfHubHTTPError
from transformers import AutoTokenizer, HfArgumentParser, PreTrainedConfig, TrainingArguments, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import CONFIG_NAME

from .model_loading import build_model, load_config

# Files of a checkpoint's model weights, one of which a complete checkpoint holds.
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin")
TRAINER_STATE_FILE = "trainer_state.json"


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
