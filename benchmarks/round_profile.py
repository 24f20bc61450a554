"""Where a retrain round's time goes: read from the learning-loop benchmark's own retrains.

Run:   python benchmarks/round_profile.py [--work runs/learning_loop]

Every `switchboard retrain` the learning loop ran left its registry version behind: `decision.json`
(the retrain's steps: read, plan, train, gate, register) and the challenger's `metrics.json` (inside
the training: the contrastive stage, fine-tuning epochs, evaluation, the ONNX export). This script
splits each round's wall time (the process, as the loop timed it) into those parts, so a slow
night names its cause. Nothing is re-run. Results: benchmarks/results/round_profile.json, a
stacked-bar picture in docs/images/ and the "Where a retrain's time goes" section of
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.markdown import machine_line, replace_section  # noqa: E402
from benchmarks.product_loop import recipe_key  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "round_profile.json"
LOOP_RESULTS = REPO / "benchmarks" / "results" / "learning_loop.json"
PICTURE = REPO / "docs" / "images" / "round-profile.png"
# the parts of a round, in the order they happen (seconds; together they make the wall time)
PARTS = [
    ("startup", "process start and imports"),
    ("read", "read the registry, feedback and line data"),
    ("plan", "plan the challenger (data written, self-training)"),
    ("setup", "build the model, head fit (probe or growth)"),
    ("contrastive", "contrastive stage"),
    ("epochs", "fine-tuning epochs"),
    ("evaluate", "export and evaluate (validation, test)"),
    ("onnx", "ONNX export and checks"),
    ("gate", "gate: score champion and challenger"),
    ("register", "register and promote"),
]


def profile(wall: float, decision: dict[str, Any], metrics: dict[str, Any]) -> dict[str, float]:
    """One round's seconds per part. `wall`: the process as timed from outside."""
    steps = decision.get("step_seconds") or {}
    facts = metrics.get("training") or {}
    contrastive = float((facts.get("contrastive") or {}).get("seconds") or 0.0)
    epochs = float(facts.get("train_loop_seconds") or 0.0)
    trained = float(facts.get("train_seconds") or 0.0)  # start -> trained (before export)
    total = float(facts.get("total_seconds") or trained)  # with export, evaluation, ONNX
    onnx = float((metrics.get("onnx") or {}).get("seconds") or 0.0)
    parts = {
        "startup": max(0.0, wall - float(decision.get("retrain_seconds") or wall)),
        "read": float(steps.get("read", 0.0)),
        "plan": float(steps.get("plan", 0.0)),
        # the train step beyond train()'s own clock: loading the champion's weights and the like
        "setup": max(0.0, trained - contrastive - epochs) + max(0.0, float(steps.get("train", 0.0)) - total),
        "contrastive": contrastive,
        "epochs": epochs,
        "evaluate": max(0.0, total - trained - onnx),
        "onnx": onnx,
        "gate": float(steps.get("gate", 0.0)),
        "register": float(steps.get("register", 0.0)),
    }
    return {k: round(v, 1) for k, v in parts.items()}


def collect(work: Path) -> list[dict[str, Any]]:
    """Every finished retrain under the learning loop's work directory."""
    machines = _machines()
    new_runs = _new_intent_runs()  # a variant's directory key -> (its retrain options, machine)
    rows = []
    for state_file in sorted(work.glob("*/cold_start/*/state.json")) + sorted(
        work.glob("*/new_intents*/loop/state.json")
    ):
        loop = state_file.parent
        run = loop.relative_to(work).parts[0]  # banking77, clinc150-seed7, ...
        state = json.loads(state_file.read_text())
        versions = sorted((loop / "registry" / "versions").glob("v*/decision.json"))
        if "rounds" in state:  # cold start: round r's retrain made version r + 1
            scenario, name, machine = "cold start", loop.name, machines.get(run)
            timed = [(row["round"], row["retrain_seconds"]) for row in state["rounds"][1:]]
        elif "retrain_seconds" in state:
            scenario = "new intents"
            variant = loop.parent.name.removeprefix("new_intents").removeprefix("-recipe-")
            name, machine = new_runs.get(variant, (variant, None))
            timed = [(1, state["retrain_seconds"])]
        else:
            continue
        for (round_, wall), decision_file in zip(timed, versions, strict=False):
            decision = json.loads(decision_file.read_text())
            metrics_file = decision_file.parent / "metrics.json"
            metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
            facts = metrics.get("training") or {}
            rows.append(
                {
                    "run": run,
                    "scenario": scenario,
                    "arm": name,
                    "round": round_,
                    "wall_seconds": wall,
                    "start_from": (decision.get("training") or {}).get("start_from"),
                    "train_examples": facts.get("train_examples"),
                    "epochs": (decision.get("training") or {}).get("epochs"),
                    "contrastive_steps": (facts.get("contrastive") or {}).get("steps"),
                    "parts": profile(wall, decision, metrics),
                    "machine": machine,
                }
            )
    return rows


