"""The `SWITCHBOARD_*` names the docs and deploy/** mention, and those something reads: the
settings model, the code (`os.environ`, `getenv`), a CLI option's `envvar`, Docker Compose's
interpolation of the shipped compose files; each collected from the source, not listed by hand."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.docs import DOCS, REPO, DocPlace, cli, walk

ENV_DOCS = [*DOCS, *sorted(p for p in (REPO / "deploy").rglob("*") if p.is_file())]
CODE_DIRS = [REPO / name for name in ("router", "training", "serving", "benchmarks")]
ENV_NAME = re.compile(r"\bSWITCHBOARD_[A-Z0-9_]*[A-Z0-9](?![A-Za-z0-9_*])")


@dataclass(frozen=True)
class EnvMention(DocPlace):
    name: str


def env_mentions(paths: Iterable[Path] = ENV_DOCS) -> list[EnvMention]:
    """Every `SWITCHBOARD_NAME` in the text files among `paths` (not `SWITCHBOARD_*`, a prefix)."""
    found: list[EnvMention] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            found.extend(EnvMention(path, number, m[0]) for m in ENV_NAME.finditer(line))
    return found


def settings_env_names() -> set[str]:
    """The names the settings model reads: its prefix + each field's name, or the field's
    aliases where it has them (`validation_alias`, `AliasChoices`, `alias`), as
    pydantic-settings does."""
    from pydantic import AliasChoices, AliasPath

    from router.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    upper = not Settings.model_config.get("case_sensitive", False)
    names = set()
    for name, info in Settings.model_fields.items():
        aliases: list[str] = []
        for alias in (info.validation_alias, info.alias):
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
            for choice in choices:
                first = choice.path[0] if isinstance(choice, AliasPath) else choice
                if isinstance(first, str):
                    aliases.append(first)
            if aliases:
                break
        for env in aliases or [f"{prefix}{name}"]:
            names.add(env.upper() if upper else env)
    return names


def cli_env_names(root: Any) -> set[str]:
    """The `envvar`s of every option of every `switchboard` command."""
    names: set[str] = set()
    for _, command, ctx in walk(root):
        for param in command.get_params(ctx):
            envvar = getattr(param, "envvar", None)
            names.update([envvar] if isinstance(envvar, str) else envvar or [])
    return names


def compose_variables(deploy: Path = REPO / "deploy") -> set[str]:
    """The variables Docker Compose interpolates (`${NAME}`, `${NAME:-default}`) in the shipped
    compose files: read by `docker compose` from the environment, so docs may name them."""
    names: set[str] = set()
    for path in deploy.rglob("compose*.y*ml"):
        names.update(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))
    return names


def code_env_reads(dirs: Iterable[Path] = CODE_DIRS) -> set[str]:
    """Environment names the code reads: `os.environ[X]`, `os.environ.get(X)`, `.setdefault`,
    `.pop`, `os.getenv(X)`, `X in os.environ`, the same on a name bound to `os.environ`, with X a
    string, an f-string or concatenation of constants, or a constant (of the module or imported
    from one of ours)."""
    modules = {_module_name(path, d.parent): path for d in dirs for path in d.rglob("*.py")}
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in modules.items()}
    constants: dict[str, dict[str, Any]] = {}

    def module_constants(name: str) -> dict[str, Any]:
        if name not in constants:
            constants[name] = {}  # a cycle sees what is known so far
            constants[name] = _constants(trees[name], name, module_constants, trees)
        return constants[name]

    found: set[str] = set()
    for name, tree in trees.items():
        env = module_constants(name)
        for key in _environ_keys(tree):
            value = _value(key, env)
            for item in value if isinstance(value, list | tuple) else [value]:
                if isinstance(item, str):
                    found.add(item)
    return found


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _constants(tree: ast.Module, module: str, lookup: Any, trees: dict[str, ast.Module]) -> dict[str, Any]:
    env: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in trees.keys() - {module}:
            theirs = lookup(node.module)
            for alias in node.names:
                if alias.name in theirs:
                    env[alias.asname or alias.name] = theirs[alias.name]
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for target in targets:
            if isinstance(target, ast.Name):
                resolved = _value(value, env)
                if resolved is not None:
                    env[target.id] = resolved
    return env


def _value(node: ast.expr, env: dict[str, Any]) -> Any:
    """A string (or list of strings) the expression always has, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return env.get(node.id)
    if isinstance(node, ast.JoinedStr):
        parts = [
            _value(v.value, env) if isinstance(v, ast.FormattedValue) else _value(v, env) for v in node.values
        ]
        return "".join(parts) if all(isinstance(p, str) for p in parts) else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _value(node.left, env), _value(node.right, env)
        return left + right if isinstance(left, str) and isinstance(right, str) else None
    if isinstance(node, ast.List | ast.Tuple):
        items = [_value(e, env) for e in node.elts]
        return items if all(isinstance(i, str) for i in items) else None
    return None


def _is_environ(node: ast.expr, bound: set[str]) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and (node.id == "environ" or node.id in bound)


def _environ_keys(tree: ast.Module) -> Iterator[ast.expr]:
    # names bound to os.environ anywhere in the module (`env = os.environ if x is None else x`)
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            _is_environ(n, set()) for n in ast.walk(node.value) if isinstance(n, ast.expr)
        ):
            bound.update(t.id for t in node.targets if isinstance(t, ast.Name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_environ(node.value, bound):
            yield node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            func = node.func
            mapping = func.attr in {"get", "setdefault", "pop"} and _is_environ(func.value, bound)
            getenv = func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os"
            if mapping or getenv:
                yield node.args[0]
        elif (
            isinstance(node, ast.Compare)
            and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
            and any(_is_environ(c, bound) for c in node.comparators)
        ):
            yield node.left


def allowed_env_names() -> dict[str, set[str]]:
    """Each source of `SWITCHBOARD_*` names something reads, by what reads it."""
    prefix = "SWITCHBOARD_"
    sources = {
        "settings model": settings_env_names(),
        "code (os.environ / getenv)": code_env_reads(),
        "CLI options (envvar)": cli_env_names(cli()),
        "compose interpolation": compose_variables(),
    }
    return {what: {n for n in names if n.startswith(prefix)} for what, names in sources.items()}
