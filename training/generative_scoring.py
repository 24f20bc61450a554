"""Label probabilities of a generative model with transformers (the reference vLLM must match).

P(label | prompt) is the product of the label's answer tokens' probabilities, EOS included,
normalised over the labels (`serving.label_scoring`). Computed with the KV cache: the instruction
(identical for every query) once, then a batch of queries' tokens once, then for each query all
labels' answer tokens as one block-causal sequence on its cache (`LabelScorer`).
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

# Answer tokens scored in one forward pass (every label's, for each text of a batch): the batch
# holds as many texts as fit. Logits of 2**13 positions over Llama 3's 128k vocabulary: 2 GiB in
# bf16; their fp32 log-softmax is taken one text at a time (77 labels of <= 10 tokens: <= 0.4 GiB).
TOKEN_BUDGET = 2**13


class LabelScorer:
    """Scores texts against every label with a causal LM (training's validation, evaluation).

    Texts go in batches. Pass 1: their query tokens, right-padded (the padding masked out,
    positions given explicitly) on the instruction's cache. Pass 2: for each text, all labels'
    answer tokens in one sequence with a block-causal mask (each label sees the prompt and its
    own earlier tokens, at the positions it would have after the prompt): the cache is not copied
    once per label, and every text sees exactly its own prompt.
    """

    def __init__(self, model: Any, tokens: PromptTokens, *, token_budget: int = TOKEN_BUDGET) -> None:
        self.model = model
        self.tokens = tokens
        self.token_budget = token_budget
        labels = tokens.label_ids
        width = max(len(ids) for ids in labels)
        lengths = torch.tensor([len(ids) for ids in labels])
        # answer tokens, right-padded with EOS (padding sits after the real tokens: never attended)
        self.answers = torch.tensor(
            [list(ids) + [tokens.eos_token_id] * (width - len(ids)) for ids in labels]
        )
        # pass 2's sequence: label c's token j at c*W + j
        block = torch.arange(len(labels)).repeat_interleave(width)
        self.steps = torch.arange(width).repeat(len(labels))  # j of each position
        # label c's token j sees label c's tokens 0..j: a block-diagonal causal (C*W, C*W) mask
        self.within = (block[:, None] == block[None, :]) & (self.steps[None, :] <= self.steps[:, None])
        # position j of a label predicts its token j+1, a real token only before the label's end
        flat = self.answers.reshape(-1)
        self.targets = torch.cat([flat[1:], flat[:1]])
        self.scored = self.steps + 1 < lengths.repeat_interleave(width)

    def _batches(self, tails: list[list[int]]) -> list[list[int]]:
        """Indices of texts per batch, by length (little padding), each within the token budget."""
        order = sorted(range(len(tails)), key=lambda i: len(tails[i]))
        per_text = self.answers.numel()
        size = max(1, self.token_budget // per_text)
        return [order[start : start + size] for start in range(0, len(order), size)]

    @torch.inference_mode()
    def log_scores(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """(N, C) log P(answer tokens of label c | prompt of text n), unnormalised."""
        model = self.model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        dtype = model.get_input_embeddings().weight.dtype  # the hidden states' (4-bit layers aside)
        prefix = torch.tensor([self.tokens.prefix_ids], device=device)
        base = model(input_ids=prefix, use_cache=True).past_key_values
        seen = prefix.shape[1]
        out = np.zeros((len(texts), len(self.tokens.label_ids)), dtype=np.float64)
        answers, within, steps = self.answers.to(device), self.within.to(device), self.steps.to(device)
        targets, scored = self.targets.to(device), self.scored.to(device)
        n_labels, width = answers.shape
        flat = answers.reshape(-1)
        tails = [self.tokens.query_ids(text) + self.tokens.answer_ids for text in texts]
        pad = self.tokens.eos_token_id  # any id: padded positions are masked out
        bar = tqdm(total=len(texts), desc="score", unit="text", disable=not progress, leave=False)
        for batch in self._batches(tails):
            size, longest = len(batch), max(len(tails[i]) for i in batch)
            ids = torch.full((size, longest), pad, dtype=torch.long, device=device)
            real = torch.zeros(size, longest, dtype=torch.bool, device=device)
            for row, i in enumerate(batch):
                ids[row, : len(tails[i])] = torch.tensor(tails[i], device=device)
                real[row, : len(tails[i])] = True
            ends = real.sum(dim=1)  # each text's tail length
            cache = copy.deepcopy(base)
            cache.batch_repeat_interleave(size)
            attention = torch.cat([torch.ones(size, seen, dtype=torch.bool, device=device), real], dim=1)
            step = model(
                input_ids=ids,
                attention_mask=attention.long(),
                position_ids=seen + torch.arange(longest, device=device)[None, :].expand(size, -1),
                past_key_values=cache,
                use_cache=True,
            )
            last = step.logits[torch.arange(size, device=device), ends - 1].float()  # (B, V)
            first = torch.log_softmax(last, dim=-1)[:, answers[:, 0]]  # (B, C)
            # pass 2: (B, 1, C*W, seen + longest + C*W) additive mask, a text's prompt + its block
            sees = torch.cat(
                [attention[:, None, :].expand(-1, flat.numel(), -1), within.expand(size, -1, -1)], dim=2
            )
            mask = torch.zeros(sees.shape, dtype=dtype, device=device).masked_fill_(
                ~sees, torch.finfo(dtype).min
            )
            rest = model(
                input_ids=flat.expand(size, -1),
                attention_mask=mask[:, None],
                position_ids=seen + ends[:, None] + steps[None, :],
                past_key_values=step.past_key_values,
                use_cache=True,
            )
            picked = (
                torch.stack(  # (B, C*W): log P(next answer token), position t predicting t+1
                    [
                        torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[:, None])[:, 0]
                        for logits in rest.logits
                    ]
                )
                * scored
            )
            scores = first + picked.view(size, n_labels, width).sum(dim=2)
            out[batch] = scores.double().cpu().numpy()
            bar.update(size)
        bar.close()
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
