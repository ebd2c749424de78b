"""The package's imports run one way (docs/architecture.md): no cycle, and
no import from a lower layer to a higher one beyond the few the page names.

The imports are read from the sources (module level and inside functions
alike: an import hidden in a function still ties two modules together)."""

import ast
from pathlib import Path

import hetnet

ROOT = Path(hetnet.__file__).parent

#: layer of each top-level part, lowest first (docs/architecture.md)
LAYERS = {
    "_cpu": 0, "clkernels": 0,
    "_version": 1, "_validation": 1,
    "devices": 2,
    "init": 3, "losses": 3, "optim": 3, "metrics": 3, "metaheuristics": 3,
    "layers": 4,
    "runtime": 5,
    "sched": 6,
    "schedules": 7, "callbacks": 7, "datasets": 7, "distributed": 7,
    "model": 8,
    "estimators": 9, "experiments": 9,
    "info": 10, "cli": 10, "__main__": 10, "__init__": 10,
}

#: imports that run upward, each explained in docs/architecture.md
UPWARD = set()


def _modules():
    out = {}
    for path in sorted(ROOT.rglob("*.py")) + sorted(ROOT.rglob("*.pyx")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(["hetnet"] + parts)] = (path, is_pkg)
    return out


def _imports(name, path, is_pkg, modules):
    """Every hetnet module ``name`` imports."""
    package = name if is_pkg else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from pkg import sub`` needs the submodule; the package's own
            # code runs first only for names that are not submodules
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in modules]
            targets = subs + ([mod] if len(subs) < len(node.names) else [])
        else:
            continue
        for t in targets:
            if t in modules and t != name:
                found.add(t)
    return found


def _layer(module):
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def _graph():
    modules = _modules()
    # compiled kernels (.pyx) import no hetnet module
    return {name: _imports(name, path, is_pkg, modules) if path.suffix == ".py" else set()
            for name, (path, is_pkg) in modules.items()}


def test_every_module_has_a_layer():
    missing = sorted({m.split(".")[1] for m in _graph() if "." in m} - set(LAYERS))
    assert not missing, f"add these to LAYERS and docs/architecture.md: {missing}"


def test_imports_run_down():
    upward = sorted((a, b) for a, deps in _graph().items() for b in deps
                    if _layer(b) > _layer(a) and (a, b) not in UPWARD)
    assert not upward, f"imports from a lower layer to a higher one: {upward}"
    assert len(UPWARD) <= 2


def test_no_import_cycle():
    graph = _graph()
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
