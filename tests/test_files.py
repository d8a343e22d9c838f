"""Whole-file writes and JSON-lines reads as a killed run or a full disk leaves them."""

from __future__ import annotations

import errno
import io
import os

import pytest
import torch

from altgrad_triton import files
from altgrad_triton.errors import UserError


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "results.json"
    files.write_text_atomic(path, "old")
    files.write_text_atomic(path, '{"new": 1}')
    assert files.read_json(path) == {"new": 1}
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_atomic_write_failing_midway_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    files.write_text_atomic(path, "old")

    def no_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", no_rename)
    with pytest.raises(OSError):
        files.write_text_atomic(path, "new")
    assert path.read_text() == "old"


def test_a_failed_atomic_write_names_the_file_not_its_temporary(tmp_path, monkeypatch):
    def full(path, write):  # what write_file raises: an OSError naming the file it opened
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(files, "write_file", full)
    with pytest.raises(OSError) as e:
        files.write_text_atomic(tmp_path / "r.toml", "x")
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(tmp_path / "r.toml"))
    assert list(tmp_path.iterdir()) == []


def test_jsonl_skips_a_torn_last_line_only(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": ')
    assert files.read_jsonl(path) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n{"a": \n{"a": 2}\n')
    with pytest.raises(UserError, match=r"m.jsonl:2: not a JSON line"):
        files.read_jsonl(path)
    assert files.read_jsonl(tmp_path / "none.jsonl", missing_ok=True) == []
    with pytest.raises(FileNotFoundError):
        files.read_jsonl(tmp_path / "none.jsonl")


@pytest.mark.parametrize(
    ("row", "says"),
    [('{"epoch": "x"}', "row 2 has epoch 'x'"), ('{"x": 1}', ":2: lacks 'epoch'"),
     ('{"epoch": null}', "row 2 has epoch None")],
)  # fmt: skip
def test_trimming_a_damaged_metrics_file_is_one_line(tmp_path, row, says):
    """Issue 32's hostile sweep: a damaged metrics.jsonl row crashed --resume (TypeError,
    KeyError) where it trims the lines past the checkpoint."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n' + row + '\n{"epoch": 2}\n')
    with pytest.raises(UserError, match=says.replace("(", r"\(")):
        files.trim_epoch_lines(path, 2)
    files.trim_epoch_lines(tmp_path / "absent.jsonl", 2)  # a missing file stays missing


class FillsUp:
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self):
        self.f.flush()


def test_a_disk_that_fills_up_inside_torch_save_is_an_os_error_naming_the_file(tmp_path):
    """torch.save answers a failed write in the middle of its archive with "unexpected pos",
    the OSError only its context (seen on a real full tmpfs); write_file finds it."""
    state = {"x": torch.zeros(100_000)}
    with pytest.raises(RuntimeError, match="unexpected pos"):
        torch.save(state, FillsUp(io.BytesIO(), 200_000))
    path = tmp_path / "trainer.pt"
    with pytest.raises(OSError) as e:
        files.write_file(path, lambda f: torch.save(state, FillsUp(f, 200_000)))
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(path))
