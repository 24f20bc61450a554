"""`switchboard feedback import`: labels from a review team, stored as feedback.

Reads what `switchboard review export` writes, once a person has filled it in: CSV or JSONL rows
with `request_id`, `correct_intent` and optionally `source`, or a Label Studio JSON export (a list
of tasks: `data.request_id`, the last annotation's choice, `completed_by` as the source). Rows are
stored through the store's one feedback path (`router.store.store_feedback`, as `POST
/v1/feedback`), so importing the same file again stores nothing new.

Exit codes: 0 every row was fine (stored, already stored, or left unlabelled), 1 some rows were
rejected (unknown request id or intent, malformed; the good ones are stored), 2 the file cannot be
read as a whole (or bad usage), with one line naming the line.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from router.cli._common import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REGISTRY,
    REGISTRY_ENVVARS,
    DatabaseUrlOpt,
    console,
    fail,
    one_registry_env,
    open_store,
    require_dir,
    user_errors,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

app = typer.Typer(help="Feedback from outside the API: labelled review files.", no_args_is_help=True)

BATCH = 500  # feedback rows per transaction: short, so the router's writer is never held up
SHOWN = 5  # rejected rows listed per kind
SOURCE_MAX = 100  # the feedback table's `source` column


class FileUnreadable(ValueError):
    """The file as a whole cannot be read (exit 2); the message names the line."""


@dataclass(frozen=True)
class Label:
    where: str  # "line 7" or "task 3", for the report
    request_id: str
    correct_intent: str | None  # None: left unlabelled
    source: str | None


@dataclass
class Parsed:
    labels: list[Label] = field(default_factory=list)
    malformed: list[tuple[str, str]] = field(default_factory=list)  # (where, why)


@dataclass
class Report:
    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    unlabelled: int = 0
    unknown_ids: list[str] = field(default_factory=list)
    unknown_intents: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len(self.unknown_ids) + len(self.unknown_intents) + len(self.malformed) + len(self.conflicts)


@app.command("import")
def import_feedback(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV, JSONL or Label Studio JSON export.")],
    database_url: DatabaseUrlOpt = DEFAULT_DATABASE_URL,
    registry: Annotated[
        Path | None,
        typer.Option(
            "--registry",
            "-r",
            envvar=REGISTRY_ENVVARS,
            callback=one_registry_env,
            help="Valid intents: the registry's champion plus pending ones (default: runs/registry).",
        ),
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Valid intents: this model directory's labels.")
    ] = None,
    source: Annotated[
        str, typer.Option(help="Source of rows that name none (Label Studio: the annotator).")
    ] = "review",
    dry_run: Annotated[bool, typer.Option(help="Check everything, store nothing.")] = False,
) -> None:
    """Store the corrected intents of a labelled review file as feedback (idempotent)."""
    if model is not None and registry is not None and _given(ctx, "registry"):
        fail("give --registry or --model, not both")
    if not file.is_file():
        fail(f"file not found: {file}")
    if len(source) > SOURCE_MAX:
        fail(f"--source is longer than {SOURCE_MAX} characters")
    valid = _valid_intents(registry, model)
    try:
        parsed = parse_file(file)
    except FileUnreadable as err:
        fail(f"{file}: {err}")
    report = Report(read=len(parsed.labels) + len(parsed.malformed))
    report.malformed = [f"{where}: {why}" for where, why in parsed.malformed]
    todo: list[Label] = []
    for label in parsed.labels:
        if label.correct_intent is None:
            report.unlabelled += 1
        elif label.correct_intent not in valid:
            report.unknown_intents.append(f"{label.where}: {label.correct_intent!r}")
        elif label.source is not None and len(label.source) > SOURCE_MAX:
            report.malformed.append(f"{label.where}: source longer than {SOURCE_MAX} characters")
        else:
            todo.append(label)
    with open_store(database_url) as engine:
        _store(engine, todo, source, report, dry_run=dry_run)
    _print(report, file, dry_run, valid)
    raise typer.Exit(1 if report.rejected else 0)


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _valid_intents(registry: Path | None, model: Path | None) -> set[str]:
    with user_errors():
        if model is not None:
            from serving.model_dir import read_model_info

            require_dir(model)
            return set(read_model_info(model).labels)
        from serving.registry import Registry

        registry = registry or DEFAULT_REGISTRY
        require_dir(registry, "registry")
        try:
            labels = Registry(registry).taxonomy().feedback_labels()
        except (OSError, ValueError) as err:  # a taxonomy.json that cannot be read
            fail(f"cannot read the intents of registry {registry}: {err}")
    if not labels:
        fail(f"registry {registry} has no intents (no champion, none pending): use --model DIR")
    return set(labels)


def _store(engine: Engine, todo: list[Label], default_source: str, report: Report, *, dry_run: bool) -> None:
    """Each label through the store's feedback path, `BATCH` rows a transaction; a dry run does
    the same in one transaction it rolls back, so its counts (duplicates within the file
    included) are what the import would store."""
    from router.store import feedback_item, store_feedback

    def store(conn: Connection, labels: list[Label]) -> None:
        for label in labels:
            assert label.correct_intent is not None
            item = feedback_item(label.request_id, label.correct_intent, label.source or default_source)
            status = store_feedback(conn, item).status
            if status == "created":
                report.accepted += 1
            elif status == "replayed":
                report.duplicates += 1
            elif status == "not_found":
                report.unknown_ids.append(f"{label.where}: {label.request_id!r}")
            else:  # an idempotency key stored with other data: cannot happen for payload keys
                report.conflicts.append(f"{label.where}: {label.request_id!r}")

    with engine.connect() as conn:
        if dry_run:
            with conn.begin() as transaction:
                store(conn, todo)
                transaction.rollback()
            return
        for start in range(0, len(todo), BATCH):
            with conn.begin():
                store(conn, todo[start : start + BATCH])


def _print(report: Report, file: Path, dry_run: bool, valid: set[str]) -> None:
    def say(line: str) -> None:
        console.print(line, highlight=False, markup=False, soft_wrap=True)

    say(
        f"{'dry run, nothing stored: ' if dry_run else ''}{file}: {report.read} rows read: "
        f"{report.accepted} accepted, {report.duplicates} duplicates, {report.unlabelled} unlabelled, "
        f"{len(report.unknown_ids)} unknown request ids, {len(report.unknown_intents)} unknown intents, "
        f"{len(report.malformed)} malformed"
        + (f", {len(report.conflicts)} conflicts" if report.conflicts else "")
    )
    for what, entries in (
        ("unknown request id", report.unknown_ids),
        ("unknown intent", report.unknown_intents),
        ("malformed", report.malformed),
        ("conflicting feedback", report.conflicts),
    ):
        for entry in entries[:SHOWN]:
            say(f"  {what} on {entry}")
        if len(entries) > SHOWN:
            say(f"  ... and {len(entries) - SHOWN} more {what} rows")
    if report.unknown_intents:
        shown = sorted(valid)
        say(f"  valid intents: {', '.join(shown[:30])}{', ...' if len(shown) > 30 else ''}")


# -- reading the file ---------------------------------------------------------------------------


def parse_file(path: Path) -> Parsed:
    """The labels in a CSV, JSONL or Label Studio file (by suffix, else by its first character)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise FileUnreadable(f"line {line}: not UTF-8 text") from None
    suffix = path.suffix.lower()
    first = text.lstrip()[:1]
    if suffix == ".json" or (suffix not in (".csv", ".jsonl", ".ndjson") and first == "["):
        return _parse_label_studio(text)
    if suffix in (".jsonl", ".ndjson") or (suffix != ".csv" and first == "{"):
        return _parse_jsonl(text)
    return _parse_csv(text)


