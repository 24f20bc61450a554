"""Reading and writing the project's small files: one YAML-mapping reader, one atomic JSON writer.

Every YAML file Switchboard reads (settings, training presets, route maps, price tables, a model
directory's `config.yaml` and `routes.yaml`) is a mapping at the top level, and every failure to
read one is a one-line error of the caller's own type naming the file; so they share this reader.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml


def read_yaml_mapping(
    path: str | Path,
    error: type[Exception],
    *,
    what: str = "file",
    missing_ok: bool = False,
    expected: str = "a mapping",
) -> dict[str, Any]:
    """The mapping at the top of a YAML file (an empty file is `{}`).

    A missing file is `{}` with `missing_ok`, else `error("{what} not found: PATH")`; an unreadable
    file, invalid YAML (with its line) and a top level that is not a mapping raise `error` too.
    """
    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return {}
        raise error(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise error(f"{path}{line}: invalid YAML ({err.__class__.__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: the top level must be {expected}, not {type(data).__name__}")
    return data


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside `path` and rename it into place: readers see the old
    file or the new one, never a torn write, even if the process dies half-way."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under `root` (and `root`) to disk: a rename published
    after this cannot expose a version whose weights are still only in the page cache."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))
