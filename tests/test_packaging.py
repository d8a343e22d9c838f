"""The package as a user installs it: its declared dependencies cover what it imports, every
subpackage ships, and the commands are installed scripts."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "altgrad_triton", ROOT / "kernels"]

OPTIONAL = {"matplotlib": "plot", "tensorboard": "tensorboard"}
"""Imports behind an extra: imported inside a function that turns their absence into one line."""

IMPORTED_BY_DEPENDENCIES = {"numpy": ("safetensors", "torch.py")}
"""Modules a dependency imports at run time without declaring them: safetensors.torch
imports numpy (its save path), and safetensors' metadata lists numpy only as an extra."""


def declared() -> set[str]:
    """The import names of pyproject's [project].dependencies."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {
        re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].strip().lower().replace("-", "_") for d in deps
    }


def imported() -> set[str]:
    """Top-level third-party modules any module of the package imports."""
    names: set[str] = set()
    for folder in SOURCES:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "altgrad_triton"}


def test_every_third_party_import_is_a_dependency_or_an_extra():
    missing = imported() - declared() - set(OPTIONAL)
    assert not missing, f"imported but not in [project].dependencies: {sorted(missing)}"


def test_modules_a_dependency_needs_at_run_time_are_dependencies():
    import importlib.util

    for module, (package, file) in IMPORTED_BY_DEPENDENCIES.items():
        origin = Path(importlib.util.find_spec(package).origin).parent / file
        assert f"import {module}" in origin.read_text(), f"{package}/{file} no longer needs it"
        assert module in declared(), f"{package}/{file} imports {module}: declare it"


def test_extras_are_not_imported_at_module_level():
    """An optional import sits inside a function (its caller reports a missing one)."""
    for folder in SOURCES:
        for path in folder.rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in tree.body:
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module.split(".")[0]]
                assert not set(names) & set(OPTIONAL), f"{path}: top-level import of an extra"


def test_every_package_folder_is_declared_so_that_it_ships():
    """setuptools installs only the packages pyproject lists: a new subpackage left out of
    the list would import from a checkout and be missing from a wheel."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    where = {name: ROOT / folder for name, folder in setuptools["package-dir"].items()}
    found = {  # every mapped folder's subpackages too (kernels/lstm/ under kernels/)
        ".".join([name, *init.parent.relative_to(folder).parts])
        for name, folder in where.items()
        for init in folder.rglob("__init__.py")
    }
    assert found <= listed, f"not in [tool.setuptools].packages: {sorted(found - listed)}"

    def folder(name: str) -> Path:
        """Where setuptools looks for ``name``: under the longest mapped prefix."""
        mapped = max((m for m in where if name == m or name.startswith(m + ".")), key=len)
        return where[mapped].joinpath(*name[len(mapped) :].split(".")[1:])

    assert all(folder(name).is_dir() for name in listed)


def test_the_commands_are_installed_scripts():
    proc = subprocess.run(
        [sys.executable, "-m", "altgrad_triton.cli.eval", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0 and "--pointer" in proc.stdout
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'altgrad-eval = "altgrad_triton.cli.eval:main"' in scripts
    assert 'altgrad-generate = "altgrad_triton.cli.generate:main"' in scripts
