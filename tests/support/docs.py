"""The docs as tests/test_docs.py reads them: fenced blocks and inline code of Markdown files,
the shell commands in them, the `switchboard` invocations among those, and the check of an
invocation against the CLI. `support.doc_env` collects the `SWITCHBOARD_*` names something reads,
`support.doc_blocks` runs the blocks marked ```` ```bash runnable ````.

Nothing here imports a heavy library; `typer.main.get_command` builds the CLI's click tree from
`router.cli` without running a command.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SEPARATORS = {";", "&", "&&", "|", "||", "|&", "(", ")", ";;"}
_REDIRECTS = {">", ">>", "<", "<<", "<<<", ">&", "&>", "&>>", "<&", ">|"}
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")  # a metavariable of a usage line: COMMAND, MODEL_DIR
_PREFIXES = {"time", "exec", "nohup", "env", "sudo", "command", "then", "do", "else", "if", "while", "!"}


# ------------------------------------------------------------------------------ Markdown


@dataclass(frozen=True)
class Fence:
    """A fenced code block: `line` is the opening fence's (1-based); `lines` its content."""

    path: Path
    line: int
    info: str
    lines: tuple[tuple[int, str], ...]

    @property
    def words(self) -> list[str]:
        return self.info.split()

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


@dataclass(frozen=True)
class Markdown:
    path: Path
    fences: tuple[Fence, ...]
    prose: tuple[str, ...]  # every line, those of fences blank, so indexes are line numbers - 1


def read_markdown(path: Path) -> Markdown:
    """Fences (CommonMark: ``` or ~~~, closed by the same character at least as long) and prose."""
    lines = path.read_text(encoding="utf-8").splitlines()
    prose = list(lines)
    fences: list[Fence] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening or (opening[1][0] == "`" and "`" in opening[2]):
            i += 1
            continue
        marker, info, start = opening[1], opening[2].strip(), i
        body: list[tuple[int, str]] = []
        i += 1
        while i < len(lines):
            closing = _FENCE.match(lines[i])
            if (
                closing
                and closing[1][0] == marker[0]
                and len(closing[1]) >= len(marker)
                and not closing[2].strip()
            ):
                break
            body.append((i + 1, lines[i]))
            i += 1
        for j in range(start, min(i + 1, len(lines))):
            prose[j] = ""
        fences.append(Fence(path, start + 1, info, tuple(body)))
        i += 1
    return Markdown(path, tuple(fences), tuple(prose))


def inline_code(doc: Markdown) -> Iterator[tuple[int, str]]:
    """(line, code) of every inline code span of the prose. Spans may wrap lines (their line
    breaks become spaces) but not paragraphs, so each paragraph is searched on its own."""
    paragraph: list[tuple[int, str]] = []
    for number, text in [*enumerate(doc.prose, 1), (len(doc.prose) + 1, "")]:
        if text.strip():
            paragraph.append((number, text))
            continue
        if paragraph:
            yield from _spans(paragraph)
        paragraph = []


