"""The one-way dependency rule of docs/architecture.md, checked on the source: every `import` statement of the
library that runs (module level or inside a function; not those under ``if TYPE_CHECKING:``) is parsed, and a
stage importing a later stage, or a circle of modules, fails this test with the offending lines."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"medst": REPO / "medst", "medst.cli": REPO / "cli", "medst.schemas": REPO / "schemas"}

# Shared foundations: any stage may use them, and they use nothing but each other.
BASE = {"_version", "errors", "batch", "executors", "progress", "outputs", "schemas", "storage"}
# Each stage and what it may import besides BASE. The pipeline runs top to bottom; model and losses are used by
# every stage that touches tensors. Inference and eval stand on model, never on train.
ALLOWED: dict[str, set[str]] = {
    "synth": set(),  # shares no code with what it tests
    "archive": set(),
    "sequences": {"archive"},
    "losses": set(),  # pure tensor maths
    "model": {"losses"},
    "shards": {"archive", "sequences", "model"},
    "train": {"archive", "sequences", "shards", "model", "losses"},
    "inference": {"archive", "sequences", "shards", "model", "losses"},
    "eval": {"archive", "sequences", "shards", "model", "losses", "inference"},
    "hub": {"model", "inference"},
}
TOP = {"cli", "demo", "doctor", "__main__", ""}  # the programs: may import anything


def _module_name(path: Path) -> str:
    for package, root in sorted(ROOTS.items(), key=lambda kv: -len(kv[0])):
        if path.is_relative_to(root):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            return ".".join([package, *parts])
    raise AssertionError(path)


def _imports() -> dict[str, list[tuple[str, int]]]:
    """Module -> (imported medst module, line) for every import statement."""
    found: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for root in ROOTS.values():
        for path in sorted(root.rglob("*.py")):
            name = _module_name(path)
            package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
            for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = package.split(".")[: len(package.split(".")) - node.level + 1]
                        target = ".".join([*base, node.module] if node.module else base)
                    else:
                        target = node.module or ""
                    # `from a.b import c`: the module a.b.c when c is one, else the module a.b
                    targets = [f"{target}.{a.name}" if _is_module(f"{target}.{a.name}") else target for a in node.names]
                elif isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                else:
                    continue
                found[name].extend((t, node.lineno) for t in dict.fromkeys(targets) if _is_module(t))
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (imports for annotations only never run)."""
    nodes: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            if test is not None and "TYPE_CHECKING" in ast.unparse(test):
                stack.extend(child.orelse)
                continue
            stack.append(child)
    return nodes


def _is_module(name: str) -> bool:
    for package, root in sorted(ROOTS.items(), key=lambda kv: -len(kv[0])):
        if name == package or name.startswith(package + "."):
            rest = name[len(package) :].lstrip(".").split(".") if name != package else []
            path = root.joinpath(*rest)
            return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()
    return False


def _stage(module: str) -> str:
    if module.startswith(("medst.cli", "medst.schemas")):
        return module.split(".")[1]
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_stage_imports_a_later_stage() -> None:
    violations = []
    for module, targets in _imports().items():
        stage = _stage(module)
        if stage in TOP:
            continue
        allowed = BASE if stage in BASE else BASE | ALLOWED[stage]
        for target, line in targets:
            other = _stage(target)
            if other != stage and other not in allowed:
                violations.append(f"{module}:{line} imports {target} ({stage} may use {sorted(allowed)})")
    assert not violations, "\n".join(violations)


def test_every_stage_is_placed_in_the_rule() -> None:
    stages = {_stage(m) for m in _imports()}
    assert stages <= BASE | set(ALLOWED) | TOP, sorted(stages - BASE - set(ALLOWED) - TOP)


def test_no_import_circles() -> None:
    graph = {module: {t for t, _ in targets} for module, targets in _imports().items()}
    seen: dict[str, int] = {}  # 1 = on the current path, 2 = done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or nxt.startswith(node + "."):
                continue  # a package importing its own submodule is not a circle
            if seen.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif nxt not in seen:
                visit(nxt, [*path, nxt])
        seen[node] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [module])
    assert not circles, "\n".join(" -> ".join(c) for c in circles)
