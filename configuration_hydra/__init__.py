"""Configuration of Hydra encoders."""

from .configuration_hydra import HydraConfig

__all__ = ["HydraConfig"]
