"""Tiny corpora and recipes for end-to-end tests (seconds on a CPU), fabricated run folders,
and the checks of a command's one-line errors that several test files share."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

from altgrad_triton.config import recipe as recipes

ROOT = Path(__file__).resolve().parents[1]
"""The repository's root (the folder of pyproject.toml)."""

WORDS = "the cat sat on a mat and dog ran to red blue big small house tree".split()


def tiny_corpus(root: Path, n_train: int = 300, seed: int = 0) -> Path:
    """A WikiText-layout folder of random short lines; valid/test use train words only."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", 60), ("test", 60)):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(n)]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


TINY_RUN = {"max_batches": 4, "max_eval_batches": 2, "epochs": 1, "threads": 1}
"""``run`` keys of a one-epoch tiny run of 4 training and 2 evaluation segments."""


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


def fit_tiny_run(root: Path, **sections) -> Path:
    """``tiny_recipe`` trained in ``root/runs/tiny``, its corpus in ``root/data``;
    ``sections`` patch any recipe keys."""
    from altgrad_triton.run.train import Trainer

    recipe = tiny_recipe(tiny_corpus(root / "data"), root / "runs", **sections)
    Trainer(recipe, root / "runs" / "tiny").fit()
    return root / "runs" / "tiny"


def trained_tiny_run(root: Path, **sections) -> Path:
    """A 1-epoch run of ``tiny_recipe`` (6 training, 4 evaluation segments): ``fit_tiny_run``
    with those run keys."""
    run = {"epochs": 1, "max_batches": 6, "max_eval_batches": 4, **sections.pop("run", {})}
    return fit_tiny_run(root, run=run, **sections)


def small_model(cell: str, vocab: int = 13):
    """A 2-layer float64 model (6-wide embeddings, 7 hidden units, window 2), seeded, on the
    PyTorch path: small enough to compare gradients exactly."""
    import torch

    from altgrad_triton.core.model import RNNLanguageModel

    torch.manual_seed(1)
    model = RNNLanguageModel(
        vocab, cell=cell, emb_size=6, hidden_size=7, layers=2, window=2, backend="torch"
    )
    return model.double()


def failing_writes(monkeypatch, module, name: str, cause: int, when: int) -> None:
    """Make ``module.name`` (a writer) fail with errno ``cause`` from call ``when`` on."""
    import os

    real, calls = getattr(module, name), []

    def writer(path, *args, **kwargs):
        calls.append(path)
        if len(calls) >= when:
            raise OSError(cause, os.strerror(cause), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, writer)


_SUITE_BASE = """
[run]
name = "base"
epochs = 1
device = "cpu"
[data]
corpus = "text"
path = "/nowhere"
[model]
cell = "lstm"
emb_size = 8
hidden_size = 8
layers = 1
[schedule]
kind = "constant"
"""


def suite_folder(root: Path) -> Path:
    """A recipe folder for altgrad-suite: ``_base.toml`` (left out of the plan), ``a.toml``
    and ``sub/b.toml`` extending it (runs exp-a and exp-b)."""
    f = root / "recipes"
    (f / "sub").mkdir(parents=True)
    (f / "_base.toml").write_text(_SUITE_BASE)
    (f / "a.toml").write_text('extends = "_base.toml"\nrun.name = "exp-a"\n')
    (f / "sub" / "b.toml").write_text(
        'extends = "../_base.toml"\nrun.name = "exp-b"\nbptt.length = 10\n'
    )
    return f


def run_command(main, capsys, *args) -> tuple[int, str, str]:
    """A command's ``main`` on ``args`` (each str()-ed): its exit code, stdout and stderr."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str) -> str:
    """The one ``error:`` line on stderr of a command that exited 2 (asserted)."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def assert_one_line_error(result, *fragments):
    """A ``run_command`` result that is exit code 2 with one ``error:`` line on stderr holding
    every fragment."""
    code, _, err = result
    line = one_error_line(code, err)
    for f in fragments:
        assert f in line, (f, line)


def tree_snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` and the bytes of its files: equal snapshots, nothing
    touched."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


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


def fake_run(
    root,
    name,
    corpus,
    val_losses,
    *,
    modes=None,
    restarts=(),
    test_loss=None,
    sg_cos=None,
    finished=True,
):
    """A run folder as altgrad-train leaves it (``recipe.toml``, ``metrics.jsonl`` and, when
    ``finished``, ``results.json``) without training: one epoch per validation loss."""
    d = root / name
    d.mkdir(parents=True)
    (d / "recipe.toml").write_text(f'[run]\nname = "{name}"\n\n[data]\ncorpus = "{corpus}"\n')
    rows = []
    for i, v in enumerate(val_losses, 1):
        mode = modes[i - 1] if modes else "real"
        rows.append(
            {
                "epoch": i,
                "lr": 1e-3,
                "mode": mode,
                "restart": i in restarts,
                "train_loss": v + 0.1,
                "val_loss": v,
                "val_ppl": math.exp(v),
                "seconds": 10.0,
                "sg_cos": sg_cos[i - 1]
                if isinstance(sg_cos, list)
                else (sg_cos if mode == "synthetic" else None),
            }
        )
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        best = min(val_losses)
        (d / "results.json").write_text(
            json.dumps(
                {
                    "best_val_loss": best,
                    "best_val_ppl": math.exp(best),
                    "test_loss": test_loss if test_loss is not None else best + 0.05,
                    "epochs": len(rows),
                    "seconds": 10.0 * len(rows),
                }
            )
        )
    return d


def command(name: str, *args: str, stdout: object = subprocess.PIPE) -> subprocess.CompletedProcess:
    """``altgrad-<name> args`` in a process of its own (``python -m altgrad_triton.cli.<name>``)."""
    return subprocess.run(
        [sys.executable, "-m", f"altgrad_triton.cli.{name}", *args],
        stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip


def assert_user_error(proc, *fragments):
    """Exit code 2 (the user's mistake) and one ``error:`` line on stderr holding every
    fragment, without a traceback."""
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def assert_machine_fault(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 1 (the machine's fault, not the user's) and one ``error:`` line, the last
    on stderr (altgrad-eval --json shows its progress there)."""
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr
    for f in fragments:
        assert f in errors[0], (f, errors[0])
