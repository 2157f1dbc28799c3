"""The package stays a house others can live in: the type checker passes (strict on the engine,
see pyproject.toml), modules import downward only (no cycle, function-level imports included),
the engine never imports the CLI, and bookkeeping SQL lives in state.py alone."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "replicator"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` imports, anywhere in the file."""
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            parent = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join(parent + ([node.module] if node.module else [])) if node.level \
                else node.module or ""
            candidates = [target, *(f"{target}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in candidates if c in modules and c != name}
    return found


def test_the_type_checker_passes():
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]


def test_modules_import_downward_only():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    # A package's __init__ may name its own submodules; that is not an upward import.
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    cycles, index, low, stack, on = [], {}, {}, [], set()

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                cycles.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == [], f"modules that import each other in a circle: {cycles}"
    engine = [m for m in graph if not m.startswith("replicator.cli") and m != "replicator.__main__"]
    upward = {m: sorted(d for d in graph[m] if d.startswith("replicator.cli")) for m in engine}
    assert not {m: d for m, d in upward.items() if d}, "the engine imports the CLI"


def test_bookkeeping_sql_lives_in_state():
    """Every statement naming a ``_replicator`` table in Postgres is in state.py."""
    pattern = re.compile(r"\{(?:state\.)?SCHEMA\}\.|\b(?:FROM|INTO|UPDATE|JOIN|TABLE)\s+_replicator\.")
    outside = [f"{p.relative_to(ROOT)}:{i}" for p in PACKAGE.rglob("*.py") if p.name != "state.py"
               for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert outside == []
