"""Configuration of Hydra encoders."""

from .configuration_hydra import HydraConfig
from .configuration_hydra_vision import HydraVisionConfig

__all__ = ["HydraConfig", "HydraVisionConfig"]
