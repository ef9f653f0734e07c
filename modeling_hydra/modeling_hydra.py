"""Hydra encoders for transformers: a BERT-style model whose attention is the Hydra bidirectional SSD mixer."""


import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.utils import logging

from configuration_hydra.configuration_hydra import HydraConfig

from .execution_plan import build_execution_plan
from .head_losses import cross_entropy_loss, pop_loss_kwargs, question_answering_loss, sequence_classification_loss
from .sequence_layout import global_sequence_ids, packed_sequence_ids, positions_in_sequence
from .sequence_mixers import build_mixer, init_mixer_weights
from .pretrained_base import HydraPreTrainedBase
from .tracing import is_tracing

logger = logging.get_logger(__name__)


class HydraEmbeddings(nn.Module):
    """LayerNorm(word + token_type [+ position]) embeddings, then dropout. No position embeddings by default."""

    def __init__(self, config: HydraConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        if config.use_position_embeddings:
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, position_ids, inputs_embeds):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (batch, seqlen, hidden)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        if position_ids is not None:
            embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class HydraLayer(GradientCheckpointingLayer):
    """One Hydra block, no MLP: post-norm `LN(h + mixer(h))` or pre-norm `h + mixer(LN(h))`."""

    def __init__(self, config: HydraConfig, layer_idx: int):
        super().__init__()
        self.mixer = build_mixer(config, layer_idx)
        self.norm = nn.LayerNorm(config.hidden_size, eps=1e-5)
        self.is_prenorm = config.is_prenorm

    def forward(self, hidden_states, plan):
        """hidden_states: (batch, seqlen, hidden); plan: the forward's `ExecutionPlan`."""
        if self.is_prenorm:
            return hidden_states + self.mixer(self.norm(hidden_states), plan)
        return self.norm(hidden_states + self.mixer(hidden_states, plan))


class HydraEncoder(nn.Module):
    """A stack of `HydraLayer`s (and the final LayerNorm of pre-norm models)."""

    def __init__(self, config: HydraConfig):
        super().__init__()
        self.layer = nn.ModuleList([HydraLayer(config, i) for i in range(config.num_hidden_layers)])
        if config.is_prenorm:
            self.norm_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states, plan, output_hidden_states=False):
        """hidden_states: (batch, seqlen, hidden) -> the last state and, if asked, every layer's (in the plan's rows)."""
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for i, layer in enumerate(self.layer):
            hidden_states = layer(hidden_states, plan)
            if i == len(self.layer) - 1 and hasattr(self, "norm_f"):
                hidden_states = self.norm_f(hidden_states)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states


