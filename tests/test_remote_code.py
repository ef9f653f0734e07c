"""Saved checkpoints load with `trust_remote_code=True` where this project is not installed, from a folder and
from an offline Hub cache, and give the in-process model's outputs; the exported files import only what the
transformers loader accepts."""

import json
import os
import re
import site
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from transformers.dynamic_module_utils import get_imports, get_relative_imports

from conftest import lay_out_as_hub_cache, perturb_ssm_parameters, tiny_config
import modeling_hydra.modeling_hydra
from modeling_hydra import HydraForMaskedLM
from modeling_hydra.modeling_hydra import AUTO_MAP
from modeling_hydra.remote_code import remote_code_sources, write_remote_code

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only contend

CHILD = Path(__file__).resolve().parent / "remote_code_child.py"
HUB_REPO = "org/hydra-bert-base"
TOL = 1e-5


@pytest.fixture(scope="module")
def child_run(tmp_path_factory):
    """Save a model, run the child once for all loads, return (expected outputs, child outputs, report)."""
    tmp = tmp_path_factory.mktemp("remote_code")
    model = perturb_ssm_parameters(HydraForMaskedLM(tiny_config()).eval())
    folder = tmp / "hydra-mlm"
    model.save_pretrained(folder)
    lay_out_as_hub_cache(folder, tmp / "hub", HUB_REPO)

    ids = torch.randint(1, model.config.vocab_size, (2, 13))
    mask = torch.ones_like(ids)
    mask[1, -4:] = 0
    inputs = dict(input_ids=ids, attention_mask=mask)
    torch.save(inputs, tmp / "inputs.pt")
    with torch.no_grad():
        expected = {"folder": model(**inputs).logits, "resaved": model(**inputs).logits,
                    "hub": model.hydra(**inputs).last_hidden_state}

    loads = [
        dict(name="folder", auto_class="AutoModelForMaskedLM", source=str(folder), save_to=str(tmp / "resaved")),
        dict(name="resaved", auto_class="AutoModelForMaskedLM", source=str(tmp / "resaved")),
        dict(name="hub", auto_class="AutoModel", source=HUB_REPO),
    ]
    for load in loads:
        load["output"] = str(tmp / f"{load['name']}.pt")
    request = dict(site_packages=site.getsitepackages(), inputs=str(tmp / "inputs.pt"), loads=loads,
                   report=str(tmp / "report.json"))
    (tmp / "request.json").write_text(json.dumps(request))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp / "hf_home"), HF_HUB_CACHE=str(tmp / "hub"),
               HF_MODULES_CACHE=str(tmp / "modules"))
    work = tmp / "cwd"
    work.mkdir()
    result = subprocess.run([sys.executable, "-I", "-S", str(CHILD), str(tmp / "request.json")], cwd=work, env=env,
                            capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, f"child failed:\n{result.stdout}\n{result.stderr[-6000:]}"
    outputs = {load["name"]: torch.load(load["output"]) for load in loads}
    report = json.loads((tmp / "report.json").read_text())
    return expected, outputs, report, tmp


def check_load(child_run, index, name, model_class):
    expected, outputs, report, _ = child_run
    assert report["project_modules_imported"] == []
    load = report["loads"][index]
    assert load["model_class"] == model_class
    assert load["model_module"].startswith("transformers_modules"), load
    assert load["config_module"].startswith("transformers_modules"), load
    assert outputs[name].shape == expected[name].shape
    assert (outputs[name] - expected[name]).abs().max() <= TOL


def test_load_from_a_folder(child_run):
    check_load(child_run, 0, "folder", "HydraForMaskedLM")


def test_remote_code_model_saves_a_loadable_folder(child_run):
    check_load(child_run, 1, "resaved", "HydraForMaskedLM")
    resaved = child_run[3] / "resaved"
    assert sorted(p.name for p in resaved.glob("*.py")) == sorted(p.name for p in (child_run[3] / "hydra-mlm")
                                                                 .glob("*.py"))


def test_load_from_an_offline_hub_cache(child_run):
    check_load(child_run, 2, "hub", "HydraModel")


def test_exported_files_import_only_stdlib_torch_transformers(tmp_path):
    HydraForMaskedLM(tiny_config()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP
    files = {p.name for p in tmp_path.glob("*.py")}
    for reference in AUTO_MAP.values():
        assert f"{reference.split('.')[0]}.py" in files
    allowed = set(sys.stdlib_module_names) | {"torch", "transformers"}
    for name in sorted(files):
        imports = set(get_imports(tmp_path / name))
        assert imports <= allowed, f"{name} imports {sorted(imports - allowed)} outside a try block"
        for module in get_relative_imports(tmp_path / name):
            assert f"{module}.py" in files, f"{name} imports .{module}, which is not in the folder"


def test_exported_files_hold_no_test_references():
    """The torch references of the Triton stages and of the convolution live in tests/, not in every saved
    checkpoint."""
    sources = remote_code_sources(modeling_hydra.modeling_hydra.__file__)
    assert "ssd_triton.py" in sources  # the Triton files are exported
    for name, source in sources.items():
        assert not re.findall(r"^def \w+_(ref|reference)\(", source, re.MULTILINE), name


def test_a_symlink_at_a_temporary_name_is_not_followed(tmp_path):
    folder, victim = tmp_path / "saved", tmp_path / "victim.txt"
    folder.mkdir()
    victim.write_text("keep me")
    sources = remote_code_sources(modeling_hydra.modeling_hydra.__file__)
    for name in sources:  # the fixed temporary name of the first version, and a few plausible others
        for suffix in (".tmp", "~", ".swp"):
            (folder / f"{name}{suffix}").symlink_to(victim)
    HydraForMaskedLM(tiny_config()).save_pretrained(folder)
    assert victim.read_text() == "keep me"
    for name, source in sources.items():
        assert not (folder / name).is_symlink() and (folder / name).read_text(encoding="utf-8") == source


def test_saved_source_files_have_the_permissions_of_a_plain_write(tmp_path):
    reference = tmp_path / "reference.txt"
    reference.write_text("x")
    written = write_remote_code(str(tmp_path), modeling_hydra.modeling_hydra.__file__)
    for path in written:
        assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(reference.stat().st_mode), path


def test_concurrent_saves_into_one_folder_do_not_collide(tmp_path):
    """Threads writing the same files at once: each write is whole, none fails, no temporary file stays."""
    sources = remote_code_sources(modeling_hydra.modeling_hydra.__file__)
    errors = []

    def save_repeatedly():
        for _ in range(15):
            try:
                write_remote_code(str(tmp_path), modeling_hydra.modeling_hydra.__file__)
            except Exception as error:  # collected: an exception in a thread would not fail the test
                errors.append(repr(error))

    threads = [threading.Thread(target=save_repeatedly) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(sources)
    for name, source in sources.items():
        assert (tmp_path / name).read_text(encoding="utf-8") == source
