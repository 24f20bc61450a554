"""The ONNX Runtime engine (serving.onnx_engine) on a tiny random BERT classifier exported by the
real pipeline: the same probabilities as the torch classifier (truncation included), request
batching under concurrency, timeouts and close, the factory's errors, and an install without
torch. The request batcher's policy is tested on its own with a recording `run`.
(The real MiniLM export: tests/test_onnx_minilm.py.)"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support import REPO, sample_texts, torch_probabilities

from serving.engine import Engine, EngineError
from serving.factory import open_engine
from serving.model_dir import ModelDirError, read_model_info
from serving.onnx_engine import OnnxEngine
from serving.onnx_model import ONNX_REPORT, read_onnx_report
from serving.request_batcher import RequestBatcher

LONG = " ".join(["my bill went up again and nobody could tell me why"] * 20)  # past max_length


def test_the_export_is_checked_and_reported(tiny_onnx: Path) -> None:
    report = read_onnx_report(tiny_onnx)
    assert report is not None and report["passed"]
    assert report["checks"]["fp32_vs_torch"]["agreement"] >= 0.995
    assert report["precision"] in {"fp32", "int8"} and (tiny_onnx / report["file"]).is_file()
    int8 = report["checks"]["int8_vs_fp32"]
    assert int8["passed"] == (report["precision"] == "int8")
    assert report["reason"]  # why this precision
    assert report["speed"]["onnx"]["qps"] > 0 and report["speed"]["cpu"]["cpus"] >= 1


def test_probabilities_match_the_torch_classifier(tiny_onnx: Path) -> None:
    texts = [*sample_texts()[:40], LONG, "?"]

    async def scenario() -> np.ndarray:
        engine = await open_engine(tiny_onnx, kind="onnx")
        try:
            assert isinstance(engine, Engine) and engine.kind == "onnx"  # type: ignore[attr-defined]
            return await engine.classify(texts)
        finally:
            await engine.close()

    served = asyncio.run(scenario())
    expected = torch_probabilities(tiny_onnx, texts)
    assert served.shape == expected.shape and served.dtype == np.float32
    assert np.allclose(served.sum(axis=1), 1.0, atol=1e-5)
    if read_onnx_report(tiny_onnx)["precision"] == "fp32":  # type: ignore[index]
        assert np.abs(served - expected).max() < 1e-4  # truncation of LONG included
    assert (served.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.95


ATOL = 5e-5  # batched vs alone: padding changes the float noise (seen: 1.3e-5; two texts: >= 1.2e-4)


def test_concurrent_calls_are_batched_and_answered_in_order(tiny_onnx: Path) -> None:
    texts = sample_texts()[:60]

    async def scenario() -> None:
        engine = await open_engine(tiny_onnx, kind="onnx")
        sizes: list[int] = []
        engine.batch_size_observer = sizes.append
        try:
            alone = [await engine.classify([t]) for t in texts[:5]]
            assert engine.batches == 5  # sequential calls: one batch each, nothing waits
            calls = [engine.classify([t]) for t in texts] + [engine.classify(texts[:3])]
            answers = await asyncio.gather(*calls)
            assert engine.batches - 5 < len(calls) / 2, "concurrent calls were not batched"
            assert sum(sizes) == 5 + len(texts) + 3 and max(sizes) <= 32
            # a text padded inside a batch differs from itself alone by float noise (~1e-5 here), so
            # "in order" is: each answer is nearest its own text's lone answer, nearer than any other's
            singles = np.concatenate([await engine.classify([t]) for t in texts])
            for i, (text, rows) in enumerate(zip(texts, answers, strict=False)):
                assert rows.shape == (1, len(engine.info.labels))
                gaps = np.abs(singles - rows).max(axis=1)
                others = [g for j, g in enumerate(gaps) if texts[j] != text]
                assert gaps[i] < ATOL and gaps[i] < min(others), (text, gaps[i], min(others))
            assert np.allclose(answers[-1][0], answers[0][0], atol=ATOL)
            assert all(np.allclose(a, b, atol=ATOL) for a, b in zip(alone, answers[:5], strict=True))
            assert await engine.ready()
        finally:
            await engine.close()
        assert not await engine.ready()
        with pytest.raises(EngineError, match="closed"):
            await engine.classify(["hello"])
        await engine.close()  # idempotent

    asyncio.run(scenario())


def test_the_engine_moves_to_a_new_event_loop(tiny_onnx: Path) -> None:
    engine = asyncio.run(OnnxEngine.open(read_model_info(tiny_onnx)))
    for _ in range(2):  # each asyncio.run is a new loop: the collector follows the engine there
        assert asyncio.run(engine.classify(["my bill"])).shape[0] == 1
    asyncio.run(engine.close())


# -- the batching policy -----------------------------------------------------------------------


class Recorder:
    """A `run` that records its batches; `gate` (when set) holds every run until released."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.delay_s = delay_s
        self.gate: threading.Event | None = None

    def __call__(self, texts: list[str]) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.delay_s)
        self.batches.append(list(texts))
        return np.asarray([[float(t.split()[-1]), 0.0] for t in texts], dtype=np.float32)


