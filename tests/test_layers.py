"""The layer rule, checked on the real import graph (module-level and function-level imports).

    router.cli, router.demo   composition root: may import everything
    router                    the service: imports serving, never training, never router.cli
    training                  imports serving only
    serving                   imports nothing of ours

The contracts live in pyproject.toml (`[tool.importlinter]`, also run by `make lint`). Each check
here is also run once on a graph with a planted bad import, so a check that cannot fail would
show up as a failing test. Finally a fresh interpreter imports `router.app` and must not load
training or its libraries: a router-only install (`.[serve,gpu]`) does not have them.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

import grimp
import pytest
from importlinter.api import read_configuration
from importlinter.contracts.acyclic_siblings import AcyclicSiblingsContract
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.independence import IndependenceContract
from importlinter.contracts.layers import LayersContract
from importlinter.contracts.protected import ProtectedContract
from importlinter.domain.contract import Contract

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
PACKAGES = ("serving", "training", "router")
COMPOSITION_ROOTS = ("router.cli", "router.demo")  # the only router code that may import training
# what only training needs; a router-only install has none of them
TRAINING_ONLY_LIBRARIES = ("sklearn", "matplotlib", "datasets", "peft", "bitsandbytes")

CONTRACT_TYPES: dict[str, type[Contract]] = {
    "layers": LayersContract,
    "protected": ProtectedContract,
    "forbidden": ForbiddenContract,
    "independence": IndependenceContract,
    "acyclic_siblings": AcyclicSiblingsContract,
}

# For each contract in pyproject.toml, an import that must break it (importer, imported).
PLANTED_VIOLATIONS: dict[str, list[tuple[str, str]]] = {
    "layers": [("serving", "training"), ("training", "router"), ("serving.engine", "router.app")],
    "training-from-cli-only": [("router.app", "training"), ("serving", "training")],
    "cli-is-the-root": [("router.app", "router.cli"), ("router.routes", "router.demo")],
    # "acyclic" gets the reverse of an existing import between siblings (see sibling_import)
}


# --- the checks ------------------------------------------------------------------------------


def build_graph(*packages: str) -> grimp.ImportGraph:
    # function-level and TYPE_CHECKING imports included, as lint-imports does by default
    return grimp.build_graph(*packages, cache_dir=None)


def find_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every import cycle among the graph's modules, one shortest cycle per strongly connected
    component (Tarjan, iterative), each as [m, ..., m]. Unlike import-linter's acyclic_siblings,
    this also sees a package's __init__ and its own submodule importing each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.find_modules_directly_imported_by(succ)))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    cycles = []
    for component in sorted(components):
        first = component[0]
        best: tuple[str, ...] | None = None
        for succ in sorted(graph.find_modules_directly_imported_by(first) & set(component)):
            chain = graph.find_shortest_chain(importer=succ, imported=first)
            if chain is not None and (best is None or len(chain) < len(best)):
                best = chain
        assert best is not None
        cycles.append([first, *best])
    return cycles


def runtime_router_chains_to_training(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """For each router module outside the composition roots that reaches training through any
    chain of imports, the shortest such chain (breadth-first over direct imports)."""
    chains = []
    for module in sorted(graph.find_descendants("router") | {"router"}):
        if any(module == r or module.startswith(r + ".") for r in COMPOSITION_ROOTS):
            continue
        came_from: dict[str, str | None] = {module: None}
        frontier = [module]
        found = None
        while frontier and found is None:
            next_frontier = []
            for node in frontier:
                for succ in sorted(graph.find_modules_directly_imported_by(node)):
                    if succ in came_from:
                        continue
                    came_from[succ] = node
                    if succ.split(".")[0] == "training":
                        found = succ
                        break
                    next_frontier.append(succ)
                if found is not None:
                    break
            frontier = next_frontier
        if found is not None:
            chain = [found]
            while (prev := came_from[chain[-1]]) is not None:
                chain.append(prev)
            chains.append(tuple(reversed(chain)))
    return chains


def contracts() -> list[tuple[str, Contract]]:
    config = read_configuration(str(PYPROJECT))
    built = []
    for options in config["contracts_options"]:
        cls = CONTRACT_TYPES[options["type"]]
        built.append(
            (
                options["id"],
                cls(
                    name=options["name"],
                    session_options=config["session_options"],
                    contract_options=options,
                ),
            )
        )
    return built


def broken_contracts(graph: grimp.ImportGraph) -> list[str]:
    """The ids of the pyproject contracts the graph breaks (each checked on its own copy)."""
    return [cid for cid, contract in contracts() if not contract.check(copy.deepcopy(graph), False).kept]


def sibling_import(graph: grimp.ImportGraph) -> tuple[str, str]:
    """An existing import between two sibling modules of one of our packages."""
    for importer in sorted(graph.modules):
        parent = importer.rpartition(".")[0]
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if parent and imported.rpartition(".")[0] == parent:
                return importer, imported
    raise AssertionError("no import between sibling modules found")


def with_import(graph: grimp.ImportGraph, importer: str, imported: str) -> grimp.ImportGraph:
    assert importer in graph.modules and imported in graph.modules, (importer, imported)
    planted = copy.deepcopy(graph)
    planted.add_import(importer=importer, imported=imported, line_number=1, line_contents="planted")
    return planted


def import_in_fresh_interpreter(statement: str) -> tuple[set[str], str]:
    """Run `statement` in a new interpreter with -X importtime; the modules loaded afterwards and
    the importtime report (stderr)."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1])), proc.stderr


