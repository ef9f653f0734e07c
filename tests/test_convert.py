"""convert/convert_original_checkpoint.py: original-format checkpoints are built here with random values, converted,
and the converted models are compared with an independent float64 implementation of the ORIGINAL forward pass (the
authors' code, github.com/goombalab/hydra: the mixer of `hydra/modules/hydra.py`, the BERT layers of
`hydra/bert/src/bert_layers.py`). Also: corrupted and wrong inputs, the model card, --push_to_hub plumbing, and
loading the converted folder offline from a Hub-cache layout in a fresh interpreter that cannot import this
project."""

import argparse
import json
import logging
import os
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import REPO_ROOT, lay_out_as_hub_cache
from hydra_transformers.convert import output_folder
from hydra_transformers.convert.convert_original_checkpoint import (
    CONVERSION_MARKER,
    TOKENIZER_FILES,
    build_hydra_config,
    build_parser,
    main,
    read_original_config,
    resolve_config_fields,
)
from hydra_transformers.model_cards.generate_model_card import main as generate_model_card
from modeling_hydra import HydraForMaskedLM, HydraForSequenceClassification
from modeling_hydra.modeling_hydra import AUTO_MAP
from original_checkpoints import (
    ORIGINAL_CONFIG,
    VOCAB_PADDED,
    assert_failed_cleanly,
    assert_matches_original,
    convert,
    original_state_dict,
    random_inputs,
    reference_logits,
    save_checkpoint,
    write_config,
)

SCRIPT = REPO_ROOT / "convert" / "convert_original_checkpoint.py"
KILL_CHILD = REPO_ROOT / "tests" / "convert_kill_child.py"


# ------------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("head, layout, prefix, config_format, variant", [
    ("mlm", "composer", True, "json", {}),
    ("mlm", "state dict", False, "yaml", {"is_prenorm": True, "use_position_embeddings": True}),
    ("classification", "state dict", True, "json", {"id2label": {"0": "neg", "1": "neu", "2": "pos"}}),
    ("classification", "composer", False, "yaml", {"pool_all": True}),
])
def test_converted_logits_equal_the_original_forward(tmp_path, capsys, head, layout, prefix, config_format, variant):
    cfg = {**ORIGINAL_CONFIG, **variant}
    state = original_state_dict(cfg, head)
    code, out = convert(tmp_path, state, cfg, layout=layout, prefix=prefix, config_format=config_format)
    assert code == 0, capsys.readouterr().err
    assert_matches_original(out, state, cfg, head)

    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP
    assert config["vocab_size"] == VOCAB_PADDED and config["ngroups"] == 1
    assert config["classifier_pooling"] == ("mean" if cfg["pool_all"] else "cls")
    if "id2label" in cfg:
        assert config["id2label"] == cfg["id2label"]
    expected_files = {"config.json", "model.safetensors", "README.md", "modeling_hydra.py", "configuration_hydra.py",
                      "hydra_mixer.py", CONVERSION_MARKER, *TOKENIZER_FILES}
    assert expected_files <= {p.name for p in out.iterdir()}
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary folder left
    stdout = capsys.readouterr().out
    assert "Ignored original config fields" in stdout and "num_attention_heads" in stdout
    if layout == "composer":
        assert "optimizers" in stdout and "rng" in stdout


def test_the_authors_yaml_is_read_with_interpolations_and_yaml_floats(tmp_path):
    # The layout of goombalab/hydra's yamls/finetune/hydra.yaml; PyYAML reads `1e-12` as a string.
    path = tmp_path / "hydra.yaml"
    path.write_text("max_seq_len: 256\ntokenizer_name: bert-base-uncased\nmodel:\n  name: bert\n"
                    "  pretrained_model_name: ${tokenizer_name}\n  model_config:\n    num_hidden_layers: 23\n"
                    "    max_position_embeddings: ${max_seq_len}\n    use_position_embeddings: False\n"
                    "    hidden_size: 768\n    layer_norm_eps: 1e-12\n    qk_dim: 16\n")
    original = read_original_config(path)
    assert original["max_position_embeddings"] == 256 and original["layer_norm_eps"] == "1e-12"
    fields, ignored = resolve_config_fields(original, "from hydra.yaml", {"num_hidden_layers": 2})
    assert fields["layer_norm_eps"] == (1e-12, "from hydra.yaml")
    assert fields["num_hidden_layers"] == (2, "--num_hidden_layers") and ignored == []
    assert fields["qk_dim"] == (16, "from hydra.yaml")  # a matrix-mixer field, read (Hydra ignores it)
    config = build_hydra_config(fields, None)
    assert (config.vocab_size, config.d_state, config.headdim, config.d_conv) == (30528, 64, 64, 7)  # released