def test_batches_respect_the_size_and_keep_requests_whole() -> None:
    run = Recorder(delay_s=0.02)

    async def scenario() -> None:
        batcher = RequestBatcher(run, max_batch=8, max_wait_s=0.01)
        sizes: list[int] = []
        batcher.observer = sizes.append
        calls = [batcher.submit([f"t {i}", f"t {i + 0.5}"]) for i in range(20)] + [
            batcher.submit([f"big {i}" for i in range(12)])
        ]
        answers = await asyncio.gather(*calls)
        for i, rows in enumerate(answers[:20]):
            assert rows[:, 0].tolist() == [i, i + 0.5]
        assert answers[-1][:, 0].tolist() == list(range(12))
        assert sizes == [len(b) for b in run.batches]
        assert all(len(b) <= 8 for b in run.batches if not b[0].startswith("big"))
        assert [len(b) for b in run.batches if b[0].startswith("big")] == [12]  # alone, whole
        assert len(run.batches) < 21
        await batcher.close()

    asyncio.run(scenario())


def test_a_lone_request_waits_for_nobody() -> None:
    run = Recorder()

    async def scenario() -> None:
        batcher = RequestBatcher(run, max_batch=32, max_wait_s=0.5)
        started = time.perf_counter()
        for i in range(5):
            await batcher.submit([f"t {i}"])
        assert time.perf_counter() - started < 0.4
        # after a batch of many, the next batch waits (at most max_wait_s) for as many again
        run.gate = threading.Event()
        first = asyncio.ensure_future(batcher.submit(["t 0"]))  # runs alone, held at the gate
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(batcher.submit([f"t {i}"])) for i in range(1, 5)]
        await asyncio.sleep(0.05)
        run.gate.set()
        await asyncio.gather(first, *queued)
        assert [len(b) for b in run.batches[-2:]] == [1, 4]  # what queued meanwhile: one batch
        await batcher.close()

    asyncio.run(scenario())


def test_timeouts_failures_and_close() -> None:
    run = Recorder()
    run.gate = threading.Event()

    async def scenario() -> None:
        batcher = RequestBatcher(run, max_batch=4, name="test")
        slow = asyncio.ensure_future(batcher.submit(["t 1"]))  # held in the worker
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await batcher.submit(["t 2"])  # queued behind it; the caller gives up
        queued = asyncio.ensure_future(batcher.submit(["t 3"]))
        await asyncio.sleep(0.01)
        await batcher.close()
        for future in (slow, queued):
            with pytest.raises(EngineError, match="closed"):
                await future
        run.gate.set()
        with pytest.raises(EngineError, match="closed"):
            await batcher.submit(["t 4"])

    asyncio.run(scenario())

    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("boom")

    async def failing() -> None:
        batcher = RequestBatcher(broken, name="ONNX Runtime")
        with pytest.raises(EngineError, match="ONNX Runtime failed to classify: RuntimeError: boom"):
            await batcher.submit(["x"])
        await batcher.close()

    asyncio.run(failing())


def test_the_engine_times_out_with_an_engine_error(tiny_onnx: Path) -> None:
    async def scenario() -> None:
        engine = await OnnxEngine.open(read_model_info(tiny_onnx), timeout_s=0.05)
        gate = threading.Event()
        inner = engine._batcher._run

        def held(texts: list[str]) -> np.ndarray:
            gate.wait(5)
            return inner(texts)

        engine._batcher._run = held
        with pytest.raises(EngineError, match=r"did not answer within 0.05 s"):
            await engine.classify(["my bill"])
        gate.set()
        await engine.close()

    asyncio.run(scenario())


# -- the factory: what cannot be served on ONNX Runtime is named -------------------------------


def test_onnx_refuses_what_it_cannot_serve(tiny_onnx: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(tiny_onnx, plain, ignore=shutil.ignore_patterns("*.onnx", ONNX_REPORT))
    with pytest.raises(ModelDirError, match=r"has no ONNX export .*switchboard models export-onnx"):
        asyncio.run(open_engine(plain, kind="onnx"))

    failed = tmp_path / "failed"
    shutil.copytree(tiny_onnx, failed)
    report = json.loads((failed / ONNX_REPORT).read_text())
    report.update(passed=False, reason="fp32 ONNX agrees with torch on 91.00% of 100 texts, under 99.5%")
    (failed / ONNX_REPORT).write_text(json.dumps(report))
    with pytest.raises(ModelDirError, match=r"not served: fp32 ONNX agrees with torch on 91.00%"):
        asyncio.run(open_engine(failed, kind="onnx"))

    generative = tmp_path / "generative"
    shutil.copytree(tiny_onnx, generative)
    (generative / "generative.json").write_text("{}")
    with pytest.raises(ModelDirError, match="the generative objective is served by vLLM"):
        asyncio.run(open_engine(generative, kind="onnx"))

    with pytest.raises(ValueError, match="expected one of local, remote, onnx, auto"):
        asyncio.run(open_engine(tiny_onnx, kind="tpu"))  # type: ignore[arg-type]


def test_auto_opens_onnx_where_vllm_is_not_installed(
    tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serving.engine_choice as choice

    monkeypatch.setattr(choice, "vllm_installed", lambda: False)

    async def scenario() -> str:
        engine = await open_engine(tiny_onnx, kind="auto")
        await engine.close()
        return str(engine.kind)  # type: ignore[attr-defined]

    assert asyncio.run(scenario()) == "onnx"


def test_the_engine_runs_without_torch_transformers_or_vllm(tiny_onnx: Path) -> None:
    """What a `serve,onnx` install has: the engine and the router's app import and answer."""
    code = f"""
import sys
for name in ("torch", "transformers", "vllm", "sklearn", "datasets", "peft"):
    sys.modules[name] = None  # an import of any of them fails
import asyncio
import router.app, router.cli
from serving.factory import open_engine

async def main():
    engine = await open_engine({str(tiny_onnx)!r}, kind="onnx")
    probs = await engine.classify(["my bill is too high", "no signal"])
    await engine.close()
    print(probs.shape)

asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith("(2, ")