class HydraPooler(nn.Module):
    """tanh(dense(h at the first real token)), or of the masked mean of h when `classifier_pooling == "mean"`.

    For packed rows (`seq_ids`), one pooled vector per sequence: (num_sequences, hidden).
    """

    def __init__(self, config: HydraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()
        self.mean_pooling = config.classifier_pooling == "mean"

    def forward(self, hidden_states, attention_mask=None, seq_ids=None):
        """hidden_states: (batch, seqlen, hidden); attention_mask: None or (batch, seqlen) bool; seq_ids: None or the
        (batch, seqlen) sequence ids of packed rows."""
        if seq_ids is not None:
            ids, starts, count = global_sequence_ids(seq_ids)  # (batch * seqlen,), (count,), int
            flat = hidden_states.flatten(0, 1)  # (batch * seqlen, hidden)
            if self.mean_pooling:
                sums = flat.new_zeros(count, flat.shape[-1]).index_add(0, ids, flat)
                pooled = sums / torch.bincount(ids, minlength=count).unsqueeze(-1).to(flat.dtype)
            else:
                pooled = flat[starts]
        elif self.mean_pooling:
            if attention_mask is None:
                pooled = hidden_states.mean(dim=1)
            else:
                mask = attention_mask.unsqueeze(-1)  # (batch, seqlen, 1) bool
                pooled = torch.where(mask, hidden_states, 0.0).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        elif attention_mask is None:
            pooled = hidden_states[:, 0]
        else:  # the first real token, so that left padding does not move the pooled position
            first = attention_mask.long().argmax(dim=1)  # (batch,)
            pooled = hidden_states[torch.arange(hidden_states.shape[0], device=first.device), first]
        return self.activation(self.dense(pooled))


class HydraPreTrainedModel(HydraPreTrainedBase):
    """Weight initialization of the original Hydra BERT; checks and saving as `HydraPreTrainedBase`."""

    config_class = HydraConfig
    base_model_prefix = "hydra"
    _no_split_modules = ["HydraLayer"]

    def built_with(self) -> dict:
        return {**self._built_with, "vocab_size": self.get_input_embeddings().num_embeddings}  # resizable

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                nn.init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        else:
            init_mixer_weights(module)


def _validate_inputs(config, embeddings, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                     tracing):
    """Raise ValueError for malformed inputs; returns (batch, seqlen).

    Shapes and dtypes are always checked (under torch.export they become guards on the symbolic shapes). Checks of
    the values (id ranges) read the data on the host, so they run in eager mode only.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Specify exactly one of input_ids and inputs_embeds (got "
                         f"{'both' if input_ids is not None else 'neither'}).")
    for name, value in (("input_ids", input_ids), ("inputs_embeds", inputs_embeds), ("attention_mask", attention_mask),
                        ("token_type_ids", token_type_ids), ("position_ids", position_ids)):
        if value is not None and not isinstance(value, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}: convert it first (e.g. "
                             "torch.as_tensor(...), or a tokenizer call with return_tensors='pt').")
    for name, value in (("token_type_ids", token_type_ids), ("position_ids", position_ids)):
        if value is not None and (value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool):
            raise ValueError(f"{name} must hold integers, got dtype {value.dtype}")
    if input_ids is not None:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be 2-D (batch, seqlen), got shape {tuple(input_ids.shape)}")
        if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
            raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        shape = tuple(input_ids.shape)
    else:
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != config.hidden_size:
            raise ValueError(f"inputs_embeds must be (batch, seqlen, hidden_size={config.hidden_size}), got "
                             f"shape {tuple(inputs_embeds.shape)}")
        weight_dtype = embeddings.word_embeddings.weight.dtype
        if inputs_embeds.dtype != weight_dtype and not torch.is_autocast_enabled(inputs_embeds.device.type):
            raise ValueError(f"inputs_embeds has dtype {inputs_embeds.dtype} but the model's weights are "
                             f"{weight_dtype}: cast one to the other (e.g. inputs_embeds.to({weight_dtype})).")
        shape = tuple(inputs_embeds.shape[:2])
    if shape[0] == 0:
        raise ValueError(f"The batch is empty (input shape {shape}): give at least one row.")
    if shape[1] == 0:
        raise ValueError("The sequence length is 0: Hydra needs at least one token per row.")
    for name, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids),
                         ("position_ids", position_ids)):
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have the shape of input_ids {shape}, got {tuple(tensor.shape)}")
    if tracing:
        return shape
    if input_ids is not None:
        vocab = embeddings.word_embeddings.num_embeddings
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= vocab:
            raise ValueError(f"input_ids must lie in [0, {vocab - 1}] (vocab_size={vocab}); found ids from {low} "
                             f"to {high}.")
    if token_type_ids is not None:
        n_types = embeddings.token_type_embeddings.num_embeddings
        if int(token_type_ids.min()) < 0 or int(token_type_ids.max()) >= n_types:
            raise ValueError(f"token_type_ids must lie in [0, {n_types - 1}] (type_vocab_size={n_types}); found "
                             f"{int(token_type_ids.min())}..{int(token_type_ids.max())}.")
    if position_ids is not None and config.use_position_embeddings:
        if int(position_ids.min()) < 0 or int(position_ids.max()) >= config.max_position_embeddings:
            raise ValueError(f"position_ids must lie in [0, {config.max_position_embeddings - 1}] "
                             f"(max_position_embeddings={config.max_position_embeddings}).")
    return shape


class HydraModel(HydraPreTrainedModel):
    """The bare Hydra encoder: embeddings, `num_hidden_layers` Hydra layers and an optional pooler.

    Padded batches run padding-free in eager mode (`config.unpad_inputs`), and packed rows (e.g. from
    `DataCollatorWithFlattening`) give every sequence its stand-alone result: see `sequence_layout.py`.
    """

    def __init__(self, config: HydraConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = HydraEmbeddings(config)
        self.encoder = HydraEncoder(config)
        self.pooler = HydraPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def _position_ids(self, position_ids, layout, batch, seqlen, device, tracing):
        """The position ids the embeddings read: None without position embeddings; by default each token's index in
        its sequence (packed rows) or among its row's real tokens."""
        if not self.config.use_position_embeddings:
            return None
        if position_ids is None:
            if layout.packed_ids is not None:
                position_ids = positions_in_sequence(layout.packed_ids)
            else:
                base = (layout.batch_mask if layout.batch_mask is not None
                        else torch.ones((batch, seqlen), dtype=torch.bool, device=device))
                position_ids = (base.long().cumsum(-1) - 1).clamp(min=0)
        if not tracing and int(position_ids.max()) >= self.config.max_position_embeddings:
            raise ValueError(f"Sequence of {int(position_ids.max()) + 1} tokens is longer than "
                             f"max_position_embeddings={self.config.max_position_embeddings}.")
        return position_ids

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        seq_idx=None,
        cu_seq_lens_q=None,
        cu_seq_lens_k=None,
        max_length_q=None,
        max_length_k=None,
        sequence_level_head=None,
        **kwargs,
    ):
        r"""
        input_ids / inputs_embeds: (batch, seqlen) token ids or (batch, seqlen, hidden_size) vectors (exactly one).
        attention_mask: (batch, seqlen), 1 for real tokens and 0 for padding. Outputs at real tokens do not depend
            on the amount or side of padding; with `config.unpad_inputs` (eager mode) the padded positions are not
            computed at all and their outputs are zeros.
        token_type_ids: (batch, seqlen) segment ids; zeros when None.
        position_ids: (batch, seqlen); used by `config.use_position_embeddings` (default: the index of each token
            in its sequence) and, in a batch without padding, as sequence boundaries where they restart (packed rows).
        seq_idx: (batch, seqlen) int, non-decreasing: the sequence of each token of packed rows.
        cu_seq_lens_q / cu_seq_lens_k: (num_sequences + 1,) cumulative sequence lengths over the flattened batch,
            as `DataCollatorWithFlattening(return_flash_attn_kwargs=True)` emits them; `max_length_q/k` are
            accepted and not needed. With packed rows `pooler_output` is (num_sequences, hidden_size).
        output_attentions: Hydra has no attention maps; True raises a ValueError.
        sequence_level_head: set by the heads that score each row as one sequence (their class name): packed rows
            holding several sequences are then refused with a ValueError.
        """
        if output_attentions:
            raise ValueError("Hydra has no attention maps: its sequence mixer is a state-space model, so "
                             "output_attentions=True is not supported.")
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self.check_config_unchanged()
        tracing = is_tracing()
        batch, seqlen = _validate_inputs(self.config, self.embeddings, input_ids, attention_mask, token_type_ids,
                                         position_ids, inputs_embeds, tracing)
        device = input_ids.device if input_ids is not None else inputs_embeds.device
        if input_ids is not None and input_ids.dtype != torch.long:
            input_ids = input_ids.long()  # nn.Embedding takes int64 (and int32) ids only
        packed_ids = packed_sequence_ids(batch, seqlen, attention_mask, position_ids, seq_idx, cu_seq_lens_q,
                                         cu_seq_lens_k, tracing)
        layers_checkpointed = any(layer.gradient_checkpointing for layer in self.encoder.layer)
        plan = build_execution_plan(
            self.config, batch=batch, seqlen=seqlen, device=device, dtype=self.embeddings.LayerNorm.weight.dtype,
            training=self.training, gradient_checkpointing=layers_checkpointed,
            attention_mask=attention_mask, packed_ids=packed_ids, sequence_level_head=sequence_level_head,
        )
        layout = plan.layout
        if token_type_ids is None:
            token_type_ids = torch.zeros((batch, seqlen), dtype=torch.long, device=device)
        position_ids = self._position_ids(position_ids, layout, batch, seqlen, device, tracing)

        if layout.unpadded is not None:  # padding-free: the real tokens of all rows in rows of whole sequences
            rows = layout.unpadded
            hidden_states = self.embeddings(rows.gather(input_ids), rows.gather(token_type_ids),
                                            rows.gather(position_ids), rows.gather(inputs_embeds))
            hidden_states, all_hidden_states = self.encoder(hidden_states, plan, output_hidden_states)
            hidden_states = rows.scatter(hidden_states)
            if all_hidden_states is not None:
                all_hidden_states = tuple(rows.scatter(h) for h in all_hidden_states)
        else:
            hidden_states = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
            hidden_states, all_hidden_states = self.encoder(hidden_states, plan, output_hidden_states)
        pooled = (self.pooler(hidden_states, layout.batch_mask, layout.packed_ids) if self.pooler is not None
                  else None)

        if not return_dict:
            return tuple(v for v in (hidden_states, pooled, all_hidden_states) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states, pooler_output=pooled, hidden_states=all_hidden_states
        )


