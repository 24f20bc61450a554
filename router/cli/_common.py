"""What every `switchboard` command shares: consoles, the one-line error path, option types.

Known, user-caused failures (a bad config, dataset, model directory, registry, store or price
file, and bad command-line usage) become one line on stderr and exit code 2; anything else is a
bug and propagates with its traceback. Nothing here imports a heavy library, and no command
module imports the package root `router.cli` (it imports them).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

if TYPE_CHECKING:
    from sqlalchemy import Engine

console = Console()
err_console = Console(stderr=True)

# (module, class) of the errors a user causes. Looked up in `sys.modules` when an exception
# arrives rather than imported up front: an instance of a class means its module is loaded, and
# `training.modeling` (ModelLoadError) would otherwise pull in torch for `switchboard models list`.
_USER_ERRORS = (
    ("training.config", "ConfigError"),
    ("training.data.types", "DatasetError"),
    ("training.modeling", "ModelLoadError"),
    ("serving.registry", "RegistryError"),
    ("serving.lineage", "LineageError"),
    ("serving.taxonomy", "TaxonomyError"),
    ("serving.model_dir", "ModelDirError"),
    ("serving.llm.pricing", "PriceError"),
    ("serving.llm.client", "FewShotError"),
    ("router.store.db", "StoreError"),
    ("router.settings", "SettingsError"),
    ("router.policy", "PolicyError"),
)


def fail(message: str, code: int = 2) -> NoReturn:
    """`error: MESSAGE` on one line of stderr, then exit `code` (2: bad input)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def is_user_error(err: BaseException) -> bool:
    for module_name, class_name in _USER_ERRORS:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(cls, type) and isinstance(err, cls):
            return True
    return False


@contextmanager
def user_errors() -> Iterator[None]:
    """Known, user-caused errors -> one line and exit 2; anything else is a bug and propagates."""
    try:
        yield
    except Exception as err:
        if is_user_error(err):
            fail(str(err))
        raise


class OneLineErrors(TyperGroup):
    """The root group: a usage error (unknown option or command, a value not among the choices, a
    missing argument) is one `error:` line naming the command's --help, not a boxed usage text."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        with _usage_errors():
            return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:  # parses the subcommand's arguments
        with _usage_errors():
            return super().invoke(ctx)


@contextmanager
def _usage_errors() -> Iterator[None]:
    # typer (>= 0.29) vendors click: its usage errors are `typer.TyperException`s with exit code 2
    try:
        yield
    except typer.TyperException as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # `switchboard models` alone: the help text
            raise
        message = " ".join(err.format_message().split()).replace(": Value error, ", ": ")
        ctx = getattr(err, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        fail(message + where, code=err.exit_code)


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "datasets", "urllib3", "filelock", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # On CPUs with AVX-512 bf16, bitsandbytes looks for an optional Hub kernel at import and warns
    # when it is absent (always, offline); it falls back to its own implementation.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def print_metrics(metrics: dict[str, Any], title: str) -> None:
    from training.report import metrics_table, per_intent_table

    console.print(metrics_table(metrics, title=title))
    console.print(per_intent_table(metrics, worst=5))


def require_dir(path: Path, what: str = "model directory") -> None:
    """Fail (exit 2) unless `path` is a directory: before any heavy import or long load."""
    if not path.is_dir():
        fail(f"{what} not found: {path}")


# -- option and argument types shared by several commands ---------------------------------------

DATASET_HELP = "Dataset dir/file, `banking77`, `clinc150` or a hub id."
DEFAULT_REGISTRY = Path("runs/registry")

DatasetOpt = Annotated[str | None, typer.Option("--dataset", "-d", help=DATASET_HELP)]
RequiredDatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help=DATASET_HELP)]
ModelDirArg = Annotated[Path, typer.Argument(help="An exported model directory.")]
ProgressOpt = Annotated[bool, typer.Option(help="Show progress bars.")]
# the registry setting's environment names: SWITCHBOARD_REGISTRY_DIR (canonical, the router's
# setting) and SWITCHBOARD_REGISTRY (alias); both set to different directories is an error
REGISTRY_ENVVARS = ["SWITCHBOARD_REGISTRY_DIR", "SWITCHBOARD_REGISTRY"]


def one_registry_env(ctx: typer.Context, param: Any, value: Path | None) -> Path | None:
    """Option callback of `--registry`: when its value came from the environment, the two
    names must not disagree (the one-line usage error names both)."""
    from router.registry_env import RegistryEnvError, registry_from_env

    source = ctx.get_parameter_source(param.name) if param.name else None
    if source is not None and source.name == "ENVIRONMENT":
        try:
            registry_from_env()
        except RegistryEnvError as err:
            raise typer.BadParameter(str(err)) from None
    return value


RegistryOpt = Annotated[
    Path,
    typer.Option(
        "--registry",
        "-r",
        envvar=REGISTRY_ENVVARS,
        callback=one_registry_env,
        help="Registry directory (env SWITCHBOARD_REGISTRY_DIR or SWITCHBOARD_REGISTRY).",
    ),
]


DatabaseUrlOpt = Annotated[
    str, typer.Option(envvar="SWITCHBOARD_DATABASE_URL", help="The router's store (SQLAlchemy URL).")
]
DEFAULT_DATABASE_URL = "sqlite:///switchboard.db"


@contextmanager
def open_store(database_url: str) -> Iterator[Engine]:
    """The store's engine, once its schema is known to be this version's (exit 2 otherwise);
    database errors while it is open become one line and exit 2."""
    from sqlalchemy.exc import SQLAlchemyError

    from router.store import create_db_engine, current_revision, head_revision

    with user_errors():
        engine = create_db_engine(database_url)
    where = engine.url.render_as_string(hide_password=True)
    try:
        revision = current_revision(engine)
        if revision is None:
            fail(f"no request log at {where}: no router has used this database")
        if revision != head_revision():
            fail(
                f"the request log at {where} is at schema revision {revision}, this version needs "
                f"{head_revision()}: start the router once, or run `python -m router.store.db URL`"
            )
        yield engine
    except SQLAlchemyError as err:
        first = str(getattr(err, "orig", None) or err).strip().splitlines()
        fail(f"cannot read the request log at {where}: {type(err).__name__}: {first[0] if first else ''}")
    finally:
        engine.dispose()


def training_split(model_dir: Path) -> dict[str, Any]:
    """`seed` and `validation_fraction` from the `data` section of the model's training config
    (`config.yaml`, written at export), those that are there; `{}` without one."""
    from serving.files import read_yaml_mapping
    from serving.model_dir import ModelDirError

    config = read_yaml_mapping(model_dir / "config.yaml", ModelDirError, what="model config", missing_ok=True)
    data = config.get("data")
    if not isinstance(data, dict):
        return {}
    split: dict[str, Any] = {}
    if isinstance(data.get("seed"), int) and not isinstance(data["seed"], bool):
        split["seed"] = data["seed"]
    if isinstance(data.get("validation_fraction"), int | float):
        split["validation_fraction"] = float(data["validation_fraction"])
    return split
