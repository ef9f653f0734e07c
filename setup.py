"""The hydra-transformers distribution.

The core (`pip install -e .`) is the model alone: `configuration_hydra` and `modeling_hydra`, which need only torch,
transformers, safetensors and huggingface_hub. `hydra_glue` holds what the Trainer scripts in scripts/ share; it is
installed too, so that `python scripts/run_glue.py` runs from any directory, and imports the packages of the
`[glue]` extra. `model_cards` (the model-card generator and its template) is installed so that the converter, a
script in convert/ run by path, reaches it with a plain import.
"""

from setuptools import setup

GLUE = ["datasets>=3.0", "accelerate>=1.0", "scikit-learn>=1.3", "scipy>=1.10"]
CONVERT = ["pyyaml>=6"]
PLOTS = ["matplotlib>=3.7"]
ONNX = ["onnx>=1.17", "onnxscript>=0.2", "onnxruntime>=1.20"]
# The kernel compile test is pinned to the Triton version whose compiler output it was checked against.
TEST = GLUE + CONVERT + PLOTS + ONNX + ["pytest>=8", "hypothesis>=6", "parameterized>=0.9", "triton==3.9.0"]

setup(
    name="hydra-transformers",
    version="0.1.0",
    description="Hydra bidirectional state-space encoders (arXiv 2407.09941) for Hugging Face transformers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=["configuration_hydra", "modeling_hydra", "hydra_glue", "model_cards"],
    package_data={"model_cards": ["hydra-bert-base.md"]},
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