def _machines() -> dict[str, Any]:
    """The machine each learning-loop run recorded (its headline's, or its seed run's)."""
    if not LOOP_RESULTS.is_file():
        return {}
    out: dict[str, Any] = {}
    for name, d in json.loads(LOOP_RESULTS.read_text()).get("datasets", {}).items():
        out[name] = d.get("machine")
        for seed, entry in (d.get("cold_start_seeds") or {}).items():
            if isinstance(entry, dict) and "machine" in entry:
                out[f"{name}-seed{seed}"] = entry["machine"]
    return out


def _new_intent_runs() -> dict[str, tuple[str, Any]]:
    """The learning loop's new-intent runs by directory key ("" for the default's): their retrain
    options and the machine they ran on (not the dataset's headline cold start's)."""
    if not LOOP_RESULTS.is_file():
        return {}
    out: dict[str, tuple[str, Any]] = {}
    for d in json.loads(LOOP_RESULTS.read_text()).get("datasets", {}).values():
        if d.get("new_intents"):
            out[""] = ("default", d["new_intents"].get("machine"))
        for recipe, run in (d.get("new_intents_recipes") or {}).items():
            out[recipe_key(recipe)] = (recipe, run.get("machine"))
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(9.0, 0.45 * len(rows) + 6), 4.8))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    names = [f"{r['run']} {r['arm']} r{r['round']}" for r in rows]
    bottom = [0.0] * len(rows)
    for key, label in PARTS:
        minutes = [r["parts"][key] / 60 for r in rows]
        ax.bar(names, minutes, bottom=bottom, label=label)
        bottom = [b + m for b, m in zip(bottom, minutes, strict=True)]
    ax.axhline(5, color="grey", ls="--", lw=1, label="goal for a cold-start round (5 min)")
    ax.set_ylabel("minutes")
    ax.set_title("Where each retrain round's time went (learning-loop runs; hatched: under load)")
    ax.tick_params(axis="x", labelrotation=75, labelsize=7)
    for i, r in enumerate(rows):  # a round that shared the machine: its time says little
        if r.get("under_load"):
            ax.bar([names[i]], [bottom[i]], fill=False, hatch="//", edgecolor="black", lw=0)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def markdown(rows: list[dict[str, Any]]) -> str:
    head = " | ".join(key for key, _ in PARTS)
    lines = [
        "Command: `python benchmarks/round_profile.py` (reads the learning loop's registries; runs "
        "nothing). Seconds per part of each retrain, from the retrain's `decision.json` "
        "(`step_seconds`) and the challenger's `metrics.json`; the wall time is the process as the "
        "loop timed it. Parts: " + "; ".join(f"{k}: {v}" for k, v in PARTS) + ".",
        "",
        f"![where the time goes]({PICTURE.relative_to(REPO / 'docs').as_posix()})",
        "",
        f"| run | arm | round | start | train texts | wall | {head} |",
        "| --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in PARTS) + " |",
    ]
    for r in rows:
        cells = " | ".join(f"{r['parts'][k]:.0f}" for k, _ in PARTS)
        lines.append(
            f"| {r['run']} | {r['arm']} | {r['round']} | {r['start_from']} | {r['train_examples']} | "
            f"{r['wall_seconds'] / 60:.1f} min{' (under load)' if r.get('under_load') else ''} | {cells} |"
        )
    seen: dict[str, Any] = {}
    for r in rows:
        if r.get("machine"):
            where = r["run"] if r["scenario"] == "cold start" else f"{r['run']} new intents, {r['arm']}"
            seen.setdefault(where, r["machine"])
    lines += ["", *(f"- {run}: {machine_line(m)}" for run, m in seen.items())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "learning_loop")
    parser.add_argument(
        "--under-load", nargs="*", default=[], metavar="RUN:ARM:ROUND",
        help="rounds that shared the machine with other work, e.g. banking77-seed7:uncertainty:1",
    )  # fmt: skip
    args = parser.parse_args()
    rows = collect(args.work)
    loaded = set(args.under_load)
    for r in rows:
        r["under_load"] = f"{r['run']}:{r['arm']}:{r['round']}" in loaded
    if not rows:
        raise SystemExit(f"no finished retrains under {args.work}: run benchmarks/learning_loop.py first")
    RESULTS.write_text(json.dumps({"parts": dict(PARTS), "rounds": rows}, indent=2) + "\n")
    plot(rows, PICTURE)
    replace_section(
        REPO / "docs" / "BENCHMARKS.md", "round_profile", "Where a retrain's time goes", markdown(rows)
    )
    for r in rows:
        top = sorted(r["parts"].items(), key=lambda kv: -kv[1])[:3]
        print(f"{r['run']:>20} {r['arm']:>12} r{r['round']} {r['wall_seconds'] / 60:5.1f} min: {top}")


if __name__ == "__main__":
    main()