class HydraPredictionHeadTransform(nn.Module):
    """LayerNorm(act(dense(h))) with exact-erf GELU and eps 1e-12, as the original MLM head."""

    def __init__(self, config: HydraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=1e-12)

    def forward(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class HydraLMPredictionHead(nn.Module):
    def __init__(self, config: HydraConfig):
        super().__init__()
        self.transform = HydraPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=True)  # weight tied to the embeddings

    def forward(self, hidden_states):
        return self.decoder(self.transform(hidden_states))


class HydraOnlyMLMHead(nn.Module):
    def __init__(self, config: HydraConfig):
        super().__init__()
        self.predictions = HydraLMPredictionHead(config)

    def forward(self, sequence_output):
        return self.predictions(sequence_output)


def _classifier_dropout(config):
    return config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob


def _head_output(return_dict, output_class, loss, hidden_states, **fields):
    """A head's output: the `output_class` dataclass, or BERT's tuple `(loss?, *fields, hidden_states?)`."""
    if return_dict:
        return output_class(loss=loss, hidden_states=hidden_states, **fields)
    output = tuple(fields.values()) + ((hidden_states,) if hidden_states is not None else ())
    return ((loss,) + output) if loss is not None else output


class HydraForMaskedLM(HydraPreTrainedModel):
    """Hydra with the BERT masked-language-modeling head (decoder tied to the word embeddings)."""

    _tied_weights_keys = {"cls.predictions.decoder.weight": "hydra.embeddings.word_embeddings.weight"}

    def __init__(self, config: HydraConfig):
        super().__init__(config)
        self.hydra = HydraModel(config, add_pooling_layer=False)
        self.cls = HydraOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.cls.predictions.decoder = new_embeddings

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        r"""labels: (batch, seqlen) token ids to predict; -100 where no prediction is scored.
        num_items_in_batch (passed by the Trainer): the scored tokens of the whole optimizer step; the loss is then the
            sum of this batch's token losses divided by it, else their mean (see head_losses.py).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        loss_kwargs = pop_loss_kwargs(kwargs)
        outputs = self.hydra(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             position_ids=position_ids, inputs_embeds=inputs_embeds,
                             output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                             return_dict=True, **kwargs)
        logits = self.cls(outputs.last_hidden_state)  # (batch, seqlen, vocab_size)
        loss = None
        if labels is not None:
            loss = cross_entropy_loss(logits, labels, **loss_kwargs)
        return _head_output(return_dict, MaskedLMOutput, loss, outputs.hidden_states, logits=logits)


class HydraForSequenceClassification(HydraPreTrainedModel):
    """Hydra with a pooled classifier; regression, single- or multi-label by `config.problem_type`."""

    def __init__(self, config: HydraConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.hydra = HydraModel(config)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        r"""labels: (batch,) class ids, floats for regression (num_labels == 1), or (batch, num_labels) multi-hot or
            regression targets; entries equal to -100 are ignored.
        num_items_in_batch (passed by the Trainer): the label entries != -100 of the whole optimizer step (examples,
            or (example, label) pairs for (batch, num_labels) labels); the loss is then the sum of this batch's
            per-entry losses divided by it, else their mean (see head_losses.py).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        loss_kwargs = pop_loss_kwargs(kwargs)
        outputs = self.hydra(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             position_ids=position_ids, inputs_embeds=inputs_embeds,
                             output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                             return_dict=True, sequence_level_head=type(self).__name__, **kwargs)
        logits = self.classifier(self.dropout(outputs.pooler_output))  # (batch, num_labels)
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(self.config, logits, labels, **loss_kwargs)
        return _head_output(return_dict, SequenceClassifierOutput, loss, outputs.hidden_states, logits=logits)


