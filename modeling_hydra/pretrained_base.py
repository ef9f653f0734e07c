"""What every Hydra model class shares, text and vision: checks when built, the frozen config, remote-code saving."""

import sys

from transformers import PreTrainedModel

from .remote_code import write_remote_code
from .ssd_backends import validate_backend_name


class HydraPreTrainedBase(PreTrainedModel):
    """Validates the config when a model is built, keeps the fields that shaped its modules (`check_config_unchanged`
    refuses later changes to them), and saves a self-contained remote-code folder with the `auto_map` of the class's
    module (its module-level `AUTO_MAP`).

    The heads take the Trainer's `num_items_in_batch` and normalise their losses by it (head_losses.py), so the
    Trainer must pass it and not divide the loss by the accumulation steps again: `accepts_loss_kwargs`.
    """

    supports_gradient_checkpointing = True
    accepts_loss_kwargs = True

    def __init__(self, config, *inputs, **kwargs):
        super().__init__(config, *inputs, **kwargs)
        config.validate()  # `from_pretrained(..., field=value)` overrides bypass the config's own checks
        validate_backend_name(config.ssd_backend)
        self._built_with = config.frozen_fields()

    def built_with(self) -> dict:
        """The frozen fields as the modules have them now (subclasses add what can legitimately change)."""
        return self._built_with

    def check_config_unchanged(self):
        """ValueError if a field that shapes the modules was changed on the config after the model was built."""
        self.config.check_unchanged(self.built_with())

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save weights and config, plus the model's source files and a full `auto_map` for remote-code loading."""
        self.check_config_unchanged()
        module = sys.modules[type(self).__module__]
        self.config.auto_map = dict(module.AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_remote_code(str(save_directory), module.__file__)
