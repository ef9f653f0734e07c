"""Convert an original Hydra BERT checkpoint (github.com/goombalab/hydra) into a ready-to-upload Hugging Face folder.

    python convert/convert_original_checkpoint.py --checkpoint hydra.pt --original_config hydra.yaml \
        --output_dir out/hydra-bert-base [--push_to_hub org/hydra-bert-base]

The input is a composer checkpoint (`{'state': {'model': {'model.<key>': tensor}}, ...}`) or a plain state dict,
with or without the `model.` prefix. MLM checkpoints become `HydraForMaskedLM`, classification
checkpoints (pooler + classifier) `HydraForSequenceClassification`. The output folder holds config.json (with a
complete `auto_map`), model.safetensors, the remote-code files, the bert-base-uncased tokenizer shipped in this
repository and a README.md model card generated from model_cards/.

--overwrite replaces only a folder that holds a previous conversion, and never in place: the new folder is built
beside it and swapped in when complete (convert/output_folder.py), so a kill at any point leaves the old or the new
folder. A previous conversion is recognized by the marker file the converter writes last (CONVERSION_MARKER: the
converter's name, a format version and the sha256 of every file it wrote), never by file names: a folder written
by `save_pretrained`, or one holding a file the marker does not list or a listed file that was changed, is refused.
The file imports this project's packages by their installed names (configuration_hydra, modeling_hydra,
hydra_transformers.convert, hydra_transformers.model_cards), so it runs as a script and as
`hydra_transformers.convert.convert_original_checkpoint` once the project is installed.
"""

import argparse
import hashlib
import json
import pickle
import re
import shutil
import sys
import zipfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from transformers.utils import logging as hf_logging

from configuration_hydra import HydraConfig
from hydra_transformers.convert.output_folder import recover_interrupted_run, replace_folder
from hydra_transformers.model_cards.generate_model_card import read_results, render_model_card
from modeling_hydra import HydraForMaskedLM, HydraForSequenceClassification

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOKENIZER_DIR = REPO_ROOT / "assets" / "tokenizer" / "bert-base-uncased"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# The marker a conversion writes last into its folder; --overwrite replaces only folders that it describes exactly.
CONVERSION_MARKER = "hydra_conversion.json"
MARKER_WRITER = "hydra-transformers convert_original_checkpoint"
MARKER_FORMAT = 1
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Fields of the original config (a BertConfig subclass) that a flag can override: name -> (type, help).
CONFIG_FLAGS = {
    "vocab_size": (int, "rows of the word embedding; padded to a multiple of 8 as the original does "
                        "(bert-base-uncased: 30522 -> 30528)"),
    "hidden_size": (int, "model width d"),
    "num_hidden_layers": (int, "number of Hydra layers"),
    "type_vocab_size": (int, "number of token types (segments)"),
    "max_position_embeddings": (int, "rows of the position embedding (with --use_position_embeddings) and the length "
                                     "of the data-independent matrix mixers (the authors' yamls: 128)"),
    "d_state": (int, "SSM state size N"),
    "headdim": (int, "channels per SSM head P"),
    "expand": (int, "d_inner = expand * hidden_size"),
    "d_conv": (int, "kernel width of the non-causal depthwise convolution"),
    "chunk_size": (int, "chunk length of the chunked SSD (does not change results)"),
    "pad_token_id": (int, "id of the padding token"),
    "layer_norm_eps": (float, "eps of the embedding LayerNorm (and of the final norm_f of pre-norm models)"),
    "use_position_embeddings": (bool, "the model has learned absolute position embeddings"),
    "is_prenorm": (bool, "pre-norm layers plus a final LayerNorm norm_f (the release is post-norm)"),
    "pool_all": (bool, "the classification pooler averages all real tokens instead of taking the first one"),
    "matrix_mixer_type": (str, "the sequence mixer: hydra (default), or a matrix mixer of the paper: dense, toeplitz, "
                               "vandermonde, cauchy, low_rank, attention, quasiseparable"),
    "is_data_dependent": (bool, "matrix mixers: the matrix is computed from the input (dd) or learned (di)"),
    "qk_dim": (int, "matrix mixers: query/key width per head (-1: none)"),
}
# Where a matrix mixer's own tensors give the length of its data-independent matrix: key -> (dim, divisor, offset)
# with max_position_embeddings = (shape[dim] + offset) // divisor.
MATRIX_LENGTH_EVIDENCE = {"M": (1, 1, 0), "conv_params": (1, 2, 1), "dft_matrix": (0, 1, 0), "q_matrix": (0, 1, 0),
                          "BC": (0, 1, 0)}
# Fields read from the original config only.
OTHER_CONFIG_FIELDS = ("hidden_act", "hidden_dropout_prob", "classifier_dropout", "initializer_range", "id2label",
                       "label2id", "problem_type")

