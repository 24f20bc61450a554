"""`switchboard intents list|add|rename|retire`: the intent taxonomy beside the registry's versions.

Served intents are the champion's labels; `add` makes a pending intent (feedback may name it at
once, `switchboard retrain` trains it once it has enough examples), `rename` and `retire` are
carried out by the next retrain (see `serving.taxonomy`). A router with the same registry picks
a change up at its next model load, or at once through `POST /v1/admin/intents`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from router.cli._common import DEFAULT_REGISTRY, RegistryOpt, console, fail, user_errors

if TYPE_CHECKING:
    from serving.registry import Registry
    from serving.taxonomy import Changes, Taxonomy

app = typer.Typer(
    help="Intents: list them, add new ones (pending until retrained), rename or retire them.",
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
