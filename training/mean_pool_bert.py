"""BERT classifier over the mean of its token states, as sentence-transformers encoders are trained.

Sentence encoders such as all-MiniLM-L6-v2 learned to put the meaning of a text in the *mean* of
their token states, not in `[CLS]`; classifying from `[CLS]` throws that away (a naive CLS
fine-tune of MiniLM on Banking77 stalls near 85%). This class keeps every parameter name of
`BertForSequenceClassification` (`bert.*`, `bert.pooler.dense`, `classifier`) and only changes
what the pooler reads, so the exported checkpoint loads in vLLM as a plain
`BertForSequenceClassification` with `seq_pooling_type=MEAN` (see `training.export`), and both
engines compute the same function: classifier(tanh(dense(mean(h)))).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class MeanPoolBertForSequenceClassification(BertForSequenceClassification):
    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: object,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            assert input_ids is not None
            attention_mask = torch.ones_like(input_ids)
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        pooler = self.bert.pooler
        pooled = pooler.activation(pooler.dense(masked_mean(hidden, attention_mask)))
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)  # type: ignore[arg-type]


def init_pooler_identity(model: BertForSequenceClassification) -> None:
    """Start the pooler as tanh(identity): the classifier first sees the sentence embedding itself."""
    dense = model.bert.pooler.dense
    with torch.no_grad():
        dense.weight.copy_(torch.eye(dense.out_features, dense.in_features))
        dense.bias.zero_()
