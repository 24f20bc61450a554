"""`switchboard review export`: the review queue as a file a labelling team works through.

Formats: `csv` (with an empty `correct_intent` column to fill in), `jsonl` (the same fields, one
object a line, `correct_intent: null`) and `label-studio` (a JSON list of Label Studio tasks with
the router's answer as a pre-annotation). `switchboard feedback import` reads each of them back.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from router.cli._common import DEFAULT_DATABASE_URL, DatabaseUrlOpt, console, fail, open_store

if TYPE_CHECKING:
    from router.store.queries import QueueItem, ReviewStrategy

app = typer.Typer(help="The review queue: logged requests worth labelling, as files.", no_args_is_help=True)

EXPORT_COLUMNS = (
    "request_id", "text", "predicted_intent", "confidence", "margin", "route", "count", "alternatives",
)  # fmt: skip


class Strategy(StrEnum):  # router.store.queries.ReviewStrategy's names (the CLI starts without the store)
    uncertainty = "uncertainty"
    diverse = "diverse"
    fallback = "fallback"
    disagreement = "disagreement"
    random = "random"
    audit = "audit"
    shadow_disagreement = "shadow_disagreement"


class Format(StrEnum):
    csv = "csv"
    jsonl = "jsonl"
    label_studio = "label-studio"


def iso_datetime(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {value!r}") from None


@app.command("export")
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write.")],
    database_url: DatabaseUrlOpt = DEFAULT_DATABASE_URL,
    strategy: Annotated[
        Strategy,
        typer.Option(
            case_sensitive=False,
            help="uncertainty: smallest top-1/top-2 margin first; fallback: sent to the fallback "
            "route; disagreement: overruled by the escalation LLM; random: a seeded sample.",
        ),
    ] = Strategy.uncertainty,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Items at most.")] = 50,
    since: Annotated[
        datetime | None,
        typer.Option(parser=iso_datetime, help="Only requests from this time on (ISO 8601; UTC if no zone)."),
    ] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Only requests this model version answered.")
    ] = None,
    route: Annotated[str | None, typer.Option(help="Only requests sent to this route.")] = None,
    intent: Annotated[str | None, typer.Option(help="Only requests with this predicted intent.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random strategy.")] = 0,
    scan_limit: Annotated[
        int, typer.Option(min=1, help="Rank only the newest this many matching requests.")
    ] = 50_000,
    fmt: Annotated[Format, typer.Option("--format", case_sensitive=False, help="File format.")] = Format.csv,
) -> None:
    """Write the review queue (requests without feedback, best first) to a file to label."""
    from router.store.queries import review_queue

    with open_store(database_url) as engine:
        items = review_queue(
            engine,
            strategy=cast("ReviewStrategy", strategy.value),
            limit=limit,
            since=since,
            model_version=model_version,
            route=route,
            intent=intent,
            seed=seed,
            scan_limit=scan_limit,
        )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8", newline="") as f:
            WRITERS[fmt](items, f)
    except OSError as err:
        fail(f"cannot write {output}: {err.strerror or err}")
    requests = sum(item.count for item in items)
    console.print(
        f"wrote {len(items)} items ({requests} requests, strategy {strategy.value}) to {output}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def _row(item: QueueItem) -> dict[str, Any]:
    return {
        "request_id": item.request_id,
        "text": item.text,
        "predicted_intent": item.predicted_intent,
        "confidence": round(item.confidence, 6),
        "margin": item.margin,
        "route": item.route,
        "count": item.count,
        "alternatives": item.alternatives,
    }


def _write_csv(items: list[QueueItem], f: Any) -> None:
    writer = csv.DictWriter(f, fieldnames=[*EXPORT_COLUMNS, "correct_intent"])
    writer.writeheader()
    for item in items:
        row = _row(item)
        row["margin"] = "" if item.margin is None else item.margin
        row["alternatives"] = json.dumps(item.alternatives, ensure_ascii=False)
        writer.writerow({**row, "correct_intent": ""})


def _write_jsonl(items: list[QueueItem], f: Any) -> None:
    for item in items:
        f.write(json.dumps({**_row(item), "correct_intent": None}, ensure_ascii=False) + "\n")


def _write_label_studio(items: list[QueueItem], f: Any) -> None:
    tasks = [
        {
            "data": {"text": item.text, "request_id": item.request_id},
            "predictions": [
                {
                    "model_version": item.model_version,
                    "score": round(item.confidence, 6),
                    "result": [
                        {
                            "from_name": "intent",
                            "to_name": "text",
                            "type": "choices",
                            "value": {"choices": [item.predicted_intent]},
                        }
                    ],
                }
            ],
        }
        for item in items
    ]
    json.dump(tasks, f, ensure_ascii=False, indent=1)
    f.write("\n")


WRITERS = {Format.csv: _write_csv, Format.jsonl: _write_jsonl, Format.label_studio: _write_label_studio}
