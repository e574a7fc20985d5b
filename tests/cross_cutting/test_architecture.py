"""The package's import graph has no cycle: every import, also the lazy ones inside functions and those
under ``TYPE_CHECKING``, counts (a lazy import hides a cycle, it does not remove it)."""
import ast
from pathlib import Path

from helpers.paths import PACKAGE


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports (a package's ``__init__`` counts
    only where a name is taken from it, not when a submodule is imported through it)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                subs = {f"{target}.{a.name}" for a in node.names} & modules.keys()
                deps |= subs
                if target in modules and len(subs) < len(node.names):
                    deps.add(target)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names} & modules.keys()
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan 1972)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_relative_lazy_and_type_checking_imports():
    graph = import_graph()
    assert "saliency_sanity.training.losses" in graph["saliency_sanity.training.train"]  # module level, relative
    assert "saliency_sanity.training.train" in graph["saliency_sanity.training.mitigation"]  # lazy and TYPE_CHECKING


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


# The package's folders from the bottom up: a module may import from its own folder and the folders below.
LAYERS = ("_core", "data", "models", "methods", "metrics", "training", "checks", "book", "cli")


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def test_dependencies_point_down_the_layers():
    upward = sorted((a, b) for a, deps in import_graph().items() for b in deps
                    if _folder(a) in LAYERS and _folder(b) in LAYERS
                    and LAYERS.index(_folder(b)) > LAYERS.index(_folder(a)))
    assert upward == []


def test_every_module_lives_in_a_layer_folder():
    loose = sorted(m for m in import_graph() if _folder(m) is None
                   and m not in ("saliency_sanity", "saliency_sanity.__main__"))
    assert loose == []
