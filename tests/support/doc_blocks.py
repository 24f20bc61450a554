"""The blocks of the docs marked ```` ```bash runnable ````: which are slow, which train a model
another needs, each as a bash script run in a temporary workspace (tests/test_docs.py says how)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.docs import DOCS, REPO, Fence, logical_lines, read_markdown, simple_commands, switchboard_args

VENV_BIN = REPO / ".venv" / "bin"
RUNNABLE = "runnable"  # the info-string word: ```bash runnable
SHELL_LANGUAGES = {"bash"}
# what a runnable block may read, copied (not linked: a command cannot change the repo) into
# the temporary directory it runs in
WORKSPACE_INPUTS = ("configs", "data")

# commands that train or serve (or load a model for minutes): their blocks are `slow`
SLOW_COMMANDS = {"train", "retrain", "evaluate", "check-vllm", "serve", "bench", "baseline"}
TRAINING_COMMANDS = {"train", "retrain"}
SLOW_PROGRAMS = {"make", "python", "python3", "torchrun", "accelerate", "docker"}


@dataclass
class Block:
    """A fenced block marked runnable: its commands (line, text) and how they relate to others."""

    fence: Fence
    commands: list[tuple[int, str]]
    produces: list[str] = field(default_factory=list)  # paths its `switchboard train -o` writes
    needs: list[str] = field(default_factory=list)  # such paths of other blocks it names
    slow: bool = False

    @property
    def where(self) -> str:
        return self.fence.where


def runnable_fences(paths: Iterable[Path] = DOCS) -> list[Fence]:
    return [f for p in paths for f in read_markdown(p).fences if RUNNABLE in f.words[1:]]


def runnable_blocks(paths: Iterable[Path] = DOCS) -> list[Block]:
    return blocks_of([f for f in runnable_fences(paths) if f.words[0] in SHELL_LANGUAGES])


def blocks_of(fences: Iterable[Fence]) -> list[Block]:
    """The fences as blocks: which are slow, which train a model, which need another's."""
    blocks = []
    for fence in fences:
        block = Block(fence, logical_lines(fence.lines))
        for _, text in block.commands:
            for words in simple_commands(text):
                args = switchboard_args(words)
                if (args and args[0] in SLOW_COMMANDS) or (args is None and words[0] in SLOW_PROGRAMS):
                    block.slow = True
                if args and args[0] == "train":
                    block.produces.extend(_option_values(args, {"--output", "-o"}))
        blocks.append(block)
    for block in blocks:
        named = {w for _, text in block.commands for cmd in simple_commands(text) for w in cmd}
        for other in blocks:
            if other is not block:
                for path in other.produces:
                    if path not in block.produces and any(
                        w == path or w.startswith(f"{path}/") for w in named
                    ):
                        block.needs.append(path)
        block.slow = block.slow or bool(block.needs)
    return blocks


def training_commands(blocks: Iterable[Block]) -> list[tuple[Block, int, str]]:
    return [
        (block, number, text)
        for block in blocks
        for number, text in block.commands
        for words in simple_commands(text)
        if (args := switchboard_args(words)) and args[0] in TRAINING_COMMANDS
    ]


def _option_values(args: Sequence[str], names: set[str]) -> list[str]:
    values = []
    for i, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if name in names:
            value = value or (args[i + 1] if i + 1 < len(args) else "")
            if value and not value.startswith(("/", "$", "~")):
                values.append(os.path.normpath(value))
    return values


_WAIT_READY = r"""
__wait_ready() {  # PID LOG: until /readyz answers 200, the server dies, or 300 s pass
  "$__DOC_PYTHON" - "$1" "$2" "http://127.0.0.1:${SWITCHBOARD_PORT}/readyz" <<'PY'
import os, sys, time, urllib.request
pid, log, url = int(sys.argv[1]), sys.argv[2], sys.argv[3]
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        state = "Z"
    if state == "Z":
        tail = open(log).read()[-3000:]
        sys.exit(f"switchboard serve exited before it was ready; its log ({log}) ends:\n{tail}")
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            if answer.status == 200:
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.5)
sys.exit(f"switchboard serve not ready in 300 s; its log ({log}) ends:\n" + open(log).read()[-3000:])
PY
}
__cleanup() {
  for pid in "${__serve_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${__serve_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
__serve_pids=()
trap __cleanup EXIT
"""


def _is_serve(text: str) -> bool:
    """A line that is exactly one `switchboard serve ...` (it serves until stopped)."""
    commands = simple_commands(text)
    args = switchboard_args(commands[0]) if len(commands) == 1 else None
    return bool(args) and args[0] == "serve"  # type: ignore[index]


