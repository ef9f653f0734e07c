#!/usr/bin/env python
"""Masked-language-model pre-training with the transformers Trainer (HydraForMaskedLM, or any masked LM).

The interface of transformers' examples/pytorch/language-modeling/run_mlm.py (model / data / TrainingArguments
dataclasses; --model_name_or_path or --config_name/--model_type/--config_overrides from scratch; text, csv or
json files or a Hub dataset; --line_by_line; --mlm_probability), plus a corpus from local GLUE files:
  --glue_dir DIR --glue_tasks sst2 cola ...   the texts of these tasks' train (and dev, for evaluation) files.
and packed batches: --packing makes each batch one row of whole sequences without padding (Hydra only; see
hydra_glue/mlm_packing.py).

Pre-train a small Hydra on the embedded SST-2 sample, then fine-tune it with run_glue.py:

    python scripts/run_mlm.py --glue_dir assets/glue_sample --glue_tasks sst2 --line_by_line \
        --config_name configs/hydra-small.json --tokenizer_name assets/tokenizer/bert-base-uncased \
        --do_train --do_eval --num_train_epochs 1 --learning_rate 1e-3 --output_dir outputs/mlm
    python scripts/run_glue.py --model_name_or_path outputs/mlm --task_name sst2 --glue_dir assets/glue_sample ...
"""

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from itertools import chain

try:
    import datasets
    from datasets import load_dataset
    from transformers import DataCollatorForLanguageModeling, Trainer

    from hydra_transformers.glue import get_glue_task, load_glue_directory
    from hydra_transformers.glue import script_setup
    from hydra_transformers.glue.mlm_packing import DataCollatorForPackedLanguageModeling
except ModuleNotFoundError as missing:  # a core-only install: say which extra brings the package
    sys.exit(f"run_mlm.py: error: the package {missing.name!r} is not installed; the pre-training script needs the "
             '[glue] extra: pip install -e ".[glue]" (from the repository root)')

logger = logging.getLogger(__name__)


