"""The metrics line, metrics.jsonl and the warnings (``run/metrics.py``): a diverging
synthesizer, a runaway loss."""

from __future__ import annotations

import io
import json
import math

import torch
from rich.console import Console

from altgrad_triton.run.metrics import (
    MetricsLog,
    divergence_warning,
    epoch_line,
    perplexity,
    runaway_warning,
)
from altgrad_triton.run.train import Trainer
from tests.helpers import tiny_recipe


def row(epoch, mode, sg_loss, norm_ratio=1.0):
    return {
        "epoch": epoch,
        "lr": 1e-3,
        "mode": mode,
        "train_ppl": 10.0,
        "val_ppl": 12.0,
        "tokens_per_s": 1000.0,
        "sg_loss": sg_loss,
        "sg_cos": None if sg_loss is None else 0.5,
        "sg_norm_ratio": None if sg_loss is None else norm_ratio,
    }


def test_the_log_checks_synthetic_epochs_against_the_lowest_loss_so_far(tmp_path):
    out = io.StringIO()
    log = MetricsLog(tmp_path, Console(file=out, width=200))
    log.record(row(1, "real", 0.02))
    log.record(row(2, "synthetic", 0.01))  # fitting: lower
    log.record(row(3, "real", 5.0))  # real epochs are not checked ...
    assert log.lowest_sg_loss == 0.01  # ... but count towards the lowest
    log.record(row(4, "synthetic", 3.0))  # 300x the lowest
    lines = out.getvalue().splitlines()
    assert [x.split()[1] for x in lines if x.startswith("epoch")] == ["1", "2", "3", "4"]
    warnings = [x for x in lines if x.startswith("warning:")]
    assert len(warnings) == 1 and "300x its lowest" in warnings[0]
    assert lines[-2].startswith("epoch 4 [synthetic]") and lines[-2].endswith("sg_cos 0.500")
    assert [r["epoch"] for r in log.rows()] == [1, 2, 3, 4]
    again = MetricsLog(tmp_path, Console(file=io.StringIO()))
    again.load_state_dict(log.state_dict())
    assert again.lowest_sg_loss == 0.01


def test_trim_drops_unfinished_epochs_and_a_torn_line(tmp_path):
    log = MetricsLog(tmp_path, Console(file=io.StringIO()))
    for epoch in (1, 2, 3):
        log.record(row(epoch, "real", None))
    with open(log.path, "a") as f:
        f.write('{"epo')
    log.trim(next_epoch=3)
    assert [json.loads(x)["epoch"] for x in log.path.read_text().splitlines()] == [1, 2]


def test_a_log_that_does_not_write_keeps_count(tmp_path):
    """Ranks > 0 under torchrun: the same checks, no file."""
    log = MetricsLog(tmp_path, Console(file=io.StringIO()), writes=False)
    log.record(row(1, "synthetic", 0.5))
    log.trim(next_epoch=1)
    assert log.lowest_sg_loss == 0.5 and not log.path.exists()


def test_perplexity_is_capped():
    assert perplexity(0.0) == 1.0 and perplexity(1e6) == perplexity(50.0)


def test_divergence_warning_flags_orders_of_magnitude_and_overshoot_only():
    assert divergence_warning(None, 1.0, 0.5) is None  # first epoch: nothing to compare
    assert divergence_warning(0.02, 0.0035, 0.4, 0.6) is None  # fitting: the loss falls
    assert divergence_warning(1.5e-7, 9e-7, 0.0, 1.7) is None  # noise of a tiny target
    message = divergence_warning(0.0035, 0.86, 0.88)  # scale 1 on chars: one epoch
    assert message.startswith("warning:") and "246x" in message and "synthetic.scale" in message
    # scale 0.3 on chars t100, seed 1: 0.06, 0.26, 0.96, 8.0 against the lowest, 0.06
    assert divergence_warning(0.06, 0.96, 0.14, 4.4) is None  # a transient overshoot
    assert "133x its lowest" in divergence_warning(0.06, 8.0, 0.23)
    message = divergence_warning(0.06, 0.26, 0.1, 10.5)  # predictions 10x their targets
    assert "10.5x the size of their targets" in message and "synthetic.lr" in message


def test_a_runaway_validation_loss_is_warned_about():
    v = 1000
    assert runaway_warning(math.log(v) * 1.2, v) is None  # an untrained model: near uniform
    assert runaway_warning(float("nan"), v) is None  # non-finite: the trainer stops instead
    assert runaway_warning(math.log(v) + math.log(10) - 1e-6, v) is None
    assert runaway_warning(48.3, v) == (
        "warning: validation perplexity 9.47e+20 (loss 48.3) is over 10x a uniform guess's "
        "(1,000): the run is diverging; a smaller optim.lr, or optim.clip > 0, keeps the "
        "weights in check"
    )


def test_the_log_warns_of_a_runaway_loss_when_it_knows_the_vocabulary(tmp_path):
    out = io.StringIO()
    log = MetricsLog(tmp_path, Console(file=out, width=300), vocab_size=1000)
    for epoch, loss in ((1, 5.0), (2, 48.3)):
        log.record({**row(epoch, "real", None), "val_loss": loss, "val_ppl": perplexity(loss)})
    warnings = [x for x in out.getvalue().splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and "validation perplexity 9.47e+20" in warnings[0]


def test_epoch_line_shows_the_peak_memory_when_the_row_has_it():
    row = {"epoch": 2, "mode": "real", "lr": 1e-3, "train_ppl": 90.0, "val_ppl": 80.0,
           "tokens_per_s": 1234.0, "sg_cos": None}  # fmt: skip
    assert "GiB" not in epoch_line(row)
    assert epoch_line({**row, "peak_mem_gib": 1.5}).endswith("1,234 tok/s peak 1.50 GiB")


def test_a_run_whose_loss_runs_away_is_warned_about(corpus_dir, tmp_path):
    out = io.StringIO()
    r = tiny_recipe(corpus_dir, tmp_path, run={"max_batches": 2, "epochs": 1})
    trainer = Trainer(r, tmp_path / "tiny", console=Console(file=out, width=300))
    with torch.no_grad():  # every word but one a near-certain miss: finite, enormous loss
        trainer.parts.model.decoder.bias[0] = 1e4
    trainer.fit()
    assert "warning: validation perplexity 5.18e+21" in out.getvalue()
