"""Shared fixtures and hooks: the sample dataset, a tiny random Llama with a locally trained
tokenizer, trained MiniLM routers, a `vllm serve` chat model. Helpers live in the `support` package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist, each worker and everything it starts (vLLM, routers, CLIs) gets its
    share of the cores, so two workers do not oversubscribe them: OpenMP's threads spin-wait, and
    two trainings side by side with two threads each took 90 s apart from 45 s with one (2 cores).
    vLLM binds its OpenMP threads itself, by default all of them to the same last core: each
    worker's vLLM gets its own. Before torch is imported (it reads OMP_NUM_THREADS once)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return
    from serving.hardware import available_cpus  # no torch import

    cpus = sorted(os.sched_getaffinity(0))
    share = max(1, available_cpus() // workers)  # affinity, bounded by a container's CPU quota
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    start = (index * share) % len(cpus)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, str(share))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, cpus[start : start + share])))


_share_the_cores_between_workers()

from support import (  # noqa: E402 (after the thread settings: these import torch)
    API_KEY,
    CHAT_TEMPLATE,
    SAMPLE,
    SERVED,
    SHARED_DATASETS,
    build_tiny_onnx_model,
    sample_texts,
    vllm_server,
)

from training.tiny_models import build_tiny_llama  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), sample_texts())


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny BERT classifier of the sample intents with its checked ONNX export."""
    return build_tiny_onnx_model(tmp_path_factory.mktemp("tiny-onnx") / "model")


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture()
def shared_datasets(monkeypatch: pytest.MonkeyPatch) -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"{SHARED_DATASETS} not present")
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(SHARED_DATASETS))
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def minilm_model(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    """A MiniLM classifier exported by the real entry point: linear-probe head + 4 full steps on
    the sample data, so its answers are confident enough for vLLM in half precision (on CPUs
    with native bf16) to agree with fp32 transformers."""
    from training.config import build_config
    from training.train import train

    out = tmp_path_factory.mktemp("minilm") / "minilm-sample"
    config = {
        "model": {"method": "full", "max_length": 64},
        "data": {"dataset": str(sample_dir)},
        "optim": {"max_steps": 4, "batch_size": 16, "head_init": "linear_probe"},
        "contrastive": {"mode": "never"},  # a served model, not the few-label recipe (test_contrastive)
        "output_dir": str(out),
    }
    train(build_config(config), progress=False)
    return out


@pytest.fixture(scope="session")
def router_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny exported MiniLM classifier for the sample dataset (4 steps: about 30 s)."""
    from training.config import build_config
    from training.train import train

    out = tmp_path_factory.mktemp("router-model") / "model"
    config = build_config(
        {
            "data": {"dataset": str(SAMPLE)},
            "optim": {"max_steps": 4, "head_init": "random"},
            "contrastive": {"mode": "never"},  # as above
            "output_dir": str(out),
        }
    )
    train(config, progress=False)
    return out


# ------------------------------------------------ an OpenAI-compatible chat server (`vllm serve`)


@pytest.fixture(scope="session")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`vllm serve` on a tiny random causal Llama with a chat template, behind --api-key, started
    once per session; yields the /v1 base URL. Structured outputs compact (no free whitespace): a
    random model would otherwise happily fill max_tokens with spaces inside the JSON."""
    import json

    model_dir = build_tiny_llama(tmp_path_factory.mktemp("tiny-chat"), sample_texts())
    config = json.loads((model_dir / "config.json").read_text())
    config["max_position_embeddings"] = 2048  # RoPE: any length works; the prompts need ~1k
    (model_dir / "config.json").write_text(json.dumps(config))
    template = model_dir / "chat_template.jinja"
    template.write_text(CHAT_TEMPLATE)
    args = [
        "--served-model-name", SERVED, "--api-key", API_KEY, "--chat-template", str(template),
        "--max-model-len", "2048", "--gpu-memory-utilization", "0.1", "--enforce-eager", "--seed", "0",
        "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}',
    ]  # fmt: skip
    with vllm_server(model_dir, args, model_dir / "server.log") as url:
        yield f"{url}/v1"
