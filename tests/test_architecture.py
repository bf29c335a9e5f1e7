"""The import structure of desim, read from the source with ``ast`` (nothing is imported).

Every ``import`` and ``from ... import`` of a desim module counts, at module level or inside a
function, in a ``TYPE_CHECKING`` block or not: a lazy import still ties two modules together.
Edges are resolved conservatively:

- ``from desim.pkg import name`` depends on ``desim.pkg`` (its ``__init__``), and also on
  ``desim.pkg.name`` when that is a submodule;
- importing ``desim.pkg.mod`` from outside ``desim.pkg`` also runs ``desim.pkg``'s ``__init__``
  (and whatever it re-exports), so it depends on ``desim.pkg`` too; from inside the package the
  ``__init__`` is already running, so that edge is left out unless the module names the
  package itself;
- relative imports are resolved against the importing module's package.
"""

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "desim"

HEAVY_PROFILING = ("torch", "transformers", "peft")
HEAVY_EDGE = ("matplotlib", "ray")
# the edges of desim (STYLE §6): a user-facing command, a figure, a sweep backend or a benchmark
EDGE_MODULES = {"desim.cli", "desim.experiments"}  # packages: every module in them


@dataclass(frozen=True)
class ImportSite:
    """One imported module name and where it is imported."""

    target: str  # absolute dotted module name, as written (after resolving a relative import)
    names: tuple[str, ...]  # the names of a ``from`` import; empty for ``import x``
    line: int
    at_import_time: bool  # runs when the module is imported (not inside a function)
    type_checking: bool  # inside ``if TYPE_CHECKING:``


def module_name(path: Path) -> str:
    """``desim/allocators/__init__.py`` → ``desim.allocators``; ``desim/io/scenario.py`` →
    ``desim.io.scenario``."""
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def desim_modules() -> dict[str, Path]:
    """Every module of the desim package, by dotted name."""
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_sites(path: Path) -> list[ImportSite]:
    """Every import statement of one module, with whether it runs at import time."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    sites: list[ImportSite] = []

    def visit(node: ast.AST, top: bool, typing_only: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                sites.append(ImportSite(alias.name, (), node.lineno, top, typing_only))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names = tuple(a.name for a in node.names)
            sites.append(ImportSite(target, names, node.lineno, top, typing_only))
        inner_top = top and not isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        for child in ast.iter_child_nodes(node):
            guarded = isinstance(node, ast.If) and _is_type_checking(node.test)
            visit(child, inner_top, typing_only or (guarded and child in node.body))

    visit(ast.parse(path.read_text(), filename=str(path)), True, False)
    return sites


def desim_targets(site: ImportSite, importer: str, modules: dict[str, Path]) -> set[str]:
    """The desim modules one import site depends on (see the module docstring)."""
    if site.target != "desim" and not site.target.startswith("desim."):
        return set()
    named = {site.target} | {f"{site.target}.{n}" for n in site.names}
    out = {m for m in named if m in modules}
    for mod in list(out):
        parts = mod.split(".")
        for i in range(1, len(parts)):
            pkg = ".".join(parts[:i])
            if not (importer == pkg or importer.startswith(pkg + ".")):
                out.add(pkg)  # importing from outside runs the package's __init__ first
    out.discard(importer)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module → the desim modules it imports (every import, lazy or not)."""
    modules = desim_modules()
    return {
        name: set().union(*(desim_targets(s, name, modules) for s in import_sites(path)))
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            components.append(comp)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    found = []
    for comp in components:
        if len(comp) < 2:
            continue
        start = min(comp)
        # shortest path back to the start inside the component (breadth first)
        prev: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in prev:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & comp):
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
            frontier = nxt
        path = [start]
        while prev[path[-1]] != start:
            path.append(prev[path[-1]])
        found.append([start, *reversed(path[1:]), start])
    return found


def test_the_reader_sees_known_edges():
    # a guard on the tool itself: it must see lazy, package and relative imports
    graph = import_graph()
    assert "desim.engine.simulation" in graph["desim.engine.assembly"]
    assert "desim.allocators" in graph["desim.engine.simulation"]  # via desim.allocators.base
    assert "desim.allocators.crunch" in graph["desim.allocators"]
    assert "desim.allocators" not in graph["desim.allocators.crunch"]
    assert "desim.engine.assembly" in graph["desim.experiments.sweep"]  # function-local


