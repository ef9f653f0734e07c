"""README.md stays true: its test command is the one CI runs, the main command installs only the `[glue]` extra, the
other commands run as written in the venv the two commands make, the usage example runs from any directory without
leaving files behind, and the core install (no extras) imports and runs the model."""

import re
import runpy
import shlex
import subprocess
import sys

import torch
from conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
# Packages of the extras that the model itself must not need (pyyaml is not one: huggingface_hub requires it).
EXTRA_PACKAGES = ("datasets", "accelerate", "sklearn", "scipy", "matplotlib", "triton", "onnx", "onnxruntime",
                  "onnxscript", "hypothesis", "pytest")


def readme_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def fresh_machine_commands():
    commands = [block.strip() for block in readme_blocks("bash") if block.startswith("python3 -m venv")]
    assert len(commands) == 2, "README must give exactly two commands for a fresh machine"
    return commands


def test_test_command_is_the_ci_command():
    ci_commands = [line for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
                   if line.startswith("python3 -m venv")]
    assert len(ci_commands) == 1
    main_command, test_command = fresh_machine_commands()
    assert test_command == ci_commands[0]
    assert '.venv/bin/pip install -q -e ".[test]"' in test_command
    assert "scripts/run_glue.py --task_name sst2 --glue_dir assets/glue_sample" in main_command
    assert '.venv/bin/pip install -e ".[glue]"' in main_command and ".[test]" not in main_command
    for command in (main_command, test_command):  # the CPU build of the torch the project is tested with, first
        assert command.split(" && ")[1].startswith(".venv/bin/pip install") and "torch==2.13.0" in command


def test_other_commands_run_in_the_venv_of_the_two_commands():
    """Every command after the two uses the venv's executables (a bare `python` has no torch) and names files and
    flags that exist."""
    blocks = [block.strip() for block in readme_blocks("bash")]
    after_the_two = blocks[blocks.index(fresh_machine_commands()[1]) + 1:]
    commands = [line.strip() for block in after_the_two for line in block.splitlines()]
    assert len(commands) >= 6
    for command in commands:
        words = shlex.split(command)
        assert words[0] in (".venv/bin/python", ".venv/bin/torchrun"), command
        script = REPO_ROOT / next(word for word in words[1:] if word.endswith(".py"))
        assert script.is_file(), command
        source = script.read_text(encoding="utf-8")
        for flag in (word[2:] for word in words if word.startswith("--")):
            assert flag in source or flag in TRAINING_FLAGS, f"{command}: --{flag}"
        for word in words:
            if word.startswith(("assets/", "configs/")) or "=configs/" in word:
                assert (REPO_ROOT / word.split("=")[-1]).exists(), command


TRAINING_FLAGS = {"nproc_per_node", "use_cpu", "do_train", "do_eval", "per_device_train_batch_size", "learning_rate",
                  "output_dir", "max_steps", "num_train_epochs", "warmup_steps", "logging_steps", "help",
                  "model_name_or_path", "config_name", "tokenizer_name", "max_train_samples"}


def test_usage_example_runs_from_any_directory(tmp_path, monkeypatch):
    (example,) = readme_blocks("python")
    monkeypatch.chdir(tmp_path)
    repository_files = set(REPO_ROOT.iterdir())
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    logits = namespace["logits"]
    assert logits.shape[:2] == namespace["batch"]["input_ids"].shape and torch.isfinite(logits).all()
    assert type(namespace["model"]).__module__.startswith("transformers_modules.")
    assert list(tmp_path.iterdir()) == [] and set(REPO_ROOT.iterdir()) == repository_files


