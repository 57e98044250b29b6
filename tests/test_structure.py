"""The package's shape, read from the source: imports point one way (no circle among rsbench's modules), and
only the store touches the store's tables and SQL."""

import ast
from pathlib import Path

import rsbench

ROOT = Path(rsbench.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """rsbench modules ``path`` imports, at any depth of the file (lazy imports inside functions count),
    except under ``if TYPE_CHECKING:``, which never runs."""
    tree = ast.parse(path.read_text(), str(path))
    guarded = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for child in block.body
        for node in ast.walk(child)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def runs(importer: str, module: str) -> set[str]:
    """What ``import module`` in ``importer`` runs: ``module`` and the packages above it
    (``rsbench.store.url`` runs ``rsbench.store`` first), except the packages ``importer`` is inside, which
    are already running when it runs."""
    parts = module.split(".")
    above = {".".join(parts[:end]) for end in range(1, len(parts))}
    return {module} | {package for package in above if not importer.startswith(package + ".")}


def graph() -> dict[str, set[str]]:
    """Module -> the rsbench modules it imports, and the subpackages those imports run (a subpackage is its
    ``__init__``; the top package ``rsbench`` is left out: importing ``rsbench.x`` runs it whatever the
    design, and it only re-exports lazily)."""
    files = {module_name(p): p for p in ROOT.rglob("*.py") if "migrations" not in p.parts}
    modules = set(files) - {"rsbench"}
    return {
        name: {m for found in imports(files[name]) for m in runs(name, found) if m in modules and m != name}
        for name in modules
    }


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_planted_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_among_rsbench_modules():
    edges = graph()
    assert "rsbench.store" in edges["rsbench.results.board"] and "rsbench.store.store" in edges["rsbench.store"]
    assert "rsbench.store" in edges["rsbench.provenance"]  # it imports rsbench.store.redaction, which runs it
    assert find_cycle(edges) is None


def test_only_the_store_touches_its_tables_and_sql():
    offenders = []
    for path in ROOT.rglob("*.py"):
        if "store" in path.relative_to(ROOT).parts:
            continue
        found = imports(path)
        if "rsbench.store.models" in found:
            offenders.append(f"{module_name(path)} imports rsbench.store.models")
        if any(m == "sqlalchemy" or m.startswith("sqlalchemy.") for m in found):
            offenders.append(f"{module_name(path)} imports sqlalchemy")
    assert offenders == []


def test_the_command_line_loads_torch_only_when_a_command_needs_it():
    """`rsbench launch` sets torch's C++ log level before torch loads, and `--help` stays quick: importing
    the CLI (which redacts store passwords through rsbench.store.redaction) must not load torch or pandas."""
    import subprocess
    import sys

    code = "import sys, rsbench.cli; print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
