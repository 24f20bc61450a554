"""`switchboard models export-onnx VERSION|DIR`: the ONNX export of a model trained before it existed.

The same export, checks and report as `switchboard train` writes (`training.onnx_pipeline`), on
the texts of the model's own training data: its line's snapshot for a registry version, else the
dataset its `config.yaml` names, split as its training split it; `--dataset` overrides both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from router.cli._common import (
    DATASET_HELP,
    DEFAULT_REGISTRY,
    RegistryOpt,
    console,
    fail,
    quiet_libraries,
    require_dir,
    training_split,
    user_errors,
)

if TYPE_CHECKING:
    from training.data import IntentDataset


def export_onnx(
    model: Annotated[
        str, typer.Argument(help="A model directory, or a registry version (v0003, 3, champion, challenger).")
    ],
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help=f"The model's training data (default: its own). {DATASET_HELP}"),
    ] = None,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    measure_vllm: Annotated[
        bool,
        typer.Option(
            "--measure-vllm",
            help="Also measure vLLM on this host (tens of seconds), for `--engine auto` on CPUs with bf16.",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the export report as JSON.")] = False,
) -> None:
    """Write model.onnx (and model.int8.onnx where int8 keeps the quality) and onnx.json into a
    model directory or registry version: the ONNX Runtime engine's files (`serve --engine onnx`)."""
    quiet_libraries()
    with user_errors():
        model_dir, registry_root = _resolve(model, registry)
        from training.onnx_export import check_exportable

        check_exportable(model_dir)  # generative, decoder, no fast tokenizer: one line, before torch
        data = _training_data(model_dir, registry_root, dataset)

        from serving.model_dir import read_model_info
        from training.onnx_checks import check_texts
        from training.onnx_pipeline import export_checked
        from training.onnx_pipeline import measure_vllm as add_vllm

        texts = check_texts(
            read_model_info(model_dir).labels,
            data.validation.texts, data.validation.labels, data.train.texts,
        )  # fmt: skip
        try:
            report = export_checked(model_dir, texts)
            if measure_vllm and report["passed"]:
                report = add_vllm(model_dir, texts.texts)
        except PermissionError as err:
            fail(f"cannot write the ONNX export into {model_dir}: {err.strerror}: {err.filename}")
    if json_out:
        print(json.dumps(report, indent=2))
    else:
        _print_summary(model_dir, report)
    if not report["passed"]:
        fail(f"the ONNX export of {model_dir} is not served: {report['reason']}", code=1)


def _resolve(model: str, registry: Path) -> tuple[Path, Path | None]:
    """(model directory, its registry root or None): a path when it looks like one or exists."""
    path = Path(model)
    if path.is_dir() or "/" in model or model.startswith("."):
        require_dir(path)
        return path, None
    from serving.registry import Registry

    require_dir(registry, "registry")
    version = Registry(registry).get(model)
    return version.path, registry


def _training_data(model_dir: Path, registry_root: Path | None, dataset: str | None) -> IntentDataset:
    """The model's training data (see the module docstring), split as its training split it."""
    from serving.lineage import is_self_contained, read_lineage
    from training.data import DatasetError, load_dataset

    split = training_split(model_dir)
    seed = split.pop("seed", 42)
    source = dataset
    if source is None and registry_root is not None:
        lineage = read_lineage(model_dir)
        if is_self_contained(lineage):
            from training.line_snapshot import resolved_line

            assert lineage is not None
            source = str(resolved_line(registry_root, lineage)[0])
    if source is None:
        from serving.files import read_yaml_mapping
        from serving.model_dir import ModelDirError

        config = read_yaml_mapping(
            model_dir / "config.yaml", ModelDirError, what="model config", missing_ok=True
        )
        data = config.get("data")
        named = data.get("dataset") if isinstance(data, dict) else None
        if not named:
            raise DatasetError(f"{model_dir} names no training data (config.yaml): pass --dataset")
        source = str(named)
    try:
        return load_dataset(source, seed=seed, **split)
    except DatasetError as err:
        hint = "" if dataset is not None else " (pass --dataset)"
        raise DatasetError(f"the training data of {model_dir}: {err}{hint}") from None


def _print_summary(model_dir: Path, report: dict[str, Any]) -> None:
    files = report.get("files") or {}
    sizes = ", ".join(f"{f['file']} {f['bytes'] / 1e6:.1f} MB" for f in files.values())
    auto = (report.get("speed") or {}).get("auto")
    lines = [
        f"ONNX export of {model_dir}: serves {report.get('precision') or 'nothing'} ({report.get('reason')})",
        f"files: {sizes or 'none'}; {report['seconds']['total']} s",
    ]
    if auto:
        lines.append(f"--engine auto on a host like this: {auto['kind']} ({auto['reason']})")
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