# ------------------------------------------------------------------------------------------------- bad input


def _drop(state, key):
    del state[key]


def _resize(state, key):
    state[key] = torch.randn(state[key].shape[0] + 1)


def _add(state, key):
    state[key] = torch.randn(3)


@pytest.mark.parametrize("corrupt, key, fragments", [
    (_drop, "bert.encoder.layer.1.layer.mixer.fc_D.weight", ["missing (1)"]),
    (_resize, "bert.encoder.layer.1.layer.mixer.D", ["wrong shape or dtype (1)", "[9] (expected [8])"]),
    (_add, "bert.encoder.layer.0.layer.mixer.extra_scale", ["unexpected (1)"]),
    (_add, "hydra.encoder.layer.0.mixer.D", ["unexpected (1)"]),  # already-converted names are not original keys
])
def test_checkpoint_not_matching_the_model_is_refused(tmp_path, capsys, corrupt, key, fragments):
    state = original_state_dict(ORIGINAL_CONFIG, "mlm")
    corrupt(state, key)
    code, out = convert(tmp_path, state, ORIGINAL_CONFIG, layout="composer", prefix=True)
    assert_failed_cleanly(code, capsys, out, key, *fragments)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the garbage legacy file
def test_truncated_empty_and_foreign_files_are_refused(tmp_path, capsys):
    ckpt = tmp_path / "model.pt"
    save_checkpoint(original_state_dict(ORIGINAL_CONFIG, "mlm"), ckpt, "composer", True)
    out = tmp_path / "out" / "model"
    cases = {
        "truncated.pt": (ckpt.read_bytes()[: ckpt.stat().st_size // 2], "truncated or corrupted"),
        "empty.pt": (b"", "is empty"),
        "notes.pt": (b"these are not weights\n", "is not a PyTorch checkpoint"),
        "legacy.pt": (b"\x80\x04\x95garbage", "Cannot read"),
    }
    for name, (content, fragment) in cases.items():
        (tmp_path / name).write_bytes(content)
        code = main(["--checkpoint", str(tmp_path / name), "--output_dir", str(out)])
        assert_failed_cleanly(code, capsys, out, name, fragment)
    for path, fragment in ((tmp_path / "nowhere.pt", "does not exist"), (tmp_path, "is a directory")):
        code = main(["--checkpoint", str(path), "--output_dir", str(out)])
        assert_failed_cleanly(code, capsys, out, fragment)


def test_bert_attention_checkpoint_is_recognized(tmp_path, capsys):
    from transformers import BertConfig, BertForMaskedLM

    bert = BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32))
    code, out = convert(tmp_path, bert.state_dict(), ORIGINAL_CONFIG, layout="composer", prefix=True)
    assert_failed_cleanly(code, capsys, out, "BERT attention checkpoint",
                          "bert.encoder.layer.0.attention.self.query.weight")


def test_config_inconsistent_with_shapes_names_the_fields(tmp_path, capsys):
    state = original_state_dict(ORIGINAL_CONFIG, "mlm")
    code, out = convert(tmp_path, state, {**ORIGINAL_CONFIG, "d_state": 8}, "--hidden_size", "24",
                        "--num_hidden_layers", "3", "--is_prenorm")
    err = assert_failed_cleanly(
        code, capsys, out,
        "hidden_size = 24 (--hidden_size), but the checkpoint has 16 (bert.embeddings.word_embeddings.weight "
        "[30528, 16])",
        "num_hidden_layers = 3 (--num_hidden_layers), but the checkpoint has 2",
        "d_state = 8 (from model_config.json), but the checkpoint has 4",
        "is_prenorm = True (--is_prenorm), but the checkpoint has False",
        "--hidden_size 16", "--num_hidden_layers 2", "--no-is_prenorm", "--d_state 4")
    assert "d_conv" not in err and "vocab_size" not in err  # only the fields that are wrong

    code, out = convert(tmp_path, state, {**ORIGINAL_CONFIG, "vocab_size": 1001})
    assert_failed_cleanly(code, capsys, out, "vocab_size = 1001 (padded to 1008) (from model_config.json), but "
                                             "the checkpoint has 30528", "--vocab_size 30528")


