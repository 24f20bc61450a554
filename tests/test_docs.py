"""Docs that cannot drift: README.md and docs/*.md checked against the code.

Runnable blocks. A fenced block opened with ```` ```bash runnable ```` (the word after the
language; GitHub still highlights it as bash) is run as one bash script (`set -eu -o pipefail`)
with the repo's .venv/bin first on PATH, CPU only and offline, in a fresh temporary directory
holding copies of data/ and configs/ (so `-d data/sample` and `-c configs/...` work and outputs
such as `runs/sample` land there), with SWITCHBOARD_REGISTRY_DIR, SWITCHBOARD_DATABASE_URL and
SWITCHBOARD_DATA_DIR pointing into it and no other inherited SWITCHBOARD_* variable. A line that
is one `switchboard serve` runs in the background on a free port (SWITCHBOARD_PORT; the block's
`localhost:8000` is rewritten to it) and the script waits for /readyz; the server gets SIGTERM
when the block ends. A block with a command of SLOW_COMMANDS (train, evaluate, serve, ...) is
`slow`, the others fast. The model a block trains (`switchboard train -o PATH`) is trained once
per session and copied into every other block that names PATH (also `slow`), so keep at most one
training in the runnable set: CI time is tight (a test below enforces it). A failure names the
doc file and line, the command and the output's tail.

Names. Every `switchboard COMMAND ... --option` in a fenced block (any language: YAML manifests
hold shell commands) or inline code must name an existing command and option (checked on the
Typer app's click tree), and every `SWITCHBOARD_NAME` in the docs and deploy/** must be read by
something: the settings model, the code (`os.environ`, `getenv`), a CLI option's `envvar`, or
Docker Compose's interpolation of the shipped compose files (all collected from the source).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from support.doc_blocks import (
    RUNNABLE,
    Block,
    DocRuns,
    block_script,
    failure_report,
    runnable_blocks,
    runnable_fences,
    training_commands,
)
from support.doc_env import ENV_DOCS, allowed_env_names, code_env_reads, env_mentions
from support.docs import (
    DOCS,
    REPO,
    check_invocation,
    cli,
    inline_code,
    invocations,
    logical_lines,
    read_markdown,
    simple_commands,
    switchboard_args,
)

FAST_TIMEOUT_S = 120
SLOW_TIMEOUT_S = 900  # a training (~1 min on 2 cores) or a server start, with room for a busy machine

BLOCKS = runnable_blocks()


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# ------------------------------------------------------------------------------ the marker


def test_runnable_blocks_are_bash() -> None:
    bad = [
        f.where
        for p in DOCS
        for f in read_markdown(p).fences
        if RUNNABLE in f.words and f.words[:1] != ["bash"]
    ]
    bad += [f.where for f in runnable_fences() if f.words != ["bash", RUNNABLE]]
    assert not bad, f"mark a block runnable as ```bash {RUNNABLE} (nothing else on the line): {bad}"


def test_at_most_one_training_is_runnable() -> None:
    """CI time: every runnable training costs about a minute on 2 cores; one is shared by all."""
    found = [f"{rel(b.fence.path)}:{line}: {text}" for b, line, text in training_commands(BLOCKS)]
    assert len(found) <= 1, "more than one runnable training:\n" + "\n".join(found)


# ------------------------------------------------------------------------------ commands and options


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_switchboard_command_and_option_a_doc_names_exists(doc: Path) -> None:
    root = cli()
    problems = [
        f"{found.where}: {problem}\n    {found.text}"
        for found in invocations([doc])
        for problem in check_invocation(root, found.args)
    ]
    assert not problems, f"{len(problems)} in {rel(doc)}:\n" + "\n".join(problems)


def test_the_command_check_fails_on_what_does_not_exist() -> None:
    root = cli()
    assert check_invocation(root, ["intents", "list", "--registry", "x", "--json", "-r", "y", "--help"]) == []
    assert check_invocation(root, ["train", "-c", "c.yaml", "--no-progress", "optim.epochs=-1"]) == []
    assert check_invocation(root, ["--help"]) == []
    assert check_invocation(root, ["COMMAND", "--help"]) == []
    assert check_invocation(root, ["models", "COMMAND", "--json"]) == []  # `models history --json`
    assert check_invocation(root, ["COMMAND", "--nope"]) == ["no `switchboard COMMAND` has an option --nope"]
    assert check_invocation(root, ["models", "lists"])[0].startswith(
        "`switchboard models` has no command 'lists'"
    )
    assert check_invocation(root, ["models", "list", "--jsn"]) == [
        "`switchboard models list` has no option --jsn"
    ]
    assert check_invocation(root, ["models", "canary", "start", "--shares=0.1"]) == [
        "`switchboard models canary start` has no option --shares"
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("SWITCHBOARD_X=1 switchboard serve --model m  # a comment --nope", [["serve", "--model", "m"]]),
        ("make demo && switchboard models list | head", [["models", "list"]]),
        ("torchrun --nproc_per_node 4 -m router.cli train -c x.yaml", [["train", "-c", "x.yaml"]]),
        ("kubectl -n switchboard create secret generic switchboard-db", []),
        ("uvicorn app --workers 4; pip install -e .; docker compose -f switchboard.yaml up", []),
        ("export T=$(openssl rand -hex 24)   # at least 16 characters", []),
        (
            'switchboard intents add x --description "an ATM\'s card" >out.txt 2>&1',
            [["intents", "add", "x", "--description", "an ATM's card"]],
        ),
        ("image: switchboard:latest", []),
    ],
)
def test_switchboard_invocations_are_found_where_switchboard_runs(
    line: str, expected: list[list[str]]
) -> None:
    found = [args for words in simple_commands(line) if (args := switchboard_args(words)) is not None]
    assert found == expected


def test_inline_code_spans_and_continued_lines(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "Run `switchboard\nevaluate --json` and ``a `b` c``.\n\n`open\n\nnot a span`\n"
        "```bash\nswitchboard retrain \\\n    --holdout 0.2\n```\n"
    )
    markdown = read_markdown(doc)
    assert list(inline_code(markdown)) == [(1, "switchboard evaluate --json"), (2, "a `b` c")]
    assert [logical_lines(f.lines) for f in markdown.fences] == [[(8, "switchboard retrain --holdout 0.2")]]


# ------------------------------------------------------------------------------ environment variables


@pytest.fixture(scope="module")
def allowed() -> dict[str, set[str]]:
    return allowed_env_names()


@pytest.mark.parametrize("path", [p for p in ENV_DOCS if env_mentions([p])], ids=rel)
def test_every_switchboard_variable_is_read_by_something(path: Path, allowed: dict[str, set[str]]) -> None:
    names = set().union(*allowed.values())
    unknown: defaultdict[str, list[str]] = defaultdict(list)
    for mention in env_mentions([path]):
        if mention.name not in names:
            unknown[mention.name].append(str(mention.line))
    assert not unknown, (
        f"{rel(path)} names variables nothing reads (not a setting, nor read by the code, a CLI "
        "option or the compose files):\n"
        + "\n".join(f"{rel(path)}:{', '.join(lines)}: {name}" for name, lines in sorted(unknown.items()))
    )


def test_the_allowed_names_come_from_the_source(allowed: dict[str, set[str]]) -> None:
    """Each source contributes what it should, and a made-up name is in none."""
    assert {"SWITCHBOARD_MODEL_DIR", "SWITCHBOARD_ADMIN_TOKEN"} <= allowed["settings model"]
    code = allowed["code (os.environ / getenv)"]
    # an f-string of a constant, a constant imported from another module, a module constant
    assert {"SWITCHBOARD_CONFIG", "SWITCHBOARD_REGISTRY", "SWITCHBOARD_DATA_DIR"} <= code
    assert {"SWITCHBOARD_REGISTRY", "SWITCHBOARD_DATABASE_URL"} <= allowed["CLI options (envvar)"]
    assert "SWITCHBOARD_MODEL" in allowed["compose interpolation"]
    assert not any("SWITCHBOARD_MODLE_DIR" in names for names in allowed.values())


def test_environment_reads_are_found_in_code(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "names.py").write_text('PREFIX = "APP_"\nKEY = f"{PREFIX}KEY"\n')
    (package / "use.py").write_text(
        "import os\nfrom pkg.names import KEY, PREFIX\n"
        "def f(environ=None):\n"
        "    env = os.environ if environ is None else environ\n"
        "    return env.get(KEY), os.environ[PREFIX + 'B'], os.getenv('APP_C'), 'APP_D' in os.environ\n"
        "os.environ.setdefault('APP_E', '1')\nprint('APP_NOT_READ')\n"
    )
    found = code_env_reads([package])
    assert found == {"APP_KEY", "APP_B", "APP_C", "APP_D", "APP_E"}


# ------------------------------------------------------------------------------ runnable blocks


def test_runnable_blocks_are_found_and_classified(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```bash runnable\nswitchboard train -c c.yaml -d data/sample -o runs/x  # one training\n```\n"
        "```bash runnable\nswitchboard serve --model runs/x   # http://127.0.0.1:8000\n"
        "curl -s localhost:8000/v1/route\n```\n"
        "```bash runnable\nswitchboard models list\n```\n"
        "```bash\nswitchboard serve --model runs/x\n```\n"
    )
    train, serve, fast = runnable_blocks([doc])
    assert (train.produces, train.needs, train.slow) == (["runs/x"], [], True)
    assert (serve.produces, serve.needs, serve.slow) == ([], ["runs/x"], True)
    assert (fast.produces, fast.needs, fast.slow) == ([], [], False)
    script = block_script(serve, 4321)
    assert 'switchboard serve --model runs/x > "$__DOC_LOGS/serve-5.log" 2>&1 &' in script
    assert "curl -s localhost:4321/v1/route" in script and "8000" not in script


@pytest.fixture(scope="session")
def doc_runs(tmp_path_factory: pytest.TempPathFactory) -> DocRuns:
    return DocRuns(tmp_path_factory.mktemp("docs"), BLOCKS, timeout_s)


def timeout_s(block: Block) -> float:
    return SLOW_TIMEOUT_S if block.slow else FAST_TIMEOUT_S


NONE_MARKED = pytest.param(None, marks=pytest.mark.skip(reason=f"no doc block is marked ```bash {RUNNABLE}"))


@pytest.mark.parametrize(
    "block",
    [pytest.param(b, marks=[pytest.mark.slow] if b.slow else [], id=b.where) for b in BLOCKS]
    or [NONE_MARKED],
)
def test_runnable_block(block: Block | None, doc_runs: DocRuns) -> None:
    assert block is not None
    _, outcome = doc_runs.run(block)
    assert outcome.ok, failure_report(block, outcome)