def _spans(paragraph: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    text = "\n".join(t for _, t in paragraph)
    starts = [0]
    for _, t in paragraph:
        starts.append(starts[-1] + len(t) + 1)
    for match in re.finditer(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", text, re.S):
        index = max(i for i, s in enumerate(starts[:-1]) if s <= match.start())
        yield paragraph[index][0], " ".join(match[2].split())


# ------------------------------------------------------------------------------ shell commands


def logical_lines(lines: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
    """(first line, text) of each command line, `\\`-continued lines joined; blank ones dropped."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, text in lines:
        if pending is not None:
            number, text = pending[0], pending[1] + " " + text.strip()
            pending = None
        if text.rstrip().endswith("\\") and not text.rstrip().endswith("\\\\"):
            pending = (number, text.rstrip()[:-1].rstrip())
            continue
        if text.strip():
            out.append((number, text))
    if pending is not None and pending[1].strip():
        out.append(pending)
    return out


def _tokens(text: str) -> list[str]:
    text = re.sub(r"(?<=\s)\d+(?=[<>])", "", text)  # `2>&1`: the descriptor is no word
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote (prose, YAML): words and separators, unquoted
        return re.findall(r"&&|\|\||[;&|()<>]|[^\s;&|()<>]+", text.split(" #", 1)[0])


def simple_commands(text: str) -> list[list[str]]:
    """The words of each simple command of a shell line, without leading `NAME=value`
    assignments, redirections and prefixes such as `time` or `exec`."""
    commands: list[list[str]] = []
    words: list[str] = []
    skip_next = False
    for token in [*_tokens(text), ";"]:
        if skip_next:
            skip_next = False
            continue
        if token in _SEPARATORS or set(token) <= set(";&|()"):
            if words:
                commands.append(words)
            words = []
        elif token in _REDIRECTS or set(token) <= set("<>&"):
            skip_next = True
        elif not words and (_ASSIGNMENT.match(token) or token in _PREFIXES):
            continue
        else:
            words.append(token)
    return commands


def switchboard_args(words: Sequence[str]) -> list[str] | None:
    """The arguments of a `switchboard` invocation (also `python -m router.cli`, as torchrun and
    `accelerate launch` run it); None when `words` runs another program."""
    if Path(words[0]).name == "switchboard":
        return list(words[1:])
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] == "router.cli":
            return list(words[i + 2 :])
    return None


@dataclass(frozen=True)
class DocPlace:
    """A line of a doc, for failure messages: `where` is `path:line` from the repository root."""

    path: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


@dataclass(frozen=True)
class Invocation(DocPlace):
    """`switchboard ARGS` as a doc names it: in a fenced block (any language: a YAML manifest
    holds shell commands too) or in inline code."""

    text: str
    args: tuple[str, ...]


def invocations(paths: Iterable[Path] = DOCS) -> list[Invocation]:
    found: list[Invocation] = []
    for path in paths:
        doc = read_markdown(path)
        sources = [*(ln for fence in doc.fences for ln in logical_lines(fence.lines)), *inline_code(doc)]
        for number, text in sources:
            for words in simple_commands(text):
                args = switchboard_args(words)
                if args is not None:
                    found.append(Invocation(path, number, text.strip(), tuple(_unbracket(a) for a in args)))
    return found


def _unbracket(arg: str) -> str:
    """`[--dataset` / `PATH]` of a usage line's optional parts -> `--dataset` / `PATH`."""
    return arg.removeprefix("[").removesuffix("]") if len(arg) > 1 else arg


# ------------------------------------------------------------------------------ the CLI


def cli() -> Any:
    """The click command tree of `switchboard`."""
    import typer.main

    from router.cli import app

    return typer.main.get_command(app)


def _context(command: Any, parent: Any, name: str) -> Any:
    import typer

    return typer.Context(command, parent=parent, info_name=name)


def _is_group(command: Any) -> bool:
    return hasattr(command, "list_commands")


def option_names(command: Any, ctx: Any) -> set[str]:
    """Every spelling of every option of `command`, `--help` and `--no-x` forms included."""
    return {
        name
        for param in command.get_params(ctx)
        if param.param_type_name == "option"
        for name in (*param.opts, *param.secondary_opts)
    }


def check_invocation(root: Any, args: Sequence[str]) -> list[str]:
    """What is wrong with `switchboard ARGS`: a command that does not exist, an option the
    command does not have. Arguments and option values are not checked (docs use placeholders)."""
    command, ctx, path = root, _context(root, None, "switchboard"), "switchboard"
    i = 0
    while _is_group(command) and i < len(args):
        token = args[i]
        if token.startswith("-"):
            if token.split("=", 1)[0] not in option_names(command, ctx):
                return [f"`{path}` has no option {token.split('=', 1)[0]}"]
            i += 1
            continue
        if PLACEHOLDER.fullmatch(token):  # `switchboard COMMAND --help`: options of some command
            names = {n for _, c, x in walk(command) if not _is_group(c) for n in option_names(c, x)}
            unknown = [a.split("=", 1)[0] for a in args[i + 1 :] if _is_option(a.split("=", 1)[0])]
            return [f"no `{path} {token}` has an option {name}" for name in unknown if name not in names]
        sub = command.get_command(ctx, token)
        if sub is None:
            known = ", ".join(command.list_commands(ctx))
            return [f"`{path}` has no command {token!r} (it has: {known})"]
        command, ctx, path = sub, _context(sub, ctx, token), f"{path} {token}"
        i += 1
    problems = []
    names = option_names(command, ctx)
    for token in args[i:]:
        if token == "--":
            break
        name = token.split("=", 1)[0]
        if _is_option(name) and name not in names:
            problems.append(f"`{path}` has no option {name}")
    return problems


def _is_option(token: str) -> bool:
    return token.startswith("-") and token != "-" and not _is_number(token)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def walk(root: Any) -> Iterator[tuple[str, Any, Any]]:
    """(path, command, context) of every command of the tree, groups included."""
    stack = [("switchboard", root, _context(root, None, "switchboard"))]
    while stack:
        path, command, ctx = stack.pop()
        yield path, command, ctx
        if _is_group(command):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                stack.append((f"{path} {name}", sub, _context(sub, ctx, name)))
