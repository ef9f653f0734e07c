"""Conversion of the authors' original Hydra checkpoints (github.com/goombalab/hydra) to this project's format."""