class HydraForTokenClassification(HydraPreTrainedModel):
    """Hydra with a per-token classifier (e.g. NER)."""

    def __init__(self, config: HydraConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.hydra = HydraModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        r"""labels: (batch, seqlen) class ids; -100 where no label is scored.
        num_items_in_batch (passed by the Trainer): the scored tokens of the whole optimizer step; the loss is then the
            sum of this batch's token losses divided by it, else their mean (see head_losses.py).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        loss_kwargs = pop_loss_kwargs(kwargs)
        outputs = self.hydra(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             position_ids=position_ids, inputs_embeds=inputs_embeds,
                             output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                             return_dict=True, **kwargs)
        logits = self.classifier(self.dropout(outputs.last_hidden_state))  # (batch, seqlen, num_labels)
        loss = None
        if labels is not None:
            loss = cross_entropy_loss(logits, labels, **loss_kwargs)
        return _head_output(return_dict, TokenClassifierOutput, loss, outputs.hidden_states, logits=logits)


class HydraForQuestionAnswering(HydraPreTrainedModel):
    """Hydra with a span-extraction head (start and end logits), as BERT for SQuAD."""

    def __init__(self, config: HydraConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.hydra = HydraModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        r"""start_positions, end_positions: (batch,) token indices of the answer span. As in BERT, indices are clamped
            to [0, seqlen] and those at or past the end are ignored; so are those on padding (attention_mask 0). The
            loss is the mean of the start and end cross-entropies over their scored rows, 0 when none is scored.
        num_items_in_batch: optional (the Trainer passes none, as there are no `labels`): the loss is then
            (sum of start losses + sum of end losses) / (2 * num_items_in_batch).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        loss_kwargs = pop_loss_kwargs(kwargs)
        outputs = self.hydra(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             position_ids=position_ids, inputs_embeds=inputs_embeds,
                             output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                             return_dict=True, sequence_level_head=type(self).__name__, **kwargs)
        logits = self.qa_outputs(outputs.last_hidden_state)  # (batch, seqlen, 2)
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions, attention_mask,
                                           **loss_kwargs)
        return _head_output(return_dict, QuestionAnsweringModelOutput, loss, outputs.hidden_states,
                            start_logits=start_logits, end_logits=end_logits)


