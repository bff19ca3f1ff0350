"""The import structure of detnas: light modules load without torch; no module imports itself
back through others (every import counted, also those inside functions)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "detnas"
LIGHT = ("detnas.plan.config", "detnas.plan.space", "detnas.plan.flops", "detnas.report",
         "detnas.plan.dilations", "detnas.io", "detnas.provenance", "detnas.plan.study",
         "detnas.plan.layout", "detnas.data.files", "detnas.data.synthetic", "detnas.latency",
         "detnas.plan.preflight", "detnas.data.split", "detnas.data.audit", "detnas.plan.own_data")


def test_light_modules_import_without_torch():
    code = (f"import sys, {', '.join(LIGHT)}\n"
            "from detnas.plan.config import load\n"
            "load(None)\n"  # the default config, checked (the NATS check included)
            "from detnas.cli import build_parser\n"
            "build_parser()\n"  # every subcommand registered, as `detnas report` does
            "heavy = sorted(m for m in ('torch', 'torchvision') if m in sys.modules)\n"
            "assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr[-2000:]


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


CORE = ("detnas.plan.study", "detnas.plan.layout", "detnas.version", "detnas.plan.config",
        "detnas.plan.space", "detnas.plan.flops", "detnas.plan.dilations", "detnas.io",
        "detnas.provenance", "detnas.run.engine", "detnas.nets.resnet", "detnas.nets.supernet",
        "detnas.nets.detection", "detnas.nets.models", "detnas.nets.backbones", "detnas.data",
        "detnas.run.tracking")


def test_core_modules_reach_no_search_method():
    """The search methods (detnas.search, detnas.nats) build on the core, never the reverse."""
    graph = import_graph()
    for core in CORE:
        seen, todo = set(), [core]
        while todo:
            m = todo.pop()
            if m.startswith(("detnas.search", "detnas.nats")):
                raise AssertionError(f"{core} imports the search method {m} (via {sorted(seen)})")
            if m not in seen:
                seen.add(m)
                todo += graph.get(m, ())
