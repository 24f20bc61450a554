"""Generated labels as a classifier: the prompt, the label tokens, and P(intent | query).

A generative Switchboard model (`objective: generate`) is a causal LM fine-tuned to write the
intent after an instruction that lists the intents. Training (`training.generative`), the
transformers scorer and the vLLM engine (`serving.generative`) all build token ids with
`PromptTokens`, piece by piece, so the ids a model was trained on are exactly the ids it is
scored on (no BPE merge across the query / answer boundary):

    [BOS] instruction (the intents, with descriptions) "\\nQuery:" | " " query (<= max_length
    tokens) | "\\nIntent:" | " " label  EOS

P(label | prompt) is the product of the probabilities of the label's tokens *and* of EOS (the end
marker: a label that is a prefix of another, `card` vs `card_arrival`, is not favoured),
normalised over the label set. The answer is therefore never outside the label set, and every
intent has a probability, as the classification head gives.

`LabelTrie` turns that into engine requests: the labels' token sequences form a trie, and one
request per inner node (the prompt + the node's prefix, one generated token, the logprobs of the
node's children: `SamplingParams.logprob_token_ids`) gives every conditional probability needed.
Labels sharing tokens share requests; the instruction is a common prefix of every request of
every query, so vLLM's prefix cache computes it once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

GENERATIVE_FILE = "generative.json"  # written at export by `objective: generate`
OBJECTIVE_CONFIG_KEY = "switchboard_objective"  # in config.json of a generative export
MAX_CHILDREN_PER_REQUEST = 128  # vLLM's limit on `logprob_token_ids` (MAX_LOGPROB_TOKEN_IDS)

INSTRUCTION = "Classify the customer query into exactly one of these intents."
QUERY_MARKER = "\nQuery:"
ANSWER_MARKER = "\nIntent:"


class PromptError(ValueError):
    """Labels or a prompt that cannot be scored (a label with no tokens, duplicates), one line."""


class Tokenizer(Protocol):
    """What the scorer needs of a tokenizer (transformers' and vLLM's both fit)."""

    eos_token_id: Any

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


@dataclass(frozen=True)
class IntentPrompt:
    """The prompt of a generative model: its labels (in output-column order), their descriptions
    and the query's token budget. Saved as `GENERATIVE_FILE` in the model directory."""

    labels: tuple[str, ...]
    descriptions: Mapping[str, str] = field(default_factory=dict)
    max_query_tokens: int = 64
    max_sequence_tokens: int = 0  # the longest prompt + answer, measured at export (engine length)

    def instruction(self) -> str:
        lines = [INSTRUCTION, "Intents:"]
        for label in self.labels:
            description = " ".join(str(self.descriptions.get(label, "")).split())
            lines.append(f"- {label}: {description}" if description else f"- {label}")
        return "\n".join(lines) + QUERY_MARKER

    def render(self, text: str) -> str:
        """The prompt as text (for people and logs; scoring uses `PromptTokens`)."""
        return f"{self.instruction()} {text}{ANSWER_MARKER}"

    def completion(self, label: str) -> str:
        return f" {label}"

    def to_json(self) -> dict[str, Any]:
        return {
            "objective": "generate",
            "labels": list(self.labels),
            "descriptions": dict(self.descriptions),
            "max_query_tokens": self.max_query_tokens,
            "max_sequence_tokens": self.max_sequence_tokens,
            "prompt_example": self.render("<query>"),
        }


