"""`switchboard models list|show|register|migrate|promote|rollback|examples|export-onnx`: model dirs
from the shell."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from router.cli import export_onnx, rollout
from router.cli._common import (
    DEFAULT_REGISTRY,
    ModelDirArg,
    RegistryOpt,
    RequiredDatasetOpt,
    console,
    err_console,
    fail,
    is_user_error,
    quiet_libraries,
    require_dir,
    training_split,
    user_errors,
)

if TYPE_CHECKING:
    from serving.registry import Registry

app = typer.Typer(
    help="Model registry (versions, aliases, rollback, live rollouts) and model directories.",
    no_args_is_help=True,
)
app.add_typer(rollout.shadow_app, name="shadow")
app.add_typer(rollout.canary_app, name="canary")
app.command("history")(rollout.history)
app.command("export-onnx")(export_onnx.export_onnx)


class Alias(StrEnum):
    champion = "champion"
    challenger = "challenger"


def _registry(path: Path) -> Registry:
    from serving.registry import Registry

    return Registry(path)


@app.command("list")
def list_versions(registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """All versions, newest last, with their aliases and test accuracy."""
    from rich.table import Table

    from training.formatting import pct

    with user_errors():
        reg = _registry(registry)
        aliases = {v: k for k, v in reg.aliases().items() if k != "history"}
        versions = reg.versions()
    table = Table(title=f"models in {registry}")
    for col in ("version", "alias", "parent", "dataset", "test acc.", "test macro-F1", "created"):
        table.add_column(col)
    for v in versions:
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


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="v0003, 3, champion or challenger")],
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """One version's metadata as JSON."""
    with user_errors():
        v = _registry(registry).get(ref)
    print(json.dumps({**v.meta, "path": str(v.path)}, indent=2))


@app.command()
def register(
    model_dir: ModelDirArg,
    alias: Annotated[Alias | None, typer.Option(case_sensitive=False, show_default=False)] = None,
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """Copy an exported model in as the next version, with its line's data and base model (so a
    retrain needs nothing outside the registry)."""
    with user_errors():
        v = _registry(registry).register(model_dir, alias=None if alias is None else alias.value)
    as_alias = f" as {alias.value}" if alias is not None else ""
    console.print(f"registered [bold]{v.version}[/] at {v.path}{as_alias}")
    quiet_libraries()
    from training.line_snapshot import ensure_lineage

    try:
        lineage = ensure_lineage(registry, v.path)
    except Exception as err:  # registered all the same: a retrain of this line needs `migrate`
        if not is_user_error(err):
            raise
        err_console.print(f"[yellow]warning:[/] {err}", highlight=False, soft_wrap=True)
        return
    console.print(
        f"its line's data and base model are in the registry ({lineage['dataset']})", highlight=False
    )


@app.command()
def migrate(
    ref: Annotated[str, typer.Argument(help="v0003, 3, champion or challenger")] = "champion",
    dataset: Annotated[
        str | None,
        typer.Option(help="The data the line was first trained on, where its recorded place is gone."),
    ] = None,
    base_model: Annotated[
        str | None, typer.Option(help="The line's base model directory, where it is not on this machine.")
    ] = None,
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """Store a version's line (original data, base model) in the registry, so that a retrain needs
    only the registry and the database; `switchboard retrain` does this on first use too."""
    quiet_libraries()
    with user_errors():
        from training.line_snapshot import ensure_lineage

        v = _registry(registry).get(ref)
        lineage = ensure_lineage(registry, v.path, dataset=dataset, base_model=base_model)
    print(json.dumps({"version": v.version, **lineage}, indent=2))


@app.command()
def promote(
    ref: Annotated[
        str, typer.Argument(help="Version to make champion (default: challenger).")
    ] = "challenger",
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """Make a version the champion (the old one is kept for rollback)."""
    with user_errors():
        v = _registry(registry).promote(ref)
    console.print(f"champion is now [bold]{v.version}[/]")


@app.command()
def rollback(registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """Restore the previous champion."""
    with user_errors():
        v = _registry(registry).rollback()
    console.print(f"champion rolled back to [bold]{v.version}[/]")


@app.command()
def examples(
    model_dir: ModelDirArg,
    dataset: RequiredDatasetOpt,
    seed: Annotated[
        int | None,
        typer.Option(help="Sampling seed (default: the model's training seed in its config.yaml, else 42)."),
    ] = None,
) -> None:
    """(Re)write MODEL_DIR's few-shot examples (fewshot.json), the prompt of the router's cascade."""
    require_dir(model_dir)
    quiet_libraries()
    with user_errors():
        from serving.model_dir import read_fewshot, read_model_info
        from training.data import load_dataset

        labels = read_model_info(model_dir).labels
        # split as the model's training did, so that the examples come from its train part only
        split = training_split(model_dir)
        split_seed = split.pop("seed", 42)
        seed = split_seed if seed is None else seed
        data = load_dataset(dataset, seed=split_seed, **split)
        if not set(labels) & set(data.label_map.labels):
            fail(f"dataset {data.name!r} shares no intent with the model in {model_dir}")

        from training.export import write_fewshot  # loads torch: only once the inputs are good

        path = write_fewshot(data, model_dir, seed=seed)
        written = read_fewshot(path).per_intent
    console.print(
        f"wrote {path}: {len(written)} intents, {sum(map(len, written.values()))} examples "
        f"(from {data.name}, seed {seed})",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    missing = [label for label in labels if label not in written]
    if missing:
        err_console.print(
            f"warning: no examples for {len(missing)} of the model's {len(labels)} intents: "
            + ", ".join(missing[:10])
            + (", ..." if len(missing) > 10 else ""),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
