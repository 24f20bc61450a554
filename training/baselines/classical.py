"""Classical baselines: seconds to train, the floor any tuned model must clear.

- `embeddings`: frozen all-MiniLM-L6-v2 sentence embeddings (mean pooled, normalised) +
  multinomial logistic regression.
- `tfidf`: word and character n-gram TF-IDF + logistic regression.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.linear_model import LogisticRegression

from training.data import IntentDataset
from training.metrics import compute_metrics
from training.modeling import resolve_base_model

Kind = Literal["embeddings", "tfidf"]
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class BaselineResult:
    name: str
    metrics: dict[str, Any]
    fit_seconds: float  # features + fit on the train split
    predict_seconds: float  # features + predict on the test split, batched
    latencies: list[float] = field(default_factory=list)  # seconds per query, one at a time


def load_encoder() -> Any:
    """The frozen sentence encoder (all-MiniLM-L6-v2, offline copy when installed)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_base_model(EMBEDDING_MODEL), device="cpu")


def embed(
    texts: list[str], *, batch_size: int = 128, progress: bool = False, encoder: Any = None
) -> np.ndarray:
    model = encoder if encoder is not None else load_encoder()
    return np.asarray(
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=progress)
    )


def _featurizer(kind: Kind, progress: bool) -> tuple[Callable[[list[str]], Any], Callable[[list[str]], Any]]:
    """(fit_transform, transform) for a kind; `transform` is what a served baseline runs per query."""
    if kind == "embeddings":
        encoder = load_encoder()

        def encode(texts: list[str]) -> Any:
            return embed(texts, progress=progress and len(texts) > 1, encoder=encoder)

        return encode, encode
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    vectorizer = FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
            (
                "char",
                TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
            ),
        ]
    )
    return vectorizer.fit_transform, vectorizer.transform


def run_baseline(
    kind: Kind, data: IntentDataset, *, c: float = 10.0, progress: bool = False, latency_samples: int = 0
) -> BaselineResult:
    """Fit on train (+ validation: a baseline has no early stopping to feed), score on test; time
    the first `latency_samples` test queries one at a time (features included), as served."""
    if data.test is None:
        raise ValueError(f"dataset {data.name!r} has no test split")
    texts = data.train.texts + data.validation.texts
    labels = data.label_map.encode(data.train.labels + data.validation.labels)
    fit_transform, transform = _featurizer(kind, progress)
    started = time.perf_counter()
    x_train = fit_transform(texts)
    classifier = LogisticRegression(C=c, max_iter=3000)
    classifier.fit(x_train, labels)
    fit_s = time.perf_counter() - started

    def predict(batch: list[str]) -> np.ndarray:
        probs = np.zeros((len(batch), len(data.label_map)), dtype=np.float32)
        probs[:, classifier.classes_] = classifier.predict_proba(transform(batch))
        return probs

    started = time.perf_counter()
    probs = predict(list(data.test.texts))
    predict_s = time.perf_counter() - started
    latencies = []
    for text in data.test.texts[:latency_samples]:
        started = time.perf_counter()
        predict([text])
        latencies.append(time.perf_counter() - started)
    metrics = compute_metrics(data.label_map.encode(data.test.labels), probs, list(data.label_map.labels))
    return BaselineResult(f"{kind} + logistic regression", metrics, fit_s, predict_s, latencies)
