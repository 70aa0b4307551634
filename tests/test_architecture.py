"""The arrows of docs/architecture.md, checked on the code: no import cycles between modules, and no
module imports a layer above its own (lazy imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "llmgan"

# Lowest first: a module may import its own layer or any layer below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("llmgan.errors", "llmgan.interrupt", "llmgan.fileio", "llmgan.tensor_files", "llmgan.config", "llmgan.assets",
     "llmgan.__init__"),
    ("llmgan.data",),
    ("llmgan.models",),
    ("llmgan.losses", "llmgan.rewards", "llmgan.metrics"),
    ("llmgan.algorithms",),
    ("llmgan.training",),
    ("llmgan.run", "llmgan.sweep", "llmgan.frontier", "llmgan.detect", "llmgan.resample", "llmgan.report",
     "llmgan.apps", "llmgan.integrations", "llmgan.export", "llmgan.filters", "llmgan.provenance"),
    ("llmgan.serve", "llmgan.cli", "llmgan.cli_eval", "llmgan.cli_llm", "llmgan.cli_export", "llmgan.cli_watermark",
     "llmgan.demo"),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every llmgan module ``path`` imports (top level or inside functions), resolved to a known module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path)
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    # imports under `if TYPE_CHECKING:` exist for annotations only; they never run
    typing_only = {id(n) for stmt in ast.walk(tree) if isinstance(stmt, ast.If)
                   and getattr(stmt.test, "id", getattr(stmt.test, "attr", None)) == "TYPE_CHECKING"
                   for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = me.split(".") if is_pkg else me.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for n in names:
            if not n.startswith("llmgan"):
                continue
            while n and n not in modules:
                n = n.rpartition(".")[0]
            if n and n != me and n != "llmgan":  # the bare package: its __init__ holds only metadata
                found.add(n)
    return found


def graph() -> dict[str, set[str]]:
    files = sorted(SRC.rglob("*.py"))
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) for p in files}


def layer(mod: str) -> int:
    for i, group in enumerate(LAYERS):
        if any(mod == g or mod.startswith(g + ".") for g in group):
            return i
    raise AssertionError(f"{mod}: not placed in any layer of tests/test_architecture.py (add it)")


def test_no_import_cycles():
    g = graph()
    # a package's __init__ re-exporting its submodules is not a cycle of design
    edges = {m: {d for d in deps if not (m.startswith(d + ".") and g.get(d) is not None)} for m, deps in g.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_arrows_point_down():
    upward = []
    for m, deps in graph().items():
        for d in deps:
            if layer(d) > layer(m):
                upward.append(f"{m} imports {d}")
    assert not upward, "imports against the layering of docs/architecture.md:\n" + "\n".join(sorted(upward))
