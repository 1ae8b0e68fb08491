"""The package's modules import each other without a cycle.

The graph counts every import statement of every module, including the
lazy ones inside functions (a lazy import still ties the two modules
together), so ``dsolo_sk.distributed`` may build on ``dsolo_sk.evaluation``
only if the evaluation never imports it back.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dsolo_sk"


def _import_graph():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(
            ".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split("."))
                                              - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module
                                              else []))
                else:
                    module = node.module or ""
                subs = [f"{module}.{a.name}" for a in node.names]
                # "from . import _io" imports the submodule: the package
                # itself is only a namespace there, not a dependency
                candidates = subs if all(c in modules for c in subs) else \
                    [module] + subs
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            targets.update(c for c in candidates if c in modules and c != name)
        graph[name] = targets
    return graph


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = _import_graph()
    assert "dsolo_sk.evaluation" in graph["dsolo_sk.distributed"]
    assert "dsolo_sk.distributed" not in graph["dsolo_sk.evaluation"]
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c",
                                                              "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
