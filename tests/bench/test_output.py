"""altgrad-bench's output (``bench/output.py``): a CSV with another header is refused, and the
repository's docs/benchmarks.csv holds the header only."""

import csv
from pathlib import Path

import pytest
import torch

from altgrad_triton import bench
from altgrad_triton.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_csv_with_another_header_is_refused(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b,c\n1,2,3\n")
    env = bench.Env(torch.device("cpu"), False, "cpu", "", "t", "tr", "d")
    with pytest.raises(UserError, match="header"):
        bench.append_csv(
            path, [bench.Row("f", "s", "float32", "fwd", "torch", ms=1.0)], env, create_parent=True
        )
    assert path.read_text() == "a,b,c\n1,2,3\n"


def test_docs_csv_is_the_header_only():
    rows = _rows(REPO / "docs" / "benchmarks.csv")
    assert rows == [list(bench.CSV_COLUMNS)]
