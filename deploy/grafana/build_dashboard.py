"""Write deploy/grafana/dashboards/switchboard.json, the Switchboard Grafana dashboard.

    python deploy/grafana/build_dashboard.py          # rewrite the JSON
    python deploy/grafana/build_dashboard.py --check  # exit 1 if the JSON is out of date

The panels read the recording rules of deploy/prometheus/rules/ (`switchboard:*`) and the router's
own series; tests/test_prometheus.py runs every panel's query against a real Prometheus scraping
a real router, and tests/test_monitoring.py checks the JSON is this script's output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "switchboard.json"
UID = "switchboard-router"
DS = {"type": "prometheus", "uid": "${datasource}"}
J = '{job=~"$job"}'  # every query is filtered by the dashboard's job variable
WIDTH = 24


class Layout:
    """Panels placed left to right in rows of 24 grid units."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_h = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1},
            }
        )
        self.y += 1

    def add(self, panel: dict[str, Any], w: int = 8, h: int = 8) -> None:
        if self.x + w > WIDTH:
            self._newline()
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_h
        self.x, self.row_h = 0, 0


def target(expr: str, legend: str = "", *, fmt: str | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto"}
    if fmt:
        t["format"] = fmt
    return t


def timeseries(
    title: str, targets: list[dict[str, Any]], unit: str = "short", description: str = "", **options: Any
) -> dict[str, Any]:
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    custom.update(options.pop("custom", {}))
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom, **options}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
    }


def stat(
    title: str, targets: list[dict[str, Any]], unit: str = "short", description: str = ""
) -> dict[str, Any]:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "textMode": "value_and_name"},
    }


