"""`switchboard models list|show|register|promote|rollback`: the model registry from the shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from serving.registry import Registry
from training.formatting import pct

models_app = typer.Typer(
    help="Model registry: versions, champion/challenger aliases, rollback.", no_args_is_help=True
)
console = Console()

RegistryOpt = Annotated[
    Path,
    typer.Option("--registry", "-r", envvar="SWITCHBOARD_REGISTRY", help="Registry directory."),
]
DEFAULT_REGISTRY = Path("runs/registry")


def _registry(path: Path) -> Registry:
    return Registry(path)


@models_app.command("list")
def list_versions(registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """All versions, newest last, with their aliases and test accuracy."""
    reg = _registry(registry)
    aliases = {v: k for k, v in reg.aliases().items() if k != "history"}
    table = Table(title=f"models in {registry}")
    for col in ("version", "alias", "parent", "dataset", "test acc.", "test macro-F1", "created"):
        table.add_column(col)
    for v in reg.versions():
        test = v.metrics.get("test", {})
        table.add_row(
            v.version,
            aliases.get(v.version, ""),
            v.meta.get("parent") or "",
            v.meta.get("dataset") or "",
            pct(test.get("accuracy"), 1),
            pct(test.get("macro_f1"), 1),
            v.meta.get("created", ""),
        )
    console.print(table)


@models_app.command()
def show(
    ref: Annotated[str, typer.Argument(help="v0003, 3, champion or challenger")],
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """One version's metadata as JSON."""
    from router.cli import user_errors  # lazy: router.cli registers this sub-app

    with user_errors():
        v = _registry(registry).get(ref)
    print(json.dumps({**v.meta, "path": str(v.path)}, indent=2))


@models_app.command()
def register(
    model_dir: Annotated[Path, typer.Argument(help="An exported model directory.")],
    alias: Annotated[str | None, typer.Option(help="champion or challenger")] = None,
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """Copy an exported model in as the next version."""
    from router.cli import user_errors  # lazy: router.cli registers this sub-app

    with user_errors():
        v = _registry(registry).register(model_dir, alias=alias)
    console.print(f"registered [bold]{v.version}[/] at {v.path}" + (f" as {alias}" if alias else ""))


@models_app.command()
def promote(
    ref: Annotated[
        str, typer.Argument(help="Version to make champion (default: challenger).")
    ] = "challenger",
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """Make a version the champion (the old one is kept for rollback)."""
    from router.cli import user_errors  # lazy: router.cli registers this sub-app

    with user_errors():
        v = _registry(registry).promote(ref)
    console.print(f"champion is now [bold]{v.version}[/]")


@models_app.command()
def rollback(registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """Restore the previous champion."""
    from router.cli import user_errors  # lazy: router.cli registers this sub-app

    with user_errors():
        v = _registry(registry).rollback()
    console.print(f"champion rolled back to [bold]{v.version}[/]")
