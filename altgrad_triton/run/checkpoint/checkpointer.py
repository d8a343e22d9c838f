"""The one object that saves, finds, loads, checks and restores a run's checkpoints.

``Trainer`` saves ``best``/``last`` and restores ``last`` through it, ``load_run`` reads a
trained model through it, and a fine-tuning reads its parent run through it; nothing else
opens a checkpoint. Under torchrun a save gathers every rank's carried state and RNG
states (a collective: every rank calls it, rank 0 alone writes), and a restore gives each
rank its own rows of the saved full-batch state.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ...config.recipe import Recipe
from ...core import asgd
from ...core.carry import to_device
from ...data import Vocabulary
from ...errors import UserError
from ...kernels import tuning
from .. import distributed as ddp
from ..build import Components, apply_recipe_settings
from ..folder import RunFolder
from ..metrics import MetricsLog
from ..values import run_values
from . import checks, layout, store
from .contents import Checkpoint, RngStates, RunState, TrainerState, meta, start_averaging


class MissingCheckpoint(UserError):
    """A run folder without the checkpoint asked for. When it holds the other one, the
    message says how to read that instead, in the caller's words (``picked_by``): a
    command's ``--checkpoint last``, a library call's ``checkpoint="last"``."""

    def __init__(self, run_dir: Path, tag: str, held: str | None, pick: str | None = None):
        self.run_dir, self.tag, self.held = run_dir, tag, held
        if held is None:
            has = "the run has not finished an epoch yet"
        else:
            has = f"it holds only '{held}'" + ("" if pick is None else f" (use {pick})")
        super().__init__(f"{run_dir}: no '{tag}' checkpoint; {has}")

    def picked_by(self, pick: Callable[[str], str]) -> MissingCheckpoint:
        """The same error, saying how this caller reads the checkpoint the folder holds:
        ``pick(tag)`` words it, e.g. ``lambda t: f"--checkpoint {t}"``."""
        held = None if self.held is None else pick(self.held)
        return MissingCheckpoint(self.run_dir, self.tag, self.held, held)


class Checkpointer:
    """The checkpoints of the run folder ``run_dir``, by tag (``best``, ``last``)."""

    def __init__(self, run_dir: str | Path, dist: ddp.DistContext = ddp.SINGLE):
        self.run_dir, self.dist = Path(run_dir), dist

    def path(self, tag: str) -> Path:
        """Where checkpoint ``tag`` is saved."""
        return RunFolder(self.run_dir).checkpoint(tag)

    def find(self, tag: str) -> Path | None:
        """The complete checkpoint ``tag`` (maybe the one a cut-off save set aside), or None."""
        return layout.find(self.path(tag))

    def load(self, tag: str) -> Checkpoint:
        """Checkpoint ``tag``, read and checked file by file (``store.read``)."""
        return store.read(self.path(tag))

    # ------------------------------------------------------------------ saving
    def save(
        self,
        tag: str,
        parts: Components,
        recipe: Recipe,
        run: RunState,
        log: MetricsLog,
        metrics: dict | None = None,
    ) -> None:
        """Checkpoint ``tag``; every rank calls it (it gathers), rank 0 alone writes."""
        # NT-ASGD: the model file gets the averages, trainer.pt the iterate to resume from
        with asgd.averaged_weights(parts.model, parts.optimizer) as iterate:
            trainer = capture(parts, run, log, self.dist, iterate)
            if trainer is None:  # not rank 0
                return
            b = parts.boundary
            store.write(
                self.path(tag),
                model=parts.model,
                synthesizer=b.synthesizer if b else None,
                meta=meta(recipe, parts.corpus.vocab, run.epoch, metrics),
                trainer=trainer,
            )

    # ------------------------------------------------------------------ reading a model
    def load_model(self, tag: str = "best") -> tuple[Recipe, Vocabulary, Checkpoint]:
        """The recipe, vocabulary and checkpoint ``tag`` of a trained run; a one-line
        UserError when the folder is not a run directory, lacks that checkpoint, or holds
        one of another run (``checks.check_run_folder``)."""
        if tag not in layout.TAGS:
            raise UserError(f"checkpoint: must be one of {', '.join(layout.TAGS)}, got {tag!r}")
        if not RunFolder(self.run_dir).checkpoints.is_dir():
            why = "no such folder" if not self.run_dir.exists() else f"no {layout.FOLDER}/ in it"
            raise UserError(
                f"{self.run_dir}: not a run directory ({why}); give the folder altgrad-train "
                "wrote, run.out_dir/run.name"
            )
        if self.find(tag) is None:
            held = [t for t in layout.TAGS if self.find(t)]
            raise MissingCheckpoint(self.run_dir, tag, held[0] if held else None)
        ckpt = self.load(tag)
        recipe, vocab = checks.recipe_and_vocab(ckpt, self.path(tag))
        checks.check_run_folder(ckpt, self.run_dir)
        return recipe, vocab, ckpt

    def load_parent(self, recipe: Recipe, vocab: Vocabulary) -> Checkpoint:
        """This run's ``best`` checkpoint, for a fine-tuning of ``recipe`` on ``vocab`` to
        start from: checked against the fine-tuning's model and vocabulary."""
        _, parent_vocab, ckpt = self.load_model("best")
        checks.check_parent(ckpt, parent_vocab, self.run_dir, recipe, vocab)
        return ckpt

    # ------------------------------------------------------------------ resuming
    def restore(
        self, tag: str, parts: Components, recipe: Recipe, run: RunState, log: MetricsLog
    ) -> None:
        """Continue the run from checkpoint ``tag``: checked against ``recipe`` and this
        run's shapes, then weights, optimizers, the run's position and every RNG stream
        put back (the recipe's optimizer settings win over the saved ones).

        With several ranks every rank reads the checkpoint (the run directory must be
        visible to all of them) and takes its own rows of the saved full-batch state.
        """
        ckpt = self.load(tag)
        checks.check_resumable(ckpt, recipe, parts.corpus.vocab)
        checks.check_shapes(ckpt, parts)
        if tag == "last":
            self.check_best(recipe, parts)
        parts.model.load_state_dict(ckpt.training_weights)
        b = parts.boundary
        if b is not None and ckpt.synthesizer is not None:
            b.synthesizer.load_state_dict(ckpt.synthesizer)
        restore_trainer(ckpt.trainer, parts, run, log, self.dist, run_values(recipe).seed)
        apply_recipe_settings(recipe, parts.optimizer, b.optimizer if b is not None else None)

    def check_best(self, recipe: Recipe, parts: Components) -> None:
        """UserError when a resume from 'last' finds a 'best' it could not continue from
        (damaged, or another run's): the run would replace it without a word at its next
        best epoch, or test it as its own at the end. Checked as a resume from it would be."""
        if self.find("best") is None:
            return
        try:
            best = self.load("best")
            checks.check_resumable(best, recipe, parts.corpus.vocab)
            checks.check_shapes(best, parts)
        except UserError as e:
            why = str(e).removeprefix("cannot resume: ")
            raise UserError(
                f"cannot resume: {self.path('best')} is not this run's best checkpoint ({why}); "
                "the run would replace it at its next best epoch or test it as its own: move "
                "it out of the run folder, then resume again"
            ) from None