def test_a_hydra_checkpoint_under_another_mixer_type_and_broken_ties_are_refused(tmp_path, capsys):
    state = original_state_dict(ORIGINAL_CONFIG, "mlm")
    code, out = convert(tmp_path, state, {**ORIGINAL_CONFIG, "matrix_mixer_type": "toeplitz"})
    assert_failed_cleanly(code, capsys, out, "does not match", "mixer.dt_bias")
    code, out = convert(tmp_path, state, {**ORIGINAL_CONFIG, "matrix_mixer_type": "butterfly"})
    assert_failed_cleanly(code, capsys, out, "matrix_mixer_type", "butterfly")

    state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"] + 1.0
    code, out = convert(tmp_path, state, ORIGINAL_CONFIG)
    assert_failed_cleanly(code, capsys, out, "cls.predictions.decoder.weight differs from")


def test_unsafe_pickle_needs_the_explicit_flag(tmp_path, capsys):
    state = original_state_dict(ORIGINAL_CONFIG, "mlm")
    ckpt = tmp_path / "composer.pt"
    torch.save({"state": {"model": {"model." + k: v for k, v in state.items()}},
                "run_args": argparse.Namespace(seed=17)}, ckpt)
    config = write_config(tmp_path / "config.json", ORIGINAL_CONFIG)
    out = tmp_path / "out" / "model"
    args = ["--checkpoint", str(ckpt), "--original_config", str(config), "--output_dir", str(out)]
    assert_failed_cleanly(main(args), capsys, out, "weights_only=True", "argparse.Namespace",
                          "--allow-unsafe-pickle")
    assert main(args + ["--allow-unsafe-pickle"]) == 0
    assert_matches_original(out, state, ORIGINAL_CONFIG, "mlm")


class ShellCommand:
    """Pickles as a call of os.system: what a malicious checkpoint holds."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_malicious_pickle_is_refused_as_unsafe_without_running_it(tmp_path, capsys):
    marker = tmp_path / "payload_ran"
    state = original_state_dict(ORIGINAL_CONFIG, "mlm")
    ckpt = tmp_path / "evil.pt"
    torch.save({"state": {"model": state}, "hook": ShellCommand(f"touch {marker}")}, ckpt)
    out = tmp_path / "out" / "model"
    code = main(["--checkpoint", str(ckpt), "--output_dir", str(out)])
    assert_failed_cleanly(code, capsys, out, "evil.pt", "refused as unsafe", "is blocked", "--allow-unsafe-pickle")
    assert not marker.exists()


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, capsys):
    state = original_state_dict(ORIGINAL_CONFIG, "mlm")
    state["bert.encoder.layer.1.layer.mixer.D"][2] = float("nan")
    state["bert.embeddings.LayerNorm.bias"][0] = float("inf")
    code, out = convert(tmp_path, state, ORIGINAL_CONFIG)
    assert_failed_cleanly(code, capsys, out, "NaN or infinite values in 2 tensor(s)",
                          "bert.encoder.layer.1.layer.mixer.D (1 of 8 values)", "bert.embeddings.LayerNorm.bias")


def test_weights_that_overflow_the_chosen_dtype_are_refused(tmp_path, capsys):
    state = original_state_dict(ORIGINAL_CONFIG, "mlm")
    state["bert.encoder.layer.0.layer.mixer.out_proj.weight"][0, 0] = 1e5  # float16 ends at 65504
    code, out = convert(tmp_path, state, ORIGINAL_CONFIG, "--dtype", "float16")
    assert_failed_cleanly(code, capsys, out, "--dtype float16", "hydra.encoder.layer.0.mixer.out_proj.weight")
    assert convert(tmp_path, state, ORIGINAL_CONFIG, "--dtype", "bfloat16")[0] == 0


def test_binary_original_config_is_refused_naming_the_file(tmp_path, capsys):
    ckpt = tmp_path / "model.pt"
    save_checkpoint(original_state_dict(ORIGINAL_CONFIG, "mlm"), ckpt, "state dict", False)
    config = tmp_path / "config.bin"
    config.write_bytes(bytes(range(256)) * 4)
    out = tmp_path / "out" / "model"
    code = main(["--checkpoint", str(ckpt), "--original_config", str(config), "--output_dir", str(out)])
    assert_failed_cleanly(code, capsys, out, "config.bin", "is not a text file")


# ------------------------------------------------------------------------------------------- output folder


def folder_contents(folder) -> dict:
    """name -> bytes (or "<folder>") of every entry of `folder`."""
    return {p.name: "<folder>" if p.is_dir() else p.read_bytes() for p in sorted(folder.iterdir())}


def hidden_leftovers(folder) -> list:
    return sorted(p.name for p in folder.iterdir() if ".converting-" in p.name)


def conversion_args(tmp_path, out, seed=0, *extra):
    """Command-line arguments converting the seed's MLM checkpoint (written once per seed) into `out`."""
    ckpt = tmp_path / f"seed{seed}.pt"
    if not ckpt.exists():
        save_checkpoint(original_state_dict(ORIGINAL_CONFIG, "mlm", seed=seed), ckpt, "state dict", False)
    config = tmp_path / "original_config.json"
    if not config.exists():
        write_config(config, ORIGINAL_CONFIG)
    return ["--checkpoint", str(ckpt), "--original_config", str(config), "--output_dir", str(out),
            "--model_id", "org/hydra-tiny", *extra]


