"""Helpers of the GLUE/Trainer tests: the scripts' entry points, tiny-model flags and an independent evaluation."""

import csv
import functools
import os
import runpy

import numpy as np
import torch
import transformers
from conftest import REPO_ROOT, TOKENIZER_DIR
from transformers import AutoModelForSequenceClassification, AutoTokenizer

SCRIPTS = REPO_ROOT / "scripts"
GLUE_SAMPLE = REPO_ROOT / "assets" / "glue_sample"

# A 1-layer Hydra of width 32 (4 heads, 2 groups, chunks of 8) from the shipped small config.
TINY_HYDRA = ["--config_name", str(REPO_ROOT / "configs" / "hydra-small.json"), "--config_overrides",
              "hidden_size=32,num_hidden_layers=1,headdim=16,d_state=16,ngroups=2,chunk_size=8,hidden_dropout_prob=0",
              "--tokenizer_name", str(TOKENIZER_DIR)]
QUIET = ["--report_to", "none", "--disable_tqdm", "true", "--log_level", "warning", "--seed", "0"]


def script_function(script: str, function: str = "main"):
    """A function of scripts/<script>.py, by default its `main(argv)` (the scripts are not a package), wrapped so
    that the logging set-up (levels, progress bars) of a script run does not leak into later tests."""
    wrapped = runpy.run_path(str(SCRIPTS / f"{script}.py"))[function]

    @functools.wraps(wrapped)
    def call(*args, **kwargs):
        import datasets  # seconds to import: only the tests that run a script pay for it

        verbosity = (transformers.utils.logging.get_verbosity(), datasets.utils.logging.get_verbosity())
        bars = (transformers.utils.logging.is_progress_bar_enabled(), datasets.utils.is_progress_bar_enabled())
        try:
            return wrapped(*args, **kwargs)
        finally:
            transformers.utils.logging.set_verbosity(verbosity[0])
            transformers.utils.logging.reset_format()
            datasets.utils.logging.set_verbosity(verbosity[1])
            if bars[0]:
                transformers.utils.logging.enable_progress_bar()
            if bars[1]:
                datasets.utils.enable_progress_bars()
    return call


def subprocess_env() -> dict:
    """Environment of a script run in a subprocess: one thread per process (the CI machine has 2 shared cores)."""
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def read_official_tsv(path, text_columns, label_column=None, limit=None):
    """Rows of a GLUE TSV read with the csv module, independently of hydra_glue: (texts, labels)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    texts = [tuple(row[c] for c in text_columns) for row in rows]
    labels = [row[label_column] for row in rows] if label_column else None
    return texts, labels


def predict_with_saved_model(model_dir, texts, trust_remote_code=True):
    """Class ids predicted, one example at a time (no padding), by the model saved in `model_dir`, loaded as an
    unmodified upstream script would (Auto classes + remote code)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    model.eval()
    predictions = []
    with torch.no_grad():
        for text in texts:
            logits = model(**tokenizer(*text, return_tensors="pt", truncation=True, max_length=128)).logits
            predictions.append(int(logits.argmax(-1)))
    return np.array(predictions), model
