"""Open the engine a deployment asks for: in-process vLLM (`local`), a remote vLLM server
(`remote`), ONNX Runtime in-process (`onnx`), or the one `serving.engine_choice` picks (`auto`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from serving.engine import Engine
from serving.engine_choice import check_onnx_servable, choose_engine
from serving.label_scoring import is_generative
from serving.model_dir import read_model_info

log = logging.getLogger(__name__)

EngineKind = Literal["local", "remote", "onnx", "auto"]
ENGINE_KINDS: tuple[str, ...] = ("local", "remote", "onnx", "auto")


async def open_engine(
    model_dir: str | Path,
    *,
    kind: EngineKind = "local",
    url: str | None = None,
    dtype: str = "auto",
    eager: bool = False,
    timeout_s: float = 30.0,
    engine_overrides: dict[str, Any] | None = None,
    gpu_memory_utilization: float | None = None,
    served_model: str | None = None,
    onnx_threads: int = 0,
) -> Engine:
    """Open the engine for `model_dir`.

    local: loads the model into an in-process vLLM `AsyncLLM` (tens of seconds on CPU; run in a
    worker thread so the caller's event loop keeps serving). remote: `url` of a
    `vllm serve MODEL --runner pooling` server; the model dir is still read here for labels,
    max length and routes (only its config files are needed), and nothing is contacted until
    `ready()`/`classify()`. `timeout_s` bounds each `classify` call in both.
    `engine_overrides` are extra vLLM engine arguments for the local engine (e.g. `max_num_seqs`).
    `served_model`: remote only, the model name the server must serve (checked before the first
    classification answers; a different one is an `EngineError` naming both).
    `gpu_memory_utilization`: the local engine's share of GPU memory (default
    `serving.local.HOT_SWAP_GPU_SHARE`: champion, challenger and a hot swap fit).
    onnx: the model directory's ONNX export in an ONNX Runtime session on the CPU (well under a
    second; no torch or vLLM loaded) with `onnx_threads` intra-op threads (0: one fewer than the
    cores this process may use); a directory without one, and a generative model, are a
    `ModelDirError` naming the reason. auto: `local` or `onnx` by `serving.engine_choice`'s rule
    (logged); the engine's `kind` says which.
    """
    info = read_model_info(model_dir)
    if kind == "auto":
        choice = choose_engine(model_dir)
        log.info("--engine auto: %s for %s (%s)", choice.kind, info.version, choice.reason)
        kind = choice.kind
    if kind == "onnx":
        check_onnx_servable(model_dir)
        from serving.onnx_engine import OnnxEngine

        return await OnnxEngine.open(info, timeout_s=timeout_s, threads=onnx_threads)
    if kind == "local":
        from serving.local import LocalEngine

        share = {} if gpu_memory_utilization is None else {"gpu_memory_utilization": gpu_memory_utilization}
        engine_cls = LocalEngine
        if is_generative(model_dir):  # `objective: generate`: label probabilities from logprobs
            from serving.generative import GenerativeEngine

            engine_cls = GenerativeEngine
        return await engine_cls.open(
            info, dtype=dtype, eager=eager, timeout_s=timeout_s, overrides=engine_overrides, **share
        )
    if kind == "remote":
        if is_generative(model_dir):
            raise ValueError("a generative model is served in-process only (kind='local')")
        if not url:
            raise ValueError("the remote engine needs the vLLM server url")
        from serving.remote import RemoteEngine

        return RemoteEngine(info, url, timeout_s=timeout_s, served_model=served_model)
    raise ValueError(f"unknown engine kind {kind!r}; expected one of {', '.join(ENGINE_KINDS)}")