def test_overwrite_never_replaces_a_folder_holding_inputs_or_other_files(tmp_path, capsys, monkeypatch):
    models = tmp_path / "ow" / "models"  # the inputs live in the output folder
    models.mkdir(parents=True)
    save_checkpoint(original_state_dict(ORIGINAL_CONFIG, "mlm"), models / "good.pt", "state dict", False)
    write_config(models / "cfg.json", ORIGINAL_CONFIG)
    (models / "notes.txt").write_text("x")
    before = folder_contents(models)
    code = main(["--checkpoint", str(models / "good.pt"), "--original_config", str(models / "cfg.json"),
                 "--output_dir", str(models), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 1 and "--checkpoint" in err and "lies inside --output_dir" in err
    assert folder_contents(models) == before and hidden_leftovers(models.parent) == []

    work = tmp_path / "work"  # the working folder, given as "."
    (work / "data").mkdir(parents=True)
    (work / "notes.txt").write_text("x")
    (work / "config.json").write_text(json.dumps({"model_type": "bert"}))
    before = folder_contents(work)
    monkeypatch.chdir(work)
    for extra in ([], ["--overwrite"]):
        assert main(conversion_args(tmp_path, ".", 0, *extra)) == 1
        err = capsys.readouterr().err
        assert "is not a previous conversion" in err and all(name in err for name in before), err
        assert folder_contents(work) == before and hidden_leftovers(tmp_path) == []


@pytest.mark.parametrize("swap", ["exchange", "two renames"])
def test_overwrite_replaces_only_a_previous_conversion(tmp_path, capsys, monkeypatch, swap):
    if swap == "two renames":  # what happens where renameat2 is missing
        monkeypatch.setattr(output_folder, "_exchange", lambda first, second: False)
    out = tmp_path / "out" / "model"
    assert main(conversion_args(tmp_path, out, 0)) == 0
    first = folder_contents(out)
    (out / "keep.txt").write_text("user data")
    assert main(conversion_args(tmp_path, out, 1, "--overwrite")) == 1
    err = capsys.readouterr().err
    assert "is not a previous conversion" in err and "keep.txt" in err and "model.safetensors" not in err
    (out / "keep.txt").unlink()
    assert folder_contents(out) == first

    assert main(conversion_args(tmp_path, out, 1)) == 1
    assert "holds a previous conversion; pass --overwrite" in capsys.readouterr().err
    assert main(conversion_args(tmp_path, out, 1, "--overwrite")) == 0
    assert folder_contents(out) != first and os.listdir(out.parent) == ["model"]
    assert_matches_original(out, original_state_dict(ORIGINAL_CONFIG, "mlm", seed=1), ORIGINAL_CONFIG, "mlm")


def test_overwrite_refuses_a_save_pretrained_folder_holding_only_the_converters_file_names(tmp_path, capsys):
    """A folder written by save_pretrained plus the tokenizer and a README.md has the very file names a conversion
    writes; only the converter's marker makes a folder replaceable."""
    out = tmp_path / "finetuned"
    model = HydraForMaskedLM(build_hydra_config(resolve_config_fields(ORIGINAL_CONFIG, "test", {})[0], None))
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        (out / name).write_bytes((REPO_ROOT / "assets" / "tokenizer" / "bert-base-uncased" / name).read_bytes())
    (out / "README.md").write_text("my fine-tuned model")
    before = folder_contents(out)
    assert main(conversion_args(tmp_path, out, 0, "--overwrite")) == 1
    err = capsys.readouterr().err
    assert "is not a previous conversion" in err and CONVERSION_MARKER in err
    assert folder_contents(out) == before and hidden_leftovers(tmp_path) == []


@pytest.mark.parametrize("change", ["user code named by auto_map", "edited remote-code file", "forged marker"])
def test_overwrite_refuses_a_conversion_a_user_changed(tmp_path, capsys, change):
    out = tmp_path / "out" / "model"
    assert main(conversion_args(tmp_path, out, 0)) == 0
    marker = json.loads((out / CONVERSION_MARKER).read_text())
    assert marker["files"].keys() == {p.name for p in out.iterdir()} - {CONVERSION_MARKER}
    if change == "user code named by auto_map":
        (out / "my_head.py").write_text("from .modeling_hydra import HydraForMaskedLM as MyHead\n")
        config = json.loads((out / "config.json").read_text())
        config["auto_map"]["AutoModelForTokenClassification"] = "my_head.MyHead"
        (out / "config.json").write_text(json.dumps(config))
        named = "my_head.py"
    elif change == "edited remote-code file":
        with open(out / "hydra_mixer.py", "a") as f:
            f.write("# my local fix\n")
        named = "hydra_mixer.py"
    else:  # a marker naming the files by name only (no hashes) is not the converter's
        (out / "notes.txt").write_text("mine")
        (out / CONVERSION_MARKER).write_text(json.dumps({"files": {"notes.txt": "", **marker["files"]}}))
        named = "notes.txt"
    before = folder_contents(out)
    assert main(conversion_args(tmp_path, out, 1, "--overwrite")) == 1
    err = capsys.readouterr().err
    assert "is not a previous conversion" in err and named in err
    assert folder_contents(out) == before and hidden_leftovers(out.parent) == []


def test_a_symlinked_output_path_keeps_its_link(tmp_path, capsys):
    real = tmp_path / "models" / "hydra-v1"
    link = tmp_path / "current"
    link.symlink_to(real, target_is_directory=True)  # dangling until the first conversion
    assert main(conversion_args(tmp_path, link, 0)) == 0
    assert main(conversion_args(tmp_path, link, 1, "--overwrite")) == 0, capsys.readouterr().err
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert sorted(os.listdir(tmp_path / "models")) == ["hydra-v1"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert_matches_original(link, original_state_dict(ORIGINAL_CONFIG, "mlm", seed=1), ORIGINAL_CONFIG, "mlm")


def test_the_next_run_cleans_up_after_a_killed_one(tmp_path, capsys, caplog):
    out = tmp_path / "out" / "model"
    assert main(conversion_args(tmp_path, out, 0)) == 0
    old = folder_contents(out)
    killed_while_writing = out.parent / ".model.converting-Ab3_x9Qz"
    killed_while_writing.mkdir()
    (killed_while_writing / "model.safetensors").write_bytes(b"half")
    (out.parent / "unrelated.converting-notes").write_text("not ours")
    with caplog.at_level(logging.WARNING):
        assert main(conversion_args(tmp_path, out, 1)) == 1  # refused (no --overwrite), cleaned up all the same
    assert "Removed" in caplog.text and killed_while_writing.name in caplog.text
    assert sorted(os.listdir(out.parent)) == ["model", "unrelated.converting-notes"] and folder_contents(out) == old

    # Killed between the two renames (systems without renameat2): the old folder waits at a hidden name.
    caplog.clear()
    out.rename(out.parent / ".model.converting-Zz9_k2Lm.old")
    (out.parent / ".model.converting-Zz9_k2Lm").mkdir()
    with caplog.at_level(logging.WARNING):
        assert main(conversion_args(tmp_path, out, 1)) == 1
    assert "Restored" in caplog.text and ".model.converting-Zz9_k2Lm.old" in caplog.text
    assert "holds a previous conversion" in capsys.readouterr().err
    assert sorted(os.listdir(out.parent)) == ["model", "unrelated.converting-notes"] and folder_contents(out) == old


def test_a_kill_at_any_point_leaves_the_old_or_the_new_folder(tmp_path):
    """SIGKILL conversions at random points (in forked children of a helper process, which pays the imports once);
    after each kill the output path must hold the old or the new folder, and the next run must finish cleanly."""
    out = tmp_path / "out" / "model"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "unrelated.txt").write_text("keep")
    args = {seed: conversion_args(tmp_path, out, seed, "--overwrite") for seed in (0, 1)}
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"args": args, "output_dir": str(out), "kills": 10, "seed": 0,
                                   "work": str(tmp_path / "work"), "report": str(tmp_path / "report.json")}))
    run = subprocess.run([sys.executable, str(KILL_CHILD), str(request)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["kills"]) == 10
    for kill in report["kills"]:
        window = kill["after_kill"] == "missing" and kill["swap"] == "two renames"
        assert kill["after_kill"] in ("old", "new") or window, kill
        assert kill["next_run_status"] == 0 and kill["after_next_run"] == "new", kill
        assert kill["leftovers_after_next_run"] == [], kill
        if window:
            assert "Restored" in kill["next_run_stderr"], kill
        elif kill["leftovers_after_kill"]:
            assert "Removed" in kill["next_run_stderr"], kill
    assert (tmp_path / "out" / "unrelated.txt").read_text() == "keep"


def test_every_flag_is_documented(capsys):
    for action in build_parser()._actions:
        assert action.help, action.option_strings
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--allow-unsafe-pickle" in capsys.readouterr().out


# -------------------------------------------------------------------------------------------- model card, hub


def front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


def test_model_card_metadata_usage_and_results(tmp_path, capsys):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"source": "tests/test_convert.py", "results": [
        {"task": "SST-2", "split": "dev", "metric": "accuracy", "value": 0.5123}]}))
    state = original_state_dict(ORIGINAL_CONFIG, "classification", num_labels=2)
    code, out = convert(tmp_path, state, ORIGINAL_CONFIG, "--model_id", "me/hydra-cls", "--results", str(results))
    assert code == 0, capsys.readouterr().err
    readme = (out / "README.md").read_text()
    meta = front_matter(readme)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert meta["license"] == "mit" and "allenai/c4" in meta["datasets"] and "hydra" in meta["tags"]
    assert 'from_pretrained("me/hydra-cls", trust_remote_code=True)' in readme
    assert "| SST-2 | dev | accuracy | 0.5123 |" in readme and "arXiv:2407.09941" in readme
    n_params = sum(p.numel() for p in HydraForSequenceClassification.from_pretrained(out).parameters())
    assert f"| parameters | {n_params:,} |" in readme
    assert "$" not in readme  # every placeholder filled

    # The generator regenerates the card on its own (standard-library script), here for the MLM task.
    mlm_code, mlm_out = convert(tmp_path, original_state_dict(ORIGINAL_CONFIG, "mlm"), ORIGINAL_CONFIG, name="mlm")
    assert mlm_code == 0
    (mlm_out / "README.md").unlink()
    assert generate_model_card(["--model_dir", str(mlm_out), "--model_id", "org/hydra-bert-base"]) == 0
    readme = (mlm_out / "README.md").read_text()
    assert front_matter(readme)["pipeline_tag"] == "fill-mask"
    assert 'pipeline("fill-mask", model="org/hydra-bert-base", trust_remote_code=True)' in readme
    assert "No evaluation results are included" in readme

    results.write_text(json.dumps({"results": [{"task": "SST-2", "metric": "accuracy", "value": "high"}]}))
    code, out = convert(tmp_path, state, ORIGINAL_CONFIG, "--results", str(results), name="bad_results")
    assert_failed_cleanly(code, capsys, out, "Invalid --results file", "is not a number")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_model_card_refuses_non_finite_results(tmp_path, capsys, value):
    code, out = convert(tmp_path, original_state_dict(ORIGINAL_CONFIG, "mlm"), ORIGINAL_CONFIG)
    assert code == 0
    before = folder_contents(out)
    results = tmp_path / "results.json"
    results.write_text('{"results": [{"task": "SST-2", "metric": "accuracy", "value": %s}]}' % value)
    assert generate_model_card(["--model_dir", str(out), "--model_id", "org/m", "--results", str(results)]) == 1
    assert "is not finite" in capsys.readouterr().err and folder_contents(out) == before
    code, bad = convert(tmp_path, original_state_dict(ORIGINAL_CONFIG, "mlm"), ORIGINAL_CONFIG, "--results",
                        str(results), name="nan_results")
    assert_failed_cleanly(code, capsys, bad, "Invalid --results file", "is not finite")


