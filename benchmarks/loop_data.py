"""The labelled data and the product's CLI as the learning-loop benchmarks drive them: a dataset's
labelled rows, seeded per-intent seed sets, dataset directories for `switchboard train`, and
`switchboard` run as a process. A plain module: the benchmark scripts import it, never each other.
"""

from __future__ import annotations

import csv
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SEED = 42  # the headline run of the loop benchmarks (their seed-42 champion is shared)


# -- data ----------------------------------------------------------------------------------------


@dataclass
class Data:
    name: str
    train: list[tuple[str, str]]  # every labelled training example (train + validation splits)
    test: list[tuple[str, str]]
    routes: dict[str, str]
    truth: dict[str, str] = field(default_factory=dict)  # text -> label, for the reviewer

    @property
    def labels(self) -> list[str]:
        return sorted({y for _, y in self.train})


def load(dataset: str) -> Data:
    from training.data import load_dataset

    ds = load_dataset(dataset)
    rows = list(zip(ds.train.texts, ds.train.labels, strict=True))
    if ds.validation is not None:
        rows += list(zip(ds.validation.texts, ds.validation.labels, strict=True))
    if ds.test is None:
        raise SystemExit(f"{dataset}: needs a test split")
    test = list(zip(ds.test.texts, ds.test.labels, strict=True))
    data = Data(ds.name, rows, test, dict(ds.routes))
    for text, label in rows + test:
        data.truth.setdefault(text, label)
    return data


def per_intent(rows: list[tuple[str, str]], k: int, seed: int) -> tuple[list, list]:
    """(k seeded examples of every intent, the rest in a seeded order)."""
    by_label: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    rng = random.Random(seed)
    chosen, rest = [], []
    for label in sorted(by_label):
        items = by_label[label][:]
        rng.shuffle(items)
        chosen += items[:k]
        rest += items[k:]
    rng.shuffle(rest)
    return chosen, rest


def write_dataset(directory: Path, train: list, test: list, routes: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.csv", train), ("test.csv", test)):
        with (directory / name).open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    if routes:
        import yaml

        (directory / "routes.yaml").write_text(yaml.safe_dump({"routes": routes}, sort_keys=True))
    return directory


def cli(args: list[str], log: Path) -> tuple[int, float]:
    """`switchboard ARGS` as a process; (exit code, seconds)."""
    started = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"\n$ switchboard {' '.join(args)}\n")
        fh.flush()
        rc = subprocess.run(
            [sys.executable, "-m", "router.cli", *args], stdout=fh, stderr=subprocess.STDOUT, cwd=REPO
        ).returncode
    return rc, time.perf_counter() - started


def train_champion(data_dir: Path, out: Path, log: Path, overrides: list[str]) -> Path:
    if (out / "metrics.json").is_file():
        return out
    rc, seconds = cli(
        [
            "train",
            "-c",
            "configs/minilm-cpu.yaml",
            "-d",
            str(data_dir),
            "-o",
            str(out),
            "--no-progress",
            *overrides,
        ],
        log,
    )
    if rc != 0:
        raise SystemExit(f"training the champion failed (exit {rc}); see {log}")
    print(f"  champion trained in {seconds / 60:.1f} min")
    return out
