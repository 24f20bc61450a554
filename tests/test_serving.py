"""The engine interface: model info from a directory, the in-process vLLM engine and a real
`vllm serve` behind the remote engine, on a MiniLM classifier trained here in a few steps.

vLLM engines take tens of seconds to start on CPU, so one local engine and one server are
shared per module; the close test runs last because it shuts the shared local engine down.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import prometheus_client
import psutil
import pytest
import support
import torch

from serving.engine import Engine, EngineError
from serving.factory import open_engine
from serving.model_dir import ModelDirError, read_model_info
from serving.remote import RemoteEngine

LABELS = ["billing", "cancel", "outage"]


# ---------------------------------------------------------------- fast: model info, remote errors


def _fake_model_dir(path: Path, *, weights: bytes = b"w" * 10, max_length: int | None = 48) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    # id2label keys out of order, as JSON may hold them
    id2label = {"2": "outage", "0": "billing", "1": "cancel"}
    (path / "config.json").write_text(json.dumps({"architectures": ["X"], "id2label": id2label}))
    (path / "model.safetensors").write_bytes(weights)
    if max_length is not None:
        (path / "config.yaml").write_text(f"model:\n  max_length: {max_length}\n")
    routes = "default_route: general\nfallback_route: human\nroutes:\n  billing: money\n"
    (path / "routes.yaml").write_text(routes + "  cancel: retention\n")
    return path


def test_read_model_info(tmp_path: Path) -> None:
    info = read_model_info(_fake_model_dir(tmp_path / "intent-v1"))
    assert info.labels == tuple(LABELS)
    assert info.max_length == 48
    assert info.routes == {"billing": "money", "cancel": "retention"}
    assert (info.default_route, info.fallback_route) == ("general", "human")
    name, digest = info.version.rsplit("-", 1)
    assert name == "intent-v1" and len(digest) == 8 and int(digest, 16) >= 0
    assert read_model_info(tmp_path / "intent-v1").version == info.version  # stable
    hash(info)  # usable as a dict key / in sets despite the routes dict


def test_version_follows_weights_and_config_and_registry_file(tmp_path: Path) -> None:
    base = read_model_info(_fake_model_dir(tmp_path / "m")).version
    (tmp_path / "m" / "model.safetensors").write_bytes(b"w" * 11)
    resized = read_model_info(tmp_path / "m").version
    assert resized != base
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["id2label"]["2"] = "outages"
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert read_model_info(tmp_path / "m").version not in {base, resized}
    (tmp_path / "m" / "switchboard-version.json").write_text(json.dumps({"version": "v7"}))
    assert read_model_info(tmp_path / "m").version == "v7"


def test_version_names_the_real_dir_behind_an_alias(tmp_path: Path) -> None:
    real = _fake_model_dir(tmp_path / "versions" / "v3")
    (tmp_path / "champion").symlink_to(real)
    assert read_model_info(tmp_path / "champion").version == read_model_info(real).version
    assert read_model_info(tmp_path / "champion").version.startswith("v3-")


def test_model_info_defaults_and_errors(tmp_path: Path) -> None:
    bare = _fake_model_dir(tmp_path / "bare", max_length=None)
    (bare / "routes.yaml").unlink()
    info = read_model_info(bare)
    assert info.max_length == 128 and info.routes == {} and info.fallback_route is None
    with pytest.raises(ModelDirError, match=r"no config\.json"):
        read_model_info(tmp_path / "missing")
    (tmp_path / "nolabels").mkdir()
    (tmp_path / "nolabels" / "config.json").write_text("{}")
    with pytest.raises(ModelDirError, match="id2label"):
        read_model_info(tmp_path / "nolabels")


def test_open_engine_rejects_bad_kinds(tmp_path: Path) -> None:
    model = _fake_model_dir(tmp_path / "m")
    with pytest.raises(ValueError, match="url"):
        asyncio.run(open_engine(model, kind="remote"))
    with pytest.raises(ValueError, match="unknown engine kind"):
        asyncio.run(open_engine(model, kind="gpu"))  # type: ignore[arg-type]


def test_auto_dtype_avoids_emulated_half_precision_on_cpu() -> None:
    from serving.offline import engine_kwargs, resolve_dtype

    assert resolve_dtype("float16") == "float16"  # an explicit choice is kept
    if not torch.cuda.is_available():
        assert resolve_dtype("auto") in {"float32", "bfloat16"}
        assert engine_kwargs("m")["dtype"] == resolve_dtype("auto")


def _mock_remote(tmp_path: Path, handler: Any, timeout_s: float = 5.0) -> RemoteEngine:
    info = read_model_info(_fake_model_dir(tmp_path / "m"))
    return RemoteEngine(
        info, "http://vllm.test:8000/", timeout_s=timeout_s, transport=httpx.MockTransport(handler)
    )


def test_remote_classify_protocol(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200)
        body = json.loads(request.content)
        seen.append(body)
        rows = [{"index": i, "probs": [0.0, 0.0, 0.0], "num_classes": 3} for i in range(len(body["input"]))]
        for i, row in enumerate(rows):
            row["probs"][i % 3] = 1.0
        return httpx.Response(200, json={"data": rows[::-1]})  # any order: placed by index

    async def go() -> None:
        engine = _mock_remote(tmp_path, handler)
        assert isinstance(engine, Engine)
        probs = await engine.classify(["a", "b", "c", "d"])
        assert probs.dtype == np.float32 and probs.shape == (4, 3)
        assert probs.argmax(axis=1).tolist() == [0, 1, 2, 0]
        assert (await engine.classify([])).shape == (0, 3)
        assert await engine.ready()
        await engine.close()

    asyncio.run(go())
    assert seen[0] == {
        "input": ["a", "b", "c", "d"],
        "truncate_prompt_tokens": 48,
        "use_activation": True,
    }


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            httpx.Response(400, json={"error": {"message": "too long, pal"}}),
            "HTTP 400: too long, pal",
        ),
        (httpx.Response(503, text="upstream gone"), "HTTP 503: upstream gone"),
        (httpx.Response(200, text="not json"), "invalid JSON"),
        (httpx.Response(200, json={"data": [{"index": 0, "probs": [0.5, 0.5]}]}), "unexpected"),
        (httpx.Response(200, json={"data": []}), "0 results for 1 texts"),
    ],
)
def test_remote_bad_answers_become_engine_errors(
    tmp_path: Path, response: httpx.Response, message: str
) -> None:
    engine = _mock_remote(tmp_path, lambda request: response)
    with pytest.raises(EngineError, match=message):
        asyncio.run(engine.classify(["hello"]))


def test_remote_timeout_becomes_engine_error(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    engine = _mock_remote(tmp_path, handler, timeout_s=0.5)
    with pytest.raises(EngineError, match=r"did not answer /classify within 0.5 s"):
        asyncio.run(engine.classify(["hello"]))


def test_remote_server_down(tmp_path: Path) -> None:
    info = read_model_info(_fake_model_dir(tmp_path / "m"))

    async def go() -> None:
        engine = RemoteEngine(info, f"http://127.0.0.1:{support.free_port()}", timeout_s=2)
        with pytest.raises(EngineError, match="unreachable"):
            await engine.classify(["hello"])
        assert not await engine.ready()
        await engine.close()
        with pytest.raises(EngineError):
            await engine.classify(["hello"])

    asyncio.run(go())


# ---------------------------------------------------------------- slow: real vLLM engines


def _test_texts(sample_dir: Path) -> list[str]:
    with open(sample_dir / "test.csv", newline="") as fh:
        return [row["text"] for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One loop for the module: an engine's asyncio machinery is bound to the loop it runs on."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def local_engine(minilm_model: Path, loop: asyncio.AbstractEventLoop) -> Iterator[Engine]:
    # fp32 on every host: in bf16 (auto on CPUs with native bf16) a row's probabilities move by
    # ~1e-2 with the batch it shares, which would blur what these tests compare
    engine = loop.run_until_complete(open_engine(minilm_model, dtype="float32", eager=True, timeout_s=60))
    yield engine
    loop.run_until_complete(engine.close())


@pytest.fixture(scope="module")
def hf_probs(minilm_model: Path, sample_dir: Path) -> np.ndarray:
    from training.modeling import load_classifier
    from training.predict import predict_proba

    model, tokenizer = load_classifier(minilm_model)
    return predict_proba(model, tokenizer, _test_texts(sample_dir), max_length=64, progress=False)


@pytest.fixture(scope="module")
def vllm_server(minilm_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `vllm serve` on the test model (pooling runner, softmax on)."""
    args = [
        "--runner", "pooling", "--pooler-config", '{"use_activation": true}', "--dtype", "float32",
        "--max-model-len", "128", "--gpu-memory-utilization", "0.3", "--enforce-eager", "--disable-log-stats",
    ]  # fmt: skip
    with support.vllm_server(minilm_model, args, tmp_path_factory.mktemp("vllm-serve") / "server.log") as url:
        yield url


