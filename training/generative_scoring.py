"""Label probabilities of a generative model with transformers (the reference vLLM must match).

P(label | prompt) is the product of the label's answer tokens' probabilities, EOS included,
normalised over the labels (`serving.label_scoring`). Computed with the KV cache: the instruction
(identical for every query) once, then per query its tokens once, then every label's answer
tokens in one batch on the query's cache repeated once per label.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from serving.label_scoring import PromptTokens, normalise, read_intent_prompt
from training.data import DatasetError, Split
from training.modeling import ModelLoadError, load_tokenizer


class LabelScorer:
    """Scores texts against every label with a causal LM (training's validation, evaluation)."""

    def __init__(self, model: Any, tokens: PromptTokens) -> None:
        self.model = model
        self.tokens = tokens
        labels = tokens.label_ids
        width = max(len(ids) for ids in labels)
        self.lengths = torch.tensor([len(ids) for ids in labels])
        # answer tokens, right-padded with EOS (padding sits after the real tokens: never attended)
        self.answers = torch.tensor(
            [list(ids) + [tokens.eos_token_id] * (width - len(ids)) for ids in labels]
        )
        self.mask = (torch.arange(width)[None, :] < self.lengths[:, None]).long()

    @torch.inference_mode()
    def log_scores(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """(N, C) log P(answer tokens of label c | prompt of text n), unnormalised."""
        model = self.model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        prefix = torch.tensor([self.tokens.prefix_ids], device=device)
        base = model(input_ids=prefix, use_cache=True).past_key_values
        out = np.zeros((len(texts), len(self.tokens.label_ids)), dtype=np.float64)
        answers, mask, lengths = self.answers.to(device), self.mask.to(device), self.lengths.to(device)
        n_labels, width = answers.shape
        for row, text in enumerate(tqdm(texts, desc="score", unit="text", disable=not progress, leave=False)):
            tail = self.tokens.query_ids(text) + self.tokens.answer_ids
            cache = copy.deepcopy(base)
            seen = prefix.shape[1]
            step = model(
                input_ids=torch.tensor([tail], device=device),
                attention_mask=torch.ones(1, seen + len(tail), dtype=torch.long, device=device),
                past_key_values=cache,
                use_cache=True,
            )
            first = torch.log_softmax(step.logits[0, -1].float(), dim=-1)[answers[:, 0]]  # (C,)
            cache = step.past_key_values
            cache.batch_repeat_interleave(n_labels)
            total = seen + len(tail)
            attention = torch.cat([torch.ones(n_labels, total, dtype=torch.long, device=device), mask], dim=1)
            rest = model(input_ids=answers, attention_mask=attention, past_key_values=cache, use_cache=True)
            logp = torch.log_softmax(rest.logits[:, :-1].float(), dim=-1)  # position t predicts t+1
            picked = logp.gather(-1, answers[:, 1:, None])[..., 0]  # (C, width-1)
            keep = torch.arange(1, width, device=device)[None, :] < lengths[:, None]
            out[row] = (first + (picked * keep).sum(dim=1)).double().cpu().numpy()
        if was_training:
            model.train()
        return out

    def probabilities(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        return normalise(self.log_scores(texts, progress=progress))


def load_generative(
    model_dir: str | Path, *, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, PromptTokens]:
    """An exported generative model, its tokenizer and prompt tokens, for inference."""
    path = Path(model_dir)
    prompt = read_intent_prompt(path)
    if prompt is None or not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a generative model directory (no generative.json)")
    AutoConfig.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.eval()
    tokenizer = load_tokenizer(str(path))
    return model, tokenizer, PromptTokens(prompt, tokenizer)


def generative_probabilities(
    model_dir: str | Path, texts: Sequence[str], *, progress: bool = False
) -> tuple[list[str], np.ndarray]:
    """The model's labels and (N, C) probabilities with transformers."""
    model, _, tokens = load_generative(model_dir)
    return list(tokens.prompt.labels), LabelScorer(model, tokens).probabilities(texts, progress=progress)


def generative_split_probabilities(
    model_dir: str | Path, split: Split, *, progress: bool = False
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The model's labels, the split's gold ids in that order and the (N, C) probabilities."""
    model, _, tokens = load_generative(model_dir)
    labels = list(tokens.prompt.labels)
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({label for label in split.labels if label not in index})
    if unknown:
        raise DatasetError(
            f"{len(unknown)} label(s) of the data are unknown to the model: {', '.join(unknown[:5])}"
        )
    probs = LabelScorer(model, tokens).probabilities(split.texts, progress=progress)
    return labels, np.asarray([index[label] for label in split.labels]), probs
