"""Speed of Hydra vision against transformers' ViTModel (SDPA) of matched parameters, forward and forward+backward,
at several image sizes, in one process with interleaved timings (Hydra, ViT, Hydra, ViT, ...).

Both models are randomly initialized encoders without a head: `HydraVisionModel` from a config (default
configs/hydra-vit-base.json, overridable with --hidden-size/--layers/--intermediate-size) and a `ViTModel` of the same
width, depth and patch size whose MLP width is chosen so that its parameter count matches Hydra's (ViT has position
embeddings and a class token, Hydra neither; ViT's attention has 4 d^2 weights against Hydra's mixer's ~6.6 d^2).
The position table of ViT is interpolated at sizes other than its own (`interpolate_pos_encoding=True`); Hydra needs
none. Forward runs under `torch.inference_mode`; forward+backward is one training step's `loss.backward()` on the
mean of the last hidden state (no optimizer). Reports medians (and minima) of --repeats runs after --warmups, the
ratio ViT/Hydra (above 1: Hydra is faster), the ratio of their forward FLOPs (what the time ratio would be if both
ran their operations at the same rate) and the 1-minute load average, since a shared machine skews timings:

    python benchmarks/bench_vision.py                                          # hydra-vit-base, 224 384 512
    python benchmarks/bench_vision.py --hidden-size 192 --layers 4 --batch 2   # a quick indicative run
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from transformers import ViTConfig, ViTModel

from configuration_hydra import HydraVisionConfig
from modeling_hydra import HydraVisionModel

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "hydra-vit-base.json")


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_vit(hydra_config: HydraVisionConfig, target: int) -> ViTConfig:
    """ViT-style config (SDPA, no pooler) of Hydra's width, depth and patches whose MLP width (a multiple of 64)
    brings its parameter count closest to `target`."""
    d = hydra_config.hidden_size
    heads = max(1, d // 64)

    def config(intermediate):
        return ViTConfig(hidden_size=d, num_hidden_layers=hydra_config.num_hidden_layers, num_attention_heads=heads,
                         intermediate_size=intermediate, image_size=hydra_config.image_size,
                         patch_size=hydra_config.patch_size, num_channels=hydra_config.num_channels,
                         layer_norm_eps=hydra_config.layer_norm_eps, attn_implementation="sdpa")

    def count(intermediate):
        with torch.device("meta"):
            return parameter_count(ViTModel(config(intermediate), add_pooling_layer=False))

    per_unit = (count(128) - count(64)) / 64
    intermediate = max(64, round((target - count(64)) / per_unit / 64) * 64 + 64)
    return config(intermediate)


def timed(run, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def forward_flops(model, pixel_values, vit: bool) -> int:
    """Floating-point operations of one forward (matmuls, batched matmuls, convolutions and attention), counted by
    torch's FlopCounterMode; its table has no entry for the CPU flash-attention op, which is counted with the same
    formula as its CUDA kernels."""
    cpu_attention = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    mapping = {cpu_attention: lambda query, key, value, *args, **kwargs: sdpa_flop_count(query, key, value)}
    kwargs = {"interpolate_pos_encoding": True} if vit else {}
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(pixel_values=pixel_values, **kwargs)
    return counter.get_total_flops()


def step_functions(model, pixel_values, vit: bool):
    kwargs = {"interpolate_pos_encoding": True} if vit else {}

    def forward():
        with torch.inference_mode():
            model(pixel_values=pixel_values, **kwargs)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(pixel_values=pixel_values, **kwargs).last_hidden_state.mean().backward()

    return {"forward": forward, "fwd+bwd": forward_backward}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="Hydra vision config .json (hydra-vit-base)")
    parser.add_argument("--hidden-size", type=int, help="override the config's hidden_size")
    parser.add_argument("--layers", type=int, help="override the config's num_hidden_layers")
    parser.add_argument("--intermediate-size", type=int, help="override the config's intermediate_size")
    parser.add_argument("--chunk-size", type=int, help="override the config's chunk_size (the SSD's largest chunk)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[224, 384, 512])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--modes", nargs="+", default=["forward", "fwd+bwd"], choices=["forward", "fwd+bwd"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmups", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--ssd-backend", default="torch", help="Hydra's ssd_backend (torch; auto/triton on CUDA)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    overrides = {key: value for key, value in (("hidden_size", args.hidden_size), ("num_hidden_layers", args.layers),
                                               ("intermediate_size", args.intermediate_size),
                                               ("chunk_size", args.chunk_size)) if value is not None}
    hydra_config = HydraVisionConfig.from_json_file(args.config)
    for key, value in overrides.items():
        setattr(hydra_config, key, value)
    hydra_config.drop_path_rate = 0.0
    hydra_config.ssd_backend = args.ssd_backend
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    hydra = HydraVisionModel(hydra_config).train()
    vit_config = matched_vit(hydra_config, parameter_count(hydra))
    vit = ViTModel(vit_config, add_pooling_layer=False).train()
    hydra, vit = (model.to(device=device, dtype=dtype) for model in (hydra, vit))
    models = {"hydra": hydra, "vit": vit}
    print(f"# Hydra {parameter_count(hydra) / 1e6:.2f}M (d {hydra_config.hidden_size}, {hydra_config.num_hidden_layers} "
          f"layers, MLP {hydra_config.intermediate_size}) vs ViT-SDPA {parameter_count(vit) / 1e6:.2f}M (MLP "
          f"{vit_config.intermediate_size}, {vit_config.num_attention_heads} heads); patch {hydra_config.patch_size}, "
          f"batch {args.batch}, {args.dtype} on {args.device} ({args.threads} CPU threads), ssd_backend "
          f"{args.ssd_backend}, torch {torch.__version__}", flush=True)

    rows = []
    print("| image | patches | mode | Hydra ms | ViT ms | ViT / Hydra | ViT / Hydra FLOPs | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    for side in args.resolutions:
        pixel_values = torch.randn(args.batch, hydra_config.num_channels, side, side, device=device, dtype=dtype)
        # the ratio's ceiling if both models ran their operations at the same rate
        flops = {name: forward_flops(model, pixel_values[:1], name == "vit") for name, model in models.items()}
        for mode in args.modes:
            runs = {name: step_functions(model, pixel_values, name == "vit")[mode] for name, model in models.items()}
            times = {name: [] for name in runs}
            for repeat in range(args.warmups + args.repeats):
                for name, run in runs.items():
                    seconds = timed(run, device)
                    if repeat >= args.warmups:
                        times[name].append(seconds)
            row = {"image": side, "patches": (side // hydra_config.patch_size) ** 2, "mode": mode,
                   "batch": args.batch, "load_average": os.getloadavg()[0],
                   **{f"{name}_forward_gflops_per_image": count / 1e9 for name, count in flops.items()},
                   **{f"{name}_ms": statistics.median(values) * 1e3 for name, values in times.items()},
                   **{f"{name}_min_ms": min(values) * 1e3 for name, values in times.items()}}
            row["vit_over_hydra"] = row["vit_ms"] / row["hydra_ms"]
            row["vit_over_hydra_flops"] = flops["vit"] / flops["hydra"]
            rows.append(row)
            print(f"| {side}² | {row['patches']} | {mode} | {row['hydra_ms']:.0f} ({row['hydra_min_ms']:.0f}) | "
                  f"{row['vit_ms']:.0f} ({row['vit_min_ms']:.0f}) | {row['vit_over_hydra']:.2f} | "
                  f"{row['vit_over_hydra_flops']:.2f} | "
                  f"{row['load_average']:.1f} |", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"hydra_parameters": parameter_count(hydra), "vit_parameters": parameter_count(vit),
                       "vit_intermediate_size": vit_config.intermediate_size, "args": vars(args), "rows": rows}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