def read_intent_prompt(model_dir: str | Path) -> IntentPrompt | None:
    """The model directory's `GENERATIVE_FILE`; None for a classification-head model."""
    path = Path(model_dir) / GENERATIVE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return IntentPrompt(
            labels=tuple(str(x) for x in data["labels"]),
            descriptions={str(k): str(v) for k, v in (data.get("descriptions") or {}).items()},
            max_query_tokens=int(data["max_query_tokens"]),
            max_sequence_tokens=int(data.get("max_sequence_tokens") or 0),
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PromptError(f"{path}: not a readable generative prompt file ({err})") from None


def is_generative(model_dir: str | Path) -> bool:
    return (Path(model_dir) / GENERATIVE_FILE).is_file()


class PromptTokens:
    """Token ids of prompts and answers for one tokenizer; validates the labels."""

    def __init__(self, prompt: IntentPrompt, tokenizer: Tokenizer) -> None:
        eos = tokenizer.eos_token_id
        if isinstance(eos, list):
            eos = eos[0] if eos else None
        if eos is None:
            raise PromptError("the tokenizer has no EOS token: generated labels need an end marker")
        self.prompt = prompt
        self.eos_token_id = int(eos)
        self._tokenizer = tokenizer
        self.prefix_ids = list(tokenizer.encode(prompt.instruction(), add_special_tokens=True))
        self.answer_ids = list(tokenizer.encode(ANSWER_MARKER, add_special_tokens=False))
        self.label_ids = label_token_ids(prompt, tokenizer, self.eos_token_id)

    def query_ids(self, text: str) -> list[int]:
        """The query's tokens, truncated to `max_query_tokens` like the head's `max_length`."""
        ids = self._tokenizer.encode(f" {text}", add_special_tokens=False)
        return list(ids[: self.prompt.max_query_tokens])

    def prompt_ids(self, text: str) -> list[int]:
        return self.prefix_ids + self.query_ids(text) + self.answer_ids

    def max_sequence_length(self) -> int:
        """The longest prompt + answer: the engine's `max_model_len`."""
        longest_label = max(len(ids) for ids in self.label_ids)
        return len(self.prefix_ids) + self.prompt.max_query_tokens + len(self.answer_ids) + longest_label


def label_token_ids(prompt: IntentPrompt, tokenizer: Tokenizer, eos: int) -> list[tuple[int, ...]]:
    """Each label's answer tokens, EOS included; a label that tokenises to nothing, contains the
    end marker or tokenises like another label is an error (it could never be told apart)."""
    if not prompt.labels:
        raise PromptError("no labels to score")
    out: list[tuple[int, ...]] = []
    seen: dict[tuple[int, ...], str] = {}
    for label in prompt.labels:
        if not label.strip() or not tokenizer.encode(label, add_special_tokens=False):
            raise PromptError(f"label {label!r} tokenises to nothing; a generated label needs tokens")
        ids = tuple(tokenizer.encode(prompt.completion(label), add_special_tokens=False))
        if eos in ids:
            raise PromptError(f"label {label!r} contains the end-of-text token")
        full = (*ids, eos)
        if full in seen:
            raise PromptError(f"labels {seen[full]!r} and {label!r} tokenise to the same tokens")
        seen[full] = label
        out.append(full)
    return out


@dataclass(frozen=True)
class TrieNode:
    prefix: tuple[int, ...]  # answer tokens so far (the request's prompt tail)
    children: tuple[int, ...]  # the next tokens whose log-probabilities the request asks for


class LabelTrie:
    """The labels' answer tokens as a trie: which (prefix, next tokens) to ask the engine about,
    and how to turn the answers into one probability per label."""

    def __init__(self, label_ids: Sequence[tuple[int, ...]]) -> None:
        self.label_ids = list(label_ids)
        children: dict[tuple[int, ...], list[int]] = {}
        for ids in self.label_ids:
            for depth in range(len(ids)):
                kids = children.setdefault(ids[:depth], [])
                if ids[depth] not in kids:
                    kids.append(ids[depth])
        # one request per inner node, children split into chunks vLLM accepts
        self.nodes: list[TrieNode] = [
            TrieNode(prefix, tuple(kids[i : i + MAX_CHILDREN_PER_REQUEST]))
            for prefix, kids in children.items()
            for i in range(0, len(kids), MAX_CHILDREN_PER_REQUEST)
        ]

    def tokens_per_query(self, prompt_tokens: int) -> int:
        """Tokens in all of one query's requests (what the engine processes without a cache)."""
        return sum(prompt_tokens + len(node.prefix) for node in self.nodes)

    def probabilities(self, node_logprobs: Sequence[Mapping[int, float]]) -> np.ndarray:
        """One query's label probabilities from the log-probabilities each node's request returned
        (`node_logprobs[i]` for `self.nodes[i]`): sum along each label's path, softmax over labels."""
        table: dict[tuple[tuple[int, ...], int], float] = {}
        for node, logprobs in zip(self.nodes, node_logprobs, strict=True):
            for token in node.children:
                table[(node.prefix, token)] = float(logprobs[token])
        scores = np.asarray(
            [sum(table[(ids[:d], ids[d])] for d in range(len(ids))) for ids in self.label_ids],
            dtype=np.float64,
        )
        return normalise(scores)


def normalise(scores: np.ndarray) -> np.ndarray:
    """Softmax of log-scores over the label axis (the last), float32; -inf rows stay finite."""
    scores = np.asarray(scores, dtype=np.float64)
    top = np.max(scores, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    weights = np.exp(scores - top)
    total = weights.sum(axis=-1, keepdims=True)
    n = scores.shape[-1]
    probs = np.where(total > 0, weights / np.where(total > 0, total, 1.0), 1.0 / max(1, n))
    return probs.astype(np.float32)


def mean_answer_tokens(label_ids: Sequence[tuple[int, ...]]) -> float:
    return math.fsum(len(ids) for ids in label_ids) / max(1, len(label_ids))