def block_script(block: Block, port: int) -> str:
    """The block as one bash script, `set -eu -o pipefail`: before each command its doc line
    goes to $__DOC_STATE; a `switchboard serve` line runs in the background (log in
    $__DOC_LOGS) and the script waits for /readyz; the servers get SIGTERM when it ends.
    The server listens on `port` (SWITCHBOARD_PORT), so `localhost:8000` in the commands
    is rewritten to it."""
    lines = ["set -eu -o pipefail", _WAIT_READY]
    for number, text in block.commands:
        if text.lstrip().startswith("#"):
            continue
        text = re.sub(r"\b(localhost|127\.0\.0\.1):8000\b", rf"\1:{port}", text)
        lines.append(f'echo {number} > "$__DOC_STATE"')
        if _is_serve(text):
            log = f'"$__DOC_LOGS/serve-{number}.log"'
            lines.append(f"{text.split(' #', 1)[0].rstrip()} > {log} 2>&1 &")
            lines.append(f"__serve_pids+=($!); __wait_ready $! {log}")
        else:
            lines.append(text)
    return "\n".join(lines) + "\n"


def prepare_workspace(path: Path) -> Path:
    """An empty directory with copies of the inputs the docs' commands read (data/, configs/)."""
    path.mkdir(parents=True)
    for name in WORKSPACE_INPUTS:
        shutil.copytree(REPO / name, path / name)
    return path


def block_env(workspace: Path, port: int) -> dict[str, str]:
    """This process's environment without any SWITCHBOARD_* of its own, the repo's .venv/bin
    first on PATH, CPU only, offline, and every path a command may default to inside `workspace`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(VENV_BIN.parent),
        CUDA_VISIBLE_DEVICES="",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        XDG_CACHE_HOME=str(workspace / ".cache"),
        SWITCHBOARD_REGISTRY_DIR=str(workspace / "runs" / "registry"),
        SWITCHBOARD_DATABASE_URL=f"sqlite:///{workspace / 'switchboard.db'}",
        SWITCHBOARD_DATA_DIR=str(workspace / "datasets"),  # empty: no shared dataset is used
        SWITCHBOARD_PORT=str(port),
        SWITCHBOARD_HOST="127.0.0.1",
        __DOC_PYTHON=str(VENV_BIN / "python"),
        __DOC_STATE=str(workspace / ".doc-line"),
        __DOC_LOGS=str(workspace / ".doc-logs"),
    )
    return env


@dataclass
class Outcome:
    returncode: int | None  # None: timed out
    output: str
    line: int | None  # the doc line of the command running when it stopped
    logs: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_block(block: Block, workspace: Path, timeout_s: float) -> Outcome:
    """Run the block's script in `workspace` (in its own session, killed whole on timeout)."""
    from router.devserver import free_port

    port = free_port()
    env = block_env(workspace, port)
    (workspace / ".doc-logs").mkdir(exist_ok=True)
    script = workspace / ".doc-block.sh"
    script.write_text(block_script(block, port))
    proc = subprocess.Popen(
        ["bash", str(script)],
        cwd=workspace,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout_s)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        code = None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a server the script left behind
    state = workspace / ".doc-line"
    line = int(state.read_text()) if state.is_file() and state.read_text().strip() else None
    logs = {p.name: p.read_text(errors="replace") for p in sorted((workspace / ".doc-logs").glob("*.log"))}
    return Outcome(code, output, line, logs)


class DocRuns:
    """Each block runs once per session in its own workspace under `root`; a block that names a
    path another block trains (`switchboard train -o PATH`) gets a copy of that block's PATH
    first (its trainer runs first if it has not yet). `timeout_s(block)`: its time limit."""

    def __init__(self, root: Path, blocks: Sequence[Block], timeout_s: Any) -> None:
        self.root, self.blocks, self.timeout_s = root, blocks, timeout_s
        self.done: dict[str, tuple[Path, Outcome]] = {}
        self.running: set[str] = set()

    def run(self, block: Block) -> tuple[Path, Outcome]:
        """(workspace, outcome); an AssertionError when a block it needs failed."""
        if block.where in self.done:
            return self.done[block.where]
        assert block.where not in self.running, f"{block.where}: blocks need each other's models"
        self.running.add(block.where)
        workspace = prepare_workspace(self.root / re.sub(r"\W+", "-", block.where))
        for path in block.needs:
            producer = next(b for b in self.blocks if path in b.produces)
            source, outcome = self.run(producer)
            if not outcome.ok:
                raise AssertionError(
                    f"{block.where} needs {path}, which {producer.where} writes, and that block failed:\n"
                    + failure_report(producer, outcome)
                )
            (workspace / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source / path, workspace / path, symlinks=True)
        outcome = run_block(block, workspace, self.timeout_s(block))
        self.done[block.where] = (workspace, outcome)
        self.running.discard(block.where)
        return workspace, outcome


def failure_report(block: Block, outcome: Outcome, tail: int = 4000) -> str:
    command = dict(block.commands).get(outcome.line or -1, "?")
    what = "timed out" if outcome.returncode is None else f"exit code {outcome.returncode}"
    parts = [
        f"{block.fence.path.relative_to(REPO)}:{outcome.line or block.fence.line}: {what}",
        f"command: {command}",
        f"block: {block.where}",
        "output (tail):",
        outcome.output[-tail:],
    ]
    for name, text in outcome.logs.items():
        parts += [f"{name} (tail):", text[-tail // 2 :]]
    return "\n".join(parts)
