"""Original-format Hydra BERT checkpoints for the converter's tests: random tensors under the keys of the authors'
composer checkpoints (github.com/goombalab/hydra, `hydra/bert/src/bert_layers.py`), an independent float64
implementation of their forward pass, and helpers that run the converter in-process on them."""

import json
import math

import torch
import yaml

from hydra_transformers.convert.convert_original_checkpoint import main
from modeling_hydra import HydraForMaskedLM, HydraForSequenceClassification
from ssd_oracle import mixer_oracle

# The original's config fields (a BertConfig subclass), tiny sizes; attention/MLP fields are ignored by Hydra.
ORIGINAL_CONFIG = dict(
    _name_or_path="bert-base-uncased", architectures=["BertForMaskedLM"], model_type="bert", vocab_size=30522,
    hidden_size=16, num_hidden_layers=2, type_vocab_size=2, max_position_embeddings=32, pad_token_id=0,
    layer_norm_eps=1e-12, hidden_dropout_prob=0.1, hidden_act="gelu", initializer_range=0.02,
    attention_probs_dropout_prob=0.0, intermediate_size=64, num_attention_heads=2, matrix_mixer_type="hydra",
    use_position_embeddings=False, is_prenorm=False, d_conv=5, expand=2, chunk_size=4, d_state=4, headdim=4,
    is_data_dependent=True, qk_dim=16, pool_all=False,
)
SEQLEN = 9  # off the chunk grid (chunk_size 4)
VOCAB_PADDED = 30528


# ------------------------------------------------------------------------------ original-format checkpoints