@dataclass
class DataTrainingArguments:
    """Which text to pre-train and evaluate on."""

    glue_dir: str | None = field(default=None, metadata={"help": "Folder of the official GLUE TSV files."})
    glue_tasks: list[str] = field(default_factory=list, metadata={
        "help": "With --glue_dir: the tasks whose texts form the corpus (train files; dev files for evaluation)."})
    dataset_name: str | None = field(default=None, metadata={"help": "A dataset on the Hub (datasets library)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration name."})
    train_file: str | None = field(default=None, metadata={"help": "A text, csv or json file of training text."})
    validation_file: str | None = field(default=None, metadata={"help": "A text, csv or json file to evaluate."})
    validation_split_percentage: int = field(default=5, metadata={
        "help": "Percentage of the train data held out for evaluation when there is no validation split."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Recompute the cached tokenization."})
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per training sequence."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Fraction of tokens to mask."})
    line_by_line: bool = field(default=False, metadata={
        "help": "One example per non-empty line (truncated); otherwise the texts are concatenated and cut into "
                "blocks of max_seq_length tokens."})
    pad_to_max_length: bool = field(default=False, metadata={"help": "Pad every line to max_seq_length."})
    packing: bool = field(default=False, metadata={
        "help": "Flatten each batch into one row of whole sequences without padding (hydra_glue/mlm_packing.py); "
                "Hydra keeps the sequences apart. The batch size counts sequences."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N evaluation examples."})

    def __post_init__(self):
        if self.max_seq_length <= 0:
            raise ValueError(f"--max_seq_length must be a positive number of tokens, got {self.max_seq_length}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"--mlm_probability must lie in (0, 1), got {self.mlm_probability}")
        if self.glue_dir is not None:
            if not self.glue_tasks:
                raise ValueError("--glue_dir needs --glue_tasks (e.g. --glue_tasks sst2 cola)")
            self.glue_tasks = [get_glue_task(name).name for name in self.glue_tasks]
        elif self.dataset_name is None and self.train_file is None and self.validation_file is None:
            raise ValueError("Need --glue_dir with --glue_tasks, a dataset name, or a training/validation file.")
        for name in ("train_file", "validation_file"):
            path = getattr(self, name)
            if path is None:
                continue
            if path.rsplit(".", 1)[-1] not in ("txt", "csv", "json"):
                raise ValueError(f"--{name} must be a .txt, .csv or .json file, got {path}")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--{name} {path}: no such file")
            if not has_text(path):
                raise ValueError(f"--{name} {path} holds no text (the file is empty or blank)")


def has_text(path: str) -> bool:
    """Whether the file at `path` holds anything but whitespace (read in blocks, stopping at the first text)."""
    with open(path, "rb") as f:
        return any(block.strip() for block in iter(lambda: f.read(1 << 20), b""))


def glue_corpus(glue_dir: str, task_names: list, do_eval: bool) -> datasets.DatasetDict:
    """A `text` column of every input text of the tasks' train files (and dev files as `validation`)."""
    texts = {"train": []}
    if do_eval:
        texts["validation"] = []
    for name in task_names:
        task = get_glue_task(name)
        wanted = {"train": ["train"], "validation": task.validation_splits}
        splits = load_glue_directory(glue_dir, task, [s for key in texts for s in wanted[key]])
        for key in texts:
            for split in wanted[key]:
                for column in task.text_columns:
                    texts[key] += splits[split][column]
    return datasets.DatasetDict({key: datasets.Dataset.from_dict({"text": values}) for key, values in texts.items()})


def load_raw_datasets(model_args, data_args, training_args):
    """Train and validation text: a GLUE corpus, a Hub dataset or files (validation held out of train if absent)."""
    if data_args.glue_dir is not None:
        return glue_corpus(data_args.glue_dir, data_args.glue_tasks, training_args.do_eval)
    hub_kwargs = dict(cache_dir=model_args.cache_dir, token=model_args.token)
    if data_args.dataset_name is not None:
        raw = load_dataset(data_args.dataset_name, data_args.dataset_config_name, **hub_kwargs)
    else:
        data_files = {key: path for key, path in (("train", data_args.train_file),
                                                  ("validation", data_args.validation_file)) if path}
        extension = next(iter(data_files.values())).rsplit(".", 1)[-1]
        raw = load_dataset("text" if extension == "txt" else extension, data_files=data_files, **hub_kwargs)
    if "validation" not in raw and "train" in raw:
        held_out = raw["train"].train_test_split(test_size=data_args.validation_split_percentage / 100,
                                                 seed=training_args.seed)
        raw = datasets.DatasetDict(train=held_out["train"], validation=held_out["test"])
    return raw


def tokenize_corpus(raw_datasets, tokenizer, data_args, training_args):
    """Tokenized examples: one per line (`line_by_line`), else concatenated texts cut into equal blocks."""
    column_names = next(iter(raw_datasets.values())).column_names
    text_column = "text" if "text" in column_names else column_names[0]
    max_seq_length = min(data_args.max_seq_length, tokenizer.model_max_length)
    map_kwargs = dict(batched=True, load_from_cache_file=not data_args.overwrite_cache)

    if data_args.line_by_line:
        padding = "max_length" if data_args.pad_to_max_length else False

        def tokenize_lines(examples):
            lines = [line for line in examples[text_column] if line and not line.isspace()]
            return tokenizer(lines, padding=padding, truncation=True, max_length=max_seq_length,
                             return_special_tokens_mask=True)

        with training_args.main_process_first(desc="dataset map tokenization"):
            return raw_datasets.map(tokenize_lines, remove_columns=column_names, desc="Tokenizing lines",
                                    **map_kwargs)

    def tokenize_texts(examples):
        return tokenizer(examples[text_column], return_special_tokens_mask=True)

    def group_texts(examples):
        concatenated = {key: list(chain(*examples[key])) for key in examples}
        total = (len(concatenated[next(iter(examples))]) // max_seq_length) * max_seq_length
        return {key: [values[i:i + max_seq_length] for i in range(0, total, max_seq_length)]
                for key, values in concatenated.items()}

    with training_args.main_process_first(desc="dataset map tokenization"):
        tokenized = raw_datasets.map(tokenize_texts, remove_columns=column_names, desc="Tokenizing texts",
                                     **map_kwargs)
        return tokenized.map(group_texts, desc=f"Grouping texts in blocks of {max_seq_length}", **map_kwargs)


def main(argv=None):
    model_args, data_args, training_args = script_setup.start_script(DataTrainingArguments, argv, logger)
    with script_setup.output_dir_claimed(training_args):
        pretrain(model_args, data_args, training_args)


def pretrain(model_args, data_args, training_args):
    """Load, tokenize, train and evaluate as the arguments say, writing into --output_dir."""
    raw_datasets = load_raw_datasets(model_args, data_args, training_args)
    model, tokenizer = script_setup.load_model_and_tokenizer(model_args, "masked_lm")
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))

    tokenized = tokenize_corpus(raw_datasets, tokenizer, data_args, training_args)
    train_dataset = eval_dataset = None
    if training_args.do_train:
        if "train" not in tokenized:
            raise ValueError("--do_train requires a train dataset")
        train_dataset = script_setup.select_first(tokenized["train"], data_args.max_train_samples,
                                                  "the training data")
    if training_args.do_eval:
        if "validation" not in tokenized:
            raise ValueError("--do_eval requires a validation dataset")
        eval_dataset = script_setup.select_first(tokenized["validation"], data_args.max_eval_samples,
                                                 "the evaluation data")

    if data_args.packing:
        if model.config.model_type != "hydra":
            raise ValueError(f"--packing needs a model that keeps the sequences of a packed row apart (Hydra); a "
                             f"{model.config.model_type!r} model would mix them. Drop --packing.")
        data_collator = DataCollatorForPackedLanguageModeling(tokenizer=tokenizer,
                                                              mlm_probability=data_args.mlm_probability)
    else:
        data_collator = DataCollatorForLanguageModeling(
            tokenizer=tokenizer, mlm_probability=data_args.mlm_probability,
            pad_to_multiple_of=8 if data_args.line_by_line and training_args.fp16 else None)
    trainer = Trainer(model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                      processing_class=tokenizer, data_collator=data_collator)

    checkpoint = script_setup.checkpoint_to_resume(model_args, training_args, logger) if training_args.do_train \
        else None
    script_setup.training_starts()
    if training_args.do_train:
        script_setup.train_and_save(trainer, train_dataset, checkpoint, logger)

    if training_args.do_eval:
        logger.info("*** Evaluate ***")
        metrics = trainer.evaluate()
        metrics["eval_samples"] = len(eval_dataset)
        metrics["perplexity"] = math.exp(metrics["eval_loss"]) if metrics["eval_loss"] < 700 else math.inf
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    kwargs = {"tasks": "fill-mask"}
    if model_args.model_name_or_path is not None:
        kwargs["finetuned_from"] = model_args.model_name_or_path
    if training_args.push_to_hub:
        trainer.push_to_hub(**kwargs)
    else:
        trainer.create_model_card(**kwargs)


if __name__ == "__main__":
    script_setup.run_command_line(main, "run_mlm.py")
