"""Plain-text progress (stdout not a terminal): lines every log_every segments, ETA."""

import io

from rich.console import Console

from altgrad_triton import progress


def test_resumed_epoch_estimates_from_the_segments_done_since(monkeypatch):
    out = io.StringIO()
    clock = iter([100.0, 110.0])  # started at 100 s; 10 s later, 10 segments done since 90
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    console = Console(file=out, width=200, force_terminal=False)
    with progress.EpochProgress(console, "epoch 3 [real]", 200, 10, start=90) as bar:
        bar.update(95, 5.0, 1000.0)  # not yet log_every past the start: silent
        bar.update(100, 5.0, 1000.0)
    # 1 s a segment since the resume, 100 to go: 100 s (counting from 0 would say 10 s)
    assert out.getvalue().strip() == "epoch 3 [real] 100/200 loss 5.000 1,000 tok/s eta 100s"
