"""The training loop: truncated BPTT with synthetic gradients at the boundaries.

    for epoch: plan = TrainingPlan(epoch) -> (lr, mode, restart)
      for segment (AWD-LSTM random length, lr scaled by len/bptt):
        state = boundary.start(state, mode)          # leaf; g_hat(s_k) kept
        out = model(tokens, state); loss = CE + AR/TAR
        boundary.backward(loss, out.state, mode)     # one pass; + scale*<g_hat, s_{k+1}>
        stats = boundary.fit()                       # SG loss kernel, synthesizer step
        clip; optimizer step; state = out.state
      evaluate; checkpoint best/last (atomic); metrics.jsonl
    test with the best checkpoint

The loop never branches on the kernel backend (the cells do), and the plan is a pure
function of the epoch, so ``--resume`` continues exactly, even from an interrupted epoch:
the checkpoint holds the position inside the epoch and every RNG state.

Under torchrun (``distributed.py``) every rank runs this same loop on its share of the
batch columns: the model is wrapped in DistributedDataParallel, the per-segment numbers
and the evaluation sums are reduced over ranks, rank 0 alone writes files and prints, and a
checkpoint gathers every rank's carried state and RNG state.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import checkpoint, data
from . import distributed as ddp
from .errors import UserError
from .files import read_jsonl, write_text_atomic
from .kernels import interpreting
from .model import RNNLanguageModel, State, lm_loss
from .progress import EpochProgress, make_console, summary_table
from .recipe import Recipe, model_shape, to_dict, to_toml
from .schedule import EpochPlan, TrainingPlan
from .synthetic import SyntheticBoundary, divergence_warning, join_state, make_synthesizer


class TrainingStopped(UserError):
    """The run stopped on purpose (Ctrl-C) or on a non-finite loss; the message says which
    checkpoint was kept."""


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "run.device: 'cuda' asked for but no CUDA device is available "
            "(use run.device=cpu or auto)"
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synthesizer_seed(seed: int, rank: int) -> int:
    """The seed of the synthesizer's own RNG stream (initial weights, noise, dropout)."""
    return (ddp.rank_seed(seed, rank) + 104_729) % (2**63)


def _set_hyperparameters(optimizer: torch.optim.Optimizer, **values: float) -> None:
    """Put ``values`` into every parameter group (after ``load_state_dict``, which restores
    the saved ones); the learning rate is set by the schedule at every segment anyway."""
    for group in optimizer.param_groups:
        group.update(values)


def make_optimizer(recipe: Recipe, params: Any) -> torch.optim.Optimizer:
    o = recipe.optim
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum)


@dataclass
class EpochSums:
    """Running sums of one epoch; checkpointed so an interrupted epoch resumes exactly."""

    segment: int = 0
    tokens: int = 0
    loss: float = 0.0  # cross-entropy x tokens
    seconds: float = 0.0
    sg: dict[str, float] = field(
        default_factory=lambda: {"loss": 0.0, "cos": 0.0, "norm_ratio": 0.0, "n": 0}
    )


