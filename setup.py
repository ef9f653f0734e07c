from setuptools import setup

setup(
    name="hydra-transformers",
    version="0.1.0",
    description="Hydra bidirectional state-space encoders (arXiv 2407.09941) for Hugging Face transformers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=["configuration_hydra", "modeling_hydra", "glue_tasks", "convert"],
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0,<6",
        "accelerate>=1.0",
        "datasets>=3.0",
        "safetensors>=0.4",
        "huggingface_hub>=1.0",
        "pyyaml>=6",
        "scikit-learn>=1.3",
        "scipy>=1.10",
    ],
    extras_require={
        "triton": ["triton>=3.0"],
        "mamba_ssm": ["mamba-ssm>=2.2"],
        "plots": ["matplotlib>=3.7"],
        "test": ["pytest>=8", "hypothesis>=6", "triton>=3.0", "matplotlib>=3.7"],
    },
)
