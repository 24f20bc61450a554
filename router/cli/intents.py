"""`switchboard intents list|add|rename|retire|discover`: the intent taxonomy beside the registry's
versions, and the discovery job that proposes the intents it lacks.

Served intents are the champion's labels; `add` makes a pending intent (feedback may name it at
once, `switchboard retrain` trains it once it has enough examples), `rename` and `retire` are
carried out by the next retrain (see `serving.taxonomy`). A router with the same registry picks
a change up at its next model load, or at once through `POST /v1/admin/intents`. `discover`
groups the queries the router could not route into proposals (router.discovery), which
`GET /v1/discover` and the review inbox show and act on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from router.cli._common import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REGISTRY,
    DatabaseUrlOpt,
    ProgressOpt,
    RegistryOpt,
    console,
    fail,
    open_store,
    quiet_libraries,
    user_errors,
)

if TYPE_CHECKING:
    from serving.registry import Registry
    from serving.taxonomy import Changes, Taxonomy

app = typer.Typer(
    help="Intents: list them, add new ones (pending until retrained), rename or retire them, "
    "discover the ones the taxonomy lacks.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="Intent name (letters, digits, _ . : -).")]


def _registry(path: Path) -> Registry:
    from serving.registry import Registry

    if not path.is_dir():
        fail(f"no model registry at {path} (set --registry or SWITCHBOARD_REGISTRY_DIR)")
    return Registry(path)


def _change(registry: Path, change: Callable[[Changes, Taxonomy], None]) -> Taxonomy:
    with user_errors():
        return _registry(registry).change_taxonomy(change)


def _say(message: str) -> None:
    console.print(message, highlight=False, markup=False, soft_wrap=True)


@app.command("list")
def list_intents(
    registry: RegistryOpt = DEFAULT_REGISTRY,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Every intent: served (by the champion), pending, retiring or renaming; route, description."""
    with user_errors():
        intents = _registry(registry).taxonomy().intents
    if as_json:
        print(json.dumps([asdict(i) for i in intents], indent=2))
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"intents in {registry}")
    for col in ("intent", "status", "route", "description"):
        table.add_column(col)
    for i in intents:
        status = f"{i.status} -> {i.renamed_to}" if i.renamed_to else i.status
        table.add_row(escape(i.name), status, escape(i.route or ""), escape(i.description))
    console.print(table)


@app.command()
def add(
    name: NameArg,
    route: Annotated[str, typer.Option(help="Where its queries go (a department).")],
    description: Annotated[str, typer.Option(help="What it means (shown to the cascade's LLM).")] = "",
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """Add a pending intent: feedback may name it; retrain trains it once it has enough examples."""
    from serving import taxonomy

    _change(registry, lambda c, t: taxonomy.add(c, t, name, route, description))
    _say(
        f"added {name} (pending, route {route.strip()}): feedback may name it now; "
        "`switchboard retrain` trains it once it has enough examples"
    )


@app.command()
def rename(
    old: Annotated[str, typer.Argument(help="The intent's current name.")],
    new: Annotated[str, typer.Argument(help="Its new name.")],
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """Rename an intent (a pending one at once, a served one at the next retrain)."""
    from serving import taxonomy

    after = _change(registry, lambda c, t: taxonomy.rename(c, t, old, new))
    if after.is_pending(new):
        _say(f"renamed pending intent {old} to {new}")
    elif after.served_name(new) == new:
        _say(f"{new} keeps its name: no rename pending")
    else:
        _say(f"{old} becomes {new} at the next retrain; feedback names it {new} from now on")


@app.command()
def retire(name: NameArg, registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """Retire an intent (a pending one at once, a served one at the next retrain)."""
    from serving import taxonomy

    after = _change(registry, lambda c, t: taxonomy.retire(c, t, name))
    if any(i.name == name for i in after.intents):
        _say(f"{name} is retiring: the next retrain drops it; feedback may no longer name it")
    else:
        _say(f"removed pending intent {name}")


def when(value: str, now: datetime) -> datetime:
    """An ISO 8601 time (naive: UTC) or a span back from now: 30m, 24h, 7d, 2w."""
    units = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    text = value.strip()
    if text[-1:] in units and text[:-1].isdigit():
        return now - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is neither an ISO 8601 time nor a span such as 24h or 7d") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@app.command()
def discover(
    since: Annotated[str, typer.Option(help="Window start: ISO 8601 time or a span back (24h, 7d).")] = "7d",
    until: Annotated[str | None, typer.Option(help="Window end (default: now).")] = None,
    min_size: Annotated[int, typer.Option(help="Distinct queries a proposal needs.", min=2)] = 10,
    below_confidence: Annotated[
        float | None,
        typer.Option(
            help="Also count answers under this top-1 as unrouted (default: fallbacks only).", min=0, max=1
        ),
    ] = None,
    below_margin: Annotated[
        float | None, typer.Option(help="Also count answers under this top-1 minus top-2.", min=0, max=1)
    ] = None,
    regrow_factor: Annotated[
        float, typer.Option(help="A dismissed proposal opens again at this multiple of its size.", min=1)
    ] = 2.0,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    database_url: DatabaseUrlOpt = DEFAULT_DATABASE_URL,
    progress: ProgressOpt = True,
) -> None:
    """Group the window's unrouted queries (fallbacks, out of scope) into proposed intents, with the
    champion's encoder; proposals keep their id across runs. Prints one JSON line."""
    from router.discovery import DiscoverOptions, record
    from router.store.discovery import unrouted_queries
    from training.discovery import cluster_queries

    now = datetime.now(UTC)
    try:
        start = when(since, now)
        end = when(until, now) if until else now
    except ValueError as err:
        fail(f"--since/--until: {err}")
    if start >= end:
        fail(f"--since ({start.isoformat()}) must be before --until ({end.isoformat()})")
    with user_errors():
        champion = _registry(registry).get("champion")
    opts = DiscoverOptions(
        since=start, until=end, min_size=min_size, below_confidence=below_confidence,
        below_margin=below_margin, regrow_factor=regrow_factor,
    )  # fmt: skip
    quiet_libraries()
    with open_store(database_url) as engine, user_errors():
        total, unrouted, queries = unrouted_queries(
            engine, start, end, below_confidence=below_confidence, below_margin=below_margin
        )
        clusters = cluster_queries(
            champion.path, [q.text for q in queries], min_size=min_size, progress=progress
        )
        summary = record(engine, queries, clusters, (total, unrouted), champion.version, opts, now)
    print(json.dumps(summary.to_json()))
