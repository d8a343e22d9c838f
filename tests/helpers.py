"""Tiny corpora and recipes for end-to-end tests (seconds on a CPU)."""

from __future__ import annotations

import random
from pathlib import Path

from altgrad_triton.config import recipe as recipes

WORDS = "the cat sat on a mat and dog ran to red blue big small house tree".split()


def tiny_corpus(root: Path, n_train: int = 300, seed: int = 0) -> Path:
    """A WikiText-layout folder of random short lines; valid/test use train words only."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", 60), ("test", 60)):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(n)]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def tiny_recipe(data_dir: Path, out_dir: Path, **sections) -> recipes.Recipe:
    """A 1-layer 16-unit model on ``tiny_corpus``; ``sections`` patch any recipe keys."""
    base = {
        "run": {
            "name": "tiny",
            "epochs": 2,
            "out_dir": str(out_dir),
            "device": "cpu",
            "log_every": 1000,
        },
        "data": {
            "corpus": "text",
            "path": str(data_dir),
            "batch_size": 4,
            "eval_batch_size": 2,
            "test_batch_size": 2,
        },
        "model": {"cell": "lstm", "emb_size": 16, "hidden_size": 16, "layers": 2},
        "bptt": {"length": 8},
        "optim": {"lr": 3e-3},
        "schedule": {"kind": "constant"},
    }
    for name, patch in sections.items():
        base[name] = {**base.get(name, {}), **patch}
    return recipes.from_dict(base)


def trained_tiny_run(root: Path, **sections) -> Path:
    """A 1-epoch run of ``tiny_recipe`` (6 training, 4 evaluation segments) in
    ``root/runs/tiny``, its corpus in ``root/data``; ``sections`` patch any recipe keys."""
    from altgrad_triton.run.train import Trainer

    run = {"epochs": 1, "max_batches": 6, "max_eval_batches": 4}
    recipe = tiny_recipe(tiny_corpus(root / "data"), root / "runs", run=run, **sections)
    Trainer(recipe, root / "runs" / "tiny").fit()
    return root / "runs" / "tiny"


def run_command(main, capsys, *args) -> tuple[int, str, str]:
    """A command's ``main`` on ``args`` (each str()-ed): its exit code, stdout and stderr."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def interrupt_at(trainer, epoch: int, segment: int):
    """Make ``trainer.fit()`` stop as Ctrl-C would, when ``epoch`` has trained ``segment``
    segments (the request lands before the next one, which is then still trained, as in a
    real run); returns the ``TrainingStopped`` that ``fit`` raised."""
    import pytest

    from altgrad_triton.run.train import TrainingStopped

    real_segment = trainer.train_segment

    def segment_then_ctrl_c(start, seq_len, plan):
        if plan.epoch == epoch and trainer.run_state.sums.segment == segment:
            trainer.stops.request()
        return real_segment(start, seq_len, plan)

    trainer.train_segment = segment_then_ctrl_c
    with pytest.raises(TrainingStopped) as stopped:
        trainer.fit()
    return stopped.value


def require_bundled_ptxas() -> None:
    """Fail, naming the cause, where Triton lacks its bundled ptxas: the sm_90 compile checks
    read ptxas's log, and every Linux Triton wheel the project installs ships it."""
    import triton

    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    assert any(bin_dir.glob("ptxas*")), (
        f"Triton {triton.__version__} has no bundled ptxas in {bin_dir}: the sm_90 compile "
        "checks need it (reinstall triton from its Linux wheel)"
    )
