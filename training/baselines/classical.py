"""Classical baselines: seconds to train, the floor any tuned model must clear.

- `embeddings`: frozen all-MiniLM-L6-v2 sentence embeddings (mean pooled, normalised) +
  multinomial logistic regression.
- `tfidf`: word and character n-gram TF-IDF + logistic regression.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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
    predict_seconds: float  # features + predict on the test split


def embed(texts: list[str], *, batch_size: int = 128, progress: bool = False) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_base_model(EMBEDDING_MODEL), device="cpu")
    return np.asarray(
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=progress)
    )


def _features(kind: Kind, train: list[str], test: list[str], progress: bool) -> tuple[Any, Any, float, float]:
    started = time.perf_counter()
    if kind == "embeddings":
        x_train = embed(train, progress=progress)
        train_s = time.perf_counter() - started
        started = time.perf_counter()
        x_test = embed(test, progress=progress)
        return x_train, x_test, train_s, time.perf_counter() - started
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
    x_train = vectorizer.fit_transform(train)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    x_test = vectorizer.transform(test)
    return x_train, x_test, train_s, time.perf_counter() - started


def run_baseline(
    kind: Kind, data: IntentDataset, *, c: float = 10.0, progress: bool = False
) -> BaselineResult:
    """Fit on train (+ validation: a baseline has no early stopping to feed), score on test."""
    if data.test is None:
        raise ValueError(f"dataset {data.name!r} has no test split")
    texts = data.train.texts + data.validation.texts
    labels = data.label_map.encode(data.train.labels + data.validation.labels)
    x_train, x_test, feat_train_s, feat_test_s = _features(kind, texts, data.test.texts, progress)
    started = time.perf_counter()
    classifier = LogisticRegression(C=c, max_iter=3000)
    classifier.fit(x_train, labels)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    probs = np.zeros((len(data.test), len(data.label_map)), dtype=np.float32)
    probs[:, classifier.classes_] = classifier.predict_proba(x_test)
    predict_s = time.perf_counter() - started
    metrics = compute_metrics(data.label_map.encode(data.test.labels), probs, list(data.label_map.labels))
    return BaselineResult(
        f"{kind} + logistic regression", metrics, feat_train_s + fit_s, feat_test_s + predict_s
    )
