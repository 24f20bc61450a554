"""The engine interface the router talks to, the model facts it needs, and the factory.

Two implementations sit behind `Engine`: the in-process vLLM `AsyncLLM` (`serving.local`, the
default: vLLM batches concurrent requests continuously) and a remote `vllm serve --runner pooling`
reached over HTTP (`serving.remote`, for many replicas behind a load balancer). The router only
sees `classify`, `ready`, `close`, `info` and `batch_size_observer`, so it cannot tell them apart.

`ModelInfo` is read from the model directory itself (labels, max length, route map), never from
the engine, so both implementations report the same facts and tests can build one without vLLM.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import yaml

VERSION_FILE = "switchboard-version.json"  # written by the model registry; wins when present
DEFAULT_MAX_LENGTH = 128
WEIGHT_SUFFIXES = (".safetensors", ".bin")

BatchSizeObserver = Callable[[int], None]


class EngineError(RuntimeError):
    """The engine cannot answer: not loaded, shut down, remote unreachable, timed out.

    The message is meant for logs and operators; the router maps it to a 503 without details.
    """


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


@runtime_checkable
class Engine(Protocol):
    """What the router needs from an inference engine.

    `batch_size_observer`, when set, is called from the event loop with the number of requests
    in each engine step (local engine: vLLM's scheduler batches, across all concurrent
    `classify` calls). The remote engine cannot see the server's scheduler and never calls it.
    """

    info: ModelInfo
    batch_size_observer: BatchSizeObserver | None

    async def classify(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), len(info.labels)) float32 probabilities, rows in input order."""
        ...

    async def ready(self) -> bool:
        """True when the model is loaded and answers a probe classification; never raises."""
        ...

    async def close(self) -> None:
        """Release the engine (processes, connections); idempotent."""
        ...


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
    )


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
    data = yaml.safe_load(path.read_text())
    if data is not None and not isinstance(data, dict):
        raise ModelDirError(f"{path} must hold a mapping, not {type(data).__name__}")
    return data or {}


async def open_engine(
    model_dir: str | Path,
    *,
    kind: Literal["local", "remote"] = "local",
    url: str | None = None,
    dtype: str = "auto",
    eager: bool = False,
    timeout_s: float = 30.0,
    engine_overrides: dict[str, Any] | None = None,
) -> Engine:
    """Open the engine for `model_dir`.

    local: loads the model into an in-process vLLM `AsyncLLM` (tens of seconds on CPU; run in a
    worker thread so the caller's event loop keeps serving). remote: `url` of a
    `vllm serve MODEL --runner pooling` server; the model dir is still read here for labels,
    max length and routes (only its config files are needed), and nothing is contacted until
    `ready()`/`classify()`. `timeout_s` bounds each `classify` call in both.
    `engine_overrides` are extra vLLM engine arguments for the local engine (e.g. `max_num_seqs`).
    """
    info = read_model_info(model_dir)
    if kind == "local":
        from serving.local import LocalEngine

        return await LocalEngine.open(
            info, dtype=dtype, eager=eager, timeout_s=timeout_s, overrides=engine_overrides
        )
    if kind == "remote":
        if not url:
            raise ValueError("the remote engine needs the vLLM server url")
        from serving.remote import RemoteEngine

        return RemoteEngine(info, url, timeout_s=timeout_s)
    raise ValueError(f"unknown engine kind {kind!r}; expected 'local' or 'remote'")
