"""What every command shares (``cli/common.py``): one line for an unknown option, and
``--version``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import assert_user_error, command

COMMANDS = ["train", "eval", "generate", "report", "suite", "horizon", "bench", "tune"]


@pytest.mark.parametrize("name", COMMANDS)
def test_an_unknown_option_is_one_line_from_every_command(name):
    proc = command(name, "somewhere", "--no-such-option")
    assert_user_error(proc, "--no-such-option", f"altgrad-{name} --help")


@pytest.mark.parametrize(
    "module",
    ["train", "recipes", "eval", "generate", "tune", "bench", "report", "suite", "horizon"],
)
def test_every_command_prints_its_versions(module):
    from importlib import metadata

    proc = subprocess.run(
        [sys.executable, "-m", f"altgrad_triton.cli.{module}", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"altgrad-{module} 0.1.0 (torch {metadata.version('torch')}, "
        f"triton {metadata.version('triton')})"
    )
