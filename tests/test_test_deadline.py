"""A past ``ALTGRAD_TEST_DEADLINE`` stops pytest before the next test, with its summary
(so gpu-check's tests step always reports what ran)."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path


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
