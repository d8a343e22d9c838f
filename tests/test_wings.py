"""The package's floor plan: each module belongs to a wing, imports run one way (down the
order below), and no modules import each other, even through imports inside functions.

A new import that runs up (training importing a tool, the method reading a recipe) or closes
a circle fails here, naming the file, the line and the module it reached for."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "altgrad_triton"

WINGS = (
    "kernels",  # Triton kernels and their references: nothing of the package
    "floor",  # errors, files, progress: what every wing stands on
    "core",  # the method, plain arguments
    "config",  # recipes and the one rule per decision
    "data",  # corpora, vocabulary, batching
    "run",  # builders, trainer, evaluation, checkpoints, run folder, load_run
    "probe",  # the truncation probe
    "experiments",  # horizon, suite
    "report",  # tools, each importing run and core, never imported by them
    "tune",
    "bench",
    "cli",  # entry points
)
"""The wings, bottom first: a module imports from its own wing and the ones before it."""

FLOOR = {"errors", "files", "progress"}
OUTSIDE = {"__init__", "_moved"}
"""The package's own ``__init__`` (``load_run`` on first use) and the old paths' finder sit
above every wing."""


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for the package and its kernels."""
    found = {}
    for root, prefix in ((REPO / PACKAGE, PACKAGE), (REPO / "kernels", f"{PACKAGE}.kernels")):
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix, *parts])] = path
    return found


MODULES = modules()


def wing(module: str) -> str | None:
    parts = module.split(".")[1:]
    if not parts or parts[0] in OUTSIDE:
        return None
    if parts[0] in FLOOR:
        return "floor"
    assert parts[0] in WINGS, f"{module}: in no wing; add it to WINGS or FLOOR"
    return parts[0]


def imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, module of the package) for every import in ``path``, at any depth, but those
    for type checkers alone (``if TYPE_CHECKING:``), which never run."""
    is_package = path.name == "__init__.py"
    here = module.split(".") if is_package else module.split(".")[:-1]
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test).endswith("TYPE_CHECKING")
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*here[: len(here) - node.level + 1], *filter(None, [base])])
            # ``from pkg import submodule`` imports the submodule
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.append((node.lineno, name))
    return out


GRAPH = {m: imports(m, p) for m, p in MODULES.items()}


def test_every_import_runs_down_the_wings():
    up = []
    for module, targets in GRAPH.items():
        here = wing(module)
        if here is None:
            continue
        for line, target in targets:
            there = wing(target)
            if there is not None and WINGS.index(there) > WINGS.index(here):
                up.append(
                    f"{MODULES[module].relative_to(REPO)}:{line}: {here} imports {target} ({there})"
                )
    assert not up, "imports that run up the wings:\n" + "\n".join(up)


def test_the_kernels_import_nothing_of_the_package():
    reached = [
        f"{MODULES[m].relative_to(REPO)}:{line}: {t}"
        for m, targets in GRAPH.items()
        if wing(m) == "kernels"
        for line, t in targets
        if wing(t) != "kernels"
    ]
    assert not reached


def circles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), a package's ``__init__``
    excluded as a target when it only gathers its own modules' names."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []

    def edges(m: str) -> list[str]:
        return [t for _, t in GRAPH[m] if not m.startswith(t + ".")]

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on.add(m)
        for t in edges(m):
            if t not in index:
                visit(t)
                low[m] = min(low[m], low[t])
            elif t in on:
                low[m] = min(low[m], index[t])
        if low[m] == index[m]:
            group = []
            while True:
                t = stack.pop()
                on.discard(t)
                group.append(t)
                if t == m:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for m in GRAPH:
        if m not in index:
            visit(m)
    return found


def test_no_import_circles():
    assert circles() == []


def test_a_circle_is_found(monkeypatch):
    """The circle finder itself finds one (two modules importing each other)."""
    a, b = f"{PACKAGE}.core.carry", f"{PACKAGE}.core.cells"
    monkeypatch.setitem(GRAPH, a, [*GRAPH[a], (1, b)])
    monkeypatch.setitem(GRAPH, b, [*GRAPH[b], (1, a)])
    assert [a, b] in circles()


def test_an_upward_import_is_found(monkeypatch):
    """The direction check itself fails on an import that runs up (the method importing
    the trainer)."""
    m = f"{PACKAGE}.core.model"
    monkeypatch.setitem(GRAPH, m, [*GRAPH[m], (1, f"{PACKAGE}.run.train")])
    try:
        test_every_import_runs_down_the_wings()
    except AssertionError as e:
        assert "core imports altgrad_triton.run.train (run)" in str(e)
    else:
        raise AssertionError("an upward import passed")


def test_the_old_module_paths_import_the_new_modules():
    """Code written against the flat layout keeps working: each old path is the module at
    its new home, the same object (so a monkeypatch on either reaches the code)."""
    import importlib

    from altgrad_triton import _moved

    for old, new in _moved.MOVED.items():
        assert f"{PACKAGE}.{new}" in MODULES, new
        assert importlib.import_module(f"{PACKAGE}.{old}") is importlib.import_module(
            f"{PACKAGE}.{new}"
        )
    from altgrad_triton.checkpoint.checks import load_weights

    from altgrad_triton.run.checkpoint import checks

    assert load_weights is checks.load_weights