def _rng_states(parts: Components, all_cuda: bool) -> RngStates:
    cuda = parts.device.type == "cuda"
    gen = parts.synth_generator
    if not cuda:
        cuda_rng = None
    elif all_cuda:
        cuda_rng = torch.cuda.get_rng_state_all()
    else:
        cuda_rng = torch.cuda.get_rng_state(parts.device)
    return RngStates(torch.get_rng_state(), cuda_rng, None if gen is None else gen.get_state())


def capture(
    parts: Components,
    run: RunState,
    log: MetricsLog,
    dist: ddp.DistContext,
    iterate: dict[str, torch.Tensor] | None = None,
) -> TrainerState | None:
    """``trainer.pt``'s content; with several ranks a collective, None off rank 0.

    Every rank's carried state (and synthesizer carry) is gathered and joined in rank order
    into the full-batch layout a single process would hold; every rank's RNG states are
    kept in ``rng.ranks`` and ``rng.synthesizer`` (``rng.cpu``/``rng.cuda`` stay rank 0's).
    ``iterate``: the training weights when the model file gets the averaged ones (NT-ASGD).
    """
    b = parts.boundary
    st = TrainerState(
        run=RunState(**vars(run)),
        optimizer=parts.optimizer.state_dict(),
        rng=_rng_states(parts, all_cuda=True),
        synth_optimizer=b.optimizer.state_dict() if b else None,
        carry=to_device(b.carry, "cpu") if b else None,
        iterate=iterate,
        log=log.state_dict(),
        world_size=dist.world_size,
        kernel_configs=tuning.overrides(),
        kernel_records=parts.guard.records() if parts.guard is not None else {},
    )
    if not dist.enabled:
        return st
    carried = None if run.carried is None else [t.detach().cpu() for t in run.carried]
    mine = {"state": carried, "carry": st.carry, "rng": _rng_states(parts, all_cuda=False)}
    ranks = ddp.all_gather_objects(mine, dist)
    if not dist.is_main:
        return None
    st.run.carried = ddp.join_rows([r["state"] for r in ranks])
    st.carry = ddp.join_rows([r["carry"] for r in ranks])
    st.rng.ranks = [(r["rng"].cpu, r["rng"].cuda) for r in ranks]
    st.rng.synthesizer = [r["rng"].synthesizer for r in ranks]
    return st


