"""The hydra-transformers distribution.

The core (`pip install -e .`) is the model alone: `configuration_hydra` and `modeling_hydra`, which need only torch,
transformers, safetensors and huggingface_hub (their names are fixed: saved checkpoints' remote code refers to
them). Everything else is installed under the one project namespace `hydra_transformers`, so that no generic
top-level name is claimed: the folders `hydra_glue/`, `convert/` and `model_cards/` become
`hydra_transformers.glue` (what the Trainer scripts in scripts/ share, so that they run from any directory; its
modules import the packages of the `[glue]` extra, its `__init__` does not), `hydra_transformers.convert` (the
converter, run by path) and `hydra_transformers.model_cards` (the model-card generator and its template).
"""

from setuptools import setup

GLUE = ["datasets>=3.0", "accelerate>=1.0", "scikit-learn>=1.3", "scipy>=1.10"]
CONVERT = ["pyyaml>=6"]
PLOTS = ["matplotlib>=3.7"]
ONNX = ["onnx>=1.17", "onnxscript>=0.2", "onnxruntime>=1.20"]
# Ranges, not pins: the README's test command must pass with the newest releases a newcomer resolves. The versions
# last checked are in .ci/pinned.txt (`.ci/run --pinned`).
TEST = GLUE + CONVERT + PLOTS + ONNX + ["pytest>=8", "hypothesis>=6", "parameterized>=0.9", "triton>=3.6"]

# installed package -> folder of this repository
NAMESPACED = {"hydra_transformers.glue": "hydra_glue", "hydra_transformers.convert": "convert",
              "hydra_transformers.model_cards": "model_cards"}

setup(
    name="hydra-transformers",
    version="0.1.0",
    description="Hydra bidirectional state-space encoders (arXiv 2407.09941) for Hugging Face transformers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=["configuration_hydra", "modeling_hydra", *NAMESPACED],
    package_dir=NAMESPACED,
    package_data={"hydra_transformers.model_cards": ["hydra-bert-base.md"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0,<6",
        "safetensors>=0.4",
        "huggingface_hub>=1.0",
    ],
    extras_require={
        "glue": GLUE,
        "convert": CONVERT,
        "triton": ["triton>=3.6"],
        "mamba_ssm": ["mamba-ssm>=2.2"],
        "plots": PLOTS,
        "onnx": ONNX,
        "test": TEST,
    },
)
