"""The model card of converted Hydra folders: template and generator."""