def _parse_csv(text: str) -> Parsed:
    reader = csv.reader(io.StringIO(text, newline=""))
    parsed = Parsed()
    try:
        header = next(reader, None)
        if header is None:
            raise FileUnreadable("line 1: empty file, expected a CSV header")
        columns = [c.strip() for c in header]
        missing = [c for c in ("request_id", "correct_intent") if c not in columns]
        if missing:
            raise FileUnreadable(f"line 1: the CSV header has no {' and no '.join(missing)} column")
        index = {
            name: columns.index(name)
            for name in ("request_id", "correct_intent", "source")
            if name in columns
        }
        start = reader.line_num + 1
        for row in reader:
            where, start = f"line {start}", reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                parsed.malformed.append((where, f"{len(row)} fields, the header has {len(columns)}"))
                continue
            request_id = row[index["request_id"]].strip()
            if not request_id:
                parsed.malformed.append((where, "no request_id"))
                continue
            source = row[index["source"]].strip() if "source" in index else ""
            parsed.labels.append(
                Label(where, request_id, row[index["correct_intent"]].strip() or None, source or None)
            )
    except csv.Error as err:
        raise FileUnreadable(f"line {reader.line_num}: {err}") from None
    return parsed


def _parse_jsonl(text: str) -> Parsed:
    parsed = Parsed()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            parsed.malformed.append((where, f"not JSON ({err.msg})"))
            continue
        label = _label(where, row)
        if isinstance(label, str):
            parsed.malformed.append((where, label))
        else:
            parsed.labels.append(label)
    return parsed


