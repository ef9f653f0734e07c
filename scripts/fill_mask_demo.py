"""Fill-mask demo of the remote-code path: build a small Hydra masked LM, save it as a self-contained checkpoint,
reload it with AutoModelForMaskedLM and `trust_remote_code=True`, check that it gives the same logits, and run
`pipeline("fill-mask")` with the bert-base-uncased tokenizer shipped in assets/.

    python scripts/fill_mask_demo.py [--output-dir outputs/fill_mask_demo] [--text "paris is the [MASK] of france."]

The model is freshly initialized, so its guesses are arbitrary; what the run shows is the path a user takes:
save -> self-contained folder -> AutoModelForMaskedLM / pipeline with remote code -> the same logits.
"""

import argparse
from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

from configuration_hydra import HydraConfig
from modeling_hydra import HydraForMaskedLM

TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "assets" / "tokenizer" / "bert-base-uncased"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="outputs/fill_mask_demo", help="where the checkpoint is written")
    parser.add_argument("--text", default="paris is the [MASK] of france.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    config = HydraConfig(hidden_size=128, num_hidden_layers=4, d_state=16, headdim=32, chunk_size=64)
    model = HydraForMaskedLM(config).eval()
    model.save_pretrained(args.output_dir)
    files = sorted(p.name for p in Path(args.output_dir).iterdir())
    print(f"saved a {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M-parameter Hydra to {args.output_dir}:")
    print("  " + ", ".join(files))

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    reloaded = AutoModelForMaskedLM.from_pretrained(args.output_dir, trust_remote_code=True).eval()
    print(f"reloaded as {type(reloaded).__module__}.{type(reloaded).__name__}")
    encoded = tokenizer(args.text, return_tensors="pt")
    with torch.no_grad():
        difference = (reloaded(**encoded).logits - model(**encoded).logits).abs().max().item()
    print(f"max |logits(reloaded) - logits(original)| = {difference:.2e}")
    if difference > 1e-5:
        raise SystemExit("the reloaded model does not reproduce the original's logits")

    fill_mask = pipeline("fill-mask", model=reloaded, tokenizer=tokenizer)
    print(f"fill-mask on {args.text!r} (untrained model, arbitrary guesses):")
    for prediction in fill_mask(args.text, top_k=5):
        print(f"  {prediction['score']:.5f}  {prediction['token_str']}")


if __name__ == "__main__":
    main()
