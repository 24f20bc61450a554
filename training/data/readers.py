"""File-format readers: local files and directories -> :class:`SourceData`.

Accepted layouts (see ``data/README.md``):

* a directory with ``train.{csv,jsonl,json}`` and optional ``validation``/``valid``/``val``
  and ``test`` files, columns ``text`` + ``label`` (or Banking77's ``category``), optional
  ``route``; optional ``categories.json`` (declared label list, or label -> description)
  and ``routes.yaml`` (intent -> route);
* a CLINC150 directory or ``data_full.json`` (splits of ``[text, label]`` pairs, out-of-scope
  as ``oos``), with an optional ``domains.json`` giving each intent its domain as route;
* OpenAI fine-tuning JSONL: ``{"prompt", "completion"}`` or ``{"messages": [...]}`` lines;
* a single csv/jsonl/json file, which becomes the train split.

Readers only parse and locate; :mod:`training.data.validate` judges the content.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from serving.files import read_yaml_mapping
from training.data.types import OOS_LABEL, DatasetError, Record, SourceData, preview

__all__ = [
    "SPLIT_STEMS",
    "SUFFIXES",
    "read_clinc",
    "read_path",
    "read_records",
    "read_routes_file",
]

#: Accepted file stems per split, in order of preference.
SPLIT_STEMS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}
SUFFIXES = (".csv", ".jsonl", ".json")
TEXT_COLUMN = "text"
LABEL_COLUMNS = ("label", "category", "intent")  # first one present wins
ROUTE_COLUMN = "route"
CLINC_FILE = "data_full.json"
CLINC_KEYS: dict[str, tuple[str, ...]] = {
    "train": ("train", "oos_train"),
    "validation": ("val", "oos_val"),
    "test": ("test", "oos_test"),
}


# -- entry point ---------------------------------------------------------------------


def read_path(path: Path) -> SourceData:
    """Read a dataset directory or a single data file."""
    if path.is_dir():
        return _read_directory(path)
    if path.is_file():
        return _read_single_file(path)
    raise DatasetError(f"dataset not found: {path} does not exist")


def _read_directory(directory: Path) -> SourceData:
    clinc_file = directory / CLINC_FILE
    if clinc_file.is_file():
        source = read_clinc(clinc_file)
    else:
        files = {split: _find_split_file(directory, split) for split in SPLIT_STEMS}
        train_file = files["train"]
        if train_file is None:
            expected = ", ".join(f"train{suffix}" for suffix in SUFFIXES)
            raise DatasetError(f"no train file in {directory}: expected one of {expected} or {CLINC_FILE}")
        validation_file, test_file = files["validation"], files["test"]
        source = SourceData(
            name=directory.name,
            train=read_records(train_file),
            validation=read_records(validation_file) if validation_file else None,
            test=read_records(test_file) if test_file else None,
            origins={split: str(file) for split, file in files.items() if file is not None},
        )
        source.routes = _routes_from_records(source)
    _read_sidecars(directory, source)
    return source


def _read_single_file(path: Path) -> SourceData:
    data = _load_json(path) if path.suffix == ".json" else None
    if isinstance(data, dict):  # CLINC-style {"train": [[text, label], ...], ...}
        source = read_clinc(path, data)
        _read_sidecars(path.parent, source)
        return source
    is_split_name = any(path.stem in stems for stems in SPLIT_STEMS.values())
    source = SourceData(
        name=path.parent.name if is_split_name else path.stem,
        train=read_records(path, data),
        origins={"train": str(path)},
    )
    source.routes = _routes_from_records(source)
    return source


def _find_split_file(directory: Path, split: str) -> Path | None:
    found = [
        directory / f"{stem}{suffix}"
        for stem in SPLIT_STEMS[split]
        for suffix in SUFFIXES
        if (directory / f"{stem}{suffix}").is_file()
    ]
    if len(found) > 1:
        names = ", ".join(file.name for file in found)
        raise DatasetError(f"{directory}: more than one {split} file ({names}); keep one")
    return found[0] if found else None


def _read_sidecars(directory: Path, source: SourceData) -> None:
    """``categories.json`` (declared labels/descriptions), ``domains.json``, ``routes.yaml``."""
    categories = directory / "categories.json"
    if categories.is_file():
        source.declared_labels, descriptions = _read_categories(categories)
        source.descriptions.update(descriptions)
        source.origins["categories"] = str(categories)
    domains = directory / "domains.json"
    if domains.is_file():
        source.routes.update(_read_domains(domains))
    for name in ("routes.yaml", "routes.yml"):
        routes_file = directory / name
        if routes_file.is_file():
            file_routes = read_routes_file(routes_file)
            differing = sorted(
                label for label, route in file_routes.items() if source.routes.get(label, route) != route
            )
            if differing:
                source.warnings.append(
                    f"{routes_file} overrides other route sources for {preview(differing)}"
                )
            source.routes.update(file_routes)
            break


# -- tables: csv / jsonl / json lists --------------------------------------------------


def read_records(path: Path, data: Any = None) -> list[Record]:
    """Records of one csv / jsonl / json file (generic, Banking77 or OpenAI layout).

    ``data``: the already parsed content of a ``.json`` file, to avoid reading it twice.
    """
    if path.suffix == ".csv":
        return _read_csv(path)
    if path.suffix == ".jsonl":
        return _records_from_objects(_jsonl_objects(path), path)
    if path.suffix == ".json":
        data = _load_json(path) if data is None else data
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
        return _records_from_objects(((f"item {i}", item) for i, item in enumerate(data)), path)
    raise DatasetError(f"{path}: unsupported file type {path.suffix!r} (use .csv, .jsonl or .json)")


def _read_csv(path: Path) -> list[Record]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = columns
        label_column = _label_column(columns, path, "column")
        if TEXT_COLUMN not in columns:
            raise _missing(path, "column", TEXT_COLUMN, columns)
        records = []
        for row in reader:
            records.append(
                Record(
                    text=(row.get(TEXT_COLUMN) or "").strip(),
                    label=(row.get(label_column) or "").strip(),
                    where=f"{path} line {reader.line_num}",
                    route=(row.get(ROUTE_COLUMN) or "").strip() or None,
                )
            )
    return records


def _jsonl_objects(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path} line {number}: invalid JSON ({error.msg})") from None


def _records_from_objects(objects: Iterator[tuple[str, Any]], path: Path) -> list[Record]:
    """Generic ``text``/``label`` objects or OpenAI fine-tuning lines; format from the first."""
    records: list[Record] = []
    parse = None
    for place, obj in objects:
        where = f"{path} {place}"
        if not isinstance(obj, dict):
            raise DatasetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        if parse is None:
            if "messages" in obj:
                parse = _parse_chat
            elif "prompt" in obj and "completion" in obj:
                parse = _parse_prompt_completion
            else:
                parse = _parse_table_object
        records.append(parse(obj, where))
    return records


def _parse_table_object(obj: Mapping[str, Any], where: str) -> Record:
    keys = list(obj)
    if TEXT_COLUMN not in obj:
        raise _missing(where, "field", TEXT_COLUMN, keys)
    label_key = _label_column(keys, where, "field")
    route = obj.get(ROUTE_COLUMN)
    return Record(
        text=_string(obj[TEXT_COLUMN], where, TEXT_COLUMN),
        label=_string(obj[label_key], where, label_key),
        where=where,
        route=_string(route, where, ROUTE_COLUMN) or None,
    )


def _parse_prompt_completion(obj: Mapping[str, Any], where: str) -> Record:
    for key in ("prompt", "completion"):
        if key not in obj:
            raise _missing(where, "field", key, list(obj))
    return Record(
        text=_string(obj["prompt"], where, "prompt"),
        label=_string(obj["completion"], where, "completion"),
        where=where,
    )


def _parse_chat(obj: Mapping[str, Any], where: str) -> Record:
    messages = obj.get("messages")
    if not isinstance(messages, list):
        raise DatasetError(f"{where}: 'messages' must be a list of {{role, content}} objects")
    last: dict[str, str] = {}
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise DatasetError(f"{where}: each message needs a 'role' and 'content'")
        last[message["role"]] = _content_text(message.get("content"), where)
    for role in ("user", "assistant"):
        if role not in last:
            raise DatasetError(
                f"{where}: no {role!r} message (text = last user message, label = last assistant message)"
            )
    return Record(text=last["user"], label=last["assistant"], where=where)


def _content_text(content: Any, where: str) -> str:
    """Message content as text: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, list):
        parts = [part.get("text", "") for part in content if isinstance(part, dict)]
        return " ".join(str(part) for part in parts).strip()
    return _string(content, where, "content")