def restore_trainer(
    st: TrainerState,
    parts: Components,
    run: RunState,
    log: MetricsLog,
    dist: ddp.DistContext,
    seed: int,
) -> None:
    """Put ``trainer.pt``'s content back: optimizer states, the carried state and carry (this
    rank's rows), where the run stands, and the RNG streams.

    The synthesizer's optimizer and carry come back when the run has a synthesizer and the
    checkpoint one too, and the Triton kernels' launch configs as the run had them. After an
    NT-ASGD switch the optimizer becomes averaged SGD first.
    """
    b = parts.boundary
    if b is not None and st.synth_optimizer is not None:
        b.optimizer.load_state_dict(st.synth_optimizer)
        b.carry = to_device(ddp.share_rows(st.carry, dist), parts.device)
    if st.run.averaging_since is not None:  # NT-ASGD after its switch: ASGD's state
        start_averaging(parts, run, st.run.averaging_since)
    parts.optimizer.load_state_dict(st.optimizer)
    saved = st.run.state_dict()
    state = ddp.share_rows(None if saved["state"] is None else tuple(saved["state"]), dist)
    run.load_state_dict({**saved, "state": to_device(state, parts.device)})
    log.load_state_dict(st.log)
    # the kernel configs the run used (autotuned or stored): the same fp32 sum orders
    tuning.restore_overrides(st.kernel_configs)
    if parts.guard is not None:  # a family that fell back stays on PyTorch: the same sums
        parts.guard.restore(st.kernel_records)
    _restore_rng(st.rng, parts, dist, seed, run.epoch)


def _restore_rng(
    rng: RngStates, parts: Components, dist: ddp.DistContext, seed: int, epoch: int
) -> None:
    """Every rank's own streams when the world size is the same; saved by another world
    size, rank 0 continues its stream and the others start fresh ones (exact resume needs
    the same world size)."""
    _restore_synth_rng(rng.synthesizer, parts.synth_generator, dist)
    cuda = parts.device.type == "cuda"
    if not dist.enabled:
        torch.set_rng_state(rng.cpu)
        if rng.cuda is not None and cuda:
            torch.cuda.set_rng_state_all(rng.cuda)
        return
    if rng.ranks is not None and len(rng.ranks) == dist.world_size:
        cpu_rng, cuda_rng = rng.ranks[dist.rank]
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None and cuda:
            torch.cuda.set_rng_state(cuda_rng, parts.device)
    elif dist.is_main:
        torch.set_rng_state(rng.cpu)
        if rng.cuda is not None and cuda:
            torch.cuda.set_rng_state(rng.cuda[0], parts.device)
    else:
        torch.manual_seed(ddp.rank_seed(seed + epoch, dist.rank))


def _restore_synth_rng(
    saved: torch.Tensor | list | None, generator: torch.Generator | None, dist: ddp.DistContext
) -> None:
    """The synthesizer's stream, as ``_restore_rng`` does the global ones."""
    if generator is None or saved is None:  # older checkpoints lack it
        return
    states = saved if isinstance(saved, list) else [saved]
    if dist.rank < len(states) and (len(states) == dist.world_size or dist.rank == 0):
        generator.set_state(states[dist.rank])