def test_model_card_replaces_a_readme_symlink_instead_of_writing_through_it(tmp_path):
    code, out = convert(tmp_path, original_state_dict(ORIGINAL_CONFIG, "mlm"), ORIGINAL_CONFIG)
    assert code == 0
    target = tmp_path / "shared_notes.md"  # e.g. a README shared by several folders
    target.write_text("the user's own text")
    (out / "README.md").unlink()
    (out / "README.md").symlink_to(target)
    assert generate_model_card(["--model_dir", str(out), "--model_id", "org/hydra-bert-base"]) == 0
    assert target.read_text() == "the user's own text"
    readme = out / "README.md"
    assert not readme.is_symlink() and front_matter(readme.read_text())["pipeline_tag"] == "fill-mask"
    assert oct(readme.stat().st_mode & 0o777) == oct((out / "config.json").stat().st_mode & 0o777)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


class FakeHfApi:
    """Records the calls the converter makes to huggingface_hub.HfApi (no network)."""

    calls = []
    fail = False

    def __init__(self, token=None):
        FakeHfApi.calls.append(("init", token))

    def create_repo(self, repo_id, **kwargs):
        FakeHfApi.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        if FakeHfApi.fail:
            raise ConnectionError("no network")
        FakeHfApi.calls.append(("upload_folder", kwargs, sorted(os.listdir(kwargs["folder_path"]))))
        return "https://huggingface.co/me/hydra-tiny/commit/abc"


