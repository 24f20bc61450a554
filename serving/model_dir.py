"""The exported model directory: what the router needs to know about a model without loading it.

`ModelInfo` is read from the directory itself (labels, max length, route map, version), never
from the engine, so both engine implementations report the same facts and tests can build one
without vLLM. The registry (`serving.registry`) writes `VERSION_FILE` into each version it
holds; training writes the rest at export (`config.json`, `config.yaml`, `routes.yaml`,
`FEWSHOT_FILE`, the examples the cascade's LLM prompt shows, `BASELINE_FILE`, what traffic
looked like at training time: the router's drift signals compare live traffic with it, and
`METRICS_FILE`, whose `oos_threshold` is the out-of-scope operating point chosen on validation).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.files import read_yaml_mapping

VERSION_FILE = "switchboard-version.json"  # written by the model registry; wins when present
FEWSHOT_FILE = "fewshot.json"  # few-shot examples + intent descriptions, written at export
BASELINE_FILE = "baseline.json"  # the training prior + validation's confidences, written at export
METRICS_FILE = "metrics.json"  # the evaluation, written at export (training.train)
DEFAULT_MAX_LENGTH = 128
WEIGHT_SUFFIXES = (".safetensors", ".bin")


class ModelDirError(ValueError):
    """A directory that is not an exported Switchboard classifier, with the reason."""


@dataclass(frozen=True)
class ModelInfo:
    model_dir: str
    version: str  # short, stable id of the exact weights: logged with every routed request
    labels: tuple[str, ...]  # column i of classify() is the probability of labels[i]
    max_length: int  # tokens; longer texts are truncated exactly as at training time
    routes: dict[str, str] = field(default_factory=dict, hash=False)  # intent -> route
    default_route: str | None = None  # routes.yaml `default_route`, for unmapped intents
    fallback_route: str | None = None  # routes.yaml `fallback_route`, for unsure answers
    # top-1 probability under which a model with an out-of-scope label is taken to be out of
    # scope, chosen on validation at training time (training.thresholds); None: not chosen
    oos_threshold: float | None = None


def read_model_info(model_dir: str | Path) -> ModelInfo:
    """The facts about an exported model directory that the router needs, without loading it."""
    path = Path(model_dir)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelDirError(f"not a model directory (no config.json): {path}")
    config_bytes = config_path.read_bytes()
    config = json.loads(config_bytes)
    id2label = config.get("id2label") or {}
    if not id2label:
        raise ModelDirError(f"{config_path} has no id2label: not a classifier export")
    try:
        labels = tuple(id2label[str(i)] for i in range(len(id2label)))
    except KeyError as err:
        raise ModelDirError(f"{config_path}: id2label ids are not 0..{len(id2label) - 1}") from err
    route_map = _read_yaml(path / "routes.yaml")
    return ModelInfo(
        model_dir=str(path),
        version=_version(path, config_bytes),
        labels=labels,
        max_length=_max_length(path),
        routes={str(k): str(v) for k, v in (route_map.get("routes") or {}).items()},
        default_route=route_map.get("default_route"),
        fallback_route=route_map.get("fallback_route"),
        oos_threshold=stored_oos_threshold(path),
    )


def stored_oos_threshold(model_dir: str | Path) -> float | None:
    """The out-of-scope threshold chosen on validation at training time, if any."""
    path = Path(model_dir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        choice = json.loads(path.read_text()).get("oos_threshold")
        return float(choice["threshold"]) if choice else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise ModelDirError(f"{path}: unreadable `oos_threshold` ({err})") from None


def _version(path: Path, config_bytes: bytes) -> str:
    """The registry's version if it wrote one, else `{dir name}-{8 hex}` over config + weight sizes.

    Weight *sizes* (not contents) keep this instant on multi-GB models; with config.json (label
    map, architecture) they change whenever a retrain or a different export lands in the dir.
    Symlinks are resolved so a registry alias such as `champion` names the real version.
    """
    version_file = path / VERSION_FILE
    if version_file.is_file():
        version = json.loads(version_file.read_text()).get("version")
        if version:
            return str(version)
    digest = hashlib.sha256(config_bytes)
    for weights in sorted(p for p in path.iterdir() if p.name.endswith(WEIGHT_SUFFIXES)):
        digest.update(f"{weights.name}:{weights.stat().st_size};".encode())
    return f"{path.resolve().name}-{digest.hexdigest()[:8]}"


def _max_length(path: Path) -> int:
    model = _read_yaml(path / "config.yaml").get("model") or {}
    return int(model.get("max_length") or DEFAULT_MAX_LENGTH)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return read_yaml_mapping(path, ModelDirError)


@dataclass(frozen=True)
class FewShotExamples:
    """`FEWSHOT_FILE`: per intent, a seeded sample of training texts (in the sampled order), and
    the dataset's intent descriptions; what the cascade's LLM prompt shows (`serving.llm.prompts`)."""

    per_intent: dict[str, list[str]]
    descriptions: dict[str, str]
    seed: int = 42
    source: str = ""  # the dataset they were drawn from

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "seed": self.seed,
            "descriptions": self.descriptions,
            "per_intent": self.per_intent,
        }


def read_fewshot(path: str | Path) -> FewShotExamples:
    """A few-shot examples file (a model directory's `FEWSHOT_FILE`, or one named in settings)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelDirError(f"few-shot examples file not found: {path}") from None
    except (OSError, ValueError) as err:
        raise ModelDirError(f"{path}: not a readable few-shot examples file ({err})") from None
    per_intent = data.get("per_intent") if isinstance(data, dict) else None
    if not isinstance(per_intent, dict) or not all(
        isinstance(texts, list) and all(isinstance(t, str) for t in texts) for texts in per_intent.values()
    ):
        raise ModelDirError(f"{path}: `per_intent` must map each intent to a list of texts")
    return FewShotExamples(
        per_intent={str(k): list(v) for k, v in per_intent.items()},
        descriptions={str(k): str(v) for k, v in (data.get("descriptions") or {}).items()},
        seed=int(data.get("seed", 42)),
        source=str(data.get("source", "")),
    )


@dataclass(frozen=True)
class Baseline:
    """`BASELINE_FILE`: what the model saw at training time, the reference of the router's drift
    signals. `label_prior`: each intent's share of the training split; `confidence_quantiles`:
    the 0th..100th percentiles of the top-1 probability on validation (ascending);
    `accuracy`: validation accuracy (None: unknown)."""

    label_prior: dict[str, float]
    confidence_quantiles: tuple[float, ...] = ()
    accuracy: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "label_prior": self.label_prior,
            "validation": {
                "accuracy": self.accuracy,
                "confidence_quantiles": list(self.confidence_quantiles),
            },
        }

    def share_below(self, threshold: float) -> float | None:
        """Validation's share of queries with top-1 under `threshold` (the empirical CDF,
        interpolated between percentiles); None without confidences."""
        q = self.confidence_quantiles
        if len(q) < 2:
            return None
        if threshold <= q[0]:
            return 0.0
        if threshold > q[-1]:
            return 1.0
        step = 1.0 / (len(q) - 1)
        for i in range(1, len(q)):
            if threshold <= q[i]:
                lo, hi = q[i - 1], q[i]
                frac = 1.0 if hi <= lo else (threshold - lo) / (hi - lo)
                return (i - 1 + frac) * step
        return 1.0  # pragma: no cover (threshold > q[-1] returned above)


def read_baseline(model_dir: str | Path) -> Baseline | None:
    """The model directory's `BASELINE_FILE`; None when absent (models exported before it)."""
    path = Path(model_dir) / BASELINE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelDirError(f"{path}: not a readable baseline file ({err})") from None
    prior = data.get("label_prior") if isinstance(data, dict) else None
    if not isinstance(prior, dict) or not all(isinstance(v, int | float) and v >= 0 for v in prior.values()):
        raise ModelDirError(f"{path}: `label_prior` must map each intent to a non-negative share")
    total = float(sum(prior.values()))
    validation = data.get("validation") or {}
    quantiles = sorted(float(x) for x in validation.get("confidence_quantiles") or ())
    accuracy = validation.get("accuracy")
    return Baseline(
        label_prior={str(k): float(v) / total for k, v in prior.items()} if total > 0 else {},
        confidence_quantiles=tuple(quantiles),
        accuracy=float(accuracy) if isinstance(accuracy, int | float) else None,
    )
