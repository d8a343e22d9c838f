"""Progress: plain lines when stdout is not a terminal (every log_every segments, at least
every PLAIN_EVERY_S seconds, ETA), a bar that shows no number before there is one, and the
``progress`` option of the library's long calls."""

import io

import pytest
from rich.console import Console

from altgrad_triton import progress


def test_resumed_epoch_estimates_from_the_segments_done_since(monkeypatch):
    out = io.StringIO()
    now = [100.0]  # started at 100 s; 10 s later, 10 segments done since 90
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    console = Console(file=out, width=200, force_terminal=False)
    with progress.EpochProgress(console, "epoch 3 [real]", 200, 10, start=90) as bar:
        now[0] = 105.0
        bar.update(95, 5.0, 1000.0)  # not yet log_every past the start: silent
        now[0] = 110.0
        bar.update(100, 5.0, 1000.0)
    # 1 s a segment since the resume, 100 to go: 100 s (counting from 0 would say 10 s)
    assert out.getvalue().strip() == "epoch 3 [real] 100/200 loss 5.000 1,000 tok/s eta 100s"


def test_a_slow_job_prints_a_plain_line_at_least_every_30_seconds(monkeypatch):
    """Issue 32: altgrad-eval of a paper-size model on a CPU printed nothing for 9 minutes
    when stdout was not a terminal: a line came only every tenth of the segments."""
    out = io.StringIO()
    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    console = Console(file=out, width=200, force_terminal=False)
    with progress.EpochProgress(console, "test split, batch 1", 1000, 100) as bar:
        for done, at in enumerate((20.0, 31.0, 50.0, 62.0), 1):  # a segment every 11-20 s
            now[0] = at
            bar.update(done, 5.0, 10.0)
    lines = out.getvalue().splitlines()
    assert [line.split()[4] for line in lines] == ["2/1000", "4/1000"]  # at 31 s and 62 s


def test_the_first_frame_shows_no_loss_before_a_segment_ends():
    """Issue 32: a training bar's first frame said ``loss nan`` (the paper recipe on the CPU
    sat at ``0/58 loss nan 0 tok/s`` for two minutes), which reads as a diverged run."""
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=True, color_system=None)
    with progress.EpochProgress(console, "epoch 1 [real]", 58, 10):
        pass
    first = out.getvalue()
    assert "0/58 loss -  - tok/s" in first and "nan" not in first
    out.truncate(0)
    with progress.EpochProgress(console, "epoch 1 [real]", 58, 10) as bar:
        bar.update(1, 5.25, 1234.0)
        bar._bar.refresh()
    assert "1/58 loss 5.250  1,234 tok/s" in out.getvalue()


def test_the_progress_option_of_a_library_call(capsys):
    """False: nothing; a function: called with (done, total); True: a display on stderr,
    so the caller's stdout stays its own."""
    assert progress.open_progress(False, progress.StepProgress, "x", 3, 1) is None
    calls = []
    with progress.open_progress(
        lambda done, total: calls.append((done, total)), progress.EpochProgress, "x", 3, 1
    ) as bar:
        bar.update(1, 2.0, 3.0)
        bar.update(3, 2.0, 3.0)
    assert calls == [(1, 3), (3, 3)]
    with progress.open_progress(True, progress.StepProgress, "probing", 2, 1) as bar:
        bar.update(1)
        bar.update(2)
    out, err = capsys.readouterr()
    assert out == "" and "probing 2/2" in err
    with pytest.raises(TypeError, match="progress: expected True, False"):
        progress.open_progress("yes", progress.StepProgress, "x", 3, 1)
