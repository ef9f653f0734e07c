#!/usr/bin/env python
"""Fine-tune a sequence classifier on a GLUE task with the transformers Trainer.

The interface of transformers' examples/pytorch/text-classification/run_glue.py (model / data / TrainingArguments
dataclasses, every TrainingArguments flag), plus:
  --glue_dir DIR           read the task from a local copy of the official GLUE TSV files (DIR/SST-2/train.tsv ...)
  --config_name / --model_type / --config_overrides   train a model from scratch (no --model_name_or_path)
  --overwrite_output_dir   do not resume from the checkpoints already in --output_dir
A Hydra checkpoint given with --trust_remote_code loads through the Auto classes and its saved code; without it, and
for config files, Hydra loads with this repository's classes; other models go through the Auto classes.
--do_predict writes GLUE leaderboard files (SST-2.tsv, MNLI-m.tsv, ...) into --output_dir. By default a run prints
its progress bar and metrics; --log_level info shows what transformers and the Trainer do.

Fine-tune a small Hydra from scratch on the embedded SST-2 sample (10,000 training sentences; about 1.5 minutes on
2 idle CPU cores, dev accuracy about 0.77-0.78 depending on library versions and threads):

    python scripts/run_glue.py --task_name sst2 --glue_dir assets/glue_sample --config_name configs/hydra-small.json \
        --tokenizer_name assets/tokenizer/bert-base-uncased --do_train --do_eval --num_train_epochs 1 \
        --per_device_train_batch_size 32 --learning_rate 1e-3 --warmup_steps 0.1 --logging_steps 50 \
        --output_dir outputs/sst2

Multi-process (DDP over gloo on CPU): `torchrun --nproc_per_node 2 scripts/run_glue.py --use_cpu ...`.
"""

import logging
import os
import sys
from dataclasses import dataclass, field

try:
    import numpy as np
    from datasets import DatasetDict, load_dataset
    from transformers import DataCollatorWithPadding, EvalPrediction, PreTrainedConfig, Trainer, default_data_collator

    from hydra_transformers.glue import (
        GLUE_TASKS,
        compute_glue_metrics,
        get_glue_task,
        load_glue_directory,
        with_combined_score,
        write_glue_submission,
    )
    from hydra_transformers.glue import script_setup
except ModuleNotFoundError as missing:  # a core-only install: say which extra brings the package
    sys.exit(f"run_glue.py: error: the package {missing.name!r} is not installed; the GLUE scripts need the [glue] "
             'extra: pip install -e ".[glue]" (from the repository root)')

logger = logging.getLogger(__name__)