def test_cycle_finder_reports_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def _direct_desim_imports(module: str) -> set[str]:
    modules = desim_modules()
    return set().union(*(desim_targets(s, module, modules) for s in import_sites(modules[module])))


@pytest.mark.parametrize(
    "module, allowed",
    [
        # a description imports no implementation
        *((m, {"desim.errors", "desim.scenario.base", "desim.scenario.components",
               "desim.scenario.devices"}) for m in ("desim.scenario.model",
                                                    "desim.scenario.devices",
                                                    "desim.scenario.components",
                                                    "desim.scenario.base")),
        ("desim.engine.records", {"desim.errors"}),  # records hold data, they compute nothing
    ],
)
def test_description_modules_import_no_model_code(module, allowed):
    extra = _direct_desim_imports(module) - allowed
    assert not extra, f"{module} imports {sorted(extra)}; allowed: {sorted(allowed)}"


def _is_edge(module: str) -> bool:
    return any(module == e or module.startswith(e + ".") for e in EDGE_MODULES)


def _top_level_imports(forbidden: tuple[str, ...], skip) -> list[str]:
    bad = []
    for name, path in desim_modules().items():
        if skip(name):
            continue
        for site in import_sites(path):
            root = site.target.split(".")[0]
            if site.at_import_time and not site.type_checking and root in forbidden:
                bad.append(f"{name}:{site.line} imports {site.target}")
    return bad


def test_only_profiling_imports_torch_and_friends_at_import_time():
    bad = _top_level_imports(HEAVY_PROFILING, lambda m: m.startswith("desim.profiling."))
    assert not bad, "; ".join(bad)


def test_core_modules_import_no_plotting_or_cluster_library_at_import_time():
    bad = _top_level_imports(HEAVY_EDGE, _is_edge)
    assert not bad, "; ".join(bad)


def test_only_the_engine_imports_simpy():
    bad = [
        f"{name}:{site.line}"
        for name, path in desim_modules().items()
        if name != "desim.engine" and not name.startswith("desim.engine.")
        for site in import_sites(path)
        if site.target.split(".")[0] == "simpy"
    ]
    assert not bad, "simpy imported outside desim.engine (STYLE §8): " + ", ".join(bad)


def test_no_module_over_400_lines():
    long = {name: n for name, path in desim_modules().items()
            if (n := path.read_text().count("\n")) > 400}
    assert not long, f"modules over 400 lines: {long}"


@pytest.mark.parametrize("module", ["desim.plan", "desim.engine.realise",
                                    "desim.engine.recording"])
def test_plans_realisation_and_recording_are_simpy_free(module):
    path = desim_modules()[module]
    bad = [s.target for s in import_sites(path) if s.target.split(".")[0] == "simpy"]
    assert not bad, f"{module} imports {bad}: realisation is pure (the loop plays it)"


def test_the_plan_type_imports_no_desim_module():
    # allocators and schemes both build plans: the plan type sits below them
    assert _direct_desim_imports("desim.plan") == set()


FIGURE_MODULES = ("desim.experiments.paper_figures", "desim.experiments.trace_figures")
MODEL_CODE = ("desim.engine", "desim.allocators", "desim.schemes")


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_figures_read_stored_tables_and_import_no_engine_allocator_or_scheme_code():
    # a figure draws what a sweep or a run stored; what it shows is simulated by a sweep spec
    graph = import_graph()
    figure_modules = [m for m in graph
                      if any(m == f or m.startswith(f + ".") for f in FIGURE_MODULES)]
    assert "desim.experiments.paper_figures.base" in figure_modules  # a guard on the selection
    bad = [f"{m} -> {t}" for m in sorted(figure_modules) for t in sorted(_reachable(graph, m))
           if any(t == p or t.startswith(p + ".") for p in MODEL_CODE)]
    assert not bad, "figure code imports model code (directly or through): " + "; ".join(bad)
