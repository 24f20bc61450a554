"""The shipped monitoring files (deploy/prometheus, deploy/grafana): promtool checks the config
and rules and runs the unit tests of every alert; every alert has a runbook section and a firing
test case; every router series the rules and the dashboard name is one the router exports.
The real Prometheus scraping a real router is tests/test_prometheus.py (slow)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.fakes import Scrape, make_settings, run, serving

from router import live_accuracy
from serving.rollout import Rollout

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = sorted((PROMETHEUS / "rules").glob("*.yaml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yaml"))
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "switchboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian/Ubuntu: apt-get install prometheus; .ci/run does)",
)
SERIES = re.compile(r"\bswitchboard_[a-z0-9_]+")
RECORDED = re.compile(r"\bswitchboard:[a-z0-9_]+:[a-z0-9_]+")


def alerts() -> dict[str, dict[str, Any]]:
    return {
        rule["alert"]: rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def recorded() -> set[str]:
    return {
        rule["record"]
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=REPO)


@needs_promtool
def test_promtool_accepts_the_config_and_rules() -> None:
    result = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    result = promtool("check", "rules", *map(str, RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def rule_files_under_deploy() -> tuple[list[Path], list[Path]]:
    """Every Prometheus rule file under deploy/ (a top-level `groups` list of rule groups), and
    every manifest holding a PrometheusRule (the Operator hands its spec to Prometheus as one)."""
    plain, operator = [], []
    for path in sorted(p for p in (REPO / "deploy").rglob("*") if p.suffix in {".yaml", ".yml"}):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict):
                continue
            if doc.get("kind") == "PrometheusRule":
                operator.append(path)
            elif isinstance(doc.get("groups"), list) and all(
                isinstance(g, dict) and "rules" in g for g in doc["groups"]
            ):
                plain.append(path)
    return plain, operator


def test_ci_runs_promtool_check_rules_on_every_rule_file_under_deploy() -> None:
    """CI (.ci/run) runs `make monitoring-check`, whose `promtool check rules` lines cover every
    rule file under deploy/: by their globs, and the PrometheusRule through the spec its builder
    writes (tests/test_deploy_kubernetes.py checks the manifest is that builder's output)."""
    assert re.search(r"^make monitoring-check$", (REPO / ".ci" / "run").read_text(), re.M)
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^monitoring-check:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "no monitoring-check target"
    lines = [line.strip() for line in recipe[1].splitlines()]
    checked = [arg for line in lines if line.startswith("promtool check rules ") for arg in line.split()[3:]]
    globbed = {p.resolve() for arg in checked if "$" not in arg for p in REPO.glob(arg)}
    plain, operator = rule_files_under_deploy()
    assert plain, "no rule file found: the search is broken"
    assert {p.resolve() for p in plain} <= globbed, sorted(set(map(str, plain)) - set(map(str, globbed)))
    builds = [line for line in lines if "build_prometheusrule.py --spec " in line]
    for path in operator:
        assert path == REPO / "deploy" / "kubernetes" / "prometheusrule.yaml", path  # the builder's OUT
        assert builds, "the PrometheusRule's spec is never checked"
        spec = builds[0].split("--spec ", 1)[1].split()[0]
        assert spec in checked, f"{spec} is written but not checked"
    if PROMTOOL is not None:  # and they pass, wherever they are
        result = promtool("check", "rules", *map(str, plain))
        assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_every_alert_has_a_firing_unit_test_a_runbook_and_a_severity() -> None:
    fired: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            fired |= {t["alertname"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    runbook = (PROMETHEUS / "RUNBOOK.md").read_text()
    sections = {line[3:].strip().lower() for line in runbook.splitlines() if line.startswith("## ")}
    assert set(alerts()) <= fired, f"alerts without a firing test: {set(alerts()) - fired}"
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor == name.lower() and anchor in sections, f"{name}: no runbook section {anchor}"
    expected = {
        "SwitchboardRouterDown", "SwitchboardNotReady", "SwitchboardErrorRate",
        "SwitchboardRequestsShed", "SwitchboardLatencySLOBurn", "SwitchboardEventLoopLag",
        "SwitchboardRequestLogBacklog", "SwitchboardRequestLogSpilled",
        "SwitchboardFallbackRateRising", "SwitchboardLiveAccuracyFalling",
        "SwitchboardIntentMixDrift", "SwitchboardConfidenceDrift",
        "SwitchboardEscalationCostOverBudget", "SwitchboardModelReloadFailed", "SwitchboardCanaryWorse",
        "SwitchboardDiscoveryStale",
    }  # fmt: skip
    assert set(alerts()) == expected


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def test_rules_and_dashboard_name_only_series_the_router_exports(tmp_path: Path) -> None:
    """A typo in a metric name would make a rule or panel silently empty: every `switchboard_*`
    name in them must be in the router's /metrics, every `switchboard:*` one a recording rule."""

    async def scrape() -> Scrape:
        async with serving(make_settings(tmp_path, audit_rate=1.0)) as client:
            routed = await client.post("/v1/route", json={"text": "my bill"})
            feedback = {"request_id": routed.json()["request_id"], "correct_intent": "no_signal"}
            assert (await client.post("/v1/feedback", json=feedback)).status_code == 201
            rt = client.app.state.runtime  # type: ignore[attr-defined]
            await live_accuracy.refresh(rt)
            # series that exist only during a rollout (tests/test_rollout.py drives a real one)
            rt.metrics.set_rollout(Rollout("canary", "v0003", "v0002", 0.1))
            rt.metrics.version_errors.labels("v0003").inc()
            rt.metrics.shadow_answers.labels("v0003", "agree").inc()
            return Scrape((await client.get("/metrics")).text)

    exported = {s.name for s in run(scrape()).samples}
    texts = [path.read_text() for path in RULES] + dashboard_queries()
    named = {name for text in texts for name in SERIES.findall(text)}
    assert named - exported == set()
    used = {name for text in texts for name in RECORDED.findall(text)}
    assert used - recorded() == set()


def test_dashboard_has_the_panels_the_operators_need() -> None:
    board = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in board["panels"]}
    for needed in (
        "Requests by status", "Latency p50 / p99 by endpoint", "Routes", "Fallbacks by reason",
        "Confidence heatmap", "Live accuracy per model version", "Reviewed agreement by intent",
        "Intent-mix drift",
        "Confidence drift", "Feedback", "Escalations", "Request log", "Model version",
        "Model reloads", "Event-loop lag p99", "Open discovery proposals", "Unrouted share",
        "Last discovery run",
    ):  # fmt: skip
        assert needed in titles, needed
    assert all(p.get("targets") for p in board["panels"] if p["type"] != "row")
    provisioning = REPO / "deploy" / "grafana" / "provisioning"
    assert yaml.safe_load((provisioning / "dashboards" / "switchboard.yaml").read_text())["providers"]
    assert yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]


def test_dashboard_json_is_the_generator_output() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "grafana" / "build_dashboard.py"), "--check"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
