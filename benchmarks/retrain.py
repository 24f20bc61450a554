"""Retraining benchmark: does logged feedback make the next model better on queries it never saw?

Run:  python benchmarks/retrain.py [--model-dir runs/bench/minilm-banking77] [--feedback-fraction 0.8]
      (the model comes from `python benchmarks/train.py --datasets banking77`)

1. The Banking77 test set is split in two halves (stratified, seeded): "traffic" and "untouched".
2. The champion is registered and served by `switchboard serve`; the traffic half is routed
   through it over HTTP and logged; users post the correct intent for a share of its errors.
3. `switchboard retrain` (from the champion's weights, one epoch) reads that feedback from the
   store, trains a challenger and runs the gate.
4. Accuracy of champion and challenger on the untouched half (never seen as traffic or feedback),
   plus the retrain wall time. Writes benchmarks/results/retrain.json and docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.local_data import use_local_datasets  # noqa: E402
from benchmarks.markdown import machine_info, replace_section  # noqa: E402
from router.devserver import DevServer  # noqa: E402

# the environment the benchmark has always served under: every answer routed to its intent
SERVER_ENV = {
    "SWITCHBOARD_CONFIDENCE_THRESHOLD": "0",
    "SWITCHBOARD_MARGIN": "0",
    "SWITCHBOARD_EAGER": "false",
    "SWITCHBOARD_LOG_LEVEL": "warning",
}


def halves(texts: list[str], labels: list[str], seed: int) -> tuple[list[int], list[int]]:
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    rng = random.Random(seed)
    traffic, untouched = [], []
    for idx in by_label.values():
        rng.shuffle(idx)
        traffic += idx[: len(idx) // 2]
        untouched += idx[len(idx) // 2 :]
    return sorted(traffic), sorted(untouched)


def accuracy(model_dir: Path, texts: list[str], labels: list[str]) -> float:
    from training.data import Split
    from training.evaluate import split_probabilities
    from training.modeling import load_classifier, model_labels

    model, tok = load_classifier(model_dir)
    y, probs = split_probabilities(
        model, tok, Split(texts, labels), model_labels(model), max_length=64, progress=False
    )
    return float((probs.argmax(axis=1) == y).mean())


def _recipe(training: dict) -> str:
    start = "from the champion's weights" if training["start_from"] == "champion" else "from the base model"
    return f"{training['epochs']:g} epoch(s) {start}, learning rate {training['learning_rate']:g}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=REPO / "runs" / "bench" / "minilm-banking77")
    parser.add_argument("--feedback-fraction", type=float, default=0.8, help="share of errors corrected")
    parser.add_argument("--epochs", type=float, default=1.0, help="0: the recipe's own")
    parser.add_argument("--start-from", choices=["champion", "base"], default="champion")
    parser.add_argument("--lr-factor", type=float, default=0.1, help="from the champion: LR scale")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--note", default="", help="a line on the conditions (e.g. a concurrent load)")
    args = parser.parse_args()
    use_local_datasets()
    from serving.registry import Registry
    from training.data import load_dataset

    test = load_dataset("banking77").test
    assert test is not None
    traffic, untouched = halves(test.texts, test.labels, args.seed)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        registry = Registry(root / "registry")
        champion = registry.register(args.model_dir, alias="champion")
        url = f"sqlite:///{root / 'store.db'}"
        server = DevServer(
            None,
            database_url=url,
            env={**SERVER_ENV, "SWITCHBOARD_REGISTRY_DIR": str(registry.root)},
            log_path=root / "server.log",
            cwd=REPO,
        )
        server.ensure_running()
        errors = corrected = 0
        try:
            with server.client() as client:
                for i in traffic:
                    answer = client.post("/v1/route", json={"text": test.texts[i]}).json()
                    if answer["intent"] != test.labels[i]:
                        errors += 1
                        if rng.random() < args.feedback_fraction:
                            resp = client.post(
                                "/v1/feedback",
                                json={"request_id": answer["request_id"], "correct_intent": test.labels[i]},
                            )
                            resp.raise_for_status()
                            corrected += 1
        finally:
            server.stop()
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "router.cli",
                "retrain",
                "--registry",
                str(registry.root),
                "--database-url",
                url,
                "--min-feedback",
                "10",
                "--no-progress",
                "--promotion",
                "direct",  # measures the offline gate (benchmarks/promotion.py: the live rollout)
                "--start-from",
                args.start_from,
                "--lr-factor",
                str(args.lr_factor),
                *([f"optim.epochs={args.epochs}"] if args.epochs else []),
            ],
            cwd=REPO,
            text=True,
            stdout=subprocess.PIPE,
        )
        retrain_s = time.perf_counter() - started
        if done.returncode not in (0, 10):  # 0 promoted, 10 refused by the gate: both are results
            raise SystemExit(f"switchboard retrain exited {done.returncode} (its stderr is above)")
        decision = json.loads(done.stdout.strip().splitlines()[-1])
        challenger = registry.get(decision["challenger"])
        report = json.loads((challenger.path / "decision.json").read_text())
        u_texts = [test.texts[i] for i in untouched]
        u_labels = [test.labels[i] for i in untouched]
        result = {
            "command": "python benchmarks/retrain.py " + " ".join(sys.argv[1:]),
            "machine": machine_info(),
            "traffic": len(traffic),
            "champion_errors_on_traffic": errors,
            "feedback_posted": corrected,
            "untouched": len(untouched),
            "accuracy_untouched": {
                "champion": accuracy(champion.path, u_texts, u_labels),
                "challenger": accuracy(challenger.path, u_texts, u_labels),
            },
            "gate": {
                "outcome": decision["outcome"],
                "reason": decision["reason"],
                "scores": report["scores"],
            },
            "retrain_seconds": round(retrain_s, 1),
            "training": report.get("training"),
            "note": args.note,
        }
    out = REPO / "benchmarks" / "results" / "retrain.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    runs = [r for r in previous.get("runs", []) if r.get("training") != result["training"]]
    runs.append(result)  # one row per recipe: a rerun of the same recipe replaces its row
    out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    body = to_markdown(runs, args.seed)
    replace_section(REPO / "docs" / "BENCHMARKS.md", "retrain", "Retraining from feedback (Banking77)", body)
    print(body)


def to_markdown(runs: list[dict], seed: int) -> str:
    first = runs[0]
    lines = [
        f"Machine: {first['machine']['cpu']}, {first['machine']['cores']} cores, no GPU. Champion: the "
        "Banking77 model of the training benchmark. Commands: "
        + ", ".join(f"`{r['command']}` ({r['machine']['date']})" for r in runs)
        + ".",
        "",
        f"The Banking77 test set split in halves (stratified, seed {seed}): {first['traffic']} queries "
        f"routed through `switchboard serve` as traffic, {first['untouched']} untouched. The champion "
        f"erred on {first['champion_errors_on_traffic']} traffic queries; users corrected "
        f"{first['feedback_posted']} of them (`POST /v1/feedback`). Then `switchboard retrain` (feedback "
        "×3, 20% of it held out for the gate; the gate's test set leaves feedback texts out) with each "
        "recipe below. *Untouched* is the half never seen as traffic or feedback: whether the feedback "
        "generalised.",
        "",
        "| retrain recipe | gate decision | held-out feedback Δ | gate test Δ | untouched: champion "
        "→ challenger | retrain time |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        scores = r["gate"]["scores"]
        fb = (
            scores["challenger"]["feedback_holdout"]["accuracy"]
            - scores["champion"]["feedback_holdout"]["accuracy"]
        )
        test = scores["challenger"]["test"]["accuracy"] - scores["champion"]["test"]["accuracy"]
        acc = r["accuracy_untouched"]
        lines.append(
            f"| {_recipe(r['training'])} | {r['gate']['outcome']} | {100 * fb:+.2f} pts "
            f"(n={scores['champion']['feedback_holdout']['n']}) | {100 * test:+.2f} pts "
            f"(n={scores['champion']['test']['n']}) | {100 * acc['champion']:.2f}% → "
            f"**{100 * acc['challenger']:.2f}%** | {r['retrain_seconds'] / 60:.1f} min |"
        )
    notes = [f"- {r['note']}" for r in runs if r.get("note")]
    return "\n".join(lines + (["", *notes] if notes else []))


if __name__ == "__main__":
    main()