def test_push_to_hub_plumbing(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    FakeHfApi.calls = []
    state = original_state_dict(ORIGINAL_CONFIG, "mlm")
    code, out = convert(tmp_path, state, ORIGINAL_CONFIG, "--push_to_hub", "me/hydra-tiny", "--private",
                        "--token", "hf_test")
    assert code == 0, capsys.readouterr().err
    (_, token), (_, repo_id, create_kwargs), (_, upload_kwargs, uploaded) = FakeHfApi.calls
    assert token == "hf_test" and repo_id == "me/hydra-tiny"
    assert create_kwargs["private"] is True and create_kwargs["exist_ok"] is True
    assert upload_kwargs["repo_id"] == "me/hydra-tiny" and os.path.samefile(upload_kwargs["folder_path"], out)
    assert {"config.json", "model.safetensors", "README.md"} <= set(uploaded)
    assert 'model="me/hydra-tiny"' in (out / "README.md").read_text()
    assert "Uploaded to https://huggingface.co/me/hydra-tiny" in capsys.readouterr().out

    FakeHfApi.fail = True
    try:
        code, out = convert(tmp_path, state, ORIGINAL_CONFIG, "--push_to_hub", "me/hydra-tiny", "--token", "hf_test",
                            name="again")
    finally:
        FakeHfApi.fail = False
    assert code == 1 and "upload to me/hydra-tiny failed" in capsys.readouterr().err
    assert (out / "model.safetensors").is_file()  # the converted folder is kept

    with pytest.raises(SystemExit):
        main(["--checkpoint", "x.pt", "--output_dir", str(tmp_path / "y"), "--private"])


@pytest.fixture
def hub_session(monkeypatch, tmp_path):
    """A Hub client with no login and online mode, whatever the machine's settings."""
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_login" / "token"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return constants


def assert_one_error_line(code, capsys, *fragments):
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_push_to_hub_when_not_logged_in_or_offline_says_so_in_one_line(tmp_path, capsys, monkeypatch, hub_session):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)  # would accept anything
    FakeHfApi.calls = []
    out = tmp_path / "out"
    assert_one_error_line(main(conversion_args(tmp_path, out, 0, "--push_to_hub", "me/hydra-tiny")), capsys,
                          "not logged in", "hf auth login", "HF_TOKEN", "--token")
    monkeypatch.setattr(hub_session, "HF_HUB_OFFLINE", True)
    assert_one_error_line(main(conversion_args(tmp_path, out, 0, "--push_to_hub", "me/hydra-tiny", "--token", "hf_x")),
                          capsys, "offline mode", "HF_HUB_OFFLINE")
    assert FakeHfApi.calls == [] and not out.exists()  # refused before converting