@dataclass
class DataTrainingArguments:
    """What data to train, evaluate and predict on."""

    task_name: str | None = field(default=None, metadata={"help": "GLUE task: " + ", ".join(GLUE_TASKS)})
    glue_dir: str | None = field(default=None, metadata={
        "help": "Folder of the official GLUE distribution (TASK/train.tsv, dev.tsv, test.tsv); read offline."})
    dataset_name: str | None = field(default=None, metadata={"help": "A dataset on the Hub (datasets library)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration name."})
    max_seq_length: int = field(default=128, metadata={"help": "Truncate inputs to this many tokens."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Recompute the cached tokenization."})
    pad_to_max_length: bool = field(default=False, metadata={
        "help": "Pad every example to max_seq_length; by default batches are padded dynamically."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N evaluation examples."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Keep the first N test examples."})
    train_file: str | None = field(default=None, metadata={"help": "A csv or json file of training data."})
    validation_file: str | None = field(default=None, metadata={"help": "A csv or json file of validation data."})
    test_file: str | None = field(default=None, metadata={"help": "A csv or json file of test data."})

    def __post_init__(self):
        if self.task_name is not None:
            self.task_name = get_glue_task(self.task_name).name
        if self.max_seq_length <= 0:
            raise ValueError(f"--max_seq_length must be a positive number of tokens, got {self.max_seq_length}")
        for name in ("max_train_samples", "max_eval_samples", "max_predict_samples"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be a positive number of examples, got {getattr(self, name)}")
        if self.glue_dir is not None:
            if self.task_name is None:
                raise ValueError(f"--glue_dir needs --task_name (one of {', '.join(GLUE_TASKS)})")
            if not os.path.isdir(self.glue_dir):
                raise FileNotFoundError(f"--glue_dir {self.glue_dir} is not a folder")
        elif self.task_name is None and self.dataset_name is None:
            if self.train_file is None or self.validation_file is None:
                raise ValueError("Need a GLUE task (--task_name, with --glue_dir to read local files), a dataset "
                                 "name or both --train_file and --validation_file.")
        for name in ("train_file", "validation_file", "test_file"):
            path = getattr(self, name)
            if path is not None and path.rsplit(".", 1)[-1] not in ("csv", "json"):
                raise ValueError(f"--{name} must be a .csv or .json file, got {path}")


def load_raw_datasets(model_args, data_args, training_args):
    """The raw splits: local GLUE TSV files, the Hub's GLUE copy, a Hub dataset, or csv/json files."""
    hub_kwargs = dict(cache_dir=model_args.cache_dir, token=model_args.token)
    if data_args.glue_dir is not None:
        task = get_glue_task(data_args.task_name)
        splits = ["train"] if training_args.do_train else []
        splits += task.validation_splits if training_args.do_eval else []
        splits += task.test_splits if training_args.do_predict else []
        return load_glue_directory(data_args.glue_dir, task, splits)
    if data_args.task_name is not None:
        return load_dataset("nyu-mll/glue", data_args.task_name, **hub_kwargs)
    if data_args.dataset_name is not None:
        return load_dataset(data_args.dataset_name, data_args.dataset_config_name, **hub_kwargs)
    data_files = {"train": data_args.train_file, "validation": data_args.validation_file}
    if training_args.do_predict:
        if data_args.test_file is None:
            raise ValueError("--do_predict needs a GLUE task or a --test_file")
        data_files["test"] = data_args.test_file
    extension = data_args.train_file.rsplit(".", 1)[-1]
    return load_dataset(extension, data_files=data_files, **hub_kwargs)


def label_setup(raw_datasets, data_args):
    """(is_regression, label_list): from the GLUE task, else from the training file's `label` column."""
    if data_args.task_name is not None:
        task = get_glue_task(data_args.task_name)
        return task.is_regression, list(task.label_names)
    for split, dataset in raw_datasets.items():
        if "label" not in dataset.column_names and not split.startswith("test"):
            raise ValueError(f"the {split} data has no 'label' column (its columns: "
                             f"{', '.join(dataset.column_names)}); name the gold labels' column 'label'")
    reference_split = "train" if "train" in raw_datasets else "validation"
    reference = raw_datasets[reference_split]
    if reference.features["label"].dtype in ("float32", "float64"):
        return True, []
    label_list = sorted(reference.unique("label"))
    for split, dataset in raw_datasets.items():
        if split != reference_split and "label" in dataset.column_names:
            unseen = sorted(set(dataset.unique("label")) - set(label_list) - {-1})
            if unseen:
                raise ValueError(f"the {split} data has label(s) {', '.join(map(repr, unseen))} that the "
                                 f"{reference_split} data does not have (its labels: "
                                 f"{', '.join(map(repr, label_list))}); the model can only predict the labels it "
                                 "is trained on")
    return False, label_list


def label_mapping(model, label_list, is_regression, data_args):
    """label_to_id for the preprocessing (None when dataset ids already match), and the model's id2label set."""
    label_to_id = None
    if is_regression:
        return None
    default_label2id = PreTrainedConfig(num_labels=len(label_list)).label2id
    if model.config.label2id != default_label2id and data_args.task_name is not None:
        model_labels = {name.lower(): i for name, i in model.config.label2id.items()}
        if sorted(model_labels) == sorted(label_list):
            label_to_id = {i: int(model_labels[name]) for i, name in enumerate(label_list)}
        else:
            logger.warning(f"The model's labels {sorted(model_labels)} do not match the task's {label_list}; "
                           "ignoring the model's labels.")
    elif data_args.task_name is None:
        label_to_id = {name: i for i, name in enumerate(label_list)}
    if label_to_id is not None and data_args.task_name is not None:
        model.config.label2id = {label_list[i]: j for i, j in label_to_id.items()}
    else:
        model.config.label2id = {name: i for i, name in enumerate(label_list)}
    model.config.id2label = {i: name for name, i in model.config.label2id.items()}
    return label_to_id


def text_keys(raw_datasets, data_args):
    if data_args.task_name is not None:
        keys = list(get_glue_task(data_args.task_name).text_columns)
        return keys[0], keys[1] if len(keys) > 1 else None
    columns = [name for name in next(iter(raw_datasets.values())).column_names if name != "label"]
    if "sentence1" in columns and "sentence2" in columns:
        return "sentence1", "sentence2"
    return (columns[0], columns[1]) if len(columns) >= 2 else (columns[0], None)


def tokenize_datasets(raw_datasets, tokenizer, label_to_id, data_args, training_args):
    """Tokenize every split (truncated to --max_seq_length, padded only with --pad_to_max_length); labels are
    mapped to the model's ids when `label_to_id` is given."""
    sentence1_key, sentence2_key = text_keys(raw_datasets, data_args)
    max_seq_length = data_args.max_seq_length
    if max_seq_length > tokenizer.model_max_length:
        logger.warning(f"--max_seq_length {max_seq_length} exceeds the tokenizer's model_max_length "
                       f"{tokenizer.model_max_length}; using the latter.")
        max_seq_length = tokenizer.model_max_length
    padding = "max_length" if data_args.pad_to_max_length else False

    def preprocess(examples):
        texts = (examples[sentence1_key],) if sentence2_key is None else (examples[sentence1_key],
                                                                           examples[sentence2_key])
        result = tokenizer(*texts, padding=padding, max_length=max_seq_length, truncation=True)
        if label_to_id is not None and "label" in examples:
            result["labels"] = [label_to_id[label] if label != -1 else -1 for label in examples["label"]]
        return result

    def tokenize(dataset):
        # Mapped labels go to a new `labels` column: `label` could be a string column, which keeps its type.
        replaced = ["label"] if label_to_id is not None and "label" in dataset.column_names else []
        return dataset.map(preprocess, batched=True, remove_columns=replaced,
                           load_from_cache_file=not data_args.overwrite_cache, desc="Running tokenizer on dataset")

    with training_args.main_process_first(desc="dataset map pre-processing"):
        return DatasetDict({split: tokenize(dataset) for split, dataset in raw_datasets.items()})


def split_description(split, task, data_args) -> str:
    """How errors name a split: its file for local GLUE data."""
    if data_args.glue_dir is not None:
        return f"the {split} split ({os.path.join(data_args.glue_dir, task.directory, task.splits[split])})"
    return f"the {split} split"


def select_splits(datasets, task, data_args, training_args):
    """(train dataset, {validation split: dataset}, {test split: dataset}) for the requested phases; ValueError
    when a requested split is missing or has no examples."""
    validation_splits = task.validation_splits if task else ["validation"]
    test_splits = task.test_splits if task else ["test"]
    train_dataset = eval_datasets = predict_datasets = None
    for wanted, splits, phase in ((training_args.do_train, ["train"], "--do_train"),
                                  (training_args.do_eval, validation_splits, "--do_eval"),
                                  (training_args.do_predict, test_splits, "--do_predict")):
        if wanted and any(split not in datasets for split in splits):
            raise ValueError(f"{phase} requires the split(s) {splits}; the data has {list(datasets)}")

    def first(split, limit):
        return script_setup.select_first(datasets[split], limit, split_description(split, task, data_args))

    if training_args.do_train:
        train_dataset = first("train", data_args.max_train_samples)
    if training_args.do_eval:
        eval_datasets = {split: first(split, data_args.max_eval_samples) for split in validation_splits}
    if training_args.do_predict:
        predict_datasets = {split: first(split, data_args.max_predict_samples) for split in test_splits}
    return train_dataset, eval_datasets, predict_datasets


def metrics_function(task, is_regression):
    """The Trainer's `compute_metrics` for one evaluation split: GLUE's metrics (+ combined score) of the task."""
    if task is not None:
        def metric(predictions, references):
            return compute_glue_metrics(task, predictions, references)
    else:
        metric = regression_or_accuracy(is_regression)

    def compute_metrics(prediction: EvalPrediction):
        outputs = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        outputs = np.squeeze(outputs, axis=-1) if is_regression else np.argmax(outputs, axis=1)
        return with_combined_score(metric(outputs, prediction.label_ids))
    return compute_metrics


def regression_or_accuracy(is_regression):
    """Metrics of a non-GLUE dataset: mean squared error or accuracy."""
    if is_regression:
        return lambda predictions, references: {"mse": float(((predictions - references) ** 2).mean())}
    return lambda predictions, references: {"accuracy": float((predictions == references).mean())}


def evaluate_splits(trainer, eval_datasets):
    """Evaluate every validation split (MNLI: matched, then mismatched with `_mm` names); save eval_results.json."""
    logger.info("*** Evaluate ***")
    all_metrics = {}
    for split, dataset in eval_datasets.items():
        metrics = trainer.evaluate(eval_dataset=dataset)
        metrics["eval_samples"] = len(dataset)
        if split == "validation_mismatched":
            metrics = {f"{name}_mm": value for name, value in metrics.items()}
        trainer.log_metrics("eval", metrics)
        all_metrics.update(metrics)
    trainer.save_metrics("eval", all_metrics)


def predict_splits(trainer, predict_datasets, task, is_regression, output_dir):
    """Predict every test split; write GLUE submission files (or predict_results_<split>.txt for other data)."""
    logger.info("*** Predict ***")
    for split, dataset in predict_datasets.items():
        indices = dataset["idx"] if "idx" in dataset.column_names else list(range(len(dataset)))
        dataset = dataset.remove_columns([c for c in ("label", "labels") if c in dataset.column_names])
        outputs = trainer.predict(dataset, metric_key_prefix="predict").predictions
        predictions = np.squeeze(outputs, axis=-1) if is_regression else np.argmax(outputs, axis=1)
        if trainer.is_world_process_zero():
            if task is not None:
                if not is_regression:  # the model's class ids -> the task's (they differ for some checkpoints)
                    id2label = trainer.model.config.id2label
                    predictions = [task.label_names.index(id2label[int(p)]) for p in predictions]
                path = write_glue_submission(output_dir, task, split, indices, predictions)
            else:
                path = write_plain_predictions(output_dir, split, indices, predictions, is_regression,
                                               trainer.model.config.id2label)
            logger.info(f"Wrote the {split} predictions to {path}")


def main(argv=None):
    model_args, data_args, training_args = script_setup.start_script(DataTrainingArguments, argv, logger)
    with script_setup.output_dir_claimed(training_args):
        fine_tune(model_args, data_args, training_args)


def fine_tune(model_args, data_args, training_args):
    """Load, tokenize, train, evaluate and predict as the arguments say, writing into --output_dir."""
    raw_datasets = load_raw_datasets(model_args, data_args, training_args)
    task = get_glue_task(data_args.task_name) if data_args.task_name is not None else None
    is_regression, label_list = label_setup(raw_datasets, data_args)
    model, tokenizer = script_setup.load_model_and_tokenizer(
        model_args, "sequence_classification", num_labels=1 if is_regression else len(label_list),
        finetuning_task=data_args.task_name)
    if model.config.problem_type is None:
        model.config.problem_type = "regression" if is_regression else "single_label_classification"
    label_to_id = label_mapping(model, label_list, is_regression, data_args)
    datasets = tokenize_datasets(raw_datasets, tokenizer, label_to_id, data_args, training_args)
    train_dataset, eval_datasets, predict_datasets = select_splits(datasets, task, data_args, training_args)

    if data_args.pad_to_max_length:
        data_collator = default_data_collator
    else:
        data_collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if training_args.fp16 else None)
    first_eval_split = next(iter(eval_datasets)) if eval_datasets else None
    trainer = Trainer(model=model, args=training_args, train_dataset=train_dataset,
                      eval_dataset=eval_datasets[first_eval_split] if eval_datasets else None,
                      compute_metrics=metrics_function(task, is_regression),
                      processing_class=tokenizer, data_collator=data_collator)

    checkpoint = script_setup.checkpoint_to_resume(model_args, training_args, logger) if training_args.do_train \
        else None
    script_setup.training_starts()
    if training_args.do_train:
        script_setup.train_and_save(trainer, train_dataset, checkpoint, logger)
    if training_args.do_eval:
        evaluate_splits(trainer, eval_datasets)
    if training_args.do_predict:
        predict_splits(trainer, predict_datasets, task, is_regression, training_args.output_dir)

    card = {"tasks": "text-classification"}
    if model_args.model_name_or_path is not None:
        card["finetuned_from"] = model_args.model_name_or_path
    if task is not None:
        card.update(language="en", dataset_tags="glue", dataset_args=task.name, dataset=f"GLUE {task.directory}")
    if training_args.push_to_hub:
        trainer.push_to_hub(**card)
    else:
        trainer.create_model_card(**card)


def write_plain_predictions(output_dir, split, indices, predictions, is_regression, id2label):
    """`predict_results_<split>.txt` (index, prediction) for a dataset that is not a GLUE task."""
    path = os.path.join(output_dir, f"predict_results_{split}.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("index\tprediction\n")
        for index, value in zip(indices, predictions):
            f.write(f"{index}\t{value:3.3f}\n" if is_regression else f"{index}\t{id2label[int(value)]}\n")
    return path


if __name__ == "__main__":
    script_setup.run_command_line(main, "run_glue.py")