def build() -> dict[str, Any]:
    lay = Layout()
    ratio = {"min": 0, "max": 1}

    lay.row("Traffic")
    lay.add(
        timeseries(
            "Requests per second",
            [target(f"sum by (endpoint) (switchboard:http_requests:rate5m{J})", "{{endpoint}}")],
            "reqps",
        )
    )
    lay.add(
        timeseries(
            "Requests by status",
            [target(f"sum by (status) (switchboard:http_requests:rate5m{J})", "{{status}}")],
            "reqps",
        )
    )
    lay.add(
        timeseries(
            "Errors and shed load",
            [
                target(f"switchboard:http_requests_errors:ratio_rate5m{J}", "5xx (not 503)"),
                target(f"switchboard:http_requests_shed:ratio_rate5m{J}", "429 / 503"),
            ],
            "percentunit",
            "Share of requests: server errors, and refusals (429 over max_in_flight, 503).",
        )
    )
    lay.add(timeseries("In flight", [target(f"switchboard_in_flight_requests{J}", "{{instance}}")]), w=12)
    lay.add(
        timeseries(
            "Ready replicas",
            [
                target(f"sum by (job) (switchboard_ready{J})", "ready"),
                target(f"sum by (job) (up{J})", "scraped"),
            ],
        ),
        w=12,
    )

    lay.row("Latency")
    lay.add(
        timeseries(
            "Latency p50 / p99 by endpoint",
            [
                target(f"switchboard:request_duration_seconds:p50_5m{J}", "p50 {{endpoint}}"),
                target(f"switchboard:request_duration_seconds:p99_5m{J}", "p99 {{endpoint}}"),
            ],
            "s",
        )
    )
    lay.add(
        timeseries(
            "Engine and router overhead p99",
            [
                target(f"switchboard:engine_duration_seconds:p99_5m{J}", "engine"),
                target(f"switchboard:router_overhead_seconds:p99_5m{J}", "router overhead"),
            ],
            "s",
        )
    )
    lay.add(
        timeseries(
            "Latency SLO: /v1/route over 250 ms",
            [
                target(f"switchboard:route_slow:ratio_rate5m{J}", "5m"),
                target(f"switchboard:route_slow:ratio_rate1h{J}", "1h"),
            ],
            "percentunit",
            "Share of /v1/route slower than the SLO's 250 ms; the budget is 1%.",
        )
    )
    lay.add(
        timeseries("Engine batch size p50", [target(f"switchboard:engine_batch_size:p50_5m{J}", "batch")]),
        w=12,
    )
    lay.add(
        timeseries(
            "Event-loop lag p99",
            [target(f"switchboard:event_loop_lag_seconds:p99_5m{J}", "{{instance}}")],
            "s",
            "How late a 0.1 s timer ran: time the event loop was blocked.",
        ),
        w=12,
    )

    lay.row("Routing")
    lay.add(
        timeseries(
            "Routes",
            [target(f"switchboard:routed_queries_by_route:rate5m{J}", "{{route}}")],
            "reqps",
            custom={"stacking": {"mode": "normal"}},
        )
    )
    lay.add(
        timeseries(
            "Fallbacks by reason",
            [target(f"switchboard:fallbacks:ratio_rate5m{J}", "{{reason}}")],
            "percentunit",
            "Share of routed queries sent to the fallback route.",
        )
    )
    lay.add(
        {
            "type": "heatmap",
            "title": "Confidence heatmap",
            "description": "Top-1 probability of routed queries over time.",
            "datasource": DS,
            "targets": [
                target(
                    f"sum by (le) (rate(switchboard_confidence_bucket{J}[$__rate_interval]))",
                    "{{le}}",
                    fmt="heatmap",
                )
            ],
            "options": {"calculate": False, "yAxis": {"unit": "percentunit"}, "color": {"scheme": "Oranges"}},
        }
    )
    lay.add(
        timeseries(
            "Queries by intent", [target(f"switchboard:intent_queries:rate5m{J}", "{{intent}}")], "reqps"
        ),
        w=12,
    )
    lay.add(
        timeseries(
            "Confidence p10 / p50",
            [
                target(f"switchboard:confidence:p10_5m{J}", "p10"),
                target(f"switchboard:confidence:p50_5m{J}", "p50"),
            ],
            "percentunit",
            **ratio,
        ),
        w=12,
    )

    lay.row("Quality and drift")
    lay.add(
        timeseries(
            "Live accuracy per model version",
            [
                target(f"max by (model_version) (switchboard_live_accuracy{J})", "live {{model_version}}"),
                target(
                    f"max by (model_version) (switchboard_live_accuracy_low{J})", "90% low {{model_version}}"
                ),
                target(
                    f"max by (model_version) (switchboard_live_accuracy_high{J})",
                    "90% high {{model_version}}",
                ),
                target(f"switchboard_expected_accuracy{J}", "validation {{instance}}"),
            ],
            "percentunit",
            "Accuracy on the labelled audit sample (a random share of requests) per model version, with "
            "its 90% interval, and the model's validation accuracy.",
            **ratio,
        )
    )
    lay.add(
        timeseries(
            "Reviewed agreement by intent",
            [target(f"switchboard:reviewed_agreement_by_intent:ratio_rate1h{J}", "{{intent}}")],
            "percentunit",
            "Agreeing / all feedback per predicted intent over the last hour, from every review queue "
            "(biased to hard texts: not live accuracy).",
            **ratio,
        )
    )
    lay.add(
        timeseries(
            "Feedback",
            [target(f"switchboard:feedback:rate1h{J} * 3600", "{{verdict}}")],
            "short",
            "Feedback per hour.",
        )
    )
    lay.add(
        timeseries(
            "Intent-mix drift",
            [
                target(f"switchboard_intent_mix_divergence{J}", "JS divergence {{instance}}"),
                target(f"switchboard_intent_mix_psi{J}", "PSI {{instance}}"),
            ],
            "short",
            "The drift window's top-intent mix against the training prior. Alert: JS over 0.1.",
        )
    )
    lay.add(
        timeseries(
            "Confidence drift",
            [
                target(f"switchboard_low_confidence_share{J}", "live under threshold {{instance}}"),
                target(f"switchboard_low_confidence_expected{J}", "validation under threshold {{instance}}"),
            ],
            "percentunit",
            "Share of queries under confidence_threshold: the drift window vs validation.",
            **ratio,
        )
    )
    lay.add(
        {
            "type": "barchart",
            "title": "Intent share vs training prior",
            "datasource": DS,
            "targets": [
                target(f"avg by (intent) (switchboard_intent_share{J})", "live", fmt="table"),
                target(f"avg by (intent) (switchboard_intent_prior{J})", "prior", fmt="table"),
            ],
            "transformations": [{"id": "merge", "options": {}}],
            "fieldConfig": {"defaults": {"unit": "percentunit"}, "overrides": []},
            "options": {"xField": "intent", "orientation": "horizontal"},
        }
    )

    lay.row("Escalations (cascade mode)")
    lay.add(
        timeseries(
            "Escalations",
            [
                target(f"switchboard:escalations:rate5m{J}", "{{outcome}}"),
                target(f"switchboard:escalations:ratio_rate5m{J}", "share of queries"),
            ],
            "short",
        )
    )
    lay.add(
        timeseries(
            "Escalation cost per hour",
            [
                target(f"switchboard:escalation_cost_dollars:rate1h{J} * 3600", "spend"),
                target(f"max by (job) (switchboard_escalation_budget_dollars_per_hour{J})", "budget"),
            ],
            "currencyUSD",
        )
    )
    lay.add(
        timeseries(
            "Escalation latency p99",
            [target(f"switchboard:escalation_duration_seconds:p99_5m{J}", "p99")],
            "s",
        )
    )

    lay.row("Request log")
    lay.add(
        timeseries(
            "Request log",
            [
                target(f"switchboard_request_log_backlog{J}", "backlog {{instance}}"),
                target(f"switchboard:request_log_rows:rate5m{J}", "rows written / s"),
            ],
        )
    )
    lay.add(
        timeseries(
            "Request log flush p99", [target(f"switchboard:request_log_flush_seconds:p99_5m{J}", "p99")], "s"
        )
    )
    lay.add(
        timeseries(
            "Spilled rows and write errors",
            [
                target(
                    f"sum by (reason) (increase(switchboard_request_log_spilled_total{J}[1h]))",
                    "spilled {{reason}}",
                ),
                target(f"sum (increase(switchboard_request_log_errors_total{J}[1h]))", "write errors"),
            ],
            "short",
            "Per hour. Spilled rows are in the server log as JSON, not in the database.",
        )
    )

    lay.row("Model")
    lay.add(
        {
            "type": "table",
            "title": "Model version",
            "datasource": DS,
            "targets": [target(f"switchboard_model_info{J} == 1", fmt="table")],
            "transformations": [
                {
                    "id": "organize",
                    "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True}},
                }
            ],
        },
        w=12,
    )
    lay.add(
        timeseries(
            "Model reloads",
            [target(f"sum by (outcome) (increase(switchboard_model_reloads_total{J}[1h]))", "{{outcome}}")],
            "short",
            "Hot swaps per hour: admin reload / rollback and the registry watcher.",
        ),
        w=12,
    )
    lay.row("Rollout (shadow, canary)")
    lay.add(
        {
            "type": "table",
            "title": "Rollout",
            "description": "The rollout every replica follows: stage, challenger, champion, canary share.",
            "datasource": DS,
            "targets": [
                target(
                    f"max by (stage, challenger, champion, share) (switchboard_rollout_info{J})", fmt="table"
                )
            ],
            "transformations": [
                {"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}},
            ],
        },
        w=8,
    )
    rate = "[$__rate_interval]"
    agree = 'switchboard_shadow_answers_total{job=~"$job", verdict="agree"}'
    lay.add(
        timeseries(
            "Shadow agreement and shed work",
            [
                target(
                    f"sum by (model_version) (rate({agree}{rate}))"
                    f" / sum by (model_version) (rate(switchboard_shadow_answers_total{J}{rate}))",
                    "agreement {{model_version}}",
                ),
                target(
                    f"sum(rate(switchboard_shadow_shed_total{J}{rate}))"
                    f" / sum(rate(switchboard_routed_queries_total{J}{rate}))",
                    "shed share",
                ),
            ],
            "percentunit",
            "How often the model in shadow agrees with the answer sent; the share of queries whose "
            "shadow work was shed.",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Engine failures by version",
            [target("switchboard:version_errors:ratio_rate10m" + J, "{{model_version}}")],
            "percentunit",
            "Engine failures and timeouts per query, by model version (a canary past 2% alerts).",
        ),
        w=8,
    )
    lay.row("Intent discovery")
    lay.add(
        timeseries(
            "Open discovery proposals",
            [target(f"max by (job) (switchboard_discovery_proposals_open{J})", "open")],
            "short",
            "Proposed intents waiting for a reviewer (GET /v1/discover), from the database.",
        )
    )
    lay.add(
        timeseries(
            "Unrouted share",
            [target(f"max by (job) (switchboard_unrouted_share{J})", "unrouted")],
            "percentunit",
            "Share of the latest discovery run's window that was not routed (fallbacks, out of "
            "scope); empty before the first run.",
            **ratio,
        )
    )
    last_run = stat(
        "Last discovery run",
        [target(f"max by (job) (switchboard_discovery_last_run_timestamp_seconds{J}) * 1000", "started")],
        "dateTimeFromNow",
        "When the latest `switchboard intents discover` run started (daily CronJob).",
    )
    last_run["fieldConfig"]["defaults"]["mappings"] = [
        {"type": "value", "options": {"0": {"text": "never", "index": 0}}}
    ]
    lay.add(last_run)
    return {
        "uid": UID,
        "title": "Switchboard router",
        "description": "Switchboard: traffic, latency, routing quality, drift (build_dashboard.py).",
        "tags": ["switchboard"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
                {
                    "name": "job",
                    "type": "query",
                    "label": "Job",
                    "datasource": DS,
                    "query": {"query": "label_values(switchboard_ready, job)", "refId": "job"},
                    "definition": "label_values(switchboard_ready, job)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "annotations": {"list": []},
        "panels": [{"id": i, **p} for i, p in enumerate(lay.panels, start=1)],
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.is_file() or OUT.read_text() != text:
            print(
                f"{OUT} is out of date: run python {Path(__file__).relative_to(Path.cwd())}", file=sys.stderr
            )
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