def _label_column(columns: list[str], where: Path | str, kind: str) -> str:
    for name in LABEL_COLUMNS:
        if name in columns:
            return name
    raise _missing(where, kind, "' or '".join(LABEL_COLUMNS), columns)


def _missing(where: Path | str, kind: str, name: str, found: list[str]) -> DatasetError:
    shown = ", ".join(found) if found else "none"
    return DatasetError(f"{where}: missing {kind} '{name}' (found {kind}s: {shown})")


def _string(value: Any, where: str, key: str) -> str:
    """A stripped string; numbers are accepted as labels, ``None`` becomes ``""``."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DatasetError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return str(value).strip()


def _load_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8-sig") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path} line {error.lineno}: invalid JSON ({error.msg})") from None


def _routes_from_records(source: SourceData) -> dict[str, str]:
    """Intent -> route from a ``route`` column; one route per intent."""
    routes: dict[str, str] = {}
    for records in (source.train, source.validation or [], source.test or []):
        for record in records:
            if record.route is None or not record.label:
                continue
            known = routes.setdefault(record.label, record.route)
            if known != record.route:
                raise DatasetError(
                    f"{record.where}: label {record.label!r} has route {record.route!r} "
                    f"but {known!r} elsewhere; an intent has one route"
                )
    return routes


# -- CLINC150 ----------------------------------------------------------------------------


def read_clinc(path: Path, data: Any = None) -> SourceData:
    """CLINC150 ``data_full.json``: in-scope and out-of-scope (``oos``) parts merged per split.

    ``data``: the already parsed file content, if the caller has it.
    """
    data = _load_json(path) if data is None else data
    if not isinstance(data, dict) or "train" not in data:
        found = ", ".join(data) if isinstance(data, dict) else type(data).__name__
        raise DatasetError(f"{path}: missing key 'train' (found keys: {found})")
    splits: dict[str, list[Record] | None] = {}
    origins: dict[str, str] = {}
    for split, keys in CLINC_KEYS.items():
        present = [key for key in keys if key in data]
        if not present:
            splits[split] = None
            continue
        splits[split] = [rec for key in present for rec in _clinc_pairs(data[key], path, key)]
        origins[split] = f"{path} [{'+'.join(present)}]"
    return SourceData(
        name=path.parent.name if path.name == CLINC_FILE else path.stem,
        train=splits["train"] or [],
        validation=splits["validation"],
        test=splits["test"],
        origins=origins,
    )


def _clinc_pairs(items: Any, path: Path, key: str) -> list[Record]:
    if not isinstance(items, list):
        raise DatasetError(f"{path} [{key}]: expected a list of [text, label] pairs")
    records = []
    for i, item in enumerate(items):
        where = f"{path} [{key}][{i}]"
        if not isinstance(item, list) or len(item) != 2:
            raise DatasetError(f"{where}: expected a [text, label] pair, got {item!r:.60}")
        text = _string(item[0], where, "text")
        label = OOS_LABEL if key.startswith("oos") else _string(item[1], where, "label")
        records.append(Record(text=text, label=label, where=where))
    return records


def _read_domains(path: Path) -> dict[str, str]:
    """``domains.json`` (domain -> intents) inverted to intent -> domain."""
    data = _load_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DatasetError(f"{path}: expected an object mapping each domain to a list of intents")
    return {str(intent): str(domain) for domain, intents in data.items() for intent in intents}


def _read_categories(path: Path) -> tuple[list[str], dict[str, str]]:
    """``categories.json``: a list of labels, or an object label -> description."""
    data = _load_json(path)
    if isinstance(data, list) and all(isinstance(label, str) for label in data):
        return [label.strip() for label in data], {}
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return [str(label).strip() for label in data], {
            str(k).strip(): v.strip() for k, v in data.items() if v.strip()
        }
    raise DatasetError(f"{path}: expected a JSON list of label names or an object label -> description")


# -- route map -----------------------------------------------------------------------------


def read_routes_file(path: Path) -> dict[str, str]:
    """The ``routes:`` mapping (intent -> route) of a route-map YAML file."""
    data = read_yaml_mapping(path, DatasetError, what="route map", expected="a mapping with a 'routes:' key")
    routes = data.get("routes")
    if not isinstance(routes, dict):
        raise DatasetError(f"{path}: expected a 'routes:' mapping of intent -> route")
    bad = [str(k) for k, v in routes.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise DatasetError(f"{path}: routes without a route name: {preview(bad)}")
    return {str(intent).strip(): route.strip() for intent, route in routes.items()}