CORE_ONLY_CHILD = """
import sys, tempfile
for name in sys.argv[1:]:
    sys.modules[name] = None  # as if not installed: importing it raises ImportError
import torch
from transformers import AutoModelForSequenceClassification
from configuration_hydra import HydraConfig
from modeling_hydra import HydraForSequenceClassification

config = HydraConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, headdim=16, d_state=8, chunk_size=8)
model = HydraForSequenceClassification(config).eval()
ids = torch.tensor([[2, 5, 7, 9, 3], [2, 6, 3, 0, 0]])
with tempfile.TemporaryDirectory() as folder:
    model.save_pretrained(folder)
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    difference = (reloaded(ids, attention_mask=ids.ne(0)).logits - model(ids, attention_mask=ids.ne(0)).logits).abs()
print("max difference", float(difference.max()))
"""


def test_the_core_install_runs_the_model_without_the_extras():
    """In a fresh interpreter where the extras' packages cannot be imported, the model builds, runs, saves and
    reloads through the Auto classes."""
    completed = subprocess.run([sys.executable, "-c", CORE_ONLY_CHILD, *EXTRA_PACKAGES], capture_output=True,
                               text=True, timeout=300, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert float(completed.stdout.split("max difference")[-1]) < 1e-5


def test_setup_declares_a_light_core_and_the_extras(monkeypatch):
    arguments = {}
    monkeypatch.setitem(sys.modules, "setuptools", type(sys)("setuptools"))
    sys.modules["setuptools"].setup = arguments.update
    monkeypatch.chdir(REPO_ROOT)
    runpy.run_path(str(REPO_ROOT / "setup.py"))

    def names(requirements):
        return {re.split(r"[<>=!\[]", requirement)[0] for requirement in requirements}

    assert names(arguments["install_requires"]) == {"torch", "transformers", "safetensors", "huggingface_hub"}
    extras = {extra: names(requirements) for extra, requirements in arguments["extras_require"].items()}
    assert extras["glue"] == {"datasets", "accelerate", "scikit-learn", "scipy"}
    assert extras["test"] >= extras["glue"] | extras["convert"] | extras["plots"] | extras["onnx"] | {"pytest"}
    # ranges, so that the README's test command runs with the newest releases; the checked versions are pinned in
    # .ci/pinned.txt, every one of them a package the [test] extra (or the core) installs
    assert not [r for r in arguments["extras_require"]["test"] + arguments["install_requires"] if "==" in r]
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in
              (REPO_ROOT / ".ci" / "pinned.txt").read_text().splitlines() if "==" in line and not line.startswith("#")}
    declared = {name.lower().replace("_", "-") for name in
                names(arguments["extras_require"]["test"] + arguments["install_requires"])}
    assert {"triton", "transformers", "datasets", "onnxruntime"} <= pinned and pinned - declared <= {"numpy",
                                                                                                        "tokenizers"}
    # no generic top-level names: the folders install under the project's namespace
    assert set(arguments["packages"]) == {"configuration_hydra", "modeling_hydra", "hydra_transformers.glue",
                                          "hydra_transformers.convert", "hydra_transformers.model_cards"}
    assert arguments["package_dir"] == {"hydra_transformers.glue": "hydra_glue", "hydra_transformers.convert": "convert",
                                        "hydra_transformers.model_cards": "model_cards"}


NAMESPACE_CHILD = """
import importlib.util, sys
import hydra_transformers.glue
from hydra_transformers.glue.mlm_packing import DataCollatorForPackedLanguageModeling
from hydra_transformers.convert import output_folder
from hydra_transformers.model_cards import generate_model_card
assert "datasets" not in sys.modules, "importing the glue package imported datasets"
from hydra_transformers.glue import GLUE_TASKS
print("generic:", [name for name in ("convert", "model_cards", "hydra_glue") if importlib.util.find_spec(name)])
"""


def test_the_install_claims_no_generic_top_level_names(tmp_path):
    """Outside the repository (no folder of it on sys.path) the project's packages import under
    hydra_transformers, the model user's pointer into the glue package needs no [glue] extra, and the generic names
    are not taken."""
    completed = subprocess.run([sys.executable, "-c", NAMESPACE_CHILD], capture_output=True, text=True,
                               timeout=300, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().endswith("generic: []"), completed.stdout