@pytest.mark.slow
def test_local_engine_matches_transformers(
    local_engine: Engine, hf_probs: np.ndarray, sample_dir: Path, loop: asyncio.AbstractEventLoop
) -> None:
    info = local_engine.info
    assert info.labels == tuple(read_model_info(info.model_dir).labels) and info.max_length == 64
    probs = loop.run_until_complete(local_engine.classify(_test_texts(sample_dir)))
    assert probs.dtype == np.float32 and probs.shape == hf_probs.shape
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    agreement = (probs.argmax(axis=1) == hf_probs.argmax(axis=1)).mean()
    assert agreement >= 0.995, (agreement, np.abs(probs - hf_probs).max())
    assert loop.run_until_complete(local_engine.ready())
    assert loop.run_until_complete(local_engine.classify([])).shape == (0, len(info.labels))
    # vLLM's per-request Prometheus logging (global registry, never exported) is switched off
    assert not [m.name for m in prometheus_client.REGISTRY.collect() if m.name.startswith("vllm")]


@pytest.mark.slow
def test_local_engine_batches_concurrent_calls_in_order(
    local_engine: Engine, sample_dir: Path, loop: asyncio.AbstractEventLoop
) -> None:
    texts = _test_texts(sample_dir)
    queries = [texts[i % len(texts)] + f" ({i})" for i in range(100)]
    sizes: list[int] = []
    local_engine.batch_size_observer = sizes.append

    async def go() -> tuple[list[np.ndarray], np.ndarray]:
        singles = await asyncio.gather(*(local_engine.classify([q]) for q in queries))
        return singles, await local_engine.classify(queries)

    try:
        singles, batch = loop.run_until_complete(go())
    finally:
        local_engine.batch_size_observer = None
    assert all(s.shape == (1, len(local_engine.info.labels)) for s in singles)
    # each caller got its own text's answer, whichever engine step computed it
    np.testing.assert_allclose(np.concatenate(singles), batch, atol=2e-3)
    assert sum(sizes) == 200 and max(sizes) > 1, sizes  # vLLM batched across calls


