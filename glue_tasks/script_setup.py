"""What scripts/run_glue.py and scripts/run_mlm.py share: model arguments, argument parsing, logging, resuming
and loading of the model and tokenizer."""

import logging
import os
import sys
from dataclasses import dataclass, field

import datasets
import transformers
from transformers import AutoTokenizer, HfArgumentParser, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .model_loading import build_model, load_config


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
    """Parse the arguments, set up logging, refuse an undistributed multi-process launch and seed everything;
    returns (model_args, data_args, training_args)."""
    model_args, data_args, training_args = parse_arguments(data_arguments_class, argv)
    setup_logging(training_args, logger)
    check_distributed_launch(training_args)
    logger.info(f"Training/evaluation parameters {training_args}")
    set_seed(training_args.seed)
    return model_args, data_args, training_args


def parse_arguments(data_arguments_class, argv=None):
    """(model_args, data_args, training_args) from `argv` (default sys.argv), or from a single .json file."""
    parser = HfArgumentParser((ModelArguments, data_arguments_class, TrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def setup_logging(training_args, logger: logging.Logger):
    """Log to stdout at the process's level (info on the main process, warnings on the others)."""
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
    distributed = training_args.parallel_mode.value == "distributed"
    logger.warning(f"Process {training_args.process_index} of {training_args.world_size}, device: "
                   f"{training_args.device}, distributed training: {distributed}")


def check_distributed_launch(training_args):
    """ValueError when several processes were launched (torchrun) but the Trainer would not split the work."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.world_size != launched:
        raise ValueError(f"{launched} processes were launched but the Trainer is not distributed (world size "
                         f"{training_args.world_size}); each would train alone. On CPU pass --use_cpu (DDP over "
                         "gloo), or launch with `accelerate launch --cpu`.")


def checkpoint_to_resume(model_args, training_args, logger: logging.Logger) -> str | None:
    """--resume_from_checkpoint, else the last checkpoint in --output_dir (unless --overwrite_output_dir)."""
    if training_args.resume_from_checkpoint is not None:
        return training_args.resume_from_checkpoint
    if not os.path.isdir(training_args.output_dir) or model_args.overwrite_output_dir:
        return None
    last_checkpoint = get_last_checkpoint(training_args.output_dir)
    if last_checkpoint is not None:
        logger.info(f"Checkpoint detected, resuming training at {last_checkpoint}. Use another --output_dir or "
                    "--overwrite_output_dir to train from scratch.")
    return last_checkpoint


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
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, use_fast=model_args.use_fast_tokenizer,
                                              trust_remote_code=model_args.trust_remote_code, **hub_kwargs)
    return model, tokenizer


def select_first(dataset, limit: int | None):
    """The first `limit` examples of `dataset` (all when None), as --max_train_samples and friends ask."""
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))