class HydraForMultipleChoice(HydraPreTrainedModel):
    """Hydra scoring each of `num_choices` candidate sequences with a pooled linear head."""

    def __init__(self, config: HydraConfig):
        super().__init__(config)
        self.hydra = HydraModel(config)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        r"""
        input_ids: (batch, num_choices, seqlen) (or inputs_embeds (batch, num_choices, seqlen, hidden_size)).
        labels: (batch,) index of the correct choice; -100 where not scored.
        num_items_in_batch (passed by the Trainer): the scored examples of the whole optimizer step; the loss is then
            the sum of this batch's losses divided by it, else their mean (see head_losses.py).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        loss_kwargs = pop_loss_kwargs(kwargs)
        reference = input_ids if input_ids is not None else inputs_embeds
        expected = 3 if input_ids is not None else 4
        if reference is not None and (not isinstance(reference, torch.Tensor) or reference.dim() != expected):
            raise ValueError(f"HydraForMultipleChoice expects {'input_ids' if expected == 3 else 'inputs_embeds'} "
                             f"of {expected} dims (batch, num_choices, seqlen{', hidden' if expected == 4 else ''}),"
                             f" got {tuple(reference.shape) if isinstance(reference, torch.Tensor) else reference!r}")
        num_choices = reference.shape[1] if reference is not None else 0
        for name, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids),
                             ("position_ids", position_ids)):  # before flattening (under export: one size per dim)
            if isinstance(tensor, torch.Tensor) and reference is not None and tensor.shape != reference.shape[:3]:
                raise ValueError(f"{name} must have the shape (batch, num_choices, seqlen) = "
                                 f"{tuple(reference.shape[:3])}, got {tuple(tensor.shape)}")
        flat = lambda t: t.flatten(0, 1) if isinstance(t, torch.Tensor) and t.dim() > 2 else t  # (batch * choices, ...)
        if "seq_idx" in kwargs:
            kwargs["seq_idx"] = flat(kwargs["seq_idx"])
        outputs = self.hydra(flat(input_ids), attention_mask=flat(attention_mask), token_type_ids=flat(token_type_ids),
                             position_ids=flat(position_ids), inputs_embeds=flat(inputs_embeds),
                             output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                             return_dict=True, sequence_level_head=type(self).__name__, **kwargs)
        logits = self.classifier(self.dropout(outputs.pooler_output)).view(-1, num_choices)  # (batch, num_choices)
        loss = None
        if labels is not None:
            loss = cross_entropy_loss(logits, labels, **loss_kwargs)
        return _head_output(return_dict, MultipleChoiceModelOutput, loss, outputs.hidden_states, logits=logits)


# Each model class with the transformers Auto class that loads it: the one list behind `__all__` and the `auto_map`
# that `save_pretrained` writes into config.json.
_AUTO_CLASSES = {
    "AutoModel": HydraModel,
    "AutoModelForMaskedLM": HydraForMaskedLM,
    "AutoModelForSequenceClassification": HydraForSequenceClassification,
    "AutoModelForTokenClassification": HydraForTokenClassification,
    "AutoModelForQuestionAnswering": HydraForQuestionAnswering,
    "AutoModelForMultipleChoice": HydraForMultipleChoice,
}
AUTO_MAP = {"AutoConfig": f"configuration_hydra.{HydraConfig.__name__}",
            **{auto: f"modeling_hydra.{cls.__name__}" for auto, cls in _AUTO_CLASSES.items()}}

__all__ = ["HydraPreTrainedModel", *(cls.__name__ for cls in _AUTO_CLASSES.values())]