def forbidden_loaded(modules: Iterable[str], banned: Iterable[str]) -> list[str]:
    top = set(banned)
    return sorted(m for m in modules if m.split(".")[0] in top)


def importtime_chain(report: str, module: str) -> list[str]:
    """Who imported `module`, outermost first, from a `-X importtime` report: each line is printed
    when its import finishes, after its children, indented two spaces per level."""
    rows = []
    for line in report.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        name_field = line.rsplit("|", 1)[1]
        name = name_field.strip()
        if name == "package":  # header row
            continue
        depth = (len(name_field) - len(name_field.lstrip(" ")) - 1) // 2
        rows.append((depth, name))
    for i, (depth, name) in enumerate(rows):
        if name == module:
            chain = [name]
            want = depth - 1
            for later_depth, later_name in rows[i + 1 :]:
                if want < 0:
                    break
                if later_depth == want:
                    chain.append(later_name)
                    want -= 1
            return chain[::-1]
    return []


# --- the project obeys them ------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return build_graph(*PACKAGES)


def test_lint_imports_passes() -> None:
    """`lint-imports` (what `make lint` runs) keeps every contract in pyproject.toml."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(no_cache=True, no_logo=True))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout, proc.stdout


def test_contracts_kept(graph: grimp.ImportGraph) -> None:
    # every contract has a planted violation below that must break it
    assert {cid for cid, _ in contracts()} == {*PLANTED_VIOLATIONS, "acyclic"}
    assert broken_contracts(graph) == []


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_runtime_router_never_reaches_training(graph: grimp.ImportGraph) -> None:
    chains = runtime_router_chains_to_training(graph)
    assert chains == [], "router code outside router.cli reaches training:\n" + "\n".join(
        " -> ".join(c) for c in chains
    )


@pytest.mark.parametrize(
    ("module", "banned"),
    [
        # the service: no training code at all
        ("router.app", (*TRAINING_ONLY_LIBRARIES, "training")),
        # the CLI the container's entrypoint (`switchboard serve`) builds: its training commands
        # import training only when run, so a router-only install can start it
        ("router.cli", TRAINING_ONLY_LIBRARIES),
    ],
)
def test_router_loads_no_training_libraries(module: str, banned: tuple[str, ...]) -> None:
    """What a router-only install (`pip install ".[serve,gpu]"`) must be able to import."""
    loaded, report = import_in_fresh_interpreter(f"import {module}")
    assert module in loaded
    bad = sorted({m.split(".")[0] for m in forbidden_loaded(loaded, banned)})
    chains = "\n".join(" -> ".join(importtime_chain(report, m)) for m in bad)
    assert bad == [], f"`import {module}` loaded {bad}; import chains:\n{chains}"


# --- and the checks can fail -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("contract_id", "importer", "imported"),
    [(cid, a, b) for cid, imports in PLANTED_VIOLATIONS.items() for a, b in imports],
)
def test_planted_import_breaks_contract(
    graph: grimp.ImportGraph, contract_id: str, importer: str, imported: str
) -> None:
    assert contract_id in broken_contracts(with_import(graph, importer, imported))


def test_planted_import_breaks_runtime_rule(graph: grimp.ImportGraph) -> None:
    # indirect: a runtime module importing the composition root drags training in
    planted = with_import(graph, "router.app", "router.cli")
    chains = runtime_router_chains_to_training(planted)
    assert any(c[:2] == ("router.app", "router.cli") and c[-1].startswith("training") for c in chains)


def test_planted_cycle_is_found(graph: grimp.ImportGraph) -> None:
    importer, imported = sibling_import(graph)
    planted = with_import(graph, imported, importer)
    assert "acyclic" in broken_contracts(planted)
    assert any({importer, imported} <= set(c) for c in find_cycles(planted))


def test_cycle_through_function_level_import_and_package_init_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle import-linter's acyclic_siblings does not see (a package's __init__ and its own
    submodule), closed by an import inside a function."""
    pkg = tmp_path / "layers_fixture_pkg"
    (pkg / "cli").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli" / "__init__.py").write_text("from layers_fixture_pkg.cli import bench\n")
    (pkg / "cli" / "bench.py").write_text(
        textwrap.dedent(
            """
            def run():
                from layers_fixture_pkg.cli import helper
                return helper
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fixture_graph = build_graph("layers_fixture_pkg")
    assert find_cycles(fixture_graph) == [
        ["layers_fixture_pkg.cli", "layers_fixture_pkg.cli.bench", "layers_fixture_pkg.cli"]
    ]
    fixture_graph.remove_import(importer="layers_fixture_pkg.cli.bench", imported="layers_fixture_pkg.cli")
    assert find_cycles(fixture_graph) == []


def test_loaded_module_check_can_fail() -> None:
    loaded, report = import_in_fresh_interpreter("import json, router.app, training")
    assert forbidden_loaded(loaded, ("training",))[:1] == ["training"]
    assert importtime_chain(report, "json.scanner") == ["json", "json.decoder", "json.scanner"]
