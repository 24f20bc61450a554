"""Promotion benchmark: do challengers earn promotion on live traffic, and are bad ones stopped?

Run:   python benchmarks/promotion.py [--dataset banking77] [--rate 30]
Smoke: python benchmarks/promotion.py --dataset data/sample --quick   (minutes; writes no docs)

Everything goes through the product, with a load generator running throughout:
1. A cold-start champion (`--seed-per-intent` labelled examples per intent) is trained, registered
   with `switchboard models register` (its line is snapshotted into the registry), and then the
   dataset directory is deleted.
2. `switchboard serve` on the registry (registry_poll_s 1, rollouts decided automatically). Traffic
   is the rest of the training data (never the test split); the reviewer labels `--labels` queries
   of the uncertainty queue.
3. `switchboard retrain` as the nightly job runs it (only the registry and the database, no
   dataset directory, HF_HUB_OFFLINE=1): the challenger passes the offline gate and goes to
   shadow (exit 12).
4. Rollout: traffic at `--rate` requests/s; the reviewer labels `--review-per-100` items per 100
   requests from the queue the flow uses (`shadow_disagreement`). The routers move the challenger
   to a canary and promote it on the evidence (router.promotion).
5. A corrupted challenger: the new champion with the answers of 20% of its intents shuffled
   (its classifier rows permuted among those intents: what training on labels shuffled among them
   teaches), registered and put in shadow by hand (the benchmark's switch past the offline gate).
   Goal: stopped in shadow, so no customer gets its answer.

Served accuracy per version over time is measured on the answers customers got (the true label of
each traffic text is known). Results: benchmarks/results/promotion.json, a timeline picture in
docs/images/promotion-timeline.png and the "Live promotion" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.loop_data import cli, load, per_intent, train_champion, write_dataset  # noqa: E402
from benchmarks.markdown import machine_info, machine_line, replace_section  # noqa: E402
from router.devserver import DevServer  # noqa: E402

TOKEN = "promotion-benchmark-admin-token"
RESULTS = REPO / "benchmarks" / "results" / "promotion.json"
PICTURE = REPO / "docs" / "images" / "promotion-timeline.png"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Traffic:
    """The load generator: `rate` single-query requests per second from a thread, each with a
    conversation id; records (time, version, right?) of every answer and every failure."""

    def __init__(self, base_url: str, texts: list[tuple[str, str]], rate: float, seed: int) -> None:
        self.base_url, self.texts, self.rate = base_url, texts, rate
        self.rng = random.Random(seed)
        self.answers: list[tuple[float, str, bool]] = []
        self.failed: list[tuple[float, str]] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.monotonic()

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                text, label = self.texts[self.rng.randrange(len(self.texts))]
                conversation = f"c{self.rng.randrange(10**9)}"
                try:
                    r = client.post(
                        "/v1/route", json={"text": text, "metadata": {"conversation_id": conversation}}
                    )
                    if r.status_code == 200:
                        body = r.json()
                        self.answers.append(
                            (time.monotonic() - self.t0, body["model_version"], body["intent"] == label)
                        )
                    else:
                        self.failed.append((time.monotonic() - self.t0, f"HTTP {r.status_code}"))
                except httpx.HTTPError as err:
                    self.failed.append((time.monotonic() - self.t0, type(err).__name__))
                self.sent += 1
                next_at += 1.0 / self.rate
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_at = time.monotonic()  # behind: do not burst to catch up


def reviewer(client: httpx.Client, truth: dict[str, str], strategy: str, n: int) -> int:
    """Label the newest `n` items of `strategy` with their true intents; how many were labelled."""
    r = client.get("/v1/review", params={"strategy": strategy, "limit": n}, headers=AUTH)
    r.raise_for_status()
    done = 0
    for item in r.json()["items"]:
        label = truth.get(item["text"])
        if label is None:
            continue
        fb = {"request_id": item["request_id"], "correct_intent": label, "source": "benchmark-reviewer"}
        client.post("/v1/feedback", json=fb).raise_for_status()
        done += 1
    return done


def rollout_status(client: httpx.Client) -> dict[str, Any]:
    r = client.get("/v1/admin/rollout", headers=AUTH)
    r.raise_for_status()
    return dict(r.json())


def drive_rollout(
    server: DevServer,
    traffic_rows: list[tuple[str, str]],
    truth: dict[str, str],
    args: argparse.Namespace,
    *,
    until_events: set[str],
    seed: int,
) -> dict[str, Any]:
    """Traffic + the reviewer until the rollout ends (an event in `until_events`) or time runs out."""
    base = server.ensure_running().base_url
    load = Traffic(base, traffic_rows, args.rate, seed).start()
    labelled = 0
    events: list[dict[str, Any]] = []
    seen = len(rollout_status(httpx.Client(base_url=base, timeout=30))["history"])
    memory: list[float] = []
    started = time.monotonic()
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            while time.monotonic() - started < args.max_minutes * 60:
                time.sleep(1.0)
                owed = load.sent * args.review_per_100 // 100 - labelled
                if owed > 0:
                    labelled += reviewer(client, truth, "shadow_disagreement", owed)
                status = rollout_status(client)
                for event in status["history"][seen:]:
                    event["t"] = round(time.monotonic() - load.t0, 1)
                    event["requests_sent"] = load.sent
                    event["labels"] = labelled
                    events.append(event)
                    what = f"{event['event']} {event.get('challenger')}"
                    print(f"  t={event['t']:.0f}s {what}: {event.get('reason')}")
                seen = len(status["history"])
                memory.append(server_memory_gib(server))
                if any(e["event"] in until_events for e in events):
                    time.sleep(3)  # answers of the new state
                    break
    finally:
        load.stop()
    return {
        "events": events,
        "labels": labelled,
        "requests": load.sent,
        "failed_requests": len(load.failed),
        "failures": load.failed[:20],
        "answers": load.answers,
        "seconds": round(time.monotonic() - started, 1),
        "peak_memory_gib": round(max(memory, default=0.0), 2),
    }


def server_memory_gib(server: DevServer) -> float:
    """Resident memory of the router and every process under it (vLLM engine cores)."""
    import psutil

    if server.proc is None:
        return 0.0
    try:
        root = psutil.Process(server.proc.pid)
        procs = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**30
    except psutil.Error:
        return 0.0


def corrupt(model: Path, out: Path, share: float, seed: int) -> dict[str, Any]:
    """A copy of `model` whose classifier rows are permuted among `share` of its intents."""
    from safetensors.torch import load_file, save_file

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(model, out, ignore=shutil.ignore_patterns("switchboard-version.json", "decision.*"))
    weights = out / "model.safetensors"
    tensors = load_file(str(weights))
    config = json.loads((out / "config.json").read_text())
    n = len(config["id2label"])
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(n), max(2, round(share * n))))
    moved = chosen[1:] + chosen[:1]  # each chosen intent answers as the next one
    for name in ("classifier.weight", "classifier.bias", "score.weight"):
        if name in tensors:
            t = tensors[name].clone()
            t[chosen] = tensors[name][moved]
            tensors[name] = t
    save_file(tensors, str(weights), metadata={"format": "pt"})
    return {"intents_shuffled": [config["id2label"][str(i)] for i in chosen]}


def timeline(answers: list[tuple[float, str, bool]], window_s: float) -> list[dict[str, Any]]:
    """Served accuracy per version in consecutive windows of `window_s` seconds."""
    buckets: dict[tuple[int, str], list[bool]] = {}
    for t, version, right in answers:
        buckets.setdefault((int(t // window_s), version), []).append(right)
    return [
        {"t": (k + 0.5) * window_s, "version": v, "n": len(r), "accuracy": sum(r) / len(r)}
        for (k, v), r in sorted(buckets.items())
    ]


def per_version(answers: list[tuple[float, str, bool]]) -> dict[str, dict[str, float]]:
    out: dict[str, list[bool]] = {}
    for _, version, right in answers:
        out.setdefault(version, []).append(right)
    return {v: {"answers": len(r), "accuracy": round(sum(r) / len(r), 4)} for v, r in out.items()}


def shadow_accuracy(database_url: str, truth: dict[str, str]) -> dict[str, dict[str, float]]:
    """Per version: how the answers it gave in shadow (nobody got them) would have scored."""
    from sqlalchemy import select

    from router.store import create_db_engine
    from router.store.models import requests, shadow_answers

    engine = create_db_engine(database_url)
    query = select(shadow_answers.c.model_version, shadow_answers.c.intent, requests.c.text).join(
        requests, requests.c.id == shadow_answers.c.request_id
    )
    scores: dict[str, list[bool]] = {}
    with engine.connect() as conn:
        for version, intent, text in conn.execute(query):
            if text in truth:
                scores.setdefault(version, []).append(intent == truth[text])
    engine.dispose()
    return {v: {"answers": len(s), "accuracy": round(sum(s) / len(s), 4)} for v, s in sorted(scores.items())}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    for ax, key, title in (
        (axes[0], "better", "Better challenger: shadow -> canary -> promoted"),
        (axes[1], "corrupted", "Corrupted challenger (20% of intents shuffled)"),
    ):
        run = result[key]
        for version in sorted({row["version"] for row in run["timeline"]}):
            rows = [row for row in run["timeline"] if row["version"] == version and row["n"] >= 5]
            ax.plot(
                [r["t"] for r in rows],
                [r["accuracy"] for r in rows],
                "o-",
                ms=3,
                label=f"served by {version}",
            )
        for event in run["events"]:
            ax.axvline(event["t"], color="grey", ls=":", lw=1)
            ax.text(event["t"], 0.52, f" {event['event']} ", rotation=90, va="bottom", ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("seconds of traffic")
        ax.set_ylim(0.5, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel(f"accuracy of answers served ({result['window_s']:.0f} s windows)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="banking77")
    parser.add_argument("--seed-per-intent", type=int, default=10)
    parser.add_argument("--labels", type=int, default=300, help="reviewed labels before the retrain")
    parser.add_argument("--rate", type=float, default=30.0, help="requests per second during rollouts")
    parser.add_argument("--review-per-100", type=int, default=2)
    parser.add_argument("--max-minutes", type=float, default=25.0, help="per rollout")
    parser.add_argument("--canary-min-answers", type=int, default=500)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "promotion")
    parser.add_argument("--train-override", action="append", default=[])
    parser.add_argument("--quick", action="store_true", help="smoke run: writes no results or docs")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="re-read the results and the run's store; redraw, rewrite docs",
    )
    args = parser.parse_args()
    if args.report_only:
        result = json.loads(RESULTS.read_text())
        result["shadow_served_would_have"] = shadow_accuracy(
            f"sqlite:///{args.work / 'store.db'}", load(args.dataset).truth
        )
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        plot(result, PICTURE)
        write_docs(result)
        return 0

    data = load(args.dataset)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    seed_rows, pool = per_intent(data.train, args.seed_per_intent, args.seed)
    traffic_rows = pool  # the rest of the training data; the test split stays out of this benchmark
    registry = work / "registry"
    database_url = f"sqlite:///{work / 'store.db'}"

    # 1. champion, registered with its line; then the dataset directory is gone
    if not (registry / "aliases.json").is_file():
        data_dir = write_dataset(work / "team-data", seed_rows, data.test, data.routes)
        champion = train_champion(data_dir, work / "champion", work / "train.log", args.train_override)
        rc, _ = cli(["models", "register", str(champion), "--alias", "champion", "-r", str(registry)], log)
        if rc != 0:
            raise SystemExit(f"register failed; see {log}")
        shutil.rmtree(data_dir)
        shutil.rmtree(work / "champion")
    env = {
        "SWITCHBOARD_REGISTRY_DIR": str(registry),
        "SWITCHBOARD_REGISTRY_POLL_S": "1",
        "SWITCHBOARD_ADMIN_TOKEN": TOKEN,
        "SWITCHBOARD_LOG_LEVEL": "warning",
        "SWITCHBOARD_REQUEST_TIMEOUT_S": "30",
        "SWITCHBOARD_CANARY_MIN_ANSWERS": str(args.canary_min_answers),
        "HF_HUB_OFFLINE": "1",
    }
    if args.quick:
        env["SWITCHBOARD_EAGER"] = "true"
    server = DevServer(None, database_url=database_url, log_path=work / "server.log", env=env)
    result: dict[str, Any] = {"dataset": data.name, "machine": machine_info(), "rate": args.rate}
    try:
        base = server.ensure_running().base_url
        with httpx.Client(base_url=base, timeout=120) as client:
            # 2. labels for the nightly retrain: the reviewer works the uncertainty queue
            result["memory_gib_champion_only"] = round(server_memory_gib(server), 2)
            texts = [t for t, _ in traffic_rows[: max(4 * args.labels, 1000)]]
            for start in range(0, len(texts), 64):
                client.post("/v1/route/batch", json={"texts": texts[start : start + 64]}).raise_for_status()
            labelled = 0
            while labelled < args.labels:
                got = reviewer(client, data.truth, "uncertainty", min(100, args.labels - labelled))
                if got == 0:
                    break
                labelled += got
        # 3. the nightly job's command: registry and database only, no dataset, no network
        job_env = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_DATA_DIR"}
        job_env.update(
            HF_HUB_OFFLINE="1", SWITCHBOARD_REGISTRY_DIR=str(registry), SWITCHBOARD_DATABASE_URL=database_url
        )
        started = time.perf_counter()
        with log.open("a") as fh:
            rc = subprocess.run(
                [sys.executable, "-m", "router.cli", "retrain", "--no-progress", "--feedback-weight", "1"],
                stdout=fh, stderr=subprocess.STDOUT, env=job_env, cwd=work,
            ).returncode  # fmt: skip
        retrain = {
            "exit_code": rc,
            "minutes": round((time.perf_counter() - started) / 60, 1),
            "labels": labelled,
        }
        decisions = sorted((registry / "versions").glob("v*/decision.json"))
        if decisions:
            decision = json.loads(decisions[-1].read_text())
            retrain.update(challenger=decision.get("challenger"), reason=decision.get("reason"))
        result["retrain"] = retrain
        print(f"retrain: exit {rc} in {retrain['minutes']} min: {retrain.get('reason')}")
        if rc != 12:
            raise SystemExit(f"the retrain did not put a challenger in shadow (exit {rc}); see {log}")

        # 4. the better challenger's rollout
        print("rollout of the retrained challenger ...")
        ended = {"promoted", "rolled_back", "rejected"}
        better = drive_rollout(server, traffic_rows, data.truth, args, until_events=ended, seed=1)
        # 5. a corrupted challenger, forced past the gate
        with httpx.Client(base_url=base, timeout=60) as client:
            status = rollout_status(client)
            if status["rollout"] is not None:  # undecided within --max-minutes: reported, then ended
                better["undecided"] = status["rollout"]
                client.post("/v1/admin/rollout/stop", json={"reason": "benchmark: time is up"}, headers=AUTH)
            champion_now = status["served_by_this_replica"]["champion"]
        corrupted_dir = work / "corrupted"
        shuffled = corrupt(registry / "versions" / champion_now, corrupted_dir, 0.2, args.seed)
        rc, _ = cli(["models", "register", str(corrupted_dir), "-r", str(registry)], log)
        version = sorted(p.name for p in (registry / "versions").glob("v*"))[-1]
        rc2, _ = cli(["models", "shadow", "start", version, "-r", str(registry)], log)
        if rc or rc2:
            raise SystemExit(f"registering the corrupted challenger failed; see {log}")
        print(f"rollout of the corrupted challenger {version} ...")
        bad = drive_rollout(server, traffic_rows, data.truth, args, until_events=ended, seed=2)
        bad.update(shuffled, version=version)
    finally:
        server.stop()

    window = 20.0
    for key, run in (("better", better), ("corrupted", bad)):
        run["timeline"] = timeline(run["answers"], window)
        run["served"] = per_version(run["answers"])
        del run["answers"]
        result[key] = run
    result["window_s"] = window
    bad_version = bad["version"]
    result["corrupted"]["customer_answers"] = bad["served"].get(bad_version, {}).get("answers", 0)
    result["shadow_served_would_have"] = shadow_accuracy(database_url, data.truth)
    out = RESULTS if not args.quick else work / "promotion.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, PICTURE if not args.quick else work / "promotion-timeline.png")
    if not args.quick:
        write_docs(result)
    print(json.dumps({k: result[k] for k in ("retrain",)}, indent=2))
    for key in ("better", "corrupted"):
        run = result[key]
        print(key, [(e["event"], e["t"], e["labels"], e["requests_sent"]) for e in run["events"]],
              "failed", run["failed_requests"], "served", run["served"])  # fmt: skip
    return 0


def write_docs(result: dict[str, Any]) -> None:
    better, bad = result["better"], result["corrupted"]

    def row(name: str, run: dict[str, Any]) -> list[str]:
        return [
            f"| {name} | {e['event']} | {e['t']:.0f} s | {e['requests_sent']:,} | {e['labels']} | "
            f"{e.get('reason', '')} |"
            for e in run["events"]
        ]

    served = lambda run: ", ".join(  # noqa: E731
        f"{v}: {s['accuracy']:.2%} of {s['answers']:,}" for v, s in sorted(run["served"].items())
    )
    body = "\n".join(
        [
            f"Command: `python benchmarks/promotion.py` ({result['dataset']}).",
            machine_line(result["machine"]),
            "",
            f"Traffic at {result['rate']:g} requests/s from a load thread throughout; the simulated reviewer "
            "labels 2 items per 100 requests from the `shadow_disagreement` queue; routers decide by "
            "themselves (`rollout_auto`). The challenger came from the nightly retrain command run on the "
            f"registry alone (exit {result['retrain']['exit_code']}, {result['retrain']['minutes']} min, "
            f"{result['retrain']['labels']} reviewed labels; the dataset directory was deleted first).",
            "",
            "| challenger | event | at | requests sent | labels | reason |",
            "| --- | --- | --- | --- | --- | --- |",
            *row("retrained", better),
            *row(f"corrupted ({bad['version']})", bad),
            "",
            f"- Served accuracy, better challenger's run: {served(better)}.",
            f"- Corrupted challenger: customers answered by it: **{bad['customer_answers']}**; served "
            f"{served(bad)}; intents shuffled: {', '.join(bad['intents_shuffled'])}.",
            "- Answers given in shadow, scored against the truth (nobody got them): "
            + ", ".join(
                f"{v}: {s['accuracy']:.2%} of {s['answers']:,}"
                for v, s in result.get("shadow_served_would_have", {}).items()
            )
            + f" ({bad['version']} is the corrupted one).",
            f"- Failed requests: {better['failed_requests']} and {bad['failed_requests']} "
            f"(of {better['requests']:,} and {bad['requests']:,}).",
            f"- Router + engines resident memory: {result['memory_gib_champion_only']} GiB with the champion "
            f"alone, peak {better['peak_memory_gib']} GiB with a challenger beside it.",
            "",
            *([f"- Load: {result['load_note']}"] if result.get("load_note") else []),
            "",
            "![promotion timeline](images/promotion-timeline.png)",
        ]
    )
    replace_section(
        REPO / "docs" / "BENCHMARKS.md", "promotion", "Live promotion (shadow, canary, rollback)", body
    )


if __name__ == "__main__":
    sys.exit(main())
