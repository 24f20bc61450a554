"""`switchboard models shadow|canary|history`: a challenger's live rollout from the shell.

The same transitions as `/v1/admin/rollout` (serving.rollout), written to the registry; every
router replica follows them within its `registry_poll_s`.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from router.cli._common import DEFAULT_REGISTRY, RegistryOpt, console, user_errors

shadow_app = typer.Typer(help="Run a challenger in shadow beside the champion.", no_args_is_help=True)
canary_app = typer.Typer(
    help="Let the challenger in shadow answer a share of requests.", no_args_is_help=True
)


@shadow_app.command("start")
def shadow_start(
    ref: Annotated[str, typer.Argument(help="v0003, 3 or challenger")] = "challenger",
    share: Annotated[float, typer.Option(help="Share of requests it classifies in shadow, in (0, 1].")] = 1.0,
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """Put a challenger in shadow: it classifies requests after the champion's answer is sent."""
    from serving.registry import Registry
    from serving.rollout import start_shadow

    with user_errors():
        state = start_shadow(Registry(registry), ref, shadow_share=share, by="cli", reason="switchboard CLI")
    console.print(
        f"[bold]{state.challenger}[/] is in shadow beside champion {state.champion}", highlight=False
    )


@shadow_app.command("stop")
def shadow_stop(registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """End the rollout; the champion stays."""
    _finish(registry, "stopped")


@canary_app.command("start")
def canary_start(
    share: Annotated[float, typer.Option(help="Share of requests the challenger answers, in (0, 1).")] = 0.1,
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """The challenger in shadow answers `share` of requests (sticky by the metadata key)."""
    from serving.registry import Registry
    from serving.rollout import start_canary

    with user_errors():
        state = start_canary(Registry(registry), share, by="cli", reason="switchboard CLI")
    console.print(f"[bold]{state.challenger}[/] answers {state.share:.0%} of requests", highlight=False)


@canary_app.command("stop")
def canary_stop(registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """Roll the canary back; the champion answers everything again."""
    _finish(registry, "rolled_back")


def _finish(registry: RegistryOpt, outcome: str) -> None:
    from serving.registry import Registry
    from serving.rollout import finish

    with user_errors():
        state = finish(Registry(registry), outcome, by="cli", reason="switchboard CLI")  # type: ignore[arg-type]
    console.print(f"rollout of {state.challenger}: {outcome.replace('_', ' ')}", highlight=False)


def history(
    registry: RegistryOpt = DEFAULT_REGISTRY,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Every rollout transition (shadow, canary, promoted, rolled back, rejected) with its reason."""
    from rich.table import Table

    from serving.registry import Registry
    from serving.rollout import history as read_history
    from serving.rollout import read_rollout

    with user_errors():
        reg = Registry(registry)
        entries = read_history(reg)
        now = read_rollout(reg)
    if as_json:
        for entry in entries:
            print(json.dumps(entry))
        return
    table = Table(title=f"rollout history of {registry}")
    for column in ("at", "event", "challenger", "champion", "by", "reason"):
        table.add_column(column)
    for e in entries:
        table.add_row(*(str(e.get(k, "")) for k in ("at", "event", "challenger", "champion", "by", "reason")))
    console.print(table)
    running = f"{now.challenger} in {now.stage}" if now else "none"
    console.print(f"running now: {running}", highlight=False)