def test_push_to_hub_without_network_says_so_in_one_line(tmp_path, capsys, monkeypatch, hub_session):
    monkeypatch.setattr(hub_session, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: connection refused
    out = tmp_path / "out"
    code = main(conversion_args(tmp_path, out, 0, "--push_to_hub", "me/hydra-tiny", "--token", "hf_x"))
    assert_one_error_line(code, capsys, "cannot reach the Hugging Face Hub", f"hf upload me/hydra-tiny {out}")
    assert (out / "model.safetensors").is_file()  # the converted folder is kept


def test_the_converter_imports_the_model_card_generator():
    import hydra_transformers.convert.convert_original_checkpoint as converter
    import hydra_transformers.model_cards as model_cards
    import hydra_transformers.model_cards.generate_model_card as generator

    assert model_cards.__file__ is not None  # a regular package, not a namespace found by accident
    assert model_cards.__name__ == "hydra_transformers.model_cards" and "model_cards" not in sys.modules
    assert converter.render_model_card is generator.render_model_card
    assert converter.read_results is generator.read_results


# ------------------------------------------------------------------------- script form and offline loading

ISOLATED_PRELUDE = """
import sys
class _HideProject:
    '''This project's packages are installed here; hide them so only the folder's remote code can be used.'''
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'configuration_hydra', 'modeling_hydra', 'hydra_transformers'}:
            raise ModuleNotFoundError(f'{name} is hidden in this test')
        return None
sys.meta_path.insert(0, _HideProject())
"""


def run_isolated_python(code: str, cwd, env: dict) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (-I) in which this project's packages cannot be imported."""
    return subprocess.run([sys.executable, "-I", "-c", ISOLATED_PRELUDE + code], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env}, stdin=subprocess.DEVNULL)