@pytest.mark.slow
def test_local_engine_truncates_overlong_text(local_engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
    long_text = "my bill is wrong and " * 2000  # ~10k tokens, the engine's limit is 64
    probs = loop.run_until_complete(local_engine.classify([long_text, "no signal"]))
    assert probs.shape == (2, len(local_engine.info.labels)) and np.isfinite(probs).all()
    # truncation keeps the head of the text: same answer as its first 64 tokens
    head = loop.run_until_complete(local_engine.classify(["my bill is wrong and " * 13]))
    assert probs[0].argmax() == head[0].argmax()
    assert loop.run_until_complete(local_engine.ready())


@pytest.mark.slow
def test_local_engine_survives_a_failing_observer(
    local_engine: Engine, loop: asyncio.AbstractEventLoop
) -> None:
    def broken(n: int) -> None:
        raise RuntimeError("metrics backend down")

    local_engine.batch_size_observer = broken
    try:
        assert loop.run_until_complete(local_engine.classify(["refund please"])).shape[0] == 1
        assert loop.run_until_complete(local_engine.ready())
    finally:
        local_engine.batch_size_observer = None


@pytest.mark.slow
def test_remote_engine_matches_local(
    vllm_server: str,
    minilm_model: Path,
    local_engine: Engine,
    sample_dir: Path,
    loop: asyncio.AbstractEventLoop,
) -> None:
    texts = [*_test_texts(sample_dir), "my bill is wrong and " * 2000]  # + one to truncate

    async def go() -> tuple[np.ndarray, np.ndarray, list[np.ndarray], bool]:
        remote = await open_engine(minilm_model, kind="remote", url=vllm_server, timeout_s=30)
        try:
            ready = await remote.ready()
            together = await remote.classify(texts)
            apart = await asyncio.gather(*(remote.classify([t]) for t in texts[:20]))
        finally:
            await remote.close()
        return together, await local_engine.classify(texts), apart, ready

    together, local, apart, ready = loop.run_until_complete(go())
    assert ready
    assert together.shape == local.shape and together.dtype == np.float32
    np.testing.assert_allclose(together, local, atol=2e-3)
    np.testing.assert_allclose(np.concatenate(apart), together[:20], atol=2e-3)


def _engine_processes() -> list[psutil.Process]:
    """This process's descendants except multiprocessing's resource tracker (lives as long as
    the interpreter) and the `vllm serve` test server (its own session)."""
    own_session = os.getsid(0)
    found = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if "resource_tracker" in " ".join(proc.cmdline()):
                continue
            if os.getsid(proc.pid) != own_session:
                continue
            found.append(proc)
    return found


OFFLINE_SCRIPT = """
import sys, threading
from serving.offline import classify_texts, close_llm, open_llm

if __name__ == "__main__":
    llm = open_llm(sys.argv[1], max_model_len=72, dtype="float32", eager=True)
    probs = classify_texts(llm, ["my card has not arrived", "I was charged twice"], max_length=64)
    close_llm(llm)
    alive = [t.name for t in threading.enumerate() if t.name == "EngineCoreOutputQueueThread"]
    print(probs.shape, alive)
"""


@pytest.mark.slow
def test_offline_engine_closes_its_threads_and_exits_cleanly(minilm_model: Path, tmp_path: Path) -> None:
    """vLLM's shutdown() only signals its output thread; a thread still freeing tensors at
    interpreter exit aborted the process (exit 134) in most runs before close_llm joined it."""
    script = tmp_path / "offline_close.py"
    script.write_text(OFFLINE_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(minilm_model)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "(2, 10) []"


@pytest.mark.slow
def test_close_stops_engine_processes(local_engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
    """Runs last: it shuts down the module's shared local engine."""
    before = _engine_processes()
    assert before, "the local engine should run vLLM's EngineCore in a child process"
    llm = weakref.ref(local_engine._llm)  # type: ignore[attr-defined]
    loop.run_until_complete(local_engine.close())
    # released now, not at interpreter exit (where its __del__ fails noisily)
    assert llm() is None
    _, alive = psutil.wait_procs(before, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    assert not loop.run_until_complete(local_engine.ready())
    with pytest.raises(EngineError, match="closed"):
        loop.run_until_complete(local_engine.classify(["hello"]))
    loop.run_until_complete(local_engine.close())  # idempotent


def test_remote_engine_answers_only_when_it_serves_the_expected_version(tmp_path: Path) -> None:
    """A rollout's challenger server (or a champion server still rolling) must name the version."""
    served = {"id": "v0001"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [served]})
        return httpx.Response(200, json={"data": [{"index": 0, "probs": [1.0, 0.0, 0.0]}]})

    async def go() -> None:
        info = read_model_info(_fake_model_dir(tmp_path / "m"))
        engine = RemoteEngine(
            info, "http://vllm.test:8000", transport=httpx.MockTransport(handler), served_model="v0002"
        )
        with pytest.raises(EngineError, match="serves v0001, not v0002"):
            await engine.classify(["a"])
        served["id"] = "v0002"  # rolled
        assert (await engine.classify(["a"])).shape == (1, 3)
        await engine.close()

    asyncio.run(go())
