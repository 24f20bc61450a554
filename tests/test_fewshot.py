"""The few-shot baseline: prompt, strict parsing, cache, prices; and the whole path against a REAL
OpenAI-compatible server (`vllm serve` on a tiny random causal Llama) started here.

What the server tests check is the protocol, not accuracy: a random model knows nothing, but with
the JSON-schema enum it can only name a real label; without it, its answers are invalid and must be
counted as such. The retry test uses a stub HTTP server because a real one cannot be asked to
answer 429/500 on cue.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from support import API_KEY, SERVED, free_port, served_requests
from typer.testing import CliRunner

from router.cli import app
from serving.llm.cache import CachedResponse, ResponseCache, request_key
from serving.llm.pricing import PriceError, TokenPrice, load_prices
from serving.llm.prompts import build_messages, parse_answer, response_format, system_prompt
from training.baselines.examples import per_class_examples
from training.baselines.fewshot import FewShotConfig, FewShotError, metrics_from_predictions, run_fewshot
from training.data import load_dataset

LABELS = ["card_arrival", "card_lost", "oos"]


# ---------------------------------------------------------------- prompt and parsing


def test_system_prompt_lists_every_intent_with_descriptions() -> None:
    text = system_prompt(LABELS, {"card_lost": "the card is lost or stolen"})
    assert "- card_arrival\n" in text
    assert "- card_lost: the card is lost or stolen" in text
    assert "- oos: out of scope" in text and 'answer "oos"' in text
    assert '{"intent": "<intent name>"}' in text
    assert "oos" not in system_prompt(["a", "b"], {})


def test_examples_are_chat_turns_answering_in_the_asked_format() -> None:
    messages = build_messages("sys", [("where is my card", "card_arrival")], "I lost it")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert json.loads(messages[2]["content"]) == {"intent": "card_arrival"}
    assert messages[-1]["content"] == "I lost it"


def test_per_class_examples_are_seeded_and_k_per_intent(sample_dir: Path) -> None:
    data = load_dataset(str(sample_dir))
    first = per_class_examples(data.train, 2, seed=7)
    assert first == per_class_examples(data.train, 2, seed=7)
    assert first != per_class_examples(data.train, 2, seed=8)
    counts: dict[str, int] = {}
    for text, label in first:
        counts[label] = counts.get(label, 0) + 1
        assert text in data.train.texts
    assert counts == {label: 2 for label in data.label_map.labels}


def test_response_format_is_a_strict_enum_of_the_labels() -> None:
    schema = response_format(LABELS)["json_schema"]
    assert schema["strict"] is True
    assert schema["schema"]["properties"]["intent"]["enum"] == LABELS
    assert schema["schema"]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"intent": "card_lost"}', "card_lost"),
        ('{ "intent" :\n"card_lost" }', "card_lost"),
        ('```json\n{"intent": "card_lost"}\n```', "card_lost"),
        ("card_lost", "card_lost"),
        ('"card_lost"', "card_lost"),
        ("CARD_LOST", "card_lost"),
        ("  oos \n", "oos"),
        ("card lost", None),  # no fuzzy matching
        ("I think it is card_lost", None),
        ('{"intent": "card_stolen"}', None),
        ('{"intent": "card_lost", "why": "..."}', None),
        ('{"label": "card_lost"}', None),
        ("[]", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_answer_is_strict(answer: str | None, expected: str | None) -> None:
    assert parse_answer(answer, LABELS) == expected


def test_invalid_answers_are_wrong_not_guessed() -> None:
    # gold: 0 0 1 2; answers: right, invalid, right, invalid
    metrics = metrics_from_predictions([0, 0, 1, 2], [0, None, 1, None], LABELS)
    assert metrics["accuracy"] == 0.5
    assert metrics["invalid"] == 2
    assert "<invalid>" not in metrics["per_intent"]
    assert metrics["per_intent"]["card_arrival"]["recall"] == 0.5
    assert metrics["per_intent"]["card_arrival"]["precision"] == 1.0  # no false positive made up
    assert metrics["per_intent"]["oos"]["f1"] == 0.0
    # macro over the three real intents only: (2/3 + 1 + 0) / 3
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    assert metrics["oos"]["recall"] == 0.0
    assert metrics["ece"] is None and len(metrics["confusion"]) == 3


# ---------------------------------------------------------------- cache and prices


def test_cache_key_covers_model_messages_and_format(tmp_path: Path) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"a": 1}}
    key = request_key(body)
    assert key == request_key(json.loads(json.dumps(body)))  # stable across a JSON round trip
    assert key != request_key({**body, "model": "n"})
    assert key != request_key({**body, "messages": [{"role": "user", "content": "hi!"}]})
    assert key != request_key({**body, "response_format": None})

    cache = ResponseCache(tmp_path / "cache")
    assert cache.get(key) is None
    response = CachedResponse('{"intent": "oos"}', "stop", 100, 5, 64, 0.25, "m-2024")
    cache.put(key, response, {"query": "hi"})
    assert cache.get(key) == response
    assert ResponseCache(None).get(key) is None  # no directory: no cache
    (tmp_path / "cache" / key[:2] / f"{key}.json").write_text("{torn")
    assert cache.get(key) is None  # unreadable entry: ask again


def test_price_table(tmp_path: Path) -> None:
    table = load_prices()
    mini = table.for_model("gpt-4o-mini")
    assert mini is not None and mini.input == 0.15 and mini.output == 0.60
    assert table.for_model("gpt-4o-mini-2024-07-18") == mini  # dated snapshot -> its family
    assert table.for_model("gpt-4o-2024-08-06") == table.for_model("gpt-4o") != mini
    assert table.for_model("llama-3") is None
    assert table.llm_read_on and table.default_hardware() is not None

    price = TokenPrice(input=2.0, output=10.0, cached_input=1.0)
    assert price.cost(1_000_000, 0) == 2.0
    assert price.cost(1_000_000, 100_000, cached_tokens=500_000) == pytest.approx(1.0 + 0.5 + 1.0)

    custom = tmp_path / "prices.yaml"
    custom.write_text("llm:\n  models:\n    m: {input: 1, output: 3}\n")
    assert load_prices(custom).for_model("m") == TokenPrice(1.0, 3.0)
    custom.write_text("llm:\n  models:\n    m: {input: -1, output: 3}\n")
    with pytest.raises(PriceError, match="non-negative"):
        load_prices(custom)
    with pytest.raises(PriceError, match="cannot read"):
        load_prices(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- errors without a server


def test_cli_missing_key_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch, sample_dir: Path) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = CliRunner().invoke(
        app, ["baseline", "fewshot", "--dataset", str(sample_dir), "--model", "gpt-4o-mini", "--no-cache"]
    )
    assert result.exit_code == 2, result.output
    assert "no API key" in result.output and "Traceback" not in result.output


def _config(base_url: str, cache: Path | None, **kw: Any) -> FewShotConfig:
    return FewShotConfig(
        model=SERVED, base_url=base_url, api_key=API_KEY, cache_dir=cache, **{"shots": 1, **kw}
    )


def test_server_down_is_a_clear_error(sample_dir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    data = load_dataset(str(sample_dir))
    with pytest.raises(FewShotError, match=r"cannot reach http://127\.0\.0\.1:\d+/v1"):
        run_fewshot(data, _config(url, None, max_retries=1), limit=3, progress=False)


class _Stub(BaseHTTPRequestHandler):
    """Answers with the statuses in `script` first, then valid completions; with `no_schema` it
    refuses `response_format` as a server without structured outputs does. Records requests."""

    script: ClassVar[list[int]] = []
    seen: ClassVar[list[dict[str, Any]]] = []
    no_schema: ClassVar[bool] = False

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        status = type(self).script.pop(0) if type(self).script else 200
        payload: dict[str, Any] = {"error": {"message": "busy", "type": "x"}}
        if type(self).no_schema and "response_format" in body:
            status = 400
            payload = {"error": {"message": "response_format json_schema is not supported", "type": "x"}}
        if status == 200:
            payload = {
                "id": "c", "object": "chat.completion", "created": 0, "model": "stub-2024",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": '{"intent": "no_signal"}'}}],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010},
            }  # fmt: skip
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("retry-after-ms", "10")
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def stub_server() -> Iterator[str]:
    _Stub.script, _Stub.seen, _Stub.no_schema = [], [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_without_structured_outputs_falls_back_to_parsing(sample_dir: Path, stub_server: str) -> None:
    _Stub.no_schema = True
    result = run_fewshot(load_dataset(str(sample_dir)), _config(stub_server, None), limit=3, progress=False)
    assert not result.structured and result.invalid == 0
    assert ["response_format" in body for body in _Stub.seen] == [True, False, False, False]


def test_retries_429_and_5xx_with_backoff(sample_dir: Path, tmp_path: Path, stub_server: str) -> None:
    _Stub.script = [429, 500]
    prices = tmp_path / "p.yaml"
    prices.write_text(f"llm:\n  models:\n    {SERVED}: {{input: 1.0, output: 2.0}}\n")
    result = run_fewshot(
        load_dataset(str(sample_dir)),
        _config(stub_server, None, structured="on", concurrency=1),
        prices=load_prices(prices),
        limit=2,
        progress=False,
    )
    assert len(_Stub.seen) == 4  # 429, 500, then two answers
    assert result.requests == 2 and result.invalid == 0 and result.served_model == "stub-2024"
    assert _Stub.seen[0]["response_format"]["json_schema"]["schema"]["properties"]["intent"]["enum"]
    assert result.cost_usd == pytest.approx(2 * (1000 * 1.0 + 10 * 2.0) / 1e6)


# ---------------------------------------------------------------- slow: a real `vllm serve`


@pytest.fixture()
def tiny_prices(tmp_path: Path) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(f"llm:\n  read_on: test\n  models:\n    {SERVED}: {{input: 2.0, output: 8.0}}\n")
    return path


@pytest.mark.slow
def test_constrained_answers_usage_cost_and_cache(
    chat_server: str, sample_dir: Path, tmp_path: Path, tiny_prices: Path
) -> None:
    data = load_dataset(str(sample_dir))
    prices = load_prices(tiny_prices)
    config = _config(chat_server, tmp_path / "cache", concurrency=4)
    before = served_requests(chat_server)

    first = run_fewshot(data, config, prices=prices, limit=12, progress=False)
    assert first.structured  # vLLM takes the JSON schema (auto-detected)
    assert first.invalid == 0 and all(p in data.label_map.labels for p in first.predictions)
    assert first.requests == 12 and first.cache_hits == 0
    assert served_requests(chat_server) - before == 12
    assert first.prompt_tokens > 12 * 100 and first.completion_tokens >= 12 * 5
    assert first.cost_usd == pytest.approx((first.prompt_tokens * 2.0 + first.completion_tokens * 8.0) / 1e6)
    assert first.spent_usd == pytest.approx(first.cost_usd)
    assert first.cost_per_million == pytest.approx(first.cost_usd / 12 * 1e6)
    assert 0 < first.latency_p50_s <= first.latency_p99_s and first.latency_source == "live"
    assert first.served_model == SERVED

    # a rerun sends no request, reproduces the answers, and still reports the original cost
    served = served_requests(chat_server)
    again = run_fewshot(data, config, prices=prices, limit=12, progress=False)
    assert served_requests(chat_server) == served
    assert again.requests == 0 and again.cache_hits == 12 and again.spent_usd == 0
    assert again.predictions == first.predictions and again.cost_usd == pytest.approx(first.cost_usd)
    assert again.latency_source == "cache" and again.metrics["accuracy"] == first.metrics["accuracy"]


@pytest.mark.slow
def test_nearest_examples_against_the_server(chat_server: str, sample_dir: Path) -> None:
    data = load_dataset(str(sample_dir))
    result = run_fewshot(
        data, _config(chat_server, None, selection="nearest", shots=3), limit=4, progress=False
    )
    assert result.invalid == 0 and result.requests == 4 and result.settings["shots"] == 3


@pytest.mark.slow
def test_unconstrained_answers_are_counted_invalid(chat_server: str, sample_dir: Path) -> None:
    """Without the schema a random model answers gibberish: counted invalid, scored wrong, and each
    invalid answer was asked once more (parse retry) before giving up."""
    data = load_dataset(str(sample_dir))
    result = run_fewshot(
        data, _config(chat_server, None, structured="off", max_tokens=12), limit=6, progress=False
    )
    assert not result.structured
    assert result.invalid == sum(p is None for p in result.predictions) > 0
    assert result.requests == 6 + result.invalid  # one parse retry per invalid answer
    assert result.metrics["accuracy"] <= (6 - result.invalid) / 6


@pytest.mark.slow
def test_bad_key_is_a_clear_error(chat_server: str, sample_dir: Path) -> None:
    data = load_dataset(str(sample_dir))
    config = _config(chat_server, None)
    config.api_key = "wrong"
    with pytest.raises(FewShotError, match=r"rejected the API key \(401\)"):
        run_fewshot(data, config, limit=2, progress=False)


@pytest.mark.slow
def test_cli_fewshot_and_bench_cascade(
    chat_server: str, sample_dir: Path, tmp_path: Path, tiny_prices: Path, minilm_model: Path
) -> None:
    """The real entry points: `baseline fewshot`, then `bench` with the tuned model, a classical
    baseline and the few-shot model (its answers now cached) -> report with a cascade sweep."""
    cache = str(tmp_path / "cache")
    common = ["--base-url", chat_server, "--api-key", API_KEY, "--shots", "1", "--limit", "20",
              "--cache-dir", cache, "--prices", str(tiny_prices), "--no-progress"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "router.cli", "baseline", "fewshot", "-d", str(sample_dir),
         "--model", SERVED, "--json", *common],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["requests"] == 20 and summary["invalid"] == 0

    served = served_requests(chat_server)
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "router.cli", "bench", "-d", str(sample_dir), "-o", str(out),
         "--model", str(minilm_model), "--engine", "transformers", "--classical", "tfidf",
         "--fewshot-model", SERVED, "--hardware-price-per-hour", "0.5", "--latency-samples", "5", *common],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert served_requests(chat_server) == served  # every few-shot answer came from the cache
    report = json.loads((out / "report.json").read_text())
    assert [s["kind"] for s in report["systems"]] == ["tuned", "classical", "fewshot"]
    assert all(s["metrics"]["n"] == 20 for s in report["systems"])
    (cascade,) = report["cascades"]
    assert cascade["points"][0]["escalated"] == 0.0  # threshold 0: the tuned model alone
    tuned = report["systems"][0]
    assert cascade["points"][0]["accuracy"] == tuned["metrics"]["accuracy"]
    assert cascade["best"]["accuracy"] >= tuned["metrics"]["accuracy"]
    costs = [p["cost_per_million"] for p in cascade["points"]]
    assert costs == sorted(costs)  # escalating more never costs less
    for picture in ("accuracy_vs_cost.png", "per_intent_f1.png"):
        assert (out / picture).read_bytes()[:4] == b"\x89PNG"
    markdown = (out / "report.md").read_text()
    assert "## Cascade" in markdown
    threshold = f"{cascade['cheapest_near_best']['threshold']:g}"  # what to copy into the router
    assert f"`escalation_model: {SERVED}`" in markdown and f"`escalation_threshold: {threshold}`" in markdown