def _label(where: str, row: Any) -> Label | str:
    """A JSONL row as a label, or why it is not one."""
    if not isinstance(row, dict):
        return "not a JSON object"
    request_id, intent, source = row.get("request_id"), row.get("correct_intent"), row.get("source")
    if not isinstance(request_id, str) or not request_id.strip():
        return "no request_id"
    if intent is not None and not isinstance(intent, str):
        return "correct_intent is not a string"
    if source is not None and not isinstance(source, str):
        return "source is not a string"
    return Label(where, request_id.strip(), (intent or "").strip() or None, (source or "").strip() or None)


def _parse_label_studio(text: str) -> Parsed:
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as err:
        raise FileUnreadable(f"line {err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(tasks, list):
        raise FileUnreadable("line 1: a Label Studio export is a JSON list of tasks")
    parsed = Parsed()
    for number, task in enumerate(tasks, 1):
        where = f"task {number}"
        label = _task_label(where, task)
        if isinstance(label, str):
            parsed.malformed.append((where, label))
        else:
            parsed.labels.append(label)
    return parsed


def _task_label(where: str, task: Any) -> Label | str:
    """A Label Studio task as a label (its last annotation's choice), or why it is not one."""
    if not isinstance(task, dict):
        return "not a task object"
    data = task.get("data")
    request_id = data.get("request_id") if isinstance(data, dict) else None
    if not isinstance(request_id, str) or not request_id.strip():
        return "no data.request_id"
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        return "annotations is not a list"
    last = annotations[-1] if annotations else {}
    if not isinstance(last, dict):
        return "an annotation is not an object"
    results = last.get("result") or []
    if last.get("was_cancelled") or not results:  # skipped or never annotated
        return Label(where, request_id.strip(), None, None)
    choice = _choice(results)
    if choice is None:
        return "the last annotation has no intent choice"
    return Label(where, request_id.strip(), choice, _annotator(last.get("completed_by")))


def _choice(results: Any) -> str | None:
    if not isinstance(results, list):
        return None
    picks = [r for r in results if isinstance(r, dict) and r.get("type", "choices") == "choices"]
    picks.sort(key=lambda r: r.get("from_name") != "intent")  # the `intent` control first
    for result in picks:
        value = result.get("value")
        choices = value.get("choices") if isinstance(value, dict) else None
        if isinstance(choices, list) and choices and isinstance(choices[0], str) and choices[0].strip():
            return choices[0].strip()
    return None


def _annotator(completed_by: Any) -> str | None:
    """Label Studio writes a user id, or (older exports) a user object: its email, else its id."""
    if isinstance(completed_by, dict):
        completed_by = completed_by.get("email") or completed_by.get("id")
    if completed_by is None or isinstance(completed_by, bool) or completed_by == "":
        return None
    return str(completed_by)
