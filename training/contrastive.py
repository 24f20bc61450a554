"""Contrastive pre-fine-tuning of an encoder's body on the few labelled examples (SetFit's first stage).

With ten examples per intent, a classifier fine-tuned from cross-entropy alone learns a head on
embeddings that were never taught these intents. SetFit (Tunstall et al. 2022) first fine-tunes the
sentence encoder on pairs made from the labels, so texts of one intent move together and texts of
different intents apart, and only then fits the head. This module is that stage, run with the
sentence-transformers trainer and its losses on the classifier's own body:

- a `SentenceTransformer` (Transformer + mean pooling, as `MeanPoolBertForSequenceClassification`
  pools) is given the classifier body's weights, trained, and the weights are copied back, so the
  exported checkpoint is the same `BertForSequenceClassification` vLLM serves today;
- `pairs`: SetFit's recipe, `CosineSimilarityLoss` on balanced positive and negative pairs;
  `in_batch` (the default): `MultipleNegativesRankingLoss` on (anchor, same-intent positive)
  pairs with the batch's other pairs as negatives (two pairs of one intent in a batch make a false
  negative: rare with dozens of intents). How the defaults were chosen, on a validation pool:
  benchmarks/contrastive_choice.py.

After the stage, `switchboard train` keeps the linear probe fitted on the trained body as the
head (`contrastive.fine_tune=false`, the default: SetFit's second stage, a logistic regression) or
fine-tunes the whole classifier as its recipe says. Encoders only (mean pooling); the decoders'
QLoRA recipe does not use it.
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Literal

import torch
from datasets import Dataset

log = logging.getLogger(__name__)

ContrastiveLoss = Literal["pairs", "in_batch"]


@dataclass
class ContrastiveResult:
    pairs: int
    steps: int
    seconds: float
    loss: float | None

    def to_json(self) -> dict[str, Any]:
        seconds = round(self.seconds, 1)
        return {"pairs": self.pairs, "steps": self.steps, "seconds": seconds, "loss": self.loss}


def wanted(
    mode: str,
    max_per_intent: int,
    pooling: str,
    labels: list[str],
    *,
    continued: bool = False,
    four_bit: bool = False,
    processes: int = 1,
) -> bool:
    """The default rule: on for a mean-pooled encoder whose median intent has at most
    `max_per_intent` labelled examples (few labels: where the stage measured a gain), else off;
    `mode` always / never overrides it. Never for a champion continued (`continued`: its body has
    learnt), a 4-bit body (not trained in full), or several processes (untested under DDP)."""
    if mode == "never" or pooling != "mean" or not labels or continued or four_bit or processes > 1:
        return False
    if mode == "always":
        return True
    counts = sorted(Counter(labels).values())
    return counts[len(counts) // 2] <= max_per_intent


def rounds_within(rounds: int, max_pairs: int, texts: int, loss: str) -> int:
    """More labelled texts, fewer rounds (at least one): the stage's cost stays bounded when a
    retrain brings twice the first champion's labels."""
    per_round = texts * (2 if loss == "pairs" else 1)
    return max(1, min(rounds, max_pairs // max(1, per_round)))


def positive_pairs(texts: list[str], labels: list[str], rounds: int, seed: int) -> list[tuple[str, str]]:
    """(anchor, positive): every text with another text of its intent, `rounds` times over."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for text, label in zip(texts, labels, strict=True):
        by_label[label].append(text)
    rng = random.Random(seed)
    pairs = []
    for _ in range(rounds):
        for text, label in zip(texts, labels, strict=True):
            others = [t for t in by_label[label] if t != text]
            if others:
                pairs.append((text, rng.choice(others)))
    rng.shuffle(pairs)
    return pairs


def balanced_pairs(
    texts: list[str], labels: list[str], rounds: int, seed: int
) -> tuple[list[str], list[str], list[float]]:
    """SetFit's pair generation: per round, every text with one positive and one negative."""
    positives = positive_pairs(texts, labels, rounds, seed)
    rng = random.Random(seed + 1)
    negatives = []
    for _ in range(rounds):
        for text, label in zip(texts, labels, strict=True):
            while True:
                j = rng.randrange(len(texts))
                if labels[j] != label:
                    negatives.append((text, texts[j]))
                    break
    rows = [(a, b, 1.0) for a, b in positives] + [(a, b, 0.0) for a, b in negatives]
    rng.shuffle(rows)
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def _sentence_model(body: torch.nn.Module, base_path: str, max_length: int) -> Any:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    encoder = Transformer(base_path, max_seq_length=max_length)
    missing, unexpected = encoder.auto_model.load_state_dict(body.state_dict(), strict=False)
    if unexpected or [k for k in missing if not k.startswith("pooler.")]:
        raise ValueError(f"the contrastive stage cannot map the body's weights: {missing or unexpected}")
    pooling = Pooling(encoder.get_embedding_dimension(), pooling_mode="mean")
    device = None if torch.cuda.is_available() else "cpu"
    return SentenceTransformer(modules=[encoder, pooling], device=device)


def contrastive_body(
    body: torch.nn.Module,
    base_path: str,
    texts: list[str],
    labels: list[str],
    *,
    loss: ContrastiveLoss = "in_batch",
    rounds: int = 4,
    max_pairs: int = 3200,
    epochs: float = 1.0,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    max_steps: int = -1,
    max_length: int = 64,
    seed: int = 42,
    progress: bool = True,
) -> ContrastiveResult:
    """Train `body` (a `BertModel`, changed in place) contrastively on the labelled texts;
    `max_steps` > 0 caps the steps that `epochs` make (the training's smoke-run cap, `optim.max_steps`);
    `rounds` is lowered (to at least 1) so that there are at most about `max_pairs` pairs."""

    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import (
        CosineSimilarityLoss,
        MultipleNegativesRankingLoss,
    )
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    started = time.perf_counter()
    rounds = rounds_within(rounds, max_pairs, len(texts), loss)
    model = _sentence_model(body, base_path, max_length)
    if loss == "pairs":
        first, second, score = balanced_pairs(texts, labels, rounds, seed)
        dataset = Dataset.from_dict({"sentence1": first, "sentence2": second, "score": score})
        objective: Any = CosineSimilarityLoss(model)
        sampler = BatchSamplers.BATCH_SAMPLER
    else:
        anchors = positive_pairs(texts, labels, rounds, seed)
        dataset = Dataset.from_dict({"anchor": [a for a, _ in anchors], "positive": [p for _, p in anchors]})
        objective = MultipleNegativesRankingLoss(model)
        sampler = BatchSamplers.NO_DUPLICATES
    steps = math.ceil(math.ceil(len(dataset) / batch_size) * epochs)
    if max_steps > 0:
        steps = min(steps, max_steps)
    with tempfile.TemporaryDirectory(prefix="contrastive-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            warmup_steps=0.1,
            lr_scheduler_type="linear",
            seed=seed,
            data_seed=seed,
            batch_sampler=sampler,
            save_strategy="no",
            report_to="none",
            logging_steps=50,
            disable_tqdm=not progress,
            dataloader_num_workers=0,
            use_cpu=not torch.cuda.is_available(),
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=objective)
        output = trainer.train()
    trained = model[0].auto_model.state_dict()
    missing, unexpected = body.load_state_dict(trained, strict=False)
    if unexpected or [k for k in missing if not k.startswith("pooler.")]:
        raise ValueError(f"the contrastive stage cannot copy its weights back: {missing or unexpected}")
    seconds = time.perf_counter() - started
    result = ContrastiveResult(len(dataset), output.global_step, seconds, output.training_loss)
    log.info(
        "contrastive stage: %d pairs, %d steps, %.0f s, loss %.4f",
        result.pairs, result.steps, result.seconds, result.loss or float("nan"),
    )  # fmt: skip
    return result
