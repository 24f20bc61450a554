"""Intent discovery's clustering: texts the router could not route -> groups that may be missing
intents (the job around it, reading and writing the store, is `router.discovery`).

- `embed`: the champion's own pooled sentence embedding, the vector its head reads
  (`training.head_init.head_features`), L2-normalised: queries the model sees as alike are close.
- `find_clusters`: a PCA to `dims` dimensions (density estimates degrade in the encoder's 384 or
  more; BERTopic reduces with UMAP for the same reason), then scikit-learn's HDBSCAN, which finds
  clusters of any number and shape and leaves what belongs to none out as noise. Each cluster is
  described by its members' cosine to its centroid, its most representative texts (the closest),
  its distinctive keywords by class-based TF-IDF (BERTopic's c-TF-IDF: a term's frequency in the
  cluster times log(1 + mean words per cluster / its frequency over all of them), the noise
  counted as one more class so words common to all unrouted traffic do not stand out), and its
  nearest existing intent (cosine of the centroid with each intent's mean embedding): a high
  similarity says "an existing intent the model is unsure about", a low one "a missing intent".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Cluster:
    members: list[int]  # indices into the texts, most representative first
    similarity: list[float]  # each member's cosine to the centroid, in `members` order
    centroid: np.ndarray  # unit vector in the embedding space
    examples: list[str]  # the most representative member texts
    keywords: list[str]  # most distinctive first
    nearest_intent: str | None = None
    nearest_similarity: float | None = None


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)


def embed(model_dir: str | Path, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
    """(N, d) unit vectors: the exported classifier's pooled representation of each text."""
    from serving.model_dir import read_model_info
    from training.head_init import head_features
    from training.modeling import load_classifier

    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    model, tokenizer = load_classifier(model_dir)
    max_length = read_model_info(model_dir).max_length
    return normalise(head_features(model, tokenizer, list(texts), max_length=max_length, progress=progress))


def intent_centroids(vectors: np.ndarray, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Each label's mean unit vector, normalised."""
    out: dict[str, np.ndarray] = {}
    for label in sorted(set(labels)):
        rows = vectors[[i for i, y in enumerate(labels) if y == label]]
        out[label] = normalise(rows.mean(axis=0, keepdims=True))[0]
    return out


def find_clusters(
    texts: Sequence[str],
    vectors: np.ndarray,
    *,
    min_size: int = 10,
    min_samples: int | None = None,
    dims: int = 10,
    intents: Mapping[str, np.ndarray] | None = None,
    n_examples: int = 5,
    n_keywords: int = 8,
    seed: int = 42,
) -> list[Cluster]:
    """Clusters of at least `min_size` texts (none when there are fewer texts), largest first."""
    from sklearn.cluster import HDBSCAN
    from sklearn.decomposition import PCA

    if len(texts) != len(vectors):
        raise ValueError(f"{len(texts)} texts but {len(vectors)} vectors")
    if len(texts) < max(min_size, 2):
        return []
    reduced = vectors
    if vectors.shape[1] > dims and len(texts) > dims:
        reduced = PCA(n_components=dims, random_state=seed).fit_transform(vectors)
    labels = HDBSCAN(min_cluster_size=min_size, min_samples=min_samples, copy=True).fit_predict(reduced)
    found = sorted({int(c) for c in labels if c >= 0}, key=lambda c: -int((labels == c).sum()))
    keywords = _class_tfidf(texts, labels, found, n_keywords)
    clusters = []
    for c in found:
        idx = np.flatnonzero(labels == c)
        centroid = normalise(vectors[idx].mean(axis=0, keepdims=True))[0]
        sims = vectors[idx] @ centroid
        order = np.argsort(-sims, kind="stable")
        members = [int(idx[i]) for i in order]
        cluster = Cluster(
            members=members,
            similarity=[round(float(sims[i]), 4) for i in order],
            centroid=centroid,
            examples=_distinct([texts[i] for i in members], n_examples),
            keywords=keywords[c],
        )
        if intents:
            names = list(intents)
            scores = np.stack([intents[n] for n in names]) @ centroid
            best = int(np.argmax(scores))
            cluster.nearest_intent, cluster.nearest_similarity = names[best], round(float(scores[best]), 4)
        clusters.append(cluster)
    return clusters


def cluster_queries(
    model_dir: str | Path,
    texts: Sequence[str],
    *,
    min_size: int = 10,
    min_samples: int | None = None,
    dims: int = 10,
    progress: bool = False,
) -> list[Cluster]:
    """`find_clusters` over `texts` embedded by the exported classifier in `model_dir`; each
    intent's centroid from the examples the model ships (`fewshot.json`: a sample of its training
    texts per intent), for the nearest intent."""
    from serving.label_scoring import is_generative
    from serving.model_dir import FEWSHOT_FILE, ModelDirError, read_fewshot
    from training.modeling import ModelLoadError

    if is_generative(model_dir):
        raise ModelLoadError(
            f"{model_dir} is a generative model: discovery embeds with a classifier's pooled vector"
        )
    if len(texts) < min_size:
        return []
    vectors = embed(model_dir, texts, progress=progress)
    try:
        per_intent = read_fewshot(Path(model_dir) / FEWSHOT_FILE).per_intent
    except ModelDirError:
        per_intent = {}
    examples = [(t, label) for label, items in per_intent.items() for t in items]
    centroids = None
    if examples:
        centroids = intent_centroids(embed(model_dir, [t for t, _ in examples]), [y for _, y in examples])
    return find_clusters(
        texts, vectors, min_size=min_size, min_samples=min_samples, dims=dims, intents=centroids
    )


def _distinct(texts: Sequence[str], n: int) -> list[str]:
    """The first `n` texts that differ after folding case and spaces."""
    seen: set[str] = set()
    out = []
    for text in texts:
        key = " ".join(text.lower().split())
        if key not in seen:
            seen.add(key)
            out.append(text)
        if len(out) == n:
            break
    return out


def _class_tfidf(texts: Sequence[str], labels: np.ndarray, found: list[int], n: int) -> dict[int, list[str]]:
    """Each cluster's `n` most distinctive words by class-based TF-IDF (noise: one more class)."""
    from sklearn.feature_extraction.text import CountVectorizer

    classes = [*found, -1]
    docs = [" ".join(texts[i] for i in np.flatnonzero(labels == c)) for c in classes]
    vectorizer = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_][\w'-]+\b")
    try:
        counts = vectorizer.fit_transform(docs).toarray().astype(np.float64)
    except ValueError:  # nothing but stop words
        return {c: [] for c in found}
    terms = vectorizer.get_feature_names_out()
    tf = counts / np.clip(counts.sum(axis=1, keepdims=True), 1.0, None)
    mean_words = counts.sum() / len(classes)
    idf = np.log(1.0 + mean_words / np.clip(counts.sum(axis=0), 1.0, None))
    weights = tf * idf
    out = {}
    for row, c in enumerate(found):
        top = np.argsort(-weights[row], kind="stable")[:n]
        out[c] = [str(terms[j]) for j in top if counts[row, j] > 0]
    return out
