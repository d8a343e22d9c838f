"""The test setup itself (tests/conftest.py): the README's test command must pass on a GPU
machine too, where the conftest leaves the Triton interpreter off, and a past
``ALTGRAD_TEST_DEADLINE`` stops pytest before the next test, with its summary."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# every test that runs a Triton path (kernels, or training with backend=triton)
TRITON_TESTS = sorted(
    str(p.relative_to(REPO)) for p in (REPO / "tests" / "kernels").glob("test_*.py")
)
TRITON_TESTS += [
    "tests/run/test_train_recovery.py::test_torch_and_triton_backends_train_identically"
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the suite itself is the check")
def test_triton_tests_skip_cleanly_when_the_interpreter_is_off():
    env = dict(os.environ, TRITON_INTERPRET="0")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TRITON_TESTS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = "\n".join(proc.stdout.splitlines()[-15:])
    assert proc.returncode == 0, tail
    assert " failed" not in tail and " error" not in tail


def test_deadline_stops_the_session_with_a_summary(tmp_path):
    (tmp_path / "test_x.py").write_text("def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    conftest = os.path.join(os.path.dirname(__file__), "conftest.py")
    (tmp_path / "conftest.py").write_text(Path(conftest).read_text())
    env = {**os.environ, "ALTGRAD_TEST_DEADLINE": str(time.time() - 1)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    out = proc.stdout
    assert "ALTGRAD_TEST_DEADLINE passed" in out, out
    assert "1 skipped in" in out and not re.search(r"\d+ passed", out), out  # no test_b
