"""Converting the authors' matrix-mixer checkpoints (every family, dd and di): tiny synthetic checkpoints with the
key layout of their code (hydra/modules/matrix_mixer.py: in_proj, conv1d, matrix_mixer.*, norm, out_proj), converted
by the command line, against the original forward written from the family formulas (float64, unpadded rows)."""

import math
from types import SimpleNamespace

import pytest
import torch

import original_checkpoints
from matrix_mixer_reference import reference_mixer as matrix_reference
from modeling_hydra import HydraForMaskedLM
from original_checkpoints import (
    ORIGINAL_CONFIG,
    SEQLEN,
    assert_failed_cleanly,
    assert_matches_original,
    convert,
    original_state_dict,
    random_inputs,
)

pytestmark = pytest.mark.usefixtures("single_thread")

# The authors' yamls, scaled down (§ table of the 14 configs): (family, dd, qk_dim, headdim, position embeddings).
VARIANTS = [
    ("dense", False, -1, 4, False),
    ("toeplitz", True, -1, 4, False),
    ("toeplitz", False, -1, 4, False),
    ("vandermonde", True, 2, 8, False),
    ("vandermonde", False, -1, 4, False),
    ("cauchy", True, 2, 8, True),
    ("cauchy", False, 3, 4, False),
    ("low_rank", True, 2, 8, True),
    ("low_rank", False, 3, 4, False),
    ("attention", True, 2, 8, True),
    ("attention", False, 3, 4, False),
    ("quasiseparable", True, 2, 8, False),
    ("quasiseparable", False, 3, 4, False),
]
IDS = [f"{v[0]}-{'dd' if v[1] else 'di'}" for v in VARIANTS]


def variant_config(family, dd, qk_dim, headdim, positions):
    cfg = dict(ORIGINAL_CONFIG, matrix_mixer_type=family, is_data_dependent=dd, qk_dim=qk_dim, headdim=headdim,
               max_position_embeddings=SEQLEN, use_position_embeddings=positions)
    if family == "attention" and not dd:  # the authors' attention di runs only with nheads == max_len: 36 / 4 = 9
        assert SEQLEN == 9
        cfg.update(hidden_size=18, headdim=4)
    return cfg


def stream_widths(cfg):
    """The convolved channels of the authors' MatrixMixer, in order (their build_matrix_mixer)."""
    d_in = cfg["expand"] * cfg["hidden_size"]
    H = d_in // cfg["headdim"]
    N = H * cfg["qk_dim"]
    family, dd = cfg["matrix_mixer_type"], cfg["is_data_dependent"]
    if not dd or family == "dense":
        return {"v": d_in}
    if family == "toeplitz":
        return {"v": d_in, "f": H, "r": H}
    if family == "quasiseparable":
        return {"v": d_in, "B": N, "C": N}
    return {"v": d_in, "q": N, "k": N}


