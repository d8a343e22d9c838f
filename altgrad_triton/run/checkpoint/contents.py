"""What a checkpoint holds, as typed objects; ``trainer.pt`` stays the flat dict it has
always been (:meth:`TrainerState.to_dict` / :meth:`TrainerState.from_dict`), so run
folders written by earlier versions still resume.

With NT-ASGD averaging the model file holds the averaged weights: they are the model
(validated, tested, loaded by ``load_run``, fine-tuned from), so every reader of the model
file gets them without knowing about the optimizer. The training iterate, which only a
resume needs, goes into ``trainer.pt`` under ``weights`` (the averages are also in the
ASGD state there, as ``ax``: one model's worth of duplication, for a model file that means
one thing).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ...config.recipe import Recipe, model_shape, to_dict
from ...core import asgd
from ...core.carry import State
from ...data import Vocabulary
from ..metrics import EpochSums

if TYPE_CHECKING:
    from ..build import Components

Tensors = dict[str, torch.Tensor]


@dataclass
class RunState:
    """Where a run stands: what the training loop advances, and a checkpoint keeps beside
    the weights, the optimizer states and the RNG streams."""

    epoch: int = 1  # the next epoch to run
    best_val: float = math.inf
    sums: EpochSums = field(default_factory=EpochSums)  # of the epoch under way
    carried: State | None = None  # the model's state inside an interrupted epoch
    val_losses: list[float] = field(default_factory=list)  # every epoch's, for NT-ASGD
    averaging_since: int | None = None  # NT-ASGD: the epoch after which averaging began

    def position(self) -> str:
        """Where a resumed run continues: ``epoch E`` or ``epoch E, after segment S``."""
        inside = f", after segment {self.sums.segment}" if self.carried is not None else ""
        return f"epoch {self.epoch}{inside}"

    def state_dict(self) -> dict[str, Any]:
        carried = None if self.carried is None else [t.detach().cpu() for t in self.carried]
        return {
            "epoch": self.epoch,
            "best_val": self.best_val,
            "sums": dataclasses.asdict(self.sums),
            "state": carried,
            "val_losses": list(self.val_losses),
            "averaging_since": self.averaging_since,
        }

    def load_state_dict(self, st: dict[str, Any]) -> None:
        """From ``trainer.pt``'s keys; ``state`` stays as given (its rows, its device)."""
        self.epoch, self.best_val = st["epoch"], st["best_val"]
        self.sums = EpochSums(**st["sums"])
        self.carried = None if st["state"] is None else tuple(st["state"])
        self.val_losses = list(st.get("val_losses", []))  # older checkpoints lack these two
        self.averaging_since = st.get("averaging_since")


def start_averaging(parts: Components, run: RunState, after_epoch: int) -> None:
    """The one place the optimizer becomes averaged SGD: at NT-ASGD's switch, at a
    fine-tuning's start, and when a checkpoint saved after either is restored (its
    optimizer state is ASGD's, and ``run.averaging_since`` says so)."""
    parts.optimizer = asgd.averaging_optimizer(parts.optimizer)
    run.averaging_since = after_epoch


@dataclass
class RngStates:
    """Every random stream a resumed run continues. Under torchrun ``cpu``/``cuda`` are
    rank 0's, ``ranks`` every rank's ``(cpu, cuda)``, and ``synthesizer`` a list by rank."""

    cpu: torch.Tensor
    cuda: Any = None  # all CUDA devices' states (one process), or None off CUDA
    synthesizer: Any = None  # the synthesizer's own stream; None without one
    ranks: list[tuple[Any, Any]] | None = None


LOG_KEYS = ("lowest_sg_loss",)
"""The keys of ``MetricsLog.state_dict`` in ``trainer.pt``."""

TRAINER_KEYS = (
    "epoch",
    "best_val",
    "sums",
    "state",
    "carry",
    "optimizer",
    "synth_optimizer",
    "rng",
    "cuda_rng",
)
"""The keys of ``trainer.pt`` every checkpoint has had; those added later are optional."""


