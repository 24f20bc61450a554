"""A real Prometheus scraping a real router (slow): `switchboard serve` on the tiny MiniLM model and
a `prometheus` process with the shipped config and rule files, intervals shortened for the test
(scrape and evaluation every second, every alert's `for:` one second; nothing else changed).
Traffic and feedback go to the router; the checks read Prometheus' HTTP API: every recording rule
has a value, every Grafana panel's query answers with data, the live-accuracy alert fires when
disagreeing feedback arrives and resolves when agreeing feedback follows, and the confidence-drift
alert fires on a burst of queries less confident than validation's."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support.servers import ONNX_ENGINE, Server

from router.devserver import DevServerError, free_port, wait_http
from serving.model_dir import BASELINE_FILE

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "switchboard.json"
PROMETHEUS = shutil.which("prometheus")
FOR = re.compile(r"^(\s+for:) \S+$", re.MULTILINE)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None, reason="prometheus not installed (Debian/Ubuntu: apt-get install prometheus)"
    ),
]


def fast_config(target: str, out: Path) -> Path:
    """The shipped prometheus.yml and rule files in `out`: intervals 1 s, `for:` 1 s, the router
    as the target; asserts nothing else differs."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    job["scrape_timeout"] = "1s"
    (out / "rules").mkdir(parents=True)
    for name in config["rule_files"]:
        shipped = (PROMETHEUS_DIR / name).read_text()
        fast = FOR.sub(r"\1 1s", shipped)
        assert [a for a in shipped.splitlines() if a not in fast.splitlines()] == [
            line for line in shipped.splitlines() if FOR.match(line)
        ]
        (out / name).write_text(fast)
    path = out / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def prometheus(config: Path, out: Path) -> Iterator[str]:
    assert PROMETHEUS is not None
    port = free_port()
    log_path = out / "prometheus.log"
    cmd = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={out / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=out)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(f"{url}/-/ready", 60, proc=proc)
        except DevServerError as err:
            raise AssertionError(f"prometheus: {err}\n{log_path.read_text()[-3000:]}") from None
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Prom:
    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=10)

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.client.get("/api/v1/query", params={"query": expr}).json()
        assert body["status"] == "success", f"{expr}: {body}"
        return list(body["data"]["result"])

    def alerts(self, name: str, state: str = "firing") -> list[dict[str, Any]]:
        body = self.client.get("/api/v1/alerts").json()
        return [a for a in body["data"]["alerts"] if a["labels"]["alertname"] == name and a["state"] == state]

    def wait(self, what: str, check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = check()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for: {what}"
            time.sleep(0.5)


def route(client: httpx.Client, texts: list[str]) -> list[dict[str, Any]]:
    response = client.post("/v1/route/batch", json={"texts": texts})
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def feedback(client: httpx.Client, results: list[dict[str, Any]], labels: list[str], agree: bool) -> None:
    for r in results:
        other = next(label for label in labels if label != r["intent"])
        correct = r["intent"] if agree else other
        response = client.post(
            "/v1/feedback", json={"request_id": r["request_id"], "correct_intent": correct}
        )
        assert response.status_code == 201, response.text


# Rules and panels with data only during a live rollout (or after engine failures): their
# expressions are checked by promtool's unit tests (deploy/prometheus/tests/rollout.yaml) and the
# metric names by tests/test_monitoring.py
ROLLOUT_ONLY_RULES = {"switchboard:canary_live_accuracy_high", "switchboard:version_errors:ratio_rate10m"}
ROLLOUT_ONLY_PANELS = {"Rollout", "Shadow agreement and shed work", "Engine failures by version"}


def panel_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def recording_rules() -> list[str]:
    return [
        rule["record"]
        for path in sorted((PROMETHEUS_DIR / "rules").glob("*.yaml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    ]


@pytest.mark.timeout(900)
def test_real_prometheus_scrapes_records_and_alerts(router_model: Path, tmp_path: Path) -> None:
    # the model with a baseline whose validation was confident (every top-1 at 0.99): the tiny
    # model's unsure answers are then a confidence drift
    model = tmp_path / "model"
    shutil.copytree(router_model, model)
    baseline = json.loads((model / BASELINE_FILE).read_text())
    labels = list(baseline["label_prior"])
    baseline["validation"]["confidence_quantiles"] = [0.99] * 101
    (model / BASELINE_FILE).write_text(json.dumps(baseline))
    server = Server(
        model,
        f"sqlite:///{tmp_path / 'log.db'}",
        tmp_path / "server",
        extra_env={
            "SWITCHBOARD_CONFIDENCE_THRESHOLD": "0.5",  # the 4-step model is under it: all unsure
            "SWITCHBOARD_DRIFT_WINDOW": "20",
            "SWITCHBOARD_ACCURACY_WINDOW": "50",  # the alert needs 50 labelled audit items
            "SWITCHBOARD_AUDIT_RATE": "1",  # every request in the audit sample: each label counts
            "SWITCHBOARD_LIVE_ACCURACY_REFRESH_S": "0.5",
            "SWITCHBOARD_LOG_FLUSH_INTERVAL_S": "0.01",
            **ONNX_ENGINE,  # the metrics are under test, not the engine
        },
    )
    server.start()
    try:
        config = fast_config(f"127.0.0.1:{server.port}", tmp_path / "prometheus")
        with (
            prometheus(config, tmp_path / "prometheus") as url,
            httpx.Client(base_url=server.base_url, timeout=30) as client,
        ):
            prom = Prom(url)
            prom.wait("the router scraped", lambda: prom.query('up{job="switchboard"} == 1'))
            texts = [f"why is my bill so high, case {i}" for i in range(30)] + [
                f"my phone has no signal at home {i}" for i in range(30)
            ]
            results = route(client, texts[:30]) + route(client, texts[30:])
            for text in texts[:5]:  # /v1/route too: the latency SLO rules read it
                assert client.post("/v1/route", json={"text": text}).status_code == 200
            feedback(client, results[:50], labels, agree=True)
            prom.wait(
                "live accuracy recorded at 1.0", lambda: prom.query("switchboard:live_accuracy:sampled == 1")
            )
            time.sleep(3)  # a few evaluations at 1.0 in the day average

            # every recording rule has a value
            rules = [name for name in recording_rules() if name not in ROLLOUT_ONLY_RULES]
            missing = {name for name in rules if not prom.query(name)}
            if missing:  # rates need two scrapes of the traffic: give them a little more time
                time.sleep(5)
                missing = {name for name in rules if not prom.query(name)}
            assert missing == set()

            # every panel's query runs and returns data
            empty = []
            for title, expr in panel_queries():
                if title in ROLLOUT_ONLY_PANELS:
                    continue
                concrete = expr.replace("$job", "switchboard").replace("$__rate_interval", "1m")
                if not prom.query(concrete):
                    empty.append((title, concrete))
            assert empty == []

            # unsure queries over a full window, validation was sure: confidence drift fires
            prom.wait("confidence drift firing", lambda: prom.alerts("SwitchboardConfidenceDrift"))

            # disagreeing feedback: live accuracy falls to 0 and the alert fires...
            assert not prom.alerts("SwitchboardLiveAccuracyFalling", "pending")
            assert not prom.alerts("SwitchboardLiveAccuracyFalling")
            more = route(client, texts[:50])
            feedback(client, more, labels, agree=False)
            fired = prom.wait(
                "live accuracy alert firing", lambda: prom.alerts("SwitchboardLiveAccuracyFalling")
            )
            assert fired[0]["labels"]["model_version"] == results[0]["model_version"]
            assert fired[0]["annotations"]["runbook_url"].endswith("#switchboardliveaccuracyfalling")
            # ...and agreeing feedback brings it back: the alert resolves
            again = route(client, texts[:50])
            feedback(client, again, labels, agree=True)
            prom.wait(
                "live accuracy alert resolved",
                lambda: (
                    not prom.alerts("SwitchboardLiveAccuracyFalling")
                    and not prom.alerts("SwitchboardLiveAccuracyFalling", "pending")
                ),
            )
            prom.wait(
                "live accuracy back at 1.0", lambda: prom.query("switchboard:live_accuracy:sampled == 1")
            )
            # nothing that should stay quiet fired
            for quiet in ("SwitchboardRouterDown", "SwitchboardNotReady", "SwitchboardErrorRate",
                          "SwitchboardRequestLogSpilled", "SwitchboardModelReloadFailed"):  # fmt: skip
                assert not prom.alerts(quiet), quiet
    finally:
        server.stop()