LAYER_KEY = re.compile(r"^bert\.encoder\.layer\.(\d+)\.layer\.(.+)$")
ATTENTION_KEY = re.compile(r"\.attention\.(self|output)\.|\.intermediate\.dense\.")
POSITION_IDS_KEY = "bert.embeddings.position_ids"
TIED_DECODER_KEY = "cls.predictions.decoder.weight"
WORD_EMBEDDINGS_KEY = "bert.embeddings.word_embeddings.weight"
LISTED_KEYS = 12  # keys shown per category in an error message
# What torch.load(weights_only=True) says when it refuses an object, as opposed to a damaged file (torch 2.4-2.13).
REFUSED_BY_SAFE_LOADER = re.compile(r"Unsupported global: .*|Trying to load unsupported GLOBAL .*|"
                                    r"Trying to call reduce for unrecognized function .*|"
                                    r"Can only (?:create new object|build) .*")


class ConversionError(ValueError):
    """A problem with the user's input; the command line prints its message (no traceback) and exits with 1."""


def pad_vocab_size(vocab_size: int) -> int:
    """The original pads the vocabulary to a multiple of 8 (30522 -> 30528)."""
    return -(-vocab_size // 8) * 8


def original_to_hf_key(key: str):
    """Our parameter name for an original key (`bert.encoder.layer.0.layer.mixer.D` -> `hydra.encoder.layer.0.mixer.D`),
    or None when the key does not belong to the original model's naming."""
    match = LAYER_KEY.match(key)
    if match:
        return f"hydra.encoder.layer.{match[1]}.{match[2]}"
    if key.startswith("bert.") and not key.startswith("bert.encoder.layer."):
        return "hydra." + key[len("bert."):]
    if key.startswith(("cls.", "classifier.")):
        return key
    return None


def hf_to_original_key(key: str) -> str:
    """The original name of one of our parameters (inverse of `original_to_hf_key`)."""
    match = re.match(r"^hydra\.encoder\.layer\.(\d+)\.(.+)$", key)
    if match:
        return f"bert.encoder.layer.{match[1]}.layer.{match[2]}"
    if key.startswith("hydra."):
        return "bert." + key[len("hydra."):]
    return key


def _listed(keys) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:LISTED_KEYS])
    return shown + (f", ... and {len(keys) - LISTED_KEYS} more" if len(keys) > LISTED_KEYS else "")


def _require_file(path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"{what} {path} does not exist.")
    if path.is_dir():
        raise ConversionError(f"{what} {path} is a directory; expected a single file.")
    return path


# ----------------------------------------------------------------------------------------------- original config


def _resolve_interpolation(value, root: dict):
    """Resolve an OmegaConf-style `${a.b}` reference of the authors' YAML against the YAML's root."""
    if not isinstance(value, str):
        return value
    match = re.fullmatch(r"\$\{([\w.]+)\}", value.strip())
    if not match:
        return value
    node = root
    for part in match[1].split("."):
        if not isinstance(node, dict) or part not in node:
            return value
        node = node[part]
    return node


def read_original_config(path) -> dict:
    """The original model's config fields from a JSON (as the original `save_pretrained` writes; keys starting with
    `_` are dropped) or from the authors' YAML (its `model: model_config:` block)."""
    path = _require_file(path, "Original config")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConversionError(
            f"Original config {path} is not a text file (byte {data[error.start]:#04x} at offset {error.start} is "
            "not UTF-8); expected the original model's config.json or the authors' YAML.") from None
    try:
        data = json.loads(text)
        is_json = True
    except json.JSONDecodeError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConversionError(f"Original config {path} is neither JSON nor YAML: {error}") from None
        is_json = False
    if not isinstance(data, dict):
        raise ConversionError(f"Original config {path} must hold a mapping of config fields, got "
                              f"{type(data).__name__}.")
    if is_json and "model_config" not in data:
        return {key: value for key, value in data.items() if not key.startswith("_")}
    block = data.get("model_config")
    if block is None and isinstance(data.get("model"), dict):
        block = data["model"].get("model_config")
    if not isinstance(block, dict):
        raise ConversionError(
            f"Original config {path} has no `model_config` block; expected a JSON of the original BertConfig "
            "fields or the authors' YAML (model: model_config: {num_hidden_layers: 23, ...}).")
    return {key: _resolve_interpolation(value, data) for key, value in block.items() if not key.startswith("_")}


def _coerce(name: str, value, kind, source: str):
    """`value` as `kind` (YAML gives `1e-12` as a string); ConversionError naming the field otherwise."""
    if kind is bool and isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConversionError(f"{name} must be a {kind.__name__}, got {value!r} ({source}).")