@dataclass
class TrainerState:
    """``trainer.pt``: where the run stands, the synthesizer's carry, the optimizer states,
    every RNG stream, the kernels' launch configs and which fell back to PyTorch (the
    kernel guard's records); carried rows for the full batch."""

    run: RunState
    optimizer: dict[str, Any]
    rng: RngStates
    synth_optimizer: dict[str, Any] | None = None
    carry: State | None = None  # the synthesizer's carry (on the CPU)
    iterate: Tensors | None = None  # NT-ASGD: the weights training continues from
    log: dict[str, Any] = field(default_factory=dict)  # MetricsLog.state_dict()
    world_size: int = 1
    kernel_configs: list[Any] = field(default_factory=list)
    kernel_records: dict[str, Any] = field(default_factory=dict)  # the kernel guard's

    def to_dict(self) -> dict[str, Any]:
        """The flat dict written to ``trainer.pt``, its keys in their historical order."""
        iterate = self.iterate
        return {
            **self.run.state_dict(),
            **self.log,
            "weights": None if iterate is None else {k: v.cpu() for k, v in iterate.items()},
            "carry": self.carry,
            "optimizer": self.optimizer,
            "synth_optimizer": self.synth_optimizer,
            "rng": self.rng.cpu,
            "cuda_rng": self.rng.cuda,
            "synth_rng": self.rng.synthesizer,
            "world_size": self.world_size,
            "rank_rng": self.rng.ranks,
            "kernel_configs": self.kernel_configs,
            "kernel_records": self.kernel_records,
        }

    @classmethod
    def from_dict(cls, st: dict[str, Any]) -> TrainerState:
        """From ``trainer.pt`` (keys checked against TRAINER_KEYS); keys added after the
        first release take their defaults, so older checkpoints still resume."""
        run = RunState()
        run.load_state_dict(st)
        return cls(
            run=run,
            optimizer=st["optimizer"],
            rng=RngStates(st["rng"], st["cuda_rng"], st.get("synth_rng"), st.get("rank_rng")),
            synth_optimizer=st["synth_optimizer"],
            carry=st["carry"],
            iterate=st.get("weights"),
            log={k: st[k] for k in LOG_KEYS if k in st},
            world_size=st.get("world_size", 1),
            kernel_configs=st.get("kernel_configs", []),
            kernel_records=st.get("kernel_records", {}),
        )


@dataclass
class Checkpoint:
    """Everything one checkpoint folder holds: ``meta.json`` (:func:`meta`), the model's
    and the synthesizer's weights, and ``trainer.pt``."""

    meta: dict[str, Any]
    weights: Tensors  # the model file: the averaged weights under NT-ASGD
    synthesizer: Tensors | None
    trainer: TrainerState
    where: Path | None = None  # the folder it was read from (maybe a cut-off save's .old)

    @property
    def training_weights(self) -> Tensors:
        """The weights a resumed run trains on: the model file's, or with NT-ASGD averaging
        (which puts the averages there) the iterate that ``trainer.pt`` keeps."""
        return self.weights if self.trainer.iterate is None else self.trainer.iterate

    @property
    def stopped_inside(self) -> tuple[int, int] | None:
        """``(epoch, segments)`` of a checkpoint saved by a stop inside an epoch (Ctrl-C,
        SIGTERM): its weights are those after that many of the epoch's segments; None for
        one saved at an epoch's end. ``meta.json`` has no metrics line for it to name an
        epoch by, so a reader says this instead (``trainer.pt`` keeps the position)."""
        run = self.trainer.run
        return None if run.carried is None else (run.epoch, run.sums.segment)


def meta(recipe: Recipe, vocab: Vocabulary, epoch: int, metrics: dict | None) -> dict[str, Any]:
    """``meta.json``: what a reader needs to rebuild the model and judge the checkpoint."""
    return {
        "recipe": to_dict(recipe),
        "model_shape": model_shape(recipe),
        "epoch": epoch,
        "metrics": metrics,
        "vocab": vocab.to_dict(),
    }
