"""The import structure of detnas: the plan and the light modules load without torch; the wings
import downwards; no module imports itself back through others (every import counted, also those
inside functions)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "detnas"
WINGS = ("plan", "nets", "run")
"""detnas's three wings: the study's plan (torch-free), the networks, and the machinery that runs a
stage. Each imports only downwards: run may import nets and plan, nets may import plan."""
LIGHT = ("detnas.io", "detnas.provenance", "detnas.report", "detnas.latency", "detnas.data.files",
         "detnas.data.synthetic", "detnas.data.split", "detnas.data.audit")
"""Torch-free modules outside the plan (what `detnas report` and the workflow's parse load)."""


def _modules_of(wing: str) -> list[str]:
    return sorted(m for m in import_graph() if m.split(".")[:2] == ["detnas", wing])


def test_the_plan_and_the_light_modules_import_without_torch():
    modules = _modules_of("plan") + list(LIGHT)
    assert "detnas.plan.config" in modules and "detnas.plan.study" in modules
    code = (f"import sys, {', '.join(modules)}\n"
            "from detnas.plan.config import load\n"
            "load(None)\n"  # the default config, checked (the NATS check included)
            "from detnas.cli import build_parser\n"
            "build_parser()\n"  # every subcommand registered, as `detnas report` does
            "heavy = sorted(m for m in ('torch', 'torchvision') if m in sys.modules)\n"
            "assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr[-2000:]


def wing_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports against the wings' order (plan < nets < run), as ``"a -> b"``."""
    def rank(module: str) -> int | None:
        parts = module.split(".")
        return WINGS.index(parts[1]) if len(parts) > 1 and parts[1] in WINGS else None

    return sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps
                  if rank(a) is not None and rank(b) is not None and rank(b) > rank(a))


def test_wing_violations_names_an_upward_import():
    graph = {"detnas.plan.config": {"detnas.run.tracking"}, "detnas.run.train": {"detnas.nets.bn"},
             "detnas.nets.bn": {"detnas.plan.config", "detnas.io"}}
    assert wing_violations(graph) == ["detnas.plan.config -> detnas.run.tracking"]


def test_each_wing_imports_only_downwards():
    graph = import_graph()
    assert all(_modules_of(w) for w in WINGS)
    assert wing_violations(graph) == []


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in graph.get(todo.pop(), ()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def test_no_wing_reaches_a_higher_one_through_the_modules_between():
    """Not even through a module outside the wings (as the plan's checks once reached the
    training engine through detnas.latency's measuring code)."""
    graph = import_graph()
    for low, high in (("plan", "nets"), ("plan", "run"), ("nets", "run")):
        for module in _modules_of(low):
            reached = sorted(m for m in _reach(graph, module) if m.startswith(f"detnas.{high}."))
            assert not reached, f"{module} reaches {reached}"


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: {detnas modules it imports}}`` from the AST of every module of ``package``."""
    files = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
                # `from pkg import sub` imports the submodule when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:  # `import detnas.a.b` runs detnas.a.b: keep it
                    t = t.rpartition(".")[0]
                if t and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_names_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_import_graph_sees_function_level_imports(tmp_path):
    pkg = tmp_path / "detnas"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "config.py").write_text("def check():\n    from detnas.sub.search import x\n")
    (pkg / "sub" / "search.py").write_text("from .. import config\nx = 1\n")
    graph = import_graph(pkg)
    assert graph["detnas.config"] == {"detnas.sub.search"}
    assert graph["detnas.sub.search"] == {"detnas.config"}
    assert find_cycle(graph) == ["detnas.config", "detnas.sub.search", "detnas.config"]


def test_no_import_cycle():
    graph = import_graph()
    assert "detnas.nats.search" in graph and "detnas.run.engine" in graph["detnas.nats.search"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_bottom_modules_import_nothing_above_them():
    """The rows of the study, the results layout, the version, io and provenance are at the
    bottom: any module may import them (provenance reads the version from detnas.version, not from
    the package's face, whose `backbone` reaches the models, and a checkpoint's header from io)."""
    graph = import_graph()
    assert graph["detnas.plan.study"] == graph["detnas.version"] == graph["detnas.io"] == set()
    assert graph["detnas.plan.layout"] == {"detnas.plan.study"}
    assert graph["detnas.provenance"] == {"detnas.version", "detnas.io"}


CORE = ("detnas.version", "detnas.io", "detnas.provenance", "detnas.data")
"""With the three wings, the modules the search methods build on."""


def test_core_modules_reach_no_search_method():
    """The search methods (detnas.search, detnas.nats) build on the core, never the reverse."""
    graph = import_graph()
    for core in [*CORE, *(m for w in WINGS for m in _modules_of(w))]:
        seen, todo = set(), [core]
        while todo:
            m = todo.pop()
            if m.startswith(("detnas.search", "detnas.nats")):
                raise AssertionError(f"{core} imports the search method {m} (via {sorted(seen)})")
            if m not in seen:
                seen.add(m)
                todo += graph.get(m, ())


MAX_LINES = 60
"""The longest a function of detnas may be, from its ``def`` line to its last line."""


def function_lengths(package: Path = PACKAGE) -> dict[str, int]:
    """``{"module:qualified.name": lines}`` of every function and method of ``package``, from its
    ``def`` line (decorators left out) to its last line."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, module: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    lengths[f"{module}:{name}"] = child.end_lineno - child.lineno + 1
                visit(child, module, name + ".")
            else:
                visit(child, module, prefix)

    for path in package.rglob("*.py"):
        visit(ast.parse(path.read_text(), str(path)), _module_name(path, package), "")
    return lengths


def test_function_lengths_sees_methods_and_nested_functions(tmp_path):
    pkg = tmp_path / "detnas"
    pkg.mkdir()
    (pkg / "m.py").write_text("class A:\n    @property\n    def f(self):\n        def g():\n"
                              "            return 1\n        return g\n")
    assert function_lengths(pkg) == {"detnas.m:A.f": 4, "detnas.m:A.f.g": 2}


def test_no_function_is_longer_than_60_lines():
    lengths = function_lengths()
    assert lengths["detnas.search.stage:search_stage"] <= MAX_LINES  # the names are found
    long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert long == {}, f"longer than {MAX_LINES} lines: split them"