def resolve_config_fields(original: dict, source: str, overrides: dict) -> tuple:
    """Merge the original config and the flags: returns (fields, ignored) with fields name -> (value, origin)."""
    fields, ignored = {}, []
    for name, value in original.items():
        if name in CONFIG_FLAGS:
            fields[name] = (_coerce(name, value, CONFIG_FLAGS[name][0], source), source)
        elif name in OTHER_CONFIG_FIELDS:
            fields[name] = (value, source)
        else:
            ignored.append(name)
    for name, value in overrides.items():
        fields[name] = (value, f"--{name}")
    return fields, sorted(ignored)


def describe_mixer(config: HydraConfig) -> str:
    """The family the checkpoint's config names, in words."""
    if config.matrix_mixer_type == "hydra":
        return "hydra (the Hydra bidirectional SSD)"
    variant = "data-dependent (dd)" if config.is_data_dependent else "data-independent (di)"
    if config.matrix_mixer_type == "vandermonde" and not config.is_data_dependent:
        variant += ", the DFT"
    return (f"{config.matrix_mixer_type} matrix mixer, {variant}, qk_dim {config.qk_dim}, "
            f"max_position_embeddings {config.max_position_embeddings}")


def build_hydra_config(fields: dict, num_labels) -> HydraConfig:
    """HydraConfig from resolved original fields; the released model's values where a field is absent."""
    kwargs = {name: value for name, (value, _) in fields.items() if name != "pool_all"}
    if "vocab_size" in kwargs:
        kwargs["vocab_size"] = pad_vocab_size(kwargs["vocab_size"])
    kwargs["classifier_pooling"] = "mean" if fields.get("pool_all", (False,))[0] else "cls"
    kwargs["ngroups"] = 1  # the original Hydra always has one group of B and C
    if num_labels is not None:
        id2label = kwargs.get("id2label")
        if id2label is not None and len(id2label) != num_labels:
            raise ConversionError(f"id2label has {len(id2label)} labels ({fields['id2label'][1]}) but the checkpoint's "
                                  f"classifier has {num_labels} outputs.")
        kwargs["num_labels"] = num_labels
    else:
        for name in ("id2label", "label2id", "problem_type"):
            kwargs.pop(name, None)
    try:
        return HydraConfig(**kwargs)
    except (ValueError, TypeError) as error:
        raise ConversionError(f"Invalid configuration: {error}") from None


# ---------------------------------------------------------------------------------------------------- checkpoint


def load_checkpoint(path, allow_unsafe_pickle: bool = False):
    """torch.load the file on CPU, with the safe loader unless `allow_unsafe_pickle`; ConversionError on bad files."""
    path = _require_file(path, "Checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise ConversionError(f"Checkpoint {path} is empty.")
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            raise ConversionError(f"Checkpoint {path} is truncated or corrupted: it starts like a torch.save zip "
                                  "archive but has no end (central directory). Download or save it again.")
    elif head[0] != 0x80:
        raise ConversionError(f"{path} is not a PyTorch checkpoint: torch.save writes a zip archive (or, in the "
                              f"legacy format, a pickle stream), but this file starts with {head!r}.")
    try:
        # mmap: a composer file also holds the optimizer state; map it instead of reading it all into memory
        return torch.load(path, map_location="cpu", weights_only=not allow_unsafe_pickle,
                          mmap=head.startswith(b"PK\x03\x04"))
    except pickle.UnpicklingError as error:
        message = str(error)
        refused = REFUSED_BY_SAFE_LOADER.search(message)
        if not allow_unsafe_pickle and refused:
            detail = refused[0].split(". ")[0].rstrip(".")
            raise ConversionError(
                f"Checkpoint {path} was refused as unsafe: it contains Python objects other than tensors and plain "
                f"containers, which the safe loader torch.load(weights_only=True) blocks ({detail}). Composer "
                "checkpoints store such objects (timestamps, RNG states, ...) beside the weights. Unpickling them can "
                "run arbitrary code: only if you trust the file, rerun with --allow-unsafe-pickle, or save a plain "
                "state dict with torch.save(model.state_dict(), ...).") from None
        raise ConversionError(f"Cannot read {path} as a PyTorch checkpoint (truncated or corrupted?): "
                              f"{message.splitlines()[0] if message else type(error).__name__}") from None
    except ImportError as error:
        raise ConversionError(f"Unpickling {path} needs the module {error.name!r}, which is not installed; install "
                              "it or save a plain state dict with torch.save(model.state_dict(), ...).") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, AttributeError, zipfile.BadZipFile) as error:
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise ConversionError(f"Cannot read {path} as a PyTorch checkpoint (truncated or corrupted?): "
                              f"{type(error).__name__}: {first_line}") from None


