"""Self-training: logged traffic nobody labelled, with the champion's confident answers as labels.

A cold start has a few hundred reviewed labels and thousands of unlabelled queries in the request
log. The champion answers most of them with high confidence, and those answers are nearly always
right; training the challenger on them (beside every reviewed label) teaches it the phrasings of
real traffic that no reviewer will ever look at. `switchboard retrain --self-train 0.9` turns it
on; the gate still judges the challenger on held-out *reviewed* feedback and the fixed test set,
so a challenger that learnt the champion's mistakes is refused like any other.

What is never used: texts of the original validation and test splits (the gate's and the early
stopping's yardsticks: training on them would flatter the challenger), texts that have feedback
(their reviewed label wins), and answers naming an intent the challenger does not have (retired).
Texts are compared after folding case and whitespace.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.predict import predict_proba_of_models


def text_key(text: str) -> str:
    """Case- and whitespace-folded text: what counts as the same query here."""
    return " ".join(text.split()).casefold()


@dataclass
class PseudoLabels:
    examples: list[tuple[str, str]]  # (text, the champion's answer)
    min_confidence: float
    # each example's whole answer, {label: probability} over the wanted labels (>= 1e-4 kept):
    # the soft targets of distillation (training.soft_targets)
    probabilities: list[dict[str, float]] = field(default_factory=list)
    offered: int = 0  # unlabelled texts read from the log
    excluded: int = 0  # left out: validation/test/feedback texts
    scored: int = 0
    by_label: Counter[str] = field(default_factory=Counter)

    def soft_rows(self) -> list[tuple[str, dict[str, float]]]:
        """(text, {label: probability}) of every example: `training.soft_targets`' rows."""
        return [(text, p) for (text, _), p in zip(self.examples, self.probabilities, strict=True)]

    def to_json(self) -> dict[str, Any]:
        return {
            "min_confidence": self.min_confidence,
            "offered": self.offered,
            "excluded": self.excluded,
            "scored": self.scored,
            "used": len(self.examples),
            "share_used": round(len(self.examples) / self.scored, 4) if self.scored else None,
            "intents": len(self.by_label),
        }


def pseudo_labels(
    model_dir: Path | Sequence[Path],
    texts: Sequence[str],
    *,
    min_confidence: float,
    exclude: Iterable[str],
    targets: Sequence[str],
    relabel: dict[str, str] | None = None,
    progress: bool = False,
) -> PseudoLabels:
    """The texts `model_dir` answers with probability >= `min_confidence` (0: every text), with
    its answer (renamed by `relabel`) and its whole answer, limited to the labels in `targets`;
    texts in `exclude` are left out. Several model directories (trained on the same labels) answer
    with their averaged probabilities."""
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"the self-training confidence must be in [0, 1], not {min_confidence}")
    out = PseudoLabels([], min_confidence, offered=len(texts))
    skip = {text_key(t) for t in exclude}
    seen: set[str] = set()
    candidates = []
    for text in texts:
        key = text_key(text)
        if key in skip or key in seen or not key:
            out.excluded += key in skip
            continue
        seen.add(key)
        candidates.append(text)
    out.scored = len(candidates)
    if not candidates:
        return out
    teachers = [model_dir] if isinstance(model_dir, str | Path) else list(model_dir)
    labels, scored = predict_proba_of_models(teachers, candidates, progress=progress)
    probs = np.mean(scored, axis=0)
    wanted = set(targets)
    names = [(relabel or {}).get(label, label) for label in labels]
    for text, row in zip(candidates, probs, strict=True):
        best = int(row.argmax())
        if row[best] >= min_confidence and names[best] in wanted:
            out.examples.append((text, names[best]))
            out.by_label[names[best]] += 1
            out.probabilities.append(
                {name: float(p) for name, p in zip(names, row, strict=True) if p >= 1e-4 and name in wanted}
            )
    return out
