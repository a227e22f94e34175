"""The package's import graph: every module imports in a fresh interpreter, and no module imports itself back.

The graph is read statically from the source (``ast``), with the imports inside functions too: a lazy import does
not break a cycle, it only postpones the failure to the first call that takes that path.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "hybridnets_ros"


def _modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module and package of the source tree."""
    modules = {}
    for path in sorted((REPO_ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(name: str, modules: dict[str, Path]) -> str:
    """The module an import of ``name`` loads (``pkg.mod.Symbol`` -> ``pkg.mod``)."""
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports, including the packages a dotted import runs first (their
    ``__init__``), except its own ancestors, which are already being imported when it runs."""
    graph = {}
    for module, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] != PACKAGE:
                    continue
                parts = _imported(name, modules).split(".")
                for depth in range(1, len(parts) + 1):
                    target = ".".join(parts[:depth])
                    if target in modules and not (module == target or module.startswith(target + ".")):
                        edges.add(target)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of the directed graph, or None when it is acyclic (iterative depth-first)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if start in state:
            continue
        path, pending = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while pending:
            following = next(pending[-1], None)
            if following is None:
                state[path.pop()] = 2
                pending.pop()
            elif state.get(following) == 1:
                return path[path.index(following):] + [following]
            elif following not in state:
                state[following] = 1
                path.append(following)
                pending.append(iter(sorted(graph[following])))
    return None


def test_cycle_finder_sees_a_cycle_and_its_absence():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_follows_dotted_and_lazy_imports(tmp_path):
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text(f"from {PACKAGE}.sub import low\n")
    (package / "sub" / "low.py").write_text(f"def f():\n    from {PACKAGE}.top import VALUE\n")
    (package / "top.py").write_text(f"from {PACKAGE}.sub.low import f\nVALUE = 1\n")
    modules = {name: path for name, path in
               ((f"{PACKAGE}", package / "__init__.py"), (f"{PACKAGE}.sub", package / "sub" / "__init__.py"),
                (f"{PACKAGE}.sub.low", package / "sub" / "low.py"), (f"{PACKAGE}.top", package / "top.py"))}
    graph = import_graph(modules)
    assert graph[f"{PACKAGE}.sub"] == {f"{PACKAGE}.sub.low"}  # an ancestor's own submodule: no edge back
    # not its own package, which is being imported already when it runs
    assert graph[f"{PACKAGE}.top"] == {f"{PACKAGE}.sub", f"{PACKAGE}.sub.low"}
    assert graph[f"{PACKAGE}.sub.low"] == {f"{PACKAGE}.top"}  # the import inside the function counts
    assert find_cycle(graph) == [f"{PACKAGE}.sub", f"{PACKAGE}.sub.low", f"{PACKAGE}.top", f"{PACKAGE}.sub"]


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph(_modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_imports_in_a_fresh_interpreter():
    names = [name for name, path in _modules().items() if path.name != "__main__.py"]  # __main__ runs a program
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run([sys.executable, "-c", script, *names], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
