"""An intent-tuned base model: MiniLM fine-tuned on another intent dataset first (intermediate
training), so that a cold start on the target dataset begins from a body that already separates
intents.

Run:   python benchmarks/intent_base.py [--source clinc150] [--target banking77] [--epochs 2]

The source dataset's texts that also occur in the target dataset (any split, compared after
folding case and whitespace, as the review queue does) are left out, so no target test query is
trained on by the base. The filtered copy lives under `--work` (runs/, never in the repository);
the model is trained with the product's CPU recipe (`switchboard train -c configs/minilm-cpu.yaml`)
and was measured as a retrain's base once (the retired `intent_base` row of
benchmarks/retrain_recipes.py); a line's base is set at `switchboard train` (`model.base_model`).
Resumable: an existing model is reused.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.local_data import use_local_datasets  # noqa: E402

WORK = REPO / "runs" / "intent-base"


def model_dir(source: str = "clinc150", target: str = "banking77", work: Path = WORK) -> Path:
    return work / f"{source}-minus-{target}"


def write_filtered(source: str, target: str, out: Path) -> dict[str, dict[str, int]]:
    """The source dataset's splits without any text of the target dataset; counts kept/dropped."""
    from router.store.queries import normalise_text
    from training.data import load_dataset

    tgt = load_dataset(target)
    taken = {
        normalise_text(t) for split in (tgt.train, tgt.validation, tgt.test) if split for t in split.texts
    }
    src = load_dataset(source)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    for name, split in (("train", src.train), ("validation", src.validation), ("test", src.test)):
        if split is None:
            continue
        rows = [
            (t, y) for t, y in zip(split.texts, split.labels, strict=True) if normalise_text(t) not in taken
        ]
        with (out / f"{name}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        counts[name] = {"kept": len(rows), "dropped": len(split.texts) - len(rows)}
    return counts


def build(source: str = "clinc150", target: str = "banking77", epochs: int = 2, work: Path = WORK) -> Path:
    """Train (or reuse) the intent-tuned base; returns its model directory."""
    out = model_dir(source, target, work)
    if (out / "metrics.json").is_file():
        return out
    data = work / f"{source}-minus-{target}-data"
    counts = write_filtered(source, target, data)
    print(f"{source} without {target}'s texts: {counts}", flush=True)
    log = work / f"{out.name}.log"
    started = time.perf_counter()
    with log.open("a") as fh:
        rc = subprocess.run(
            [
                sys.executable, "-m", "router.cli", "train", "-c", "configs/minilm-cpu.yaml", "-d", str(data),
                "-o", str(out), "--no-progress", f"optim.epochs={epochs}", "optim.evals_per_epoch=1",
            ],
            stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
        ).returncode  # fmt: skip
    if rc != 0:
        raise SystemExit(f"training the intent base failed (exit {rc}); see {log}")
    facts = {"source": source, "target": target, "epochs": epochs, "filtered": counts,
             "train_minutes": round((time.perf_counter() - started) / 60, 1)}  # fmt: skip
    (out / "intent-base.json").write_text(json.dumps(facts, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", default="clinc150")
    parser.add_argument("--target", default="banking77")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()
    use_local_datasets()
    out = build(args.source, args.target, args.epochs, args.work)
    metrics = json.loads((out / "metrics.json").read_text())
    print(f"{out}: {args.source} test accuracy {metrics['test']['accuracy']:.2%}")


if __name__ == "__main__":
    main()