class Trainer:
    """Builds everything a recipe describes and trains it; see the module docstring."""

    def __init__(
        self,
        recipe: Recipe,
        run_dir: Path,
        *,
        console: Any = None,
        corpus: data.Corpus | None = None,
        dist: ddp.DistContext | None = None,
    ):
        self.recipe, self.run_dir = recipe, Path(run_dir)
        self.dist = dist if dist is not None else ddp.from_process_group()
        ddp.check_divisible(recipe.data.batch_size, self.dist.world_size)
        # only rank 0 prints (progress, summaries); the others write to nowhere
        self.console = (console or make_console()) if self.dist.is_main else _silent_console()
        self.device = ddp.device_for(pick_device(recipe.run.device), self.dist)
        if recipe.run.backend == "triton" and self.device.type != "cuda" and not interpreting():
            raise UserError(
                f"run.backend: 'triton' needs a CUDA device, and this run is on "
                f"{self.device.type}; use run.backend=auto (Triton on CUDA, PyTorch elsewhere)"
            )
        if self.device.type == "cuda":
            from .tune import apply_stored_winners

            n = apply_stored_winners(self.device)
            self.console.print(f"altgrad-tune: {n} stored kernel config(s) applied", markup=False)
        if recipe.run.threads:  # oversubscribed cores make small CPU ops 10-100x slower
            torch.set_num_threads(recipe.run.threads)
        torch.manual_seed(recipe.run.seed)
        d = recipe.data
        self.corpus = corpus or data.load_corpus(
            d.corpus, d.path or None, d.cache_dir or None, download=d.download
        )
        splits = (
            ("batch_size", "train"),
            ("eval_batch_size", "valid"),
            ("test_batch_size", "test"),
        )
        for key, split in splits:  # all now: a test split that does not fit fails up front
            data.check_batch_size(len(getattr(self.corpus, split)), getattr(d, key), f"data.{key}")
        self.model = RNNLanguageModel(len(self.corpus.vocab), recipe.model, recipe.run.backend).to(
            self.device
        )
        self.optimizer = make_optimizer(recipe, self.model.parameters())
        self.plan = TrainingPlan.from_recipe(recipe)
        self.boundary: SyntheticBoundary | None = None
        self.synth_optimizer: torch.optim.Optimizer | None = None
        s = recipe.synthetic
        self.synth_generator: torch.Generator | None = None
        if s.enabled:
            # The synthesizer's initial weights and its training noise come from RNG streams
            # of their own, so the model sees the same initial weights, dropout masks and
            # data as the BPTT run of the same seed: the runs differ by the synthetic
            # gradient alone (synthetic.scale = 0 reproduces BPTT exactly; a test checks it).
            joined = None if s.join == "all" else self.model.recurrent_state_indices()
            zero = self.model.init_state(1)
            state_size = join_state(zero if joined is None else [zero[i] for i in joined]).shape[1]
            context_size = s.context_tokens * recipe.model.emb_size
            self.synth_generator = torch.Generator(device=self.device)
            self.synth_generator.manual_seed(synthesizer_seed(recipe.run.seed, self.dist.rank))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(synthesizer_seed(recipe.run.seed, 0))  # same on every rank
                synth = make_synthesizer(
                    s, state_size, recipe.run.backend, context_size, self.synth_generator
                )
            synth = synth.to(self.device)
            self.synth_optimizer = torch.optim.Adam(
                synth.parameters(), lr=s.lr, weight_decay=s.weight_decay
            )
            tokens = recipe.data.batch_size * recipe.bptt.length  # per segment
            self.boundary = SyntheticBoundary(
                synth,
                self.synth_optimizer,
                s.scale,
                fit_in_real=s.fit_in_real,
                target_scale=s.target_scale or tokens,
                backend=recipe.run.backend,
                reduction=s.reduction,
                advance=s.advance,
                joined=joined,
                split_target=s.split_target,
            )
        # every rank builds the same weights (same seed; DDP also broadcasts rank 0's), then
        # ranks > 0 reseed so that each draws its own dropout masks
        self.net = ddp.wrap_model(self.model, self.dist, self.device)  # what training calls
        if self.synth_optimizer is not None and self.dist.enabled:
            params = list(self.synthesizer.parameters())
            self.synth_optimizer.register_step_pre_hook(
                lambda *_: ddp.average_gradients(params, self.dist)
            )
        if self.dist.rank > 0:
            torch.manual_seed(ddp.rank_seed(recipe.run.seed, self.dist.rank))
        self.train_data = ddp.columns(data.batchify(self.corpus.train, d.batch_size), self.dist).to(
            self.device
        )
        self.console.print(self._describe(), markup=False)
        self.epoch = 1  # next epoch to run
        self.best_val = math.inf
        self.sums = EpochSums()
        self.state: State | None = None  # carried state inside an interrupted epoch
        self._stop_requested = False
        self._lowest_sg_loss: float | None = None  # of the epochs so far, for divergence_warning

    def _describe(self) -> str:
        """The start-of-run line: corpus, model size, device and how the ranks share work."""
        c, d, w = self.corpus, self.recipe.data, self.dist.world_size
        unit = "characters" if c.level == "char" else "tokens"
        parts = [
            f"{c.name}: vocabulary {len(c.vocab):,}, train {len(c.train):,} / valid "
            f"{len(c.valid):,} / test {len(c.test):,} {unit}"
            + "".join(
                f", {n:,} {split} words mapped to <unk>" for split, n in c.unk_counts.items() if n
            ),
            f"model {sum(p.numel() for p in self.model.parameters()):,} parameters on "
            f"{self.device}",
        ]
        if self.dist.enabled:
            parts.append(f"{w} ranks, {d.batch_size // w} batch columns each")
            for key, size, split in (
                ("data.eval_batch_size", d.eval_batch_size, "valid"),
                ("data.test_batch_size", d.test_batch_size, "test"),
            ):
                if size % w:
                    parts.append(
                        f"{key} {size} does not divide by {w} ranks: each rank "
                        f"evaluates the whole {split} split"
                    )
        return "; ".join(parts)

    # ------------------------------------------------------------------ state for checkpoints
    @property
    def synthesizer(self) -> torch.nn.Module | None:
        return self.boundary.synthesizer if self.boundary else None

    def _trainer_state(self) -> dict[str, Any] | None:
        """The trainer state to checkpoint; with several ranks a collective, None off rank 0.

        Every rank's carried state (and synthesizer carry) is gathered and joined in rank
        order into the full-batch layout a single process would hold; every rank's RNG
        states are kept in ``rank_rng`` (``rng``/``cuda_rng`` stay rank 0's).
        """
        b = self.boundary
        state = None if self.state is None else [t.detach().cpu() for t in self.state]
        carry = _to_device(b.carry, "cpu") if b else None
        cuda = self.device.type == "cuda"
        if self.dist.enabled:
            mine = {
                "state": state,
                "carry": carry,
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None,
                "synth_rng": self._synth_rng(),
            }
            ranks = ddp.all_gather_objects(mine, self.dist)
            if not self.dist.is_main:
                return None
            state = ddp.join_rows([r["state"] for r in ranks])
            state = None if state is None else list(state)
            carry = ddp.join_rows([r["carry"] for r in ranks])
        return {
            "epoch": self.epoch,
            "best_val": self.best_val,
            "sums": self.sums.__dict__,
            "lowest_sg_loss": self._lowest_sg_loss,
            "state": state,
            "carry": carry,
            "optimizer": self.optimizer.state_dict(),
            "synth_optimizer": self.synth_optimizer.state_dict() if self.synth_optimizer else None,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if cuda else None,
            "world_size": self.dist.world_size,
            "rank_rng": [(r["rng"], r["cuda_rng"]) for r in ranks] if self.dist.enabled else None,
            "synth_rng": [r["synth_rng"] for r in ranks]
            if self.dist.enabled
            else self._synth_rng(),
        }

    def _synth_rng(self) -> torch.Tensor | None:
        gen = self.synth_generator
        return None if gen is None else gen.get_state()

    def _meta(self, metrics: dict | None) -> dict[str, Any]:
        return {
            "recipe": to_dict(self.recipe),
            "model_shape": model_shape(self.recipe),
            "epoch": self.epoch,
            "metrics": metrics,
            "vocab": self.corpus.vocab.to_dict(),
        }

    def save(self, tag: str, metrics: dict | None = None) -> None:
        """Checkpoint ``tag``; every rank calls it (it gathers), rank 0 alone writes."""
        trainer_state = self._trainer_state()
        if self.dist.is_main:
            checkpoint.save(
                self.run_dir / "checkpoints" / tag,
                model=self.model,
                synthesizer=self.synthesizer,
                meta=self._meta(metrics),
                trainer_state=trainer_state,
            )

    def restore(self, tag: str = "last") -> None:
        """Load weights, optimizers, RNG and the in-epoch position from a checkpoint.

        With several ranks every rank reads the checkpoint (the run directory must be
        visible to all of them) and takes its own rows of the saved full-batch state.
        """
        meta, weights, synth, st = checkpoint.load(self.run_dir / "checkpoints" / tag)
        self._check_resumable(meta, st)
        self.model.load_state_dict(weights)
        s = self.recipe.synthetic
        if self.boundary is not None and synth is not None:
            self.boundary.synthesizer.load_state_dict(synth)
            self.synth_optimizer.load_state_dict(st["synth_optimizer"])
            _set_hyperparameters(self.synth_optimizer, lr=s.lr, weight_decay=s.weight_decay)
            carry = ddp.share_rows(st["carry"], self.dist)
            self.boundary.carry = _to_device(carry, self.device)
        self.optimizer.load_state_dict(st["optimizer"])
        o = self.recipe.optim  # a state dict brings back its own settings: the recipe's win
        momentum = {"momentum": o.momentum} if o.name == "sgd" else {}
        _set_hyperparameters(self.optimizer, weight_decay=o.weight_decay, **momentum)
        self.epoch, self.best_val = st["epoch"], st["best_val"]
        self.sums = EpochSums(**st["sums"])
        self._lowest_sg_loss = st.get("lowest_sg_loss")
        state = ddp.share_rows(None if st["state"] is None else tuple(st["state"]), self.dist)
        self.state = None if state is None else tuple(t.to(self.device) for t in state)
        self._restore_rng(st)
        if self.dist.is_main:
            self._trim_metrics()

    def _trim_metrics(self) -> None:
        """Drop metrics lines of epochs the checkpoint has not finished: written by a run
        stopped after an epoch's line but before its checkpoint, they come again."""
        path = self.run_dir / "metrics.jsonl"
        if path.exists():  # rewritten whole, which also drops a torn last line
            kept = [row for row in read_jsonl(path) if row["epoch"] < self.epoch]
            write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in kept))

    def _check_resumable(self, meta: dict[str, Any], st: dict[str, Any]) -> None:
        """UserError unless this recipe and corpus can continue the checkpoint's run."""
        diff = checkpoint.shape_mismatch(meta["model_shape"], model_shape(self.recipe))
        if diff:
            raise UserError(
                "cannot resume: the recipe's model differs from the checkpoint's: "
                + "; ".join(diff)
            )
        saved_vocab = meta.get("vocab")
        if saved_vocab is not None and saved_vocab != self.corpus.vocab.to_dict():
            raise UserError(
                f"cannot resume: the corpus at data.path={self.recipe.data.path or '(cache)'!r} "
                "has another vocabulary than the checkpoint's; point data.path at the same text"
            )
        if st["state"] is not None:  # stopped inside an epoch: the carried rows must fit
            saved_batch = st["state"][0].shape[0]
            if saved_batch != self.recipe.data.batch_size:
                raise UserError(
                    f"cannot resume: data.batch_size={self.recipe.data.batch_size}, but the "
                    f"checkpoint stopped inside epoch {st['epoch']} with batch size "
                    f"{saved_batch}; resume with data.batch_size={saved_batch}"
                )

    def _restore_rng(self, st: dict[str, Any]) -> None:
        self._restore_synth_rng(st.get("synth_rng"))
        cuda = self.device.type == "cuda"
        if not self.dist.enabled:
            torch.set_rng_state(st["rng"])
            if st["cuda_rng"] is not None and cuda:
                torch.cuda.set_rng_state_all(st["cuda_rng"])
            return
        rank_rng = st.get("rank_rng")
        if rank_rng is not None and len(rank_rng) == self.dist.world_size:
            cpu_rng, cuda_rng = rank_rng[self.dist.rank]
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None and cuda:
                torch.cuda.set_rng_state(cuda_rng, self.device)
        elif self.dist.is_main:  # saved by another world size: rank 0 continues its stream
            torch.set_rng_state(st["rng"])
            if st["cuda_rng"] is not None and cuda:
                torch.cuda.set_rng_state(st["cuda_rng"][0], self.device)
        else:  # ... the others start fresh streams (exact resume needs the same world size)
            torch.manual_seed(ddp.rank_seed(self.recipe.run.seed + self.epoch, self.dist.rank))

    def _restore_synth_rng(self, saved: torch.Tensor | list | None) -> None:
        """The synthesizer's stream, as ``_restore_rng`` does the global ones: every rank its
        own when the world size is the same, else rank 0 alone (others keep fresh streams)."""
        if self.synth_generator is None or saved is None:  # older checkpoints lack it
            return
        states = saved if isinstance(saved, list) else [saved]
        rank = self.dist.rank
        if rank < len(states) and (len(states) == self.dist.world_size or rank == 0):
            self.synth_generator.set_state(states[rank])

    # ------------------------------------------------------------------ one segment
    def _segment(
        self,
        start: int,
        seq_len: int,
        state: State,
        plan: EpochPlan,
    ) -> tuple[torch.Tensor, State, Any]:
        r = self.recipe
        inputs, targets = data.get_segment(self.train_data, start, seq_len)
        lr = plan.lr * seq_len / r.bptt.length if r.bptt.random_length else plan.lr
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        if self.boundary is not None:
            state = self.boundary.start(state, plan.mode, self._context(start))
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.net(inputs, state)  # the model, or its DDP wrapper
            loss, ce = lm_loss(out, targets, r.optim.ar_alpha, r.optim.tar_beta)
        if self.dist.enabled:  # this rank's share of the global mean; DDP sums the gradients
            loss = loss / self.dist.world_size
        if self.boundary is not None:
            self.boundary.backward(loss, out.state, plan.mode, self._context(start + seq_len))
            stats = self.boundary.fit()
        else:
            loss.backward()
            stats = None
        if r.optim.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), r.optim.clip)
        self.optimizer.step()
        return ce.detach(), tuple(t.detach() for t in out.state), stats

    def _context(self, row: int) -> torch.Tensor | None:
        """The cDNI context of the boundary before ``row`` (None unless the recipe asks).

        The embeddings of the next ``synthetic.context_tokens`` input tokens of each column,
        [B, N * emb_size], detached: what the segment after the boundary will read, the
        first of them its first input and the rest its first targets. Rows past the end of
        the split repeat the last one.
        """
        n = self.recipe.synthetic.context_tokens
        if self.boundary is None or n == 0:
            return None
        ids = self.train_data[row : row + n]  # [<= N, B], a view: no index tensor to build
        if ids.shape[0] < n:  # past the end of the split: repeat the last row
            ids = torch.cat([ids, self.train_data[-1:].expand(n - ids.shape[0], -1)])
        return self.model.embedding.weight.detach()[ids].transpose(0, 1).flatten(1)

    def _autocast(self) -> Any:
        enabled = self.device.type == "cuda" and self.recipe.run.dtype == "bfloat16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, plan: EpochPlan) -> EpochSums:
        r = self.recipe
        gen = torch.Generator().manual_seed(r.run.seed * 100_003 + plan.epoch)
        segments = data.segment_lengths(
            self.train_data.shape[0], r.bptt.length, r.bptt.random_length, gen
        )
        if r.run.max_batches and r.run.max_batches < len(segments):
            # a capped epoch takes the next window of consecutive segments each epoch, so
            # that capped runs still see the whole split over their epochs
            k = r.run.max_batches
            first = (plan.epoch - 1) % (len(segments) // k) * k
            segments = segments[first : first + k]
        self.model.train()
        if self.state is None:  # a fresh epoch (not resumed mid-way)
            self.state = self.model.init_state(self.train_data.shape[1], self.device)
            self.sums = EpochSums()
            if self.boundary is not None:
                self.boundary.reset()
        sums = self.sums
        title = f"epoch {plan.epoch} [{plan.mode}]"
        with EpochProgress(
            self.console, title, len(segments), r.run.log_every, start=sums.segment
        ) as bar:
            for start, seq_len in segments[sums.segment :]:
                t0 = time.perf_counter()
                ce, self.state, stats = self._segment(start, seq_len, self.state, plan)
                values = [ce.float()] + (
                    []
                    if stats is None
                    else [stats.loss.float(), stats.cos.float(), stats.norm_ratio.float()]
                )
                values = self._across_ranks(values)
                ce_value = values[0]
                if not math.isfinite(ce_value):
                    best = checkpoint.find(self.run_dir / "checkpoints" / "best")
                    raise TrainingStopped(
                        f"non-finite loss ({ce_value}) at epoch {plan.epoch}, segment "
                        f"{sums.segment + 1}; "
                        + (f"best checkpoint kept in {best}" if best else "no checkpoint yet"),
                        exit_code=1,
                    )
                n = seq_len * self.train_data.shape[1] * self.dist.world_size
                sums.segment += 1
                sums.tokens += n
                sums.loss += ce_value * n
                sums.seconds += time.perf_counter() - t0
                if stats is not None:  # one host transfer per segment, above
                    for k, v in zip(("loss", "cos", "norm_ratio"), values[1:], strict=True):
                        sums.sg[k] += v
                    sums.sg["n"] += 1
                bar.update(sums.segment, sums.loss / sums.tokens, sums.tokens / sums.seconds)
                if self._stop_requested:
                    self.save("last")
                    again = (
                        "torchrun ... -m altgrad_triton.cli.train"
                        if self.dist.enabled
                        else "altgrad-train"
                    )
                    raise TrainingStopped(
                        f"interrupted at epoch {plan.epoch}, segment {sums.segment}; saved. "
                        f"Continue with: {again} --resume {self.run_dir}",
                        exit_code=130,
                    )
        self.state = None
        return sums

    def _across_ranks(self, values: list[torch.Tensor]) -> list[float]:
        """One host transfer of a segment's numbers; with several ranks, their mean.

        The same all-reduce carries the Ctrl-C flag, so every rank stops (and saves) after
        the same segment, and a non-finite loss on any rank stops all of them.
        """
        if not self.dist.enabled:
            return torch.stack(values).tolist()
        vec = torch.stack(values + [values[0].new_tensor(float(self._stop_requested))]).double()
        *means, stop = (ddp.all_reduce_sum(vec, self.dist) / self.dist.world_size).tolist()
        self._stop_requested = stop > 0
        return means

    @torch.no_grad()
    def evaluate(self, split: torch.Tensor, batch_size: int) -> float:
        """Mean cross-entropy per token over a split, state carried across segments.

        With several ranks and a batch size they divide, each rank evaluates its columns
        of the same batchified split and the sums are all-reduced: the number a single
        process gets. Otherwise (e.g. the usual test batch size 1) every rank evaluates the
        whole split and rank 0's number is broadcast, so all ranks agree exactly.
        """
        self.model.eval()
        source = data.batchify(split, batch_size)
        shared = self.dist.enabled and batch_size % self.dist.world_size == 0
        if shared:
            source = ddp.columns(source, self.dist)
        source = source.to(self.device)
        state = self.model.init_state(source.shape[1], self.device)
        segments = data.segment_lengths(source.shape[0], self.recipe.bptt.length, False, None)
        if self.recipe.run.max_eval_batches:
            segments = segments[: self.recipe.run.max_eval_batches]
        total, count = torch.zeros((), device=self.device, dtype=torch.float64), 0
        for start, seq_len in segments:
            inputs, targets = data.get_segment(source, start, seq_len)
            with self._autocast():
                out = self.model(inputs, state)
                _, ce = lm_loss(out, targets)
            state = out.state
            total += ce.double() * targets.numel()
            count += targets.numel()
        if self.dist.enabled:
            both = torch.stack([total, total.new_tensor(float(count))])
            (ddp.all_reduce_sum if shared else ddp.broadcast)(both, self.dist)
            total, count = both[0], int(both[1].item())
        return float(total) / max(count, 1)

    # ------------------------------------------------------------------ the run
    def fit(self) -> dict[str, Any]:
        """Train from ``self.epoch`` to ``run.epochs``, then test the best checkpoint."""
        r = self.recipe
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.run_dir / "recipe.toml", to_toml(r))
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            while self.epoch <= r.run.epochs:
                self._run_epoch(self.plan(self.epoch))
        finally:
            signal.signal(signal.SIGINT, previous)
        return self.finish()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._stop_requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_requested = True
        self.console.print(
            "stopping after this segment (Ctrl-C again to abort without saving)", markup=False
        )

    def _run_epoch(self, plan: EpochPlan) -> None:
        sums = self.train_epoch(plan)
        val = self.evaluate(self.corpus.valid, self.recipe.data.eval_batch_size)
        train_loss = sums.loss / max(sums.tokens, 1)
        sg_n = sums.sg["n"]
        metrics = {
            "epoch": plan.epoch,
            "lr": plan.lr,
            "mode": plan.mode,
            "restart": plan.restart,
            "train_loss": train_loss,
            "train_ppl": _ppl(train_loss),
            "val_loss": val,
            "val_ppl": _ppl(val),
            "tokens_per_s": sums.tokens / max(sums.seconds, 1e-9),
            "seconds": sums.seconds,
            "sg_loss": sums.sg["loss"] / sg_n if sg_n else None,
            "sg_cos": sums.sg["cos"] / sg_n if sg_n else None,
            "sg_norm_ratio": sums.sg["norm_ratio"] / sg_n if sg_n else None,
        }
        if self.corpus.level == "char":  # bits per character, the usual char-level unit
            metrics["train_bpc"], metrics["val_bpc"] = train_loss / math.log(2), val / math.log(2)
        improved = val < self.best_val
        metrics["best"] = improved
        warning = None
        if plan.mode == "synthetic":
            warning = divergence_warning(
                self._lowest_sg_loss,
                metrics["sg_loss"],
                metrics["sg_cos"],
                metrics["sg_norm_ratio"],
            )
        if metrics["sg_loss"] is not None and (
            self._lowest_sg_loss is None or metrics["sg_loss"] < self._lowest_sg_loss
        ):
            self._lowest_sg_loss = metrics["sg_loss"]
        self.epoch += 1
        # the line first, then the checkpoint: a run stopped between the two redoes the
        # epoch, and restore() drops the line it wrote (see _trim_metrics)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
                f.flush()
        if improved:
            self.best_val = val
            self.save("best", metrics)
        self.save("last", metrics)
        self.console.print(
            f"epoch {plan.epoch} [{plan.mode}] lr {plan.lr:.2e} train ppl "
            f"{metrics['train_ppl']:.1f} val ppl {metrics['val_ppl']:.1f} "
            f"{metrics['tokens_per_s']:,.0f} tok/s"
            + (f" sg_cos {metrics['sg_cos']:.3f}" if sg_n else ""),
            markup=False,
        )
        if warning:
            self.console.print(warning, markup=False)

    def finish(self) -> dict[str, Any]:
        """Test the best checkpoint; write results.json and print the summary table.

        With several ranks rank 0 reads the checkpoint and broadcasts the weights, and every
        rank returns rank 0's results.
        """
        if self.dist.is_main:
            _, weights, _, _ = checkpoint.load(self.run_dir / "checkpoints" / "best")
            self.model.load_state_dict(weights)
        ddp.broadcast_module(self.model, self.dist)
        test = self.evaluate(self.corpus.test, self.recipe.data.test_batch_size)
        if not self.dist.is_main:
            return ddp.broadcast_object(None, self.dist)
        rows = read_jsonl(self.run_dir / "metrics.jsonl")
        results = {
            "best_val_loss": self.best_val,
            "best_val_ppl": _ppl(self.best_val),
            "test_loss": test,
            "test_ppl": _ppl(test),
            "epochs": len(rows),
            "seconds": sum(r["seconds"] for r in rows),
        }
        if self.corpus.level == "char":
            results["best_val_bpc"] = self.best_val / math.log(2)
            results["test_bpc"] = test / math.log(2)
        write_text_atomic(self.run_dir / "results.json", json.dumps(results, indent=2))
        self.console.print(
            summary_table(
                f"{self.recipe.run.name}: {self.run_dir}",
                [
                    ("best val ppl", f"{results['best_val_ppl']:.2f}"),
                    ("test ppl", f"{results['test_ppl']:.2f}"),
                    ("epochs", str(results["epochs"])),
                    ("train time", f"{results['seconds']:.0f} s"),
                ],
            )
        )
        return ddp.broadcast_object(results, self.dist)


def _silent_console() -> Any:
    """A console for ranks > 0: prints nowhere."""
    from rich.console import Console

    return Console(file=open(os.devnull, "w"), highlight=False)  # noqa: SIM115


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 50.0))


def _to_device(carry: Any, device: torch.device | str) -> Any:
    if carry is None:
        return None
    if isinstance(carry, torch.Tensor):
        return carry.to(device)
    return tuple(c.to(device) for c in carry)