def test_script_converts_and_the_folder_loads_offline_from_the_hub_cache(tmp_path):
    state = original_state_dict(ORIGINAL_CONFIG, "mlm")
    ckpt = tmp_path / "hydra.pt"
    save_checkpoint(state, ckpt, "composer", True)
    config = write_config(tmp_path / "hydra.yaml", ORIGINAL_CONFIG, "yaml")
    out = tmp_path / "hydra-tiny"
    bad = subprocess.run([sys.executable, str(SCRIPT), "--checkpoint", str(tmp_path), "--output_dir", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
    assert not out.exists()
    run = subprocess.run([sys.executable, str(SCRIPT), "--checkpoint", str(ckpt), "--original_config", str(config),
                          "--output_dir", str(out), "--model_id", "org/hydra-tiny"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr

    lay_out_as_hub_cache(out, tmp_path / "hub", "org/hydra-tiny")
    ids, types = random_inputs(ORIGINAL_CONFIG)
    child = run_isolated_python(f"""
import json, torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline
model = AutoModelForMaskedLM.from_pretrained("org/hydra-tiny", trust_remote_code=True).to(torch.float64)
with torch.no_grad():
    logits = model(input_ids=torch.tensor({ids.tolist()}), token_type_ids=torch.tensor({types.tolist()})).logits
torch.save(logits, "logits.pt")
tokenizer = AutoTokenizer.from_pretrained("org/hydra-tiny", trust_remote_code=True)
fill_mask = pipeline("fill-mask", model="org/hydra-tiny", trust_remote_code=True)  # the model card's example
predictions = fill_mask("The capital of France is [MASK].")
print(json.dumps({{"module": type(model).__module__, "vocab": len(tokenizer), "predictions": len(predictions)}}))
""", cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
                        "HF_HOME": str(tmp_path / "hf_home"), "HF_MODULES_CACHE": str(tmp_path / "modules")})
    assert child.returncode == 0, child.stderr[-3000:]
    assert "Do you wish to run the custom code" not in child.stdout  # nothing may prompt
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules.")
    assert report["vocab"] == 30522 and report["predictions"] == 5
    logits = torch.load(tmp_path / "logits.pt")
    expected = reference_logits(state, ORIGINAL_CONFIG, "mlm", ids, types)
    assert (logits - expected).abs().max().item() < 1e-6
