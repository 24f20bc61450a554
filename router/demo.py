"""`make demo`: the product end to end on a CPU in a few minutes; every step is the real thing.

1. Train the sample model (`switchboard train` on data/sample, one epoch) into runs/demo unless
   it is there (`--model`: another), and register it as the champion of a fresh registry.
2. Serve the registry's champion (`switchboard serve`: FastAPI, vLLM in-process, a fresh store).
3. Route a few customer queries, then the sample's test queries as traffic.
4. The review queue: the least certain answers (GET /v1/review?strategy=uncertainty).
5. Feedback: the demo plays the reviewer, with the sample's labels (POST /v1/feedback).
6. `switchboard retrain --promotion direct`: a challenger, and the gate's decision.
7. The served version: a promoted challenger is loaded (POST /v1/admin/reload).
8. The review inbox and /metrics stay up until Ctrl-C (`--no-wait`: stop instead).

The registry, the store and the logs live in runs/demo-router (`--workdir`), made afresh each run.
The libraries' progress bars and logs are off; each command's output goes to WORKDIR/logs and
is shown only when it fails.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from router.demo_support import DemoError, answer_key, quiet_environment, read_csv_texts, run_command, spinner
from router.devserver import DevServer, DevServerError
from serving.registry import Registry

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
TRAIN = ["--config", "configs/minilm-cpu.yaml", "--dataset", "data/sample"]
# a minute on a CPU: the preset's 6 epochs and contrastive stage take ten; on this small set the
# linear-probe head does most of the work
TRAIN_OVERRIDES = ["optim.epochs=1", "contrastive.mode=never", "model.onnx_export=false"]
QUERIES: dict[str, str | None] = {  # what a customer writes -> the intent a reviewer would give
    "Why is my bill £20 more than last month?": "bill_explanation",
    "I've had no signal on my phone since this morning": "no_signal",
    "I want to cancel my contract and leave": "cancel_service",
    "Can I add my daughter to my plan?": "add_line",
    "What's the weather like in Leeds tomorrow?": None,  # no intent fits
}
REVIEW_LIMIT = 30  # the reviewer labels the 30 least certain answers (a retrain needs 20)
OK_RETRAIN = (0, 10, 11)  # promoted, not promoted, nothing to do (2: failed)

console = Console(width=max(110, Console().width))  # room for the tables in logs too


def say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=REPO / "runs" / "demo",
        help="model dir, trained when missing (runs/demo)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=REPO / "runs" / "demo-router",
        help="registry, store, logs (runs/demo-router)",
    )
    parser.add_argument("--no-wait", action="store_true", help="stop the router at the end, not at Ctrl-C")
    args = parser.parse_args(argv)
    try:
        return Demo(args.model.resolve(), args.workdir.resolve()).run(wait=not args.no_wait)
    except (DemoError, DevServerError, httpx.HTTPError) as err:
        say(f"[bold red]demo failed:[/] {escape(str(err))}")
        return 1
    except KeyboardInterrupt:
        say("\ninterrupted")
        return 130


class Demo:
    def __init__(self, model_dir: Path, workdir: Path) -> None:
        self.model_dir = model_dir
        self.registry = Registry(workdir / "registry")
        self.database_url = f"sqlite:///{workdir / 'store' / 'requests.db'}"
        self.logs = workdir / "logs"
        self.env = quiet_environment()
        self.token = secrets.token_urlsafe(18)
        self.server: DevServer | None = None

    def run(self, *, wait: bool) -> int:
        started = time.monotonic()
        say("[bold]Switchboard demo[/]: Kestrel Mobile's support queries (data/sample), on this CPU")
        say(f"   every command's output goes to {_rel(self.logs)}")
        self.train()
        try:
            with self.serve() as client:
                self.route(client)
                items = self.review(client)
                self.feedback(client, items)
                promoted = self.retrain()
                self.served_version(client, promoted)
            url = self.server.base_url if self.server else ""
            say(f"\nDone in {_duration(time.monotonic() - started)}. The router keeps running:")
            say(f"   review inbox  {url}/review  (sign in with the admin token {self.token})")
            say(f"   metrics       {url}/metrics")
            if wait and self.server is not None:
                say("Ctrl-C to stop.")
                _wait_for_ctrl_c(self.server)
        finally:
            if self.server is not None:
                say(f"router stopped (exit code {self.server.stop()})")
        return 0

    def _cli(self, name: str, args: list[str], ok: tuple[int, ...] = (0,)) -> str:
        return run_command(args, log=self.logs / f"{name}.log", cwd=REPO, env=self.env, ok=ok).stdout

    def train(self) -> None:
        say(f"[bold]1. Train[/]  switchboard train {' '.join(TRAIN + TRAIN_OVERRIDES)}")
        if (self.model_dir / "config.json").is_file():
            say(f"   already trained: {_rel(self.model_dir)} (delete it to train again)")
        else:
            t0 = time.monotonic()
            with spinner(console, "fine-tuning MiniLM on 216 labelled queries"):
                output = ["--output", str(self.model_dir), "--no-progress"]
                self._cli("train", ["train", *TRAIN, *output, *TRAIN_OVERRIDES])
            say(f"   trained in {time.monotonic() - t0:.0f} s: {_rel(self.model_dir)}")
        test = json.loads((self.model_dir / "metrics.json").read_text())["test"]
        say(f"   test accuracy {test['accuracy']:.1%} on the sample's {test['n']} test queries")
        shutil.rmtree(self.registry.root, ignore_errors=True)  # a fresh registry and store each run
        shutil.rmtree(Path(self.database_url.removeprefix("sqlite:///")).parent, ignore_errors=True)
        self._cli("register", ["models", "register", str(self.model_dir), "--alias", "champion",
                               "--registry", str(self.registry.root)])  # fmt: skip
        champion = self.registry.get("champion").version
        say(f"   switchboard models register: {champion}, the champion of {_rel(self.registry.root)}")

    def serve(self) -> httpx.Client:
        say("[bold]2. Serve[/]  switchboard serve: the registry's champion on vLLM, in-process")
        self.server = DevServer(
            None,
            database_url=self.database_url,
            env={
                **self.env,
                "SWITCHBOARD_REGISTRY_DIR": str(self.registry.root),
                "SWITCHBOARD_ADMIN_TOKEN": self.token,
                "SWITCHBOARD_REVIEW_UI": "true",
                "SWITCHBOARD_EAGER": "true",  # vLLM without compilation: starts in half the time
            },
            log_path=self.logs / "server.log",
            cwd=REPO,
            ready_timeout_s=600,
        )
        with spinner(console, "loading the model into vLLM"):
            self.server.start()
        say(f"   ready at {self.server.base_url} in {self.server.ready_s:.0f} s")
        auth = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.server.base_url, timeout=120, headers=auth)

    def route(self, client: httpx.Client) -> None:
        say("[bold]3. Route[/]  POST /v1/route")
        table = Table("query", "intent", "route", "confidence")
        for query in QUERIES:
            a = client.post("/v1/route", json={"text": query}).raise_for_status().json()
            route = f"{a['route']} (fallback)" if a["fallback"] else a["route"]
            style = "yellow" if a["fallback"] else ""
            table.add_row(escape(query), a["intent"], route, f"{a['confidence']:.2f}", style=style)
        console.print(table)
        traffic = read_csv_texts(SAMPLE / "test.csv")
        answers = []
        for start in range(0, len(traffic), 32):
            batch = {"texts": traffic[start : start + 32]}
            answers += client.post("/v1/route/batch", json=batch).raise_for_status().json()["results"]
        fallbacks = sum(a["fallback"] for a in answers)
        say(
            f"   and the sample's {len(answers)} test queries as traffic (POST /v1/route/batch): "
            f"{fallbacks} to the fallback route"
        )

    def review(self, client: httpx.Client) -> list[dict[str, Any]]:
        path = f"/v1/review?strategy=uncertainty&limit={REVIEW_LIMIT}"
        deadline = time.monotonic() + 10  # the request log is written in batches, a moment behind
        while True:
            items: list[dict[str, Any]] = client.get(path).raise_for_status().json()["items"]
            if len(items) >= REVIEW_LIMIT or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        say(f"[bold]4. Review queue[/]  GET {path} (admin token): the 5 least certain of {len(items)}")
        table = Table("query", "answered", "confidence", "runner-up", "margin")
        for item in items[:5]:
            second = item["alternatives"][1]["intent"] if len(item["alternatives"]) > 1 else ""
            margin = "" if item["margin"] is None else f"{item['margin']:.2f}"
            text, confidence = escape(item["text"]), f"{item['confidence']:.2f}"
            table.add_row(text, item["predicted_intent"], confidence, second, margin)
        console.print(table)
        return items

    def feedback(self, client: httpx.Client, items: list[dict[str, Any]]) -> None:
        say("[bold]5. Feedback[/]  the demo plays the reviewer, with the sample's labels: POST /v1/feedback")
        key = answer_key(SAMPLE, QUERIES)
        confirmed, corrected, skipped = 0, [], []
        for item in items:
            label = key.get(item["text"])
            if label is None:
                skipped.append(item["text"])
                continue
            body = {"request_id": item["request_id"], "correct_intent": label, "source": "demo-reviewer"}
            if client.post("/v1/feedback", json=body).raise_for_status().json()["agree"]:
                confirmed += 1
            else:
                corrected.append(f"{escape(repr(item['text']))}: {item['predicted_intent']} -> {label}")
        labelled = confirmed + len(corrected)
        say(f"   {labelled} labelled: {confirmed} answers confirmed, {len(corrected)} corrected")
        for line in corrected[:3]:
            say(f"   corrected {line}")
        if skipped:
            say(f"   skipped, no intent fits: {escape(', '.join(repr(t) for t in skipped))}")

    def retrain(self) -> bool:
        say("[bold]6. Retrain[/]  switchboard retrain --promotion direct")
        say(
            "   (direct: the gate's decision is final; the live shadow and canary stages wait for "
            "reviewed live traffic, too long for a demo)"
        )
        args = ["retrain", "--registry", str(self.registry.root), "--database-url", self.database_url,
                "--promotion", "direct", "--no-progress"]  # fmt: skip
        t0 = time.monotonic()
        with spinner(console, "training a challenger on the feedback, then the gate"):
            answer = json.loads(self._cli("retrain", args, ok=OK_RETRAIN).strip().splitlines()[-1])
        if answer["challenger"] is None:  # nothing to do: too little feedback
            say(f"   decision: {answer['outcome']}: {escape(answer['reason'])}")
            return False
        version = self.registry.get(answer["challenger"])
        report = json.loads((version.path / "decision.json").read_text())
        fb = report["feedback"]
        say(
            f"   challenger {version.version} in {time.monotonic() - t0:.0f} s: the original data + "
            f"{fb['train']} feedback rows; {fb['holdout']} held out for the gate"
        )
        table = Table("gate: both models on", "n", "champion", "challenger")
        for name, title in (("test", "the test queries left"), ("feedback_holdout", "held-out feedback")):
            e = report["gate"][name]
            accuracies = (f"{e['champion_accuracy']:.1%}", f"{e['challenger_accuracy']:.1%}")
            table.add_row(title, str(e["n"]), *accuracies)
        console.print(table)
        promoted = bool(answer["outcome"] == "promoted")
        why = report["reason"].split("; ")[0]  # the evidence; what more would take is in decision.md
        say(f"   decision: [bold]{'promoted' if promoted else 'not promoted'}[/]: {escape(why)}")
        return promoted

    def served_version(self, client: httpx.Client, promoted: bool) -> None:
        say("[bold]7. Served version[/]")
        if not promoted:
            served = client.get("/v1/intents").raise_for_status().json()["model_version"]
            say(f"   still {served}: the champion stays; the challenger is kept in the registry")
            return
        t0 = time.monotonic()
        with spinner(console, "loading the new champion into vLLM, then switching"):
            r = client.post("/v1/admin/reload").raise_for_status().json()
        say(
            f"   POST /v1/admin/reload: now serving {r['model_version']} (was {r['previous_version']}), "
            f"switched in {time.monotonic() - t0:.0f} s"
        )


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _duration(seconds: float) -> str:
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes} min {sec} s" if minutes else f"{sec} s"


def _wait_for_ctrl_c(server: DevServer) -> None:
    """Until Ctrl-C, or until the router stops by itself."""
    try:
        while server.running():
            time.sleep(0.5)
    except KeyboardInterrupt:
        say("")


if __name__ == "__main__":
    sys.exit(main())
