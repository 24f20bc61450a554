"""Retrain recipes for the cold-start loop: which recipe turns reviewed labels into accuracy?

Run:   python benchmarks/retrain_recipes.py [--dataset banking77] [--variants a,b,...]
Report: python benchmarks/retrain_recipes.py --report-only

The learning-loop benchmark (benchmarks/learning_loop.py) drives the whole product and takes an
hour per arm; this one isolates the recipe. It replays the cold start offline with the product's
own pieces (`training.train`, the review queue's duplicate key and margin order): the champion
learns from `--seed-per-intent` examples per intent (the same seed set, same champion directory as
the learning loop), the rest of the training split is traffic in `--rounds` chunks, and each round
the `--labels-per-round` queries with the smallest top-1/top-2 margin are labelled with their true
intent. A fifth of each round's labels is held out, as `switchboard retrain --holdout 0.2` does.

The selection path is driven by the product's recipe (`product`); at round `--compare-round`
every variant trains on *the same labelled set*, so the recipes differ only in how they learn.
A variant is a set of `switchboard retrain` options (`RECIPES`), and it is trained exactly as the
product trains a challenger: `training.challenger.plan_challenger` writes its dataset and config
(feedback weight, start point, self-training and its teachers), then `training.train.train`:

  product       the options `switchboard retrain` ships (feedback weighted 3, from the base on a
                cold start, the config's epochs, early stopping and the best checkpoint)
  product_12ep, product_20ep   the same with 12 / 20 epochs
  to_end        no early stopping, the last checkpoint; to_end_10ep, to_end_12ep: 10 / 12 epochs
  weight_1      every feedback example once
  continue      from the previous round's model, its head kept, 3 epochs, to the end
  pseudo_90, pseudo_97   --self-train 0.90 / 0.97: the previous round's model labels the traffic
  student_90    --self-train 0.90 --self-train-teachers 1: a teacher trained on these labels first;
                student_90_12ep, student_80_12ep: the student 12 epochs to the end (>= 0.90 / 0.80)
  lr_2x         the body's learning rate doubled (2e-4)
  bs16_to_end   batch size 16, 8 epochs, to the end (4x the optimiser steps of `product`)
  product_seed43, product_seed44   other training seeds: the spread of a retrain
  ensemble_student_90, ensemble_student_70   --self-train-teachers 3 at 0.90 / 0.70

Rows of `RETIRED` variants were measured by earlier versions of this script with its own copy of
the recipe (feedback once); they stay in the results and the table, and cannot be rerun.

`--ensemble a,b,...` also scores the average of those round-`--compare-round` models' probabilities
on the test split: how much of one retrain's error is its own noise rather than shared mistakes.

`--selection` picks the labels: `margin` (the review queue's `uncertainty` order, default),
`balanced` (the smallest margin of each predicted intent in turn) or `random` (the control).
`--seed` other than 42 draws another seed set and trains its own champion. Every run's rows are
merged into the results file (a row names its seed, selection and the machine it ran on).

Test accuracy is on the dataset's official test split; seconds are training wall time on this
machine (one run; the machine is named in the results). Results: benchmarks/results/
retrain_recipes.json and the "Retrain recipes" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.local_data import use_local_datasets  # noqa: E402
from benchmarks.loop_data import DEFAULT_SEED as SEED  # noqa: E402
from benchmarks.loop_data import load, per_intent, train_champion, write_dataset  # noqa: E402
from benchmarks.markdown import machine_info, replace_section  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "retrain_recipes.json"
TO_END = ["optim.early_stopping_patience=0", "optim.select_best=false"]
TO_END_12 = [*TO_END, "optim.epochs=12"]
# Each variant is a set of `switchboard retrain` options (training.retrain_options.RetrainOptions
# fields; `overrides` are its --set TrainConfig overrides), trained through the product's own
# challenger plan (training.challenger.plan_challenger): no copy of the recipe lives here.
RECIPES: dict[str, dict[str, Any]] = {
    "product": {},  # the defaults `switchboard retrain` ships
    "product_12ep": {"overrides": ["optim.epochs=12"]},
    "product_20ep": {"overrides": ["optim.epochs=20"]},
    "to_end": {"overrides": TO_END},
    "to_end_10ep": {"overrides": [*TO_END, "optim.epochs=10"]},
    "to_end_12ep": {"overrides": TO_END_12},
    "weight_1": {"feedback_weight": 1},
    # from the previous round's model, its head kept (at the product's scaled learning rates)
    "continue": {"overrides": [*TO_END, "optim.epochs=3"], "start_from": "champion"},
    # self-training: traffic the served model answered with at least this confidence, its answer
    # as the label, beside the people's labels
    "pseudo_90": {"self_train": 0.90},
    "pseudo_97": {"self_train": 0.97},
    # the teacher is a model trained on the same labels first (two trainings)
    "student_90": {"self_train": 0.90, "self_train_teachers": 1},
    "student_90_12ep": {"overrides": TO_END_12, "self_train": 0.90, "self_train_teachers": 1},
    "student_80_12ep": {"overrides": TO_END_12, "self_train": 0.80, "self_train_teachers": 1},
    "lr_2x": {"overrides": ["optim.learning_rate=2.0e-4"]},
    "bs16_to_end": {"overrides": [*TO_END, "optim.epochs=8", "optim.batch_size=16"]},
    # the same recipe and data, other training seeds: the spread of a retrain
    "product_seed43": {"overrides": ["optim.seed=43"]},
    "product_seed44": {"overrides": ["optim.seed=44"]},
    # teachers: three models trained on these labels (seeds 42-44), their answers averaged
    "ensemble_student_90": {"self_train": 0.90, "self_train_teachers": 3},
    "ensemble_student_70": {"self_train": 0.70, "self_train_teachers": 3},
}  # fmt: skip
# Variants measured by earlier versions of this script whose recipes are not retrain options (a
# validation set grown with feedback, an intent-tuned base, soft-target distillation, a second
# student generation): their recorded rows stay in the results and the table; they cannot rerun.
RETIRED = ("weight_2", "fb_val", "intent_base", "ensemble_distill", "ensemble_student_90_iter")
VARIANTS = (*RECIPES, *RETIRED)
SELECTIONS = ("margin", "balanced", "random")


def margins(model_dir: Path, texts: list[str]) -> tuple[list[float], list[int]]:
    """Top-1 minus top-2 probability of each text under the model (the review queue's order),
    and the predicted class."""
    import numpy as np

    from training.modeling import load_classifier
    from training.predict import predict_proba

    model, tokenizer = load_classifier(model_dir)
    probs = predict_proba(model, tokenizer, texts, progress=False)
    top2 = np.sort(probs, axis=1)[:, -2:]
    return [float(m) for m in top2[:, 1] - top2[:, 0]], [int(i) for i in probs.argmax(axis=1)]


def select(
    model_dir: Path,
    chunk: list[tuple[str, str]],
    taken: set[str],
    k: int,
    selection: str = "margin",
    seed: int = 0,
) -> list[tuple[str, str]]:
    """`k` texts of the chunk, one per normalised text, none labelled before: the smallest margins
    (`margin`), the smallest margin of every predicted intent in turn (`balanced`), or a seeded
    random sample (`random`)."""
    from router.store.queries import normalise_text

    unique: dict[str, tuple[str, str]] = {}
    for text, label in chunk:
        key = normalise_text(text)
        if key not in taken:
            unique.setdefault(key, (text, label))
    rows = list(unique.values())
    if selection == "random":  # the control: a seeded sample of the chunk
        return random.Random(seed).sample(rows, min(k, len(rows)))
    margin, predicted = margins(model_dir, [t for t, _ in rows])
    order = sorted(range(len(rows)), key=lambda i: margin[i])
    if selection == "balanced":
        rank: dict[int, int] = {}
        turn = {}
        for i in order:  # i's turn: how many of its predicted intent come before it
            turn[i] = rank.get(predicted[i], 0)
            rank[predicted[i]] = turn[i] + 1
        order = sorted(order, key=lambda i: (turn[i], margin[i]))
    return [rows[i] for i in order[:k]]


def split_round(rows: list[tuple[str, str]], seed: int) -> tuple[list, list]:
    """(train, held out): a fifth held out, as `switchboard retrain --holdout 0.2`."""
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    n_hold = round(0.2 * len(shuffled))
    return shuffled[n_hold:], shuffled[:n_hold]


def train_variant(
    name: str,
    seed_dir: Path,
    feedback: list[tuple[str, str]],
    previous: Path,
    out: Path,
    seed: int,
    unlabelled: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Train one recipe on the seed data + `feedback` as `switchboard retrain` would (its challenger
    plan, with the variant's options); its test accuracy and training seconds."""
    if (out / "metrics.json").is_file():
        metrics = json.loads((out / "metrics.json").read_text())
    else:
        from datetime import UTC, datetime

        from serving.model_dir import read_model_info
        from serving.taxonomy import Changes, Taxonomy
        from training.challenger import plan_challenger
        from training.config import load_config
        from training.data import load_dataset
        from training.feedback_data import FeedbackExample
        from training.retrain_options import RetrainOptions
        from training.train import train

        recipe = dict(RECIPES[name])
        overrides = [f"optim.seed={seed}", *recipe.pop("overrides", [])]  # a recipe may set its own
        opts = RetrainOptions(registry=out.parent, seed=seed, overrides=overrides, **recipe)
        config = load_config(REPO / "configs" / "minilm-cpu.yaml", overrides)
        base = load_dataset(str(seed_dir), validation_fraction=0.1, seed=seed)
        assert base.test is not None
        labels = list(read_model_info(previous).labels)  # the champion's head order
        now = datetime.now(UTC)
        fb_texts = [t for t, _ in feedback]
        examples = [FeedbackExample(f"fb-{i}", t, y, "", "", now) for i, (t, y) in enumerate(feedback)]
        plan = plan_challenger(
            config, opts, champion=previous, line_base=config.model.base_model, base=base,
            taxonomy=Taxonomy(tuple(labels), dict(base.routes), {}, Changes()), targets=labels,
            relabel={}, renamed={}, feedback=examples, feedback_total=len(examples),
            never_pseudo=[*base.train.texts, *base.validation.texts, *base.test.texts, *fb_texts],
            traffic=unlabelled, scratch=out.parent / f"{out.name}-plan", progress=False,
        )  # fmt: skip
        plan.config.output_dir = str(out)
        started = time.perf_counter()
        train(plan.config, progress=False)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        metrics = json.loads((out / "metrics.json").read_text())
        metrics["wall_seconds"] = time.perf_counter() - started
        metrics["plan"] = plan.report
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return {
        "test_accuracy": metrics["test"]["accuracy"],
        "train_seconds": round(metrics.get("wall_seconds", metrics["training"]["train_seconds"]), 1),
        "steps": metrics["training"]["global_steps"],
        "train_examples": metrics["training"].get("train_examples"),
        "options": RECIPES[name],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = load(args.dataset)
    name = data.name if args.selection == "margin" else f"{data.name}-{args.selection}"
    work = args.work / (name if args.seed == SEED else f"{name}-seed{args.seed}")
    state_file = work / "state.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.is_file() else {}
    results: dict[str, Any] = state.setdefault("results", {})
    # its own champion: the learning loop's (protocol 2) is trained with a pool-carved holdout as
    # its test split, this replay scores the official test split
    shared = args.work / f"seed{args.seed}"
    champion_metrics = shared / "champion" / "metrics.json"
    if champion_metrics.is_file():
        state["champion_test_accuracy"] = json.loads(champion_metrics.read_text())["test"]["accuracy"]
    if args.report_only:
        return state

    lw = argparse.Namespace(seed_per_intent=args.seed_per_intent, seed=args.seed, train_override=[])
    seed_rows, traffic = per_intent(data.train, lw.seed_per_intent, lw.seed)
    seed_dir = write_dataset(shared / "seed-data", seed_rows, data.test, data.routes)
    champion = train_champion(seed_dir, shared / "champion", shared / "train.log", [])
    per_round = -(-len(traffic) // args.rounds)

    from router.store.queries import normalise_text

    taken = {normalise_text(t) for t, _ in seed_rows}
    model = champion
    trained: list[tuple[str, str]] = []
    held: list[tuple[str, str]] = []
    seen: list[str] = []
    for r in range(1, args.compare_round + 1):
        chunk = traffic[(r - 1) * per_round : r * per_round]
        seen += [t for t, _ in chunk]
        picked = select(model, chunk, taken, args.labels_per_round, args.selection, args.seed + r)
        taken |= {normalise_text(t) for t, _ in picked}
        # the previous round's held-out labels are trained on now (the retrain holds out new ones)
        new_train, new_held = split_round(picked, args.seed + r)
        trained, held = trained + held + new_train, new_held
        labels = len(seed_rows) + len(trained) + len(held)
        # `product` first: it picks the next round's labels
        names = (
            ["product", *(v for v in args.variants if v != "product")]
            if r == args.compare_round
            else ["product"]
        )
        for name in names:
            key = f"round{r}/{name}"
            if key not in results:
                print(f"round {r}: training {name} on {len(trained)} feedback examples ...", flush=True)
                results[key] = {
                    "round": r,
                    "variant": name,
                    "labels": labels,
                    **train_variant(
                        name,
                        seed_dir,
                        trained,
                        model,
                        work / f"round{r}" / name,
                        args.seed,
                        unlabelled=tuple(t for t in seen if normalise_text(t) not in taken),
                    ),
                }
                state_file.parent.mkdir(parents=True, exist_ok=True)
                state_file.write_text(json.dumps(state, indent=2))
            print(f"  {key}: {results[key]['test_accuracy']:.2%} in {results[key]['train_seconds']:.0f} s")
        model = work / f"round{r}" / "product"
    if args.ensemble:
        missing = [
            n
            for n in args.ensemble
            if not (work / f"round{args.compare_round}" / n / "config.json").is_file()
        ]
        if missing:
            raise SystemExit(f"--ensemble: not trained at round {args.compare_round}: {missing}")
        key = f"round{args.compare_round}/" + "+".join(args.ensemble)
        state.setdefault("ensembles", {})[key] = {
            "round": args.compare_round,
            **ensemble(work / f"round{args.compare_round}", args.ensemble, args.dataset),
        }
        print(f"  ensemble {key}: {state['ensembles'][key]['test_accuracy']:.2%}")
    state["champion_test_accuracy"] = json.loads((champion / "metrics.json").read_text())["test"]["accuracy"]
    state_file.write_text(json.dumps(state, indent=2))
    return state


def ensemble(round_dir: Path, names: list[str], dataset: str) -> dict[str, Any]:
    """Test accuracy of each trained model and of their averaged probabilities."""
    import numpy as np

    from training.data import load_dataset
    from training.predict import predict_proba_of_models

    test = load_dataset(dataset).test
    assert test is not None
    labels, probs = predict_proba_of_models([round_dir / n for n in names], test.texts)
    gold = np.array(test.labels)

    def accuracy(p: np.ndarray) -> float:
        return float(np.mean(np.array(labels)[p.argmax(axis=1)] == gold))

    return {
        "members": {name: accuracy(p) for name, p in zip(names, probs, strict=True)},
        "test_accuracy": accuracy(np.mean(probs, axis=0)),
    }


def _table(results: dict[str, Any]) -> list[str]:
    def order(r: dict[str, Any]) -> tuple[int, int, int, int]:
        return (
            r.get("seed", SEED),
            SELECTIONS.index(r["selection"]),
            r["round"],
            VARIANTS.index(r["variant"]),
        )

    lines = [
        "| seed | selection | round | recipe | labels | test accuracy | steps | training | measured |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(results.values(), key=order):
        name = r["variant"] + ("" if "options" in r else " †")  # † this script's own recipe copy
        lines.append(
            f"| {r.get('seed', SEED)} | {r['selection']} | {r['round']} | {name} | {r['labels']} | "
            f"{100 * r['test_accuracy']:.2f}% | {r['steps']} | {r['train_seconds'] / 60:.1f} min | "
            f"{r['measured']} |"
        )
    return lines


def _ensembles(ensembles: dict[str, Any]) -> list[str]:
    lines = []
    for e in ensembles.values():
        members = ", ".join(f"{name} {100 * acc:.2f}%" for name, acc in e["members"].items())
        lines.append(
            f"- seed {e['seed']}, {e['selection']}, round {e['round']}: the average of {len(e['members'])} "
            f"models' probabilities, **{100 * e['test_accuracy']:.2f}%** ({members})."
        )
    return (
        [
            "",
            "Ensembles (the average of several models' probabilities: how many errors they share):",
            "",
            *lines,
        ]
        if lines
        else []
    )


def _champions_and_runs(result: dict[str, Any]) -> list[str]:
    champions = ", ".join(f"seed {k}: {100 * v:.2f}%" for k, v in result.get("champions", {}).items() if v)
    lines = ["", f"Champions (round 0, 770 labels): {champions}.", "", "Runs:", ""]
    for run_ in result["runs"]:
        lines.append(f"- `{run_['command']}`" + (f": {run_['note']}" if run_.get("note") else ""))
    return lines


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Cold start on {result['dataset']}: {result['seed_per_intent']} examples per intent (seed {SEED}; "
        f"another seed: another seed set and champion); {result['labels_per_round']} labels per round "
        "(`margin`: the smallest top-1/top-2 margins, as `strategy=uncertainty`; `balanced`: the smallest "
        "margin of each predicted intent in turn; `random`: a seeded sample, the control), a fifth held "
        "out. Test accuracy on the official test split (3,080 queries), for reporting: no default is "
        "chosen from this table (docs/RETRAINING.md says how each was chosen).",
        "",
        *(
            [
                *_table(result["results"]),
                *(
                    [
                        "",
                        "† Measured before this script trained through the product's challenger plan, "
                        "with its own copy of the recipe (feedback once; `product` then meant that).",
                    ]
                    if any("options" not in r for r in result["results"].values())
                    else []
                ),
                *_ensembles(result.get("ensembles", {})),
                *_champions_and_runs(result),
            ]
            if result["results"]
            else ["No recipe has been replayed since the checkpoint rule changed (below)."]
        ),
    ]
    old = result.get("superseded")
    if old:
        lines += ["", f"**Superseded.** {old['why']}", "", *_table(old["results"]), *_champions_and_runs(old)]
    return "\n".join(lines) + "\n"


def merge(
    previous: dict[str, Any], state: dict[str, Any], selection: str, measured: str, seed: int = SEED
) -> dict[str, Any]:
    """Rows of earlier runs (other selections, other variants) kept; this run's rows win."""
    rows: dict[str, Any] = {}
    for key, row in previous.get("results", {}).items():
        row.setdefault("selection", "margin")  # the first runs compared recipes on margin only
        row.setdefault("measured", "earlier run")
        rows[key if key.startswith(row["selection"] + "/") else f"{row['selection']}/{key}"] = row
    for key, row in state["results"].items():
        stamp = {"selection": selection, "measured": row.get("measured", measured), "seed": seed}
        rows[f"{selection}/{key}" if seed == SEED else f"{selection}/seed{seed}/{key}"] = {**row, **stamp}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="banking77")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seed-per-intent", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-round", type=int, default=3)
    parser.add_argument("--labels-per-round", type=int, default=300)
    parser.add_argument("--variants", default=",".join(RECIPES))
    parser.add_argument("--selection", choices=SELECTIONS, default="margin")
    parser.add_argument("--ensemble", default="", help="variants whose averaged probabilities to score")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "retrain_recipes")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--note", default="", help="a remark for the report (e.g. the run was under load)")
    args = parser.parse_args()
    args.variants = args.variants.split(",")
    args.ensemble = [v for v in args.ensemble.split(",") if v]
    unknown = set(args.variants) - set(RECIPES)
    if unknown:
        raise SystemExit(f"--variants: cannot run {sorted(unknown)}; choose from {', '.join(RECIPES)}")
    unknown = set(args.ensemble) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"--ensemble: unknown {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    use_local_datasets()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    state = run(args)
    machine = machine_info()
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    command = "python benchmarks/retrain_recipes.py " + shlex.join(sys.argv[1:])
    result = {
        "dataset": args.dataset,
        "seed_per_intent": args.seed_per_intent,
        "labels_per_round": args.labels_per_round,
        "champion_test_accuracy": (state.get("champion_test_accuracy") if args.seed == SEED else None)
        or previous.get("champion_test_accuracy"),  # --report-only without the work dir: kept
        "champions": {
            **previous.get("champions", {}),
            **(
                {str(args.seed): state["champion_test_accuracy"]} if "champion_test_accuracy" in state else {}
            ),
        },
        "results": merge(previous, state, args.selection, f"{machine['cpu']}, {machine['date']}", args.seed),
        "ensembles": {
            **previous.get("ensembles", {}),
            **{
                (f"{args.selection}/{k}" if args.seed == SEED else f"{args.selection}/seed{args.seed}/{k}"): {
                    **v,
                    "selection": args.selection,
                    "seed": args.seed,
                }
                for k, v in state.get("ensembles", {}).items()
            },
        },
        "runs": [  # the training runs (a --report-only run measured nothing)
            *(r for r in previous.get("runs", []) if r["command"] != command),
            *([] if args.report_only else [{"command": command, "note": args.note, "machine": machine}]),
        ],
        **({"superseded": previous["superseded"]} if "superseded" in previous else {}),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    section = markdown(result)
    replace_section(REPO / "docs" / "BENCHMARKS.md", "retrain_recipes", "Retrain recipes", section)
    print(section)


if __name__ == "__main__":
    main()
