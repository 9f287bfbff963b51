"""The package's layout is its architecture: groups by stage, each importing only the groups before it.

Reads every module's imports (lazy ones inside functions too) with ``ast``, so it needs no import.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dejitter"

#: Groups in dependency order (the order of the package docstring): a module may import its own
#: group and the groups before it, never one after it.
LAYERS = [
    {"types", "shifting", "metrics", "files"},
    {"readers"},
    {"binning", "preprocessing"},
    {"reconstruction"},
    {"registration"},
    {"training"},
    {"reports"},
    {"pipeline"},
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The dejitter modules ``path`` imports, resolved to absolute names."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dejitter")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("dejitter"):
                found.add(target)
                # 'from package import module' imports that module
                found |= {f"{target}.{a.name}" for a in node.names if (SRC.parent / target.replace(".", "/") /
                                                                       f"{a.name}.py").exists()}
    return found


def _graph():
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    return {m: {t for t in _imports(p) if t in modules and t != m} for m, p in modules.items()}


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(group: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if group in layer)


def test_every_group_is_placed():
    groups = {_group(m) for m in _graph()} - {""}
    assert groups <= set().union(*LAYERS), f"groups missing from LAYERS: {groups - set().union(*LAYERS)}"


@pytest.mark.parametrize("module", sorted(_graph()))
def test_no_module_imports_a_later_stage(module):
    if module == "dejitter":
        return
    here = _layer(_group(module))
    later = {t for t in _graph()[module] if t != "dejitter" and _layer(_group(t)) > here}
    assert not later, f"{module} imports modules of a later stage: {sorted(later)}"


def test_no_import_cycles():
    graph = _graph()
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])

