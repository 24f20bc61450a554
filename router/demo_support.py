"""What `router.demo` needs besides its steps: quiet child processes, a spinner, the answer key.

The demo runs the product's own commands (`switchboard train`, `models register`, `retrain`) as
child processes with the libraries' progress bars and logs turned off through their environment
variables; a child's output goes to a log file and is shown only when the command fails. Only the
standard library, httpx and rich: nothing here loads a model.
"""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

# the libraries' own switches for their progress bars, warnings and INFO logs
QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",  # LOAD REPORT, "Loading weights", "Writing model shards"
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # "Map: 0%"
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",  # any other tqdm bar
    "VLLM_LOGGING_LEVEL": "ERROR",  # its INFO lines and a warning per weight it loads
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore",
    "SWITCHBOARD_LOG_LEVEL": "warning",
}


class DemoError(RuntimeError):
    """A step failed; the message says which and ends with the tail of its output."""


def quiet_environment() -> dict[str, str]:
    """This process's environment with the libraries silenced (for the children), and the
    in-process loggers the demo itself touches set to warnings only."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return {**os.environ, **QUIET_ENV}


def run_command(
    args: Sequence[str], *, log: Path, cwd: Path, env: dict[str, str], ok: Sequence[int] = (0,)
) -> subprocess.CompletedProcess[str]:
    """Run `python -m router.cli ARGS` with its output captured into `log`; an exit code not in
    `ok` raises DemoError with the output's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "router.cli", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    if proc.returncode not in ok:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise DemoError(f"`switchboard {args[0]}` exited with {proc.returncode} (log: {log})\n{tail}")
    return proc


@contextmanager
def spinner(console: Console, waiting: str) -> Iterator[None]:
    """A spinner with `waiting` and the time so far, gone when the block ends (on a terminal only)."""
    if not console.is_terminal:
        yield
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        progress.add_task(waiting)
        yield


def answer_key(dataset: Path, extra: dict[str, str | None]) -> dict[str, str | None]:
    """What the demo's reviewer knows: every labelled text of `dataset`'s CSV files, plus `extra`
    (None: no intent fits)."""
    key: dict[str, str | None] = {}
    for path in sorted(dataset.glob("*.csv")):
        with path.open(newline="") as fh:
            key.update((row["text"], row["label"]) for row in csv.DictReader(fh))
    return {**key, **extra}


def read_csv_texts(path: Path) -> list[str]:
    with path.open(newline="") as fh:
        return [row["text"] for row in csv.DictReader(fh)]
