"""lmcraft's sequence classifiers that pool with ``mean`` or ``cls``, for transformers.

``lmcraft export --to hf`` copies this file, unchanged, next to the weights of such a classifier; lmcraft itself
never imports it. transformers' own ``BertForSequenceClassification`` reads BERT's pooler (tanh of a dense
layer over [CLS]) and ``RobertaForSequenceClassification`` a dense + tanh head over <s>; a classifier trained
with ``--pooling mean`` (the mean of the final states over real tokens) or ``--pooling cls`` (the [CLS] state
itself) has neither, so it is this class: transformers' own encoder (``BertModel`` / ``RobertaModel``,
without a pooler), dropout, one linear layer.

    model = AutoModelForSequenceClassification.from_pretrained(out_dir, trust_remote_code=True)

``trust_remote_code=True`` lets transformers run this file: read it before you do. The configuration has a
``model_type`` of its own (``lmcraft_bert``, ``lmcraft_roberta``), so that without ``trust_remote_code``
transformers refuses the directory instead of building its pooler-reading class with a random pooler.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel, BertPreTrainedModel, RobertaConfig, RobertaModel, RobertaPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class PooledClassifier:
    """Encoder -> pooled state (B, D) -> dropout -> linear (B, C); ``config.lmcraft_pooling`` is mean or cls."""

    def _build(self, config, encoder: type[nn.Module]) -> None:
        if config.lmcraft_pooling not in ("mean", "cls"):
            raise ValueError(f"lmcraft_pooling must be mean or cls, not {config.lmcraft_pooling!r}")
        self.num_labels = config.num_labels
        setattr(self, self.base_model_prefix, encoder(config, add_pooling_layer=False))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs) -> SequenceClassifierOutput:
        encoder = getattr(self, self.base_model_prefix)
        hidden = encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         **kwargs).last_hidden_state  # (B, T, D)
        if self.config.lmcraft_pooling == "cls":
            pooled = hidden[:, 0]  # (B, D)
        elif attention_mask is None:
            pooled = hidden.mean(1)
        else:
            weights = attention_mask.to(hidden.dtype)[:, :, None]  # (B, T, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)  # (B, D)
        logits = self.classifier(self.dropout(pooled))  # (B, C)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class LmcraftBertConfig(BertConfig):
    model_type = "lmcraft_bert"


class LmcraftRobertaConfig(RobertaConfig):
    model_type = "lmcraft_roberta"


class LmcraftBertForSequenceClassification(PooledClassifier, BertPreTrainedModel):
    config_class = LmcraftBertConfig

    def __init__(self, config) -> None:
        super().__init__(config)
        self._build(config, BertModel)


class LmcraftRobertaForSequenceClassification(PooledClassifier, RobertaPreTrainedModel):
    config_class = LmcraftRobertaConfig

    def __init__(self, config) -> None:
        super().__init__(config)
        self._build(config, RobertaModel)