def extract_model_state(checkpoint, path) -> tuple:
    """The original model's tensors from a composer checkpoint or a plain state dict, without the `model.` prefix.

    Returns (state, layout, ignored) with ignored the composer entries that are not the model (optimizer, rng, ...).
    """
    if isinstance(checkpoint, dict) and "state" in checkpoint:
        state = checkpoint["state"]
        if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
            raise ConversionError(f"{path} looks like a composer checkpoint (it has 'state') but state['model'] is not "
                                  "a dict of tensors.")
        tensors = state["model"]
        ignored = (sorted(str(k) for k in checkpoint if k != "state")
                   + sorted(f"state.{k}" for k in state if k != "model"))
        layout = "composer"
    elif isinstance(checkpoint, dict):
        tensors, ignored, layout = checkpoint, [], "state dict"
    else:
        raise ConversionError(f"{path} holds a {type(checkpoint).__name__}, expected a composer checkpoint or a state "
                              "dict (a dict of tensors).")
    not_tensors = [str(k) for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ConversionError(f"{path} is not a state dict: these entries are not tensors: {_listed(not_tensors)}.")
    if tensors and all(str(k).startswith("model.") for k in tensors):
        tensors = {k[len("model."):]: v for k, v in tensors.items()}
        layout += " with the 'model.' prefix"
    return dict(tensors), layout, ignored


def check_finite(state: dict, path):
    """ConversionError naming the tensors that hold NaN or infinite values."""
    bad = []
    for key, tensor in state.items():
        if tensor.is_floating_point():
            count = int((~torch.isfinite(tensor)).sum())
            if count:
                bad.append(f"{key} ({count} of {tensor.numel()} values)")
    if bad:
        raise ConversionError(f"{path} holds NaN or infinite values in {len(bad)} tensor(s): {_listed(bad)}. A model "
                              "converted from it would output NaN; convert a checkpoint saved before training "
                              "diverged.")


def detect_task(state: dict, path) -> tuple:
    """("mlm", None) or ("classification", num_labels) from the heads present; ConversionError for anything else."""
    attention = [k for k in state if ATTENTION_KEY.search(k)]
    if attention:
        raise ConversionError(
            f"{path} is a BERT attention checkpoint, not a Hydra one: it has {len(attention)} attention/MLP tensors "
            f"such as {attention[0]}. This converter handles the Hydra and matrix-mixer checkpoints of the authors' "
            "code, which have no attention layers.")
    if not any(k.startswith("bert.") for k in state):
        raise ConversionError(f"{path} has no original Hydra BERT weights (no key starts with 'bert.'); "
                              f"its keys start with: {_listed(sorted(state))}.")
    has_mlm = any(k.startswith("cls.predictions.") for k in state)
    has_classifier = any(k.startswith("classifier.") for k in state)
    if has_mlm and has_classifier:
        raise ConversionError(f"{path} has both an MLM head (cls.predictions.*) and a classifier (classifier.*); "
                              "expected one of them.")
    if has_classifier:
        weight = state.get("classifier.weight")
        if weight is None or weight.dim() != 2:
            raise ConversionError(f"{path} has classifier tensors but no 2-D classifier.weight.")
        return "classification", int(weight.shape[0])
    if has_mlm:
        return "mlm", None
    raise ConversionError(f"{path} has no task head: expected cls.predictions.* (masked LM) or bert.pooler.dense.* "
                          "with classifier.* (sequence classification).")


def implied_dimensions(state: dict, matrix_mixer_type: str = "hydra") -> dict:
    """Config values implied by the checkpoint's tensor shapes: name -> (value, evidence). The shapes of a matrix
    mixer's in_proj and conv depend on the family and qk_dim; a mismatch there is named by `map_original_state`."""
    found = {}

    def shape(key):
        return list(state[key].shape)

    word = state.get(WORD_EMBEDDINGS_KEY)
    if word is not None and word.dim() == 2:
        found["vocab_size"] = (word.shape[0], f"{WORD_EMBEDDINGS_KEY} {shape(WORD_EMBEDDINGS_KEY)}")
        found["hidden_size"] = (word.shape[1], f"{WORD_EMBEDDINGS_KEY} {shape(WORD_EMBEDDINGS_KEY)}")
    for name, key in (("type_vocab_size", "bert.embeddings.token_type_embeddings.weight"),
                      ("max_position_embeddings", "bert.embeddings.position_embeddings.weight")):
        if key in state and state[key].dim() == 2:
            found[name] = (state[key].shape[0], f"{key} {shape(key)}")
    found["use_position_embeddings"] = ("bert.embeddings.position_embeddings.weight" in state,
                                        "presence of bert.embeddings.position_embeddings.weight")
    found["is_prenorm"] = (any(k.startswith("bert.encoder.norm_f.") for k in state),
                           "presence of bert.encoder.norm_f.* (the final LayerNorm of pre-norm models)")
    layers = sorted({int(m[1]) for k in state if (m := LAYER_KEY.match(k))})
    if not layers:
        return found
    found["num_hidden_layers"] = (layers[-1] + 1, f"layers {layers[0]}..{layers[-1]} in bert.encoder.layer.*")
    mixer = f"bert.encoder.layer.{layers[0]}.layer.mixer."
    hydra = matrix_mixer_type == "hydra"
    for name, (dim, divisor, offset) in MATRIX_LENGTH_EVIDENCE.items():
        key = f"{mixer}matrix_mixer.{name}"
        if not hydra and key in state and state[key].dim() > dim:
            found["max_position_embeddings"] = ((state[key].shape[dim] + offset) // divisor, f"{key} {shape(key)}")
    dt_key = mixer + ("dt_bias" if hydra else "matrix_mixer.dt_bias")
    dt_bias, norm, conv = state.get(dt_key), state.get(mixer + "norm.weight"), state.get(mixer + "conv1d.weight")
    if conv is not None and conv.dim() == 3:
        found["d_conv"] = (conv.shape[2], f"{mixer}conv1d.weight {shape(mixer + 'conv1d.weight')}")
    if norm is None or norm.dim() != 1:
        return found
    d_inner = norm.shape[0]
    evidence = f"d_inner {d_inner} from {mixer}norm.weight"
    if "hidden_size" in found:
        hidden = found["hidden_size"][0]
        found["expand"] = (d_inner // hidden if d_inner % hidden == 0 else f"{d_inner}/{hidden}",
                           f"{evidence} and hidden_size {hidden}")
    if dt_bias is not None and dt_bias.dim() == 1:
        nheads = dt_bias.shape[0]
        found["headdim"] = (d_inner // nheads if d_inner % nheads == 0 else f"{d_inner}/{nheads}",
                            f"{evidence} and {nheads} heads from {dt_key}")
    if hydra and conv is not None and conv.dim() == 3:
        width = conv.shape[0] - d_inner
        found["d_state"] = (width // 4 if width % 4 == 0 else f"{width}/4",
                            f"{mixer}conv1d.weight {shape(mixer + 'conv1d.weight')} = d_inner + 4 * d_state")
    return found


def check_config_against_shapes(config: HydraConfig, fields: dict, state: dict):
    """ConversionError naming every config field that contradicts the checkpoint's shapes."""
    problems, flags = [], []
    for name, (value, evidence) in implied_dimensions(state, config.matrix_mixer_type).items():
        if name == "max_position_embeddings" and not config.use_position_embeddings and "matrix_mixer." not in evidence:
            continue
        configured = getattr(config, name)
        if configured == value:
            continue
        origin = fields[name][1] if name in fields else "released default"
        shown = configured
        if name == "vocab_size" and name in fields and fields[name][0] != configured:
            shown = f"{fields[name][0]} (padded to {configured})"
        problems.append(f"{name} = {shown} ({origin}), but the checkpoint has {value} ({evidence})")
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        elif isinstance(value, int):
            flags.append(f"--{name} {value}")
    if problems:
        hint = f" (e.g. {' '.join(flags)})" if flags else ""
        raise ConversionError("The configuration does not match the checkpoint's tensor shapes:\n  "
                              + "\n  ".join(problems)
                              + f"\nFix --original_config or pass the matching flags{hint}.")


def map_original_state(state: dict, model) -> dict:
    """Our state dict from the original tensors; ConversionError listing missing, unexpected and mis-shaped keys.

    Every original tensor must fill exactly one parameter and every parameter but the tied decoder must be filled.
    The original's tied decoder weight and its `position_ids` buffer are checked and dropped.
    """
    expected = model.state_dict()
    tied = {key for key in getattr(model, "_tied_weights_keys", None) or {} if key in expected}
    mapped, unexpected, mismatched = {}, [], []
    for key, tensor in state.items():
        hf_key = original_to_hf_key(key)
        if key == POSITION_IDS_KEY and model.config.use_position_embeddings:
            if not torch.equal(tensor.reshape(-1), torch.arange(tensor.numel(), dtype=tensor.dtype)):
                raise ConversionError(f"{POSITION_IDS_KEY} is not 0, 1, 2, ...: the original model would use "
                                      "non-standard positions, which this model does not support.")
            continue
        if hf_key in tied and key == TIED_DECODER_KEY:
            word = state.get(WORD_EMBEDDINGS_KEY)
            if word is not None and (word.shape != tensor.shape or not torch.equal(word, tensor)):
                raise ConversionError(f"{TIED_DECODER_KEY} differs from {WORD_EMBEDDINGS_KEY}; the original model ties "
                                      "them, so the checkpoint is inconsistent.")
            continue
        if hf_key is None or hf_key not in expected or hf_key in tied:
            unexpected.append(key)
        elif tensor.shape != expected[hf_key].shape:
            mismatched.append(f"{key} {list(tensor.shape)} (expected {list(expected[hf_key].shape)})")
        elif not tensor.is_floating_point():
            mismatched.append(f"{key} has dtype {tensor.dtype} (expected floating point)")
        else:
            mapped[hf_key] = tensor
    missing = [hf_to_original_key(k) for k in expected if k not in mapped and k not in tied]
    if missing or unexpected or mismatched:
        lines = [f"{label} ({len(keys)}): {_listed(keys)}"
                 for label, keys in (("missing", missing), ("unexpected", sorted(unexpected)),
                                     ("wrong shape or dtype", mismatched)) if keys]
        raise ConversionError(f"The checkpoint does not match {type(model).__name__} with this configuration:\n  "
                              + "\n  ".join(lines))
    return mapped


def build_converted_model(config: HydraConfig, task: str, state: dict, dtype: torch.dtype):
    """The HF model with every parameter taken from the original state dict (strict, see `map_original_state`)."""
    model_class = HydraForMaskedLM if task == "mlm" else HydraForSequenceClassification
    model = model_class(config)
    mapped = map_original_state(state, model)
    result = model.load_state_dict(mapped, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= set(model._tied_weights_keys or {}), result
    if task == "mlm":
        assert model.cls.predictions.decoder.weight is model.hydra.embeddings.word_embeddings.weight
    return model.to(dtype).eval()


# ------------------------------------------------------------------------------------------------------ output


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_conversion_marker(folder: Path):
    """Record in `folder` that the converter wrote it: the sha256 of every file it holds (call it last)."""
    files = {p.name: sha256_of(p) for p in sorted(folder.iterdir()) if p.name != CONVERSION_MARKER}
    marker = {"written_by": MARKER_WRITER, "format": MARKER_FORMAT, "files": files}
    (folder / CONVERSION_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def foreign_entries(folder: Path) -> list:
    """Names of the entries of `folder` that no previous conversion wrote as they are now: every entry when the
    folder has no valid conversion marker; else the entries the marker does not list (or lists with another
    sha256, or that are not plain files) and the listed files that are missing."""
    entries = {p.name: p for p in sorted(folder.iterdir())}
    try:
        marker = json.loads((folder / CONVERSION_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        marker = None
    marker_path = entries.get(CONVERSION_MARKER)
    listed = marker.get("files") if isinstance(marker, dict) and isinstance(marker.get("files"), dict) else {}
    foreign = [name for name, path in entries.items() if name != CONVERSION_MARKER and (
        name not in listed or path.is_symlink() or not path.is_file() or sha256_of(path) != listed[name])]
    if (not isinstance(marker, dict) or marker.get("written_by") != MARKER_WRITER
            or marker.get("format") != MARKER_FORMAT or not listed or marker_path is None or marker_path.is_symlink()):
        return foreign + [name for name in entries if name not in foreign]  # no valid marker: every entry, the
        # ones its (untrusted) list does not describe first
    return foreign + [f"{name} (missing)" for name in listed if name not in entries]


def check_output_dir(output_dir: Path, overwrite: bool, inputs: dict):
    """Refuse a file; a folder holding an input (`inputs`: flag -> resolved path or None) or anything that is not a
    previous conversion; a previous conversion unless `overwrite`."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConversionError(f"--output_dir {output_dir} is a file.")
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return
    for flag, path in inputs.items():
        if path is not None and (path == output_dir or output_dir in path.parents):
            raise ConversionError(f"{flag} {path} lies inside --output_dir {output_dir}, which the conversion would "
                                  "replace; write the conversion to another folder.")
    foreign = foreign_entries(output_dir)
    if foreign:
        note = " (--overwrite replaces only a folder written by this converter)" if overwrite else ""
        raise ConversionError(f"--output_dir {output_dir} is not empty and is not a previous conversion as this "
                              f"converter wrote it ({CONVERSION_MARKER}): it holds {_listed(foreign)}. Choose another "
                              f"folder{note}.")
    if not overwrite:
        raise ConversionError(f"--output_dir {output_dir} holds a previous conversion; pass --overwrite to replace it, "
                              "or choose another folder.")


def write_model_folder(folder: Path, model, tokenizer_dir: Path, card_fields: dict):
    """save_pretrained (config, weights, remote code), the tokenizer files, the README.md model card and, last, the
    conversion marker."""
    model.save_pretrained(folder)
    saved = load_file(folder / "model.safetensors")
    for key, tensor in model.state_dict().items():  # self-check of what was written (the weights are finite)
        assert key in saved or key in (model._tied_weights_keys or {}), key
        assert key not in saved or torch.equal(saved[key], tensor), key
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / name, folder / name)
    card = render_model_card(folder, **card_fields)
    (folder / "README.md").write_text(card, encoding="utf-8")
    write_conversion_marker(folder)


def convert_original_checkpoint(checkpoint, output_dir, *, original_config=None, overrides=None,
                                allow_unsafe_pickle=False, overwrite=False, dtype="float32",
                                tokenizer_dir=DEFAULT_TOKENIZER_DIR, model_id=None, results=None,
                                license="mit") -> list:
    """Convert `checkpoint` into the folder `output_dir`; returns lines describing what was done.

    overrides: original config fields given on the command line (name -> value), they win over `original_config`.
    Raises ConversionError for any problem with the inputs, before anything is written. Before that, what a killed
    earlier run left next to `output_dir` is cleaned up (and a folder it was replacing restored), with a warning.
    """
    default_model_id = f"org/{Path(output_dir).absolute().name}"
    output_dir = Path(output_dir).resolve()  # a symlinked output path: replace the folder it points to
    try:
        recover_interrupted_run(output_dir)
    except OSError as error:
        raise ConversionError(f"Cannot clean up after an interrupted earlier run: {error}") from None
    inputs = {"--checkpoint": checkpoint, "--original_config": original_config, "--tokenizer_dir": tokenizer_dir,
              "--results": results}
    check_output_dir(output_dir, overwrite, {flag: None if path is None else Path(path).resolve()
                                             for flag, path in inputs.items()})
    tokenizer_dir = Path(tokenizer_dir)
    missing_tokenizer_files = [n for n in TOKENIZER_FILES if not (tokenizer_dir / n).is_file()]
    if missing_tokenizer_files:
        raise ConversionError(f"--tokenizer_dir {tokenizer_dir} lacks {', '.join(missing_tokenizer_files)}.")
    if results is not None:
        try:
            results = read_results(_require_file(results, "Results file"))
        except (ValueError, OSError) as error:
            raise ConversionError(f"Invalid --results file: {error}") from None

    original, source = {}, "released default"
    if original_config is not None:
        original, source = read_original_config(original_config), f"from {Path(original_config).name}"
    fields, ignored_fields = resolve_config_fields(original, source, overrides or {})

    checkpoint = Path(checkpoint)
    loaded = load_checkpoint(checkpoint, allow_unsafe_pickle)
    state, layout, ignored_entries = extract_model_state(loaded, checkpoint)
    del loaded
    check_finite(state, checkpoint)
    task, num_labels = detect_task(state, checkpoint)
    config = build_hydra_config(fields, num_labels)
    check_config_against_shapes(config, fields, state)
    model = build_converted_model(config, task, state, DTYPES[dtype])
    overflowed = [name for name, tensor in model.state_dict().items() if not torch.isfinite(tensor).all()]
    if overflowed:
        raise ConversionError(f"--dtype {dtype} cannot hold the checkpoint's values: {_listed(overflowed)} overflow "
                              "to infinity; use float32 or bfloat16.")

    card_fields = dict(
        model_id=model_id or default_model_id,
        results=results,
        license=license,
        source=f"`{checkpoint.name}` (sha256 `{sha256_of(checkpoint)}`)",
    )
    try:
        replace_folder(output_dir, lambda folder: write_model_folder(folder, model, tokenizer_dir, card_fields))
    except OSError as error:
        raise ConversionError(f"Cannot write {output_dir}: {error}") from None

    n_params = sum(p.numel() for p in model.parameters())
    lines = [f"Converted {checkpoint} ({layout}, {len(state)} tensors) to {type(model).__name__} "
             f"({n_params:,} parameters, {dtype}) in {output_dir}", f"Sequence mixer: {describe_mixer(config)}"]
    if ignored_entries:
        lines.append(f"Ignored non-model checkpoint entries: {', '.join(ignored_entries)}")
    if ignored_fields:
        lines.append(f"Ignored original config fields (no effect on a Hydra model): {', '.join(ignored_fields)}")
    return lines


def hub_login_problem(token) -> str:
    """Why an upload cannot start (offline mode, no token), as a sentence with what to do; "" if it can."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        return ("the Hugging Face Hub is in offline mode (HF_HUB_OFFLINE is set): unset it to upload, or drop "
                "--push_to_hub and upload the folder later with `hf upload`")
    if token is None and get_token() is None:
        return ("you are not logged in to the Hugging Face Hub: run `hf auth login`, set HF_TOKEN or pass --token "
                "(a token with write access), or drop --push_to_hub and upload the folder later with `hf upload`")
    return ""


def _is_network_error(error: BaseException) -> bool:
    """A failure to reach a server, whichever HTTP client raised it (httpx's TransportError, requests' or the
    built-in ConnectionError, timeouts), also when wrapped by huggingface_hub."""
    while error is not None:
        names = {cls.__name__ for cls in type(error).__mro__}
        if isinstance(error, (ConnectionError, TimeoutError)) or names & {"TransportError", "ConnectionError"}:
            return True
        error = error.__cause__ or error.__context__
    return False


def describe_upload_error(error: Exception, repo_id: str, folder) -> str:
    """One line: why the upload failed, what to do, and that the converted folder is complete."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    if _is_network_error(error):
        reason = (f"cannot reach the Hugging Face Hub (offline or no network? {type(error).__name__}: "
                  f"{str(error).splitlines()[0] if str(error) else ''})")
    elif status in (401, 403):
        reason = (f"the Hub refused the token (HTTP {status}): not logged in, or the token cannot write to {repo_id}; "
                  "run `hf auth login` with a write token or pass --token")
    else:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return (f"upload to {repo_id} failed: {reason}. The converted folder is complete at {folder}; upload it later "
            f"with `hf upload {repo_id} {folder}`.")


def push_folder_to_hub(folder, repo_id: str, private: bool = False, token=None) -> str:
    """Create (or reuse) the Hub model repo `repo_id` and upload `folder`; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                               commit_message="Upload Hydra converted from the original checkpoint")
    return str(getattr(commit, "commit_url", commit))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Convert an original Hydra BERT checkpoint (github.com/goombalab/hydra; composer checkpoint or "
                    "plain state dict) into a Hugging Face folder loadable with trust_remote_code=True: "
                    "config.json, model.safetensors, remote-code files, tokenizer and README.md model card.",
        epilog="Config values come from --original_config, then the flags below (which win); fields given "
               "nowhere take the released hydra-bert-base values (23 layers, hidden 768, d_state 64, headdim 64, "
               "expand 2, d_conv 7, vocab 30522 padded to 30528, post-norm, no position embeddings).",
    )
    io = parser.add_argument_group("input and output")
    io.add_argument("--checkpoint", required=True,
                    help="original checkpoint file: a composer checkpoint ({'state': {'model': ...}}) or a plain "
                         "state dict, with or without the 'model.' key prefix")
    io.add_argument("--original_config",
                    help="the original model's config: a JSON of its BertConfig fields (as its save_pretrained "
                         "writes; keys starting with '_' are ignored) or the authors' YAML with a "
                         "model: model_config: block")
    io.add_argument("--output_dir", required=True,
                    help="folder to create; written to a temporary folder next to it and renamed when complete")
    io.add_argument("--overwrite", action="store_true", help="replace --output_dir if it exists and is not empty")
    io.add_argument("--allow-unsafe-pickle", "--allow_unsafe_pickle", dest="allow_unsafe_pickle",
                    action="store_true",
                    help="load the checkpoint with torch.load(weights_only=False). Needed when it stores Python "
                         "objects besides tensors (composer checkpoints may); this can run arbitrary code from the "
                         "file: use only for files you trust")
    io.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                    help="dtype of the saved weights (default: float32)")
    io.add_argument("--tokenizer_dir", default=str(DEFAULT_TOKENIZER_DIR),
                    help="folder with the tokenizer files to ship (default: the bert-base-uncased tokenizer in "
                         "this repository's assets/)")
    card = parser.add_argument_group("model card")
    card.add_argument("--model_id",
                      help="Hub id used in the model card's examples (default: --push_to_hub, else "
                           "org/<output folder name>)")
    card.add_argument("--results",
                      help="JSON file of evaluation results we measured, put in the model card as a table "
                           "(format: see model_cards/generate_model_card.py)")
    card.add_argument("--license", default="mit",
                      help="license in the model card metadata (default: mit, the license of the original code)")
    hub = parser.add_argument_group("upload")
    hub.add_argument("--push_to_hub", metavar="REPO_ID",
                     help="after converting, upload the folder to this Hub model repo (created if needed)")
    hub.add_argument("--private", action="store_true", help="create the Hub repo as private (with --push_to_hub)")
    hub.add_argument("--token", help="Hub token for --push_to_hub (default: the HF_TOKEN variable or the cached login)")
    config = parser.add_argument_group(
        "original config fields", "override the value from --original_config (and the released default)")
    for name, (kind, text) in CONFIG_FLAGS.items():
        if kind is bool:
            config.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            config.add_argument(f"--{name}", type=kind, default=None, metavar=kind.__name__.upper(), help=text)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.private or args.token) and not args.push_to_hub:
        parser.error("--private and --token only apply with --push_to_hub")
    hf_logging.disable_progress_bar()
    if args.push_to_hub:
        problem = hub_login_problem(args.token)
        if problem:
            print(f"error: cannot push to {args.push_to_hub}: {problem}. Nothing was converted.", file=sys.stderr)
            return 1
    overrides = {name: getattr(args, name) for name in CONFIG_FLAGS if getattr(args, name) is not None}
    try:
        lines = convert_original_checkpoint(
            args.checkpoint, args.output_dir, original_config=args.original_config, overrides=overrides,
            allow_unsafe_pickle=args.allow_unsafe_pickle, overwrite=args.overwrite, dtype=args.dtype,
            tokenizer_dir=args.tokenizer_dir, model_id=args.model_id or args.push_to_hub, results=args.results,
            license=args.license)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    if args.push_to_hub:
        try:
            url = push_folder_to_hub(args.output_dir, args.push_to_hub, private=args.private, token=args.token)
        except Exception as error:  # network, authentication, permissions: report, keep the converted folder
            print(f"error: {describe_upload_error(error, args.push_to_hub, args.output_dir)}", file=sys.stderr)
            return 1
        print(f"Uploaded to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
