"""Shared helpers of the perf18 scripts: benchmarks/benchmark.py's model builders (loaded from its file: benchmarks/ is
not a package) and the SST-2 batches the Trainer's eval loop sees."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_file_module(name: str, path: Path):
    """Import the Python file `path` as module `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_package(name: str, folder: Path):
    """Import the package in `folder` (its relative imports included) as `name`."""
    import sys

    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # relative imports of its submodules look the package up here
    spec.loader.exec_module(module)
    return module


benchmark = load_file_module("hydra_benchmark_script", REPO / "benchmarks" / "benchmark.py")


def sst2(tokenizer_name=None, train_samples: int = 256):
    """(tokenizer, collator, train, dev, number of labels) of the embedded SST-2 sample, tokenized as the GLUE
    benchmark does (max_length 128, no padding)."""
    from transformers import AutoTokenizer, DataCollatorWithPadding

    tok = AutoTokenizer.from_pretrained(tokenizer_name or REPO / "assets/tokenizer/bert-base-uncased")
    train, dev, nl = benchmark.tokenized_glue_splits(str(REPO / "assets/glue_sample"), "sst2", tok, 128,
                                                     train_samples, None)
    return tok, DataCollatorWithPadding(tok), train, dev, nl


def batches(collator, dataset, batch_size: int) -> list[dict]:
    """The dataset in order, in dynamically padded batches (as the Trainer's eval loop makes them)."""
    return [dict(collator([dataset[i] for i in range(s, min(s + batch_size, len(dataset)))]))
            for s in range(0, len(dataset), batch_size)]


def classifier(name: str, num_labels: int, overrides: dict | None = None):
    """Hydra-small or BERT-small (configs/) sequence classifier, seed 0, eval mode."""
    import torch

    torch.manual_seed(0)
    config = benchmark.load_classifier_config(str(REPO / "configs" / f"{name}-small.json"), overrides or {},
                                              num_labels)
    return benchmark.build_classifier(config).eval()