def matrix_state_dict(cfg, head, seed=0):
    """A checkpoint of the authors' model with this matrix mixer: the Hydra checkpoint's other tensors and, per
    layer, the MatrixMixer keys with random values (the DFT buffer: their float32 recipe plus noise, so that only a
    converter that carries it reproduces the forward)."""
    hydra_cfg = dict(cfg, headdim=4, d_state=4)
    state = {k: v for k, v in original_state_dict(hydra_cfg, head, seed=seed).items() if ".layer.mixer." not in k}
    gen = torch.Generator().manual_seed(seed + 7)
    rnd = lambda *shape, scale=0.3, center=0.0: torch.randn(*shape, generator=gen) * scale + center
    d = cfg["hidden_size"]
    d_in = cfg["expand"] * d
    H = d_in // cfg["headdim"]
    N, Lmax, K = H * cfg["qk_dim"], cfg["max_position_embeddings"], cfg["d_conv"]
    family, dd = cfg["matrix_mixer_type"], cfg["is_data_dependent"]
    conv_dim = sum(stream_widths(cfg).values())
    extra = 2 * H if family == "quasiseparable" and dd else 0
    for i in range(cfg["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}.layer.mixer."
        mm = p + "matrix_mixer."
        if family == "dense":
            state[mm + "M"] = rnd(H, Lmax, Lmax)
        elif family == "toeplitz" and not dd:
            state[mm + "conv_params"] = rnd(H, 2 * Lmax - 1)
        elif family == "vandermonde" and not dd:
            t = torch.arange(Lmax, dtype=torch.float32)
            state[mm + "dft_matrix"] = torch.cos(torch.outer(2 * math.pi * t, t) / Lmax) + rnd(Lmax, Lmax, scale=1e-3)
        elif family == "cauchy" and dd:
            state[mm + "bias"] = torch.tensor(0.7)  # 0-dim, as theirs
        elif family in ("cauchy", "low_rank", "attention") and not dd:
            state[mm + "q_matrix"] = rnd(Lmax, H, cfg["qk_dim"], scale=0.5)
            state[mm + "k_matrix"] = rnd(Lmax, H, cfg["qk_dim"], scale=0.5)
        elif family == "quasiseparable":
            state[mm + "dt_bias"] = rnd(H, scale=0.5, center=-1.0)
            state[mm + "A_log"] = rnd(H, scale=0.5)
            state[mm + "D"] = rnd(H, scale=0.5, center=1.0)
            state[mm + "fc_D.weight"] = rnd(H, d_in, scale=d_in ** -0.5)
            if not dd:
                state[mm + "BC"] = rnd(Lmax, 2 * N, scale=0.5)
        state.update({
            p + "in_proj.weight": rnd(d_in + conv_dim + extra, d, scale=d ** -0.5),
            p + "conv1d.weight": rnd(conv_dim, 1, K, scale=0.4),
            p + "conv1d.bias": rnd(conv_dim, scale=0.2),
            p + "norm.weight": rnd(d_in, scale=0.2, center=1.0),
            p + "out_proj.weight": rnd(d, d_in, scale=d_in ** -0.5),
        })
    return state


def original_matrix_mixer(u, p, cfg):
    """The authors' MatrixMixer for one sequence, from the checkpoint's tensors `p` (keys after `mixer.`)."""
    d_in = cfg["expand"] * cfg["hidden_size"]
    H = d_in // cfg["headdim"]
    family_tensors = {k[len("matrix_mixer."):]: v for k, v in p.items() if k.startswith("matrix_mixer.")}
    mm = SimpleNamespace(max_len=cfg["max_position_embeddings"], d_state=H * cfg["qk_dim"], **family_tensors)
    if "fc_D.weight" in family_tensors:
        mm.fc_D = SimpleNamespace(weight=family_tensors["fc_D.weight"])
    stream = stream_widths(cfg)
    view = SimpleNamespace(
        family=cfg["matrix_mixer_type"], data_dependent=cfg["is_data_dependent"], nheads=H, d_inner=d_in,
        headdim=cfg["headdim"], stream=stream, conv_dim=sum(stream.values()), matrix_mixer=mm,
        in_proj=SimpleNamespace(weight=p["in_proj.weight"]),
        conv1d=SimpleNamespace(weight=p["conv1d.weight"], bias=p["conv1d.bias"]),
        norm=SimpleNamespace(weight=p["norm.weight"]), out_proj=SimpleNamespace(weight=p["out_proj.weight"]))
    return matrix_reference(view, u)


@pytest.mark.parametrize("head", ["mlm", "classification"])
@pytest.mark.parametrize("family, dd, qk_dim, headdim, positions", VARIANTS, ids=IDS)
def test_converted_matrix_mixers_equal_the_original_forward(tmp_path, capsys, monkeypatch, family, dd, qk_dim,
                                                           headdim, positions, head):
    cfg = variant_config(family, dd, qk_dim, headdim, positions)
    state = matrix_state_dict(cfg, head)
    code, out = convert(tmp_path, state, cfg, config_format="yaml" if dd else "json")
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"Sequence mixer: {family} matrix mixer" in printed
    monkeypatch.setattr(original_checkpoints, "reference_mixer", original_matrix_mixer)
    model = assert_matches_original(out, state, cfg, head)
    if family == "vandermonde" and not dd:  # the checkpoint's buffer, not a recomputed one
        carried = state["bert.encoder.layer.0.layer.mixer.matrix_mixer.dft_matrix"]
        assert torch.equal(model.hydra.encoder.layer[0].mixer.matrix_mixer.dft_matrix.float(), carried)


def test_quasiseparable_dd_is_a_hydra_checkpoint_with_shared_b_and_c(tmp_path, capsys):
    """The authors' equivalence: re-keyed with B and C duplicated into [B, C, B, C] and d_state = nheads * qk_dim, a
    quasiseparable dd checkpoint converts as a Hydra one; both conversions give the same logits."""
    cfg = variant_config("quasiseparable", True, 2, 8, False)
    state = matrix_state_dict(cfg, "mlm")
    code, out = convert(tmp_path, state, cfg, name="qs")
    assert code == 0
    d_in = cfg["expand"] * cfg["hidden_size"]
    H = d_in // cfg["headdim"]
    N = H * cfg["qk_dim"]
    hydra_state = {}
    for key, tensor in state.items():
        key = key.replace("mixer.matrix_mixer.", "mixer.")
        if key.endswith(("mixer.in_proj.weight", "mixer.conv1d.weight", "mixer.conv1d.bias")):
            z_x = tensor[:2 * d_in] if key.endswith("in_proj.weight") else tensor[:d_in]
            start = z_x.shape[0]
            B, C = tensor[start:start + N], tensor[start + N:start + 2 * N]
            tensor = torch.cat([z_x, B, C, B, C, tensor[start + 2 * N:]])
        hydra_state[key] = tensor
    hydra_cfg = dict(cfg, matrix_mixer_type="hydra", d_state=N)
    code, hydra_out = convert(tmp_path, hydra_state, hydra_cfg, name="hydra")
    assert code == 0
    ids, types = random_inputs(cfg)
    with torch.no_grad():
        a = HydraForMaskedLM.from_pretrained(out).double()(input_ids=ids, token_type_ids=types).logits
        b = HydraForMaskedLM.from_pretrained(hydra_out).double()(input_ids=ids, token_type_ids=types).logits
    assert (a - b).abs().max() < 1e-9 * b.abs().max()


def test_a_family_config_that_does_not_fit_the_checkpoint_is_refused(tmp_path, capsys):
    cfg = variant_config("dense", False, -1, 4, False)
    state = matrix_state_dict(cfg, "mlm")
    code, out = convert(tmp_path, state, dict(cfg, max_position_embeddings=SEQLEN + 1))
    assert_failed_cleanly(code, capsys, out, f"max_position_embeddings = {SEQLEN + 1}",
                          f"the checkpoint has {SEQLEN}", "matrix_mixer.M")
    code, out = convert(tmp_path, state, dict(cfg, matrix_mixer_type="toeplitz"))
    assert_failed_cleanly(code, capsys, out, "matrix_mixer.M")
    code, out = convert(tmp_path, state, dict(cfg, is_data_dependent=True))
    assert_failed_cleanly(code, capsys, out, "data-independent only")