def original_state_dict(cfg: dict, head: str, num_labels: int = 3, seed: int = 0) -> dict:
    """Random, non-trivial values for every tensor of an original Hydra BERT (the keys of the authors' composer
    checkpoints, from `hydra/bert/src/bert_layers.py`)."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.3, center=0.0):
        return torch.randn(*shape, generator=gen) * scale + center

    d, d_in = cfg["hidden_size"], cfg["expand"] * cfg["hidden_size"]
    H, N, K = d_in // cfg["headdim"], cfg["d_state"], cfg["d_conv"]
    conv_dim = d_in + 4 * N
    word = rnd(VOCAB_PADDED, d, scale=0.5)
    state = {
        "bert.embeddings.word_embeddings.weight": word,
        "bert.embeddings.token_type_embeddings.weight": rnd(cfg["type_vocab_size"], d, scale=0.5),
        "bert.embeddings.LayerNorm.weight": rnd(d, scale=0.2, center=1.0),
        "bert.embeddings.LayerNorm.bias": rnd(d, scale=0.2),
    }
    if cfg["use_position_embeddings"]:
        P = cfg["max_position_embeddings"]
        state["bert.embeddings.position_embeddings.weight"] = rnd(P, d, scale=0.5)
        state["bert.embeddings.position_ids"] = torch.arange(P).expand(1, -1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}.layer."
        state.update({
            p + "mixer.dt_bias": rnd(H, scale=0.5, center=-1.0),
            p + "mixer.A_log": rnd(H, scale=0.5),
            p + "mixer.D": rnd(H, scale=0.5, center=1.0),
            p + "mixer.in_proj.weight": rnd(2 * d_in + 4 * N + 2 * H, d, scale=d ** -0.5),
            p + "mixer.conv1d.weight": rnd(conv_dim, 1, K, scale=0.4),
            p + "mixer.conv1d.bias": rnd(conv_dim, scale=0.2),
            p + "mixer.fc_D.weight": rnd(H, d_in, scale=d_in ** -0.5),
            p + "mixer.norm.weight": rnd(d_in, scale=0.2, center=1.0),
            p + "mixer.out_proj.weight": rnd(d, d_in, scale=d_in ** -0.5),
            p + "norm.weight": rnd(d, scale=0.2, center=1.0),
            p + "norm.bias": rnd(d, scale=0.2),
        })
    if cfg["is_prenorm"]:
        state["bert.encoder.norm_f.weight"] = rnd(d, scale=0.2, center=1.0)
        state["bert.encoder.norm_f.bias"] = rnd(d, scale=0.2)
    if head == "mlm":
        state.update({
            "cls.predictions.transform.dense.weight": rnd(d, d, scale=d ** -0.5),
            "cls.predictions.transform.dense.bias": rnd(d, scale=0.2),
            "cls.predictions.transform.LayerNorm.weight": rnd(d, scale=0.2, center=1.0),
            "cls.predictions.transform.LayerNorm.bias": rnd(d, scale=0.2),
            "cls.predictions.decoder.weight": word,  # tied, same storage as in the original
            "cls.predictions.decoder.bias": rnd(VOCAB_PADDED, scale=0.3),
        })
    else:
        state.update({
            "bert.pooler.dense.weight": rnd(d, d, scale=d ** -0.5),
            "bert.pooler.dense.bias": rnd(d, scale=0.2),
            "classifier.weight": rnd(num_labels, d, scale=0.5),
            "classifier.bias": rnd(num_labels, scale=0.2),
        })
    return state


def save_checkpoint(state: dict, path, layout: str, prefix: bool):
    """torch.save `state` as a composer checkpoint (with optimizer and rng entries) or a plain state dict."""
    tensors = {("model." if prefix else "") + k: v for k, v in state.items()}
    if layout == "composer":
        first = next(iter(tensors.values()))
        tensors = {"state": {"model": tensors,
                             "optimizers": {"DecoupledAdamW": {"state": {0: {"exp_avg": torch.ones_like(first)}},
                                                               "param_groups": [{"lr": 1e-4, "params": [0]}]}},
                             "timestamp": {"epoch": 3, "batch": 1000}},
                   "rng": [{"torch": torch.get_rng_state(), "python": 1234}]}
    torch.save(tensors, path)


# ---------------------------------------------------- the ORIGINAL forward in float64 (authors' code, unpadded rows)


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def reference_mixer(u, p, cfg):
    """The mixer for one sequence u (L, d): the float64 oracle of ssd_oracle.py (one group of B and C, as released)."""
    return mixer_oracle(u[None], p, cfg["headdim"], 1, cfg["d_state"])[0]


def reference_logits(state, cfg, head, input_ids, token_type_ids):
    """The original model's logits for unpadded rows, float64: embeddings without positions (unless configured),
    post-norm (or pre-norm) layers without MLP, the BERT MLM head with exact-erf GELU or the pooler and classifier."""
    s = {k: v.double() for k, v in state.items() if v.is_floating_point()}
    outputs = []
    for ids, types in zip(input_ids, token_type_ids):
        h = s["bert.embeddings.word_embeddings.weight"][ids] + s["bert.embeddings.token_type_embeddings.weight"][types]
        if cfg["use_position_embeddings"]:
            h = h + s["bert.embeddings.position_embeddings.weight"][: len(ids)]
        h = layer_norm(h, s["bert.embeddings.LayerNorm.weight"], s["bert.embeddings.LayerNorm.bias"],
                       cfg["layer_norm_eps"])
        for i in range(cfg["num_hidden_layers"]):
            prefix = f"bert.encoder.layer.{i}.layer."
            mixer = {k[len(prefix + "mixer."):]: v for k, v in s.items() if k.startswith(prefix + "mixer.")}
            norm = (s[prefix + "norm.weight"], s[prefix + "norm.bias"], 1e-5)
            if cfg["is_prenorm"]:
                h = h + reference_mixer(layer_norm(h, *norm), mixer, cfg)
            else:
                h = layer_norm(h + reference_mixer(h, mixer, cfg), *norm)
        if cfg["is_prenorm"]:
            h = layer_norm(h, s["bert.encoder.norm_f.weight"], s["bert.encoder.norm_f.bias"], cfg["layer_norm_eps"])
        if head == "mlm":
            t = h @ s["cls.predictions.transform.dense.weight"].T + s["cls.predictions.transform.dense.bias"]
            t = 0.5 * t * (1.0 + torch.erf(t / math.sqrt(2.0)))
            t = layer_norm(t, s["cls.predictions.transform.LayerNorm.weight"],
                           s["cls.predictions.transform.LayerNorm.bias"], 1e-12)
            outputs.append(t @ s["bert.embeddings.word_embeddings.weight"].T + s["cls.predictions.decoder.bias"])
        else:
            pooled = h.mean(0) if cfg["pool_all"] else h[0]
            pooled = torch.tanh(pooled @ s["bert.pooler.dense.weight"].T + s["bert.pooler.dense.bias"])
            outputs.append(pooled @ s["classifier.weight"].T + s["classifier.bias"])
    return torch.stack(outputs)


def random_inputs(cfg, batch=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB_PADDED, (batch, SEQLEN), generator=gen)
    types = torch.randint(0, cfg["type_vocab_size"], (batch, SEQLEN), generator=gen)
    return ids, types


# ------------------------------------------------------------------------------------------------- helpers


def write_config(path, cfg: dict, fmt: str = "json"):
    if fmt == "json":
        path.write_text(json.dumps(cfg))
    else:  # the authors' YAML layout: model: model_config: {...}, with an OmegaConf interpolation
        block = {k: v for k, v in cfg.items() if not k.startswith("_")}
        block["max_position_embedding"] = "${max_seq_len}"  # the authors' (unused) key
        path.write_text(yaml.safe_dump({"max_seq_len": 128, "model": {"name": "bert", "model_config": block}}))
    return path


def convert(tmp_path, state, cfg, *extra, layout="state dict", prefix=False, config_format="json", name="model"):
    """Save `state` in the given layout, run the converter's main() in-process; returns (exit code, output dir)."""
    ckpt = tmp_path / f"{name}.pt"
    save_checkpoint(state, ckpt, layout, prefix)
    config = write_config(tmp_path / f"{name}_config.{config_format}", cfg, config_format)
    out = tmp_path / "out" / name
    code = main(["--checkpoint", str(ckpt), "--original_config", str(config), "--output_dir", str(out), *extra])
    return code, out


def assert_failed_cleanly(code, capsys, out, *fragments):
    """Exit code 1, one 'error:' message containing `fragments`, no traceback, no output or temporary folder."""
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in captured.err, (fragment, captured.err)
    assert not out.exists()
    assert not out.parent.exists() or not any(p.name.startswith(f".{out.name}.") for p in out.parent.iterdir())
    return captured.err


def assert_matches_original(model_dir, state, cfg, head):
    model_class = HydraForMaskedLM if head == "mlm" else HydraForSequenceClassification
    model = model_class.from_pretrained(model_dir).to(torch.float64).eval()
    ids, types = random_inputs(cfg)
    with torch.no_grad():
        logits = model(input_ids=ids, token_type_ids=types).logits
    expected = reference_logits(state, cfg, head, ids, types)
    assert logits.shape == expected.shape
    assert (logits - expected).abs().max().item() < 1e-6
    return model
