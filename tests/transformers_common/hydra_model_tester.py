"""`HydraModelTester`: the tiny config and inputs that transformers' `ModelTesterMixin` runs Hydra on."""

import torch

from configuration_hydra import HydraConfig


class HydraModelTester:
    """Builds a 2-layer Hydra config and a batch of inputs, in the manner of transformers' `BertModelTester`.

    `chunk_size` (4) is shorter than `seq_length` (7), so the chunked scan carries states across chunks and pads the
    last one; the attention mask has random holes, as BERT's tester's.
    """

    def __init__(self, parent, batch_size=13, seq_length=7, is_training=True, vocab_size=99, hidden_size=32,
                 num_hidden_layers=2, d_state=8, headdim=8, ngroups=2, chunk_size=4, type_vocab_size=2,
                 num_labels=3, num_choices=4, initializer_range=0.02, mixer_overrides=None):
        self.parent = parent
        self.mixer_overrides = mixer_overrides or {}  # e.g. a matrix mixer: matrix_mixer_type, is_data_dependent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.is_training = is_training
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.d_state = d_state
        self.headdim = headdim
        self.ngroups = ngroups
        self.chunk_size = chunk_size
        self.type_vocab_size = type_vocab_size
        self.num_labels = num_labels
        self.num_choices = num_choices
        self.initializer_range = initializer_range

    def get_config(self) -> HydraConfig:
        return HydraConfig(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                           num_hidden_layers=self.num_hidden_layers, d_state=self.d_state, headdim=self.headdim,
                           ngroups=self.ngroups, chunk_size=self.chunk_size, type_vocab_size=self.type_vocab_size,
                           num_labels=self.num_labels, initializer_range=self.initializer_range,
                           hidden_dropout_prob=0.1, **self.mixer_overrides)

    def prepare_config_and_inputs_for_common(self):
        shape = (self.batch_size, self.seq_length)
        input_ids = torch.randint(0, self.vocab_size, shape)  # (batch, seqlen)
        token_type_ids = torch.randint(0, self.type_vocab_size, shape)  # (batch, seqlen)
        attention_mask = torch.randint(0, 2, shape)  # (batch, seqlen)
        attention_mask[:, -1] = 1  # at least one real token per row
        inputs = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
        return self.get_config(), inputs
