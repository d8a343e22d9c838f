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
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import checkpoint, data
from .errors import UserError
from .model import RNNLanguageModel, State, lm_loss
from .progress import EpochProgress, make_console, summary_table
from .recipe import Recipe, model_shape, to_dict, to_toml
from .schedule import EpochPlan, TrainingPlan
from .synthetic import SyntheticBoundary, join_state, make_synthesizer


class TrainingStopped(UserError):
    """The run stopped on purpose (Ctrl-C) or on a non-finite loss; a checkpoint was kept."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("run.device: 'cuda' asked for but no CUDA device is available "
                        "(use run.device=cpu or auto)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
    sg: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "cos": 0.0,
                                                          "norm_ratio": 0.0, "n": 0})


class Trainer:
    """Builds everything a recipe describes and trains it; see the module docstring."""

    def __init__(self, recipe: Recipe, run_dir: Path, *, console: Any = None,
                 corpus: data.Corpus | None = None):
        self.recipe, self.run_dir = recipe, Path(run_dir)
        self.console = console or make_console()
        self.device = pick_device(recipe.run.device)
        torch.manual_seed(recipe.run.seed)
        d = recipe.data
        self.corpus = corpus or data.load_corpus(d.corpus, d.path or None, d.cache_dir or None,
                                                 download=d.download)
        self.model = RNNLanguageModel(len(self.corpus.vocab), recipe.model,
                                      recipe.run.backend).to(self.device)
        self.optimizer = make_optimizer(recipe, self.model.parameters())
        self.plan = TrainingPlan.from_recipe(recipe)
        self.boundary: SyntheticBoundary | None = None
        self.synth_optimizer: torch.optim.Optimizer | None = None
        s = recipe.synthetic
        if s.enabled:
            state_size = join_state(self.model.init_state(1)).shape[1]
            synth = make_synthesizer(s, state_size, recipe.run.backend).to(self.device)
            self.synth_optimizer = torch.optim.Adam(synth.parameters(), lr=s.lr)
            self.boundary = SyntheticBoundary(synth, self.synth_optimizer, s.scale,
                                              fit_in_real=s.fit_in_real,
                                              backend=recipe.run.backend)
        self.train_data = data.batchify(self.corpus.train, d.batch_size).to(self.device)
        c = self.corpus
        self.console.print(
            f"{c.name}: vocabulary {len(c.vocab):,}, train {len(c.train):,} / valid "
            f"{len(c.valid):,} / test {len(c.test):,} {'characters' if c.level == 'char' else 'tokens'}"
            + "".join(f", {n:,} {split} words mapped to <unk>" for split, n in c.unk_counts.items()
                      if n) + f"; model {sum(p.numel() for p in self.model.parameters()):,} "
            f"parameters on {self.device}", markup=False)
        self.epoch = 1  # next epoch to run
        self.best_val = math.inf
        self.sums = EpochSums()
        self.state: State | None = None  # carried state inside an interrupted epoch
        self._stop_requested = False

    # ------------------------------------------------------------------ state for checkpoints
    @property
    def synthesizer(self) -> torch.nn.Module | None:
        return self.boundary.synthesizer if self.boundary else None

    def _trainer_state(self) -> dict[str, Any]:
        b = self.boundary
        return {
            "epoch": self.epoch, "best_val": self.best_val, "sums": self.sums.__dict__,
            "state": None if self.state is None else [t.detach().cpu() for t in self.state],
            "carry": b.carry if b else None,
            "optimizer": self.optimizer.state_dict(),
            "synth_optimizer": self.synth_optimizer.state_dict() if self.synth_optimizer else None,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
        }

    def _meta(self, metrics: dict | None) -> dict[str, Any]:
        return {"recipe": to_dict(self.recipe), "model_shape": model_shape(self.recipe),
                "epoch": self.epoch, "metrics": metrics, "vocab": self.corpus.vocab.to_dict()}

    def save(self, tag: str, metrics: dict | None = None) -> None:
        checkpoint.save(self.run_dir / "checkpoints" / tag, model=self.model,
                        synthesizer=self.synthesizer, meta=self._meta(metrics),
                        trainer_state=self._trainer_state())

    def restore(self, tag: str = "last") -> None:
        """Load weights, optimizers, RNG and the in-epoch position from a checkpoint."""
        meta, weights, synth, st = checkpoint.load(self.run_dir / "checkpoints" / tag)
        diff = checkpoint.shape_mismatch(meta["model_shape"], model_shape(self.recipe))
        if diff:
            raise UserError("cannot resume: the recipe's model differs from the checkpoint's: "
                            + "; ".join(diff))
        self.model.load_state_dict(weights)
        if self.boundary is not None and synth is not None:
            self.boundary.synthesizer.load_state_dict(synth)
            self.synth_optimizer.load_state_dict(st["synth_optimizer"])
            carry = st["carry"]
            self.boundary.carry = _to_device(carry, self.device)
        self.optimizer.load_state_dict(st["optimizer"])
        self.epoch, self.best_val = st["epoch"], st["best_val"]
        self.sums = EpochSums(**st["sums"])
        self.state = None if st["state"] is None else tuple(t.to(self.device) for t in st["state"])
        torch.set_rng_state(st["rng"])
        if st["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(st["cuda_rng"])

    # ------------------------------------------------------------------ one segment
    def _segment(self, inputs: torch.Tensor, targets: torch.Tensor, state: State,
                 plan: EpochPlan, seq_len: int) -> tuple[torch.Tensor, State, Any]:
        r = self.recipe
        lr = plan.lr * seq_len / r.bptt.length if r.bptt.random_length else plan.lr
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        if self.boundary is not None:
            state = self.boundary.start(state, plan.mode)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.model(inputs, state)
            loss, ce = lm_loss(out, targets, r.optim.ar_alpha, r.optim.tar_beta)
        if self.boundary is not None:
            self.boundary.backward(loss, out.state, plan.mode)
            stats = self.boundary.fit()
        else:
            loss.backward()
            stats = None
        if r.optim.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), r.optim.clip)
        self.optimizer.step()
        return ce.detach(), tuple(t.detach() for t in out.state), stats

    def _autocast(self) -> Any:
        enabled = self.device.type == "cuda" and self.recipe.run.dtype == "bfloat16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, plan: EpochPlan) -> EpochSums:
        r = self.recipe
        gen = torch.Generator().manual_seed(r.run.seed * 100_003 + plan.epoch)
        segments = data.segment_lengths(self.train_data.shape[0], r.bptt.length,
                                        r.bptt.random_length, gen)
        if r.run.max_batches:
            segments = segments[: r.run.max_batches]
        self.model.train()
        if self.state is None:  # a fresh epoch (not resumed mid-way)
            self.state = self.model.init_state(r.data.batch_size, self.device)
            self.sums = EpochSums()
            if self.boundary is not None:
                self.boundary.reset()
        sums = self.sums
        title = f"epoch {plan.epoch} [{plan.mode}]"
        with EpochProgress(self.console, title, len(segments), r.run.log_every) as bar:
            for start, seq_len in segments[sums.segment:]:
                t0 = time.perf_counter()
                inputs, targets = data.get_segment(self.train_data, start, seq_len)
                ce, self.state, stats = self._segment(inputs, targets, self.state, plan, seq_len)
                values = torch.stack([ce.float()] + ([] if stats is None else [
                    stats.loss.float(), stats.cos.float(), stats.norm_ratio.float()])).tolist()
                ce_value = values[0]
                if not math.isfinite(ce_value):
                    raise TrainingStopped(f"non-finite loss ({ce_value}) at epoch {plan.epoch}, "
                                          f"segment {sums.segment + 1}; best checkpoint kept "
                                          f"in {self.run_dir / 'checkpoints' / 'best'}", exit_code=1)
                n = targets.numel()
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
                    raise TrainingStopped(
                        f"interrupted at epoch {plan.epoch}, segment {sums.segment}; saved. "
                        f"Continue with: altgrad-train --resume {self.run_dir}", exit_code=130)
        self.state = None
        return sums

    @torch.no_grad()
    def evaluate(self, split: torch.Tensor, batch_size: int) -> float:
        """Mean cross-entropy per token over a split, state carried across segments."""
        self.model.eval()
        source = data.batchify(split, batch_size).to(self.device)
        state = self.model.init_state(batch_size, self.device)
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
        return float(total) / max(count, 1)

    # ------------------------------------------------------------------ the run
    def fit(self) -> dict[str, Any]:
        """Train from ``self.epoch`` to ``run.epochs``, then test the best checkpoint."""
        r = self.recipe
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "recipe.toml").write_text(to_toml(r))
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
        self.console.print("stopping after this segment (Ctrl-C again to abort without saving)",
                           markup=False)

    def _run_epoch(self, plan: EpochPlan) -> None:
        sums = self.train_epoch(plan)
        val = self.evaluate(self.corpus.valid, self.recipe.data.eval_batch_size)
        train_loss = sums.loss / max(sums.tokens, 1)
        sg_n = sums.sg["n"]
        metrics = {
            "epoch": plan.epoch, "lr": plan.lr, "mode": plan.mode, "restart": plan.restart,
            "train_loss": train_loss, "train_ppl": _ppl(train_loss),
            "val_loss": val, "val_ppl": _ppl(val),
            "tokens_per_s": sums.tokens / max(sums.seconds, 1e-9), "seconds": sums.seconds,
            "sg_loss": sums.sg["loss"] / sg_n if sg_n else None,
            "sg_cos": sums.sg["cos"] / sg_n if sg_n else None,
            "sg_norm_ratio": sums.sg["norm_ratio"] / sg_n if sg_n else None,
        }
        if self.corpus.level == "char":  # bits per character, the usual char-level unit
            metrics["train_bpc"], metrics["val_bpc"] = train_loss / math.log(2), val / math.log(2)
        improved = val < self.best_val
        metrics["best"] = improved
        self.epoch += 1
        if improved:
            self.best_val = val
            self.save("best", metrics)
        self.save("last", metrics)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
            f.flush()
        self.console.print(
            f"epoch {plan.epoch} [{plan.mode}] lr {plan.lr:.2e} train ppl "
            f"{metrics['train_ppl']:.1f} val ppl {metrics['val_ppl']:.1f} "
            f"{metrics['tokens_per_s']:,.0f} tok/s"
            + (f" sg_cos {metrics['sg_cos']:.3f}" if sg_n else ""), markup=False)

    def finish(self) -> dict[str, Any]:
        """Test the best checkpoint; write results.json and print the summary table."""
        _, weights, _, _ = checkpoint.load(self.run_dir / "checkpoints" / "best")
        self.model.load_state_dict(weights)
        test = self.evaluate(self.corpus.test, self.recipe.data.test_batch_size)
        rows = [json.loads(line) for line in (self.run_dir / "metrics.jsonl").read_text()
                .splitlines() if line.strip()]
        results = {"best_val_loss": self.best_val, "best_val_ppl": _ppl(self.best_val),
                   "test_loss": test, "test_ppl": _ppl(test), "epochs": len(rows),
                   "seconds": sum(r["seconds"] for r in rows)}
        if self.corpus.level == "char":
            results["best_val_bpc"] = self.best_val / math.log(2)
            results["test_bpc"] = test / math.log(2)
        (self.run_dir / "results.json").write_text(json.dumps(results, indent=2))
        self.console.print(summary_table(f"{self.recipe.run.name}: {self.run_dir}", [
            ("best val ppl", f"{results['best_val_ppl']:.2f}"),
            ("test ppl", f"{results['test_ppl']:.2f}"),
            ("epochs", str(results["epochs"])),
            ("train time", f"{results['seconds']:.0f} s"),
        ]))
        return results


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 50.0))


def _to_device(carry: Any, device: torch.device) -> Any:
    if carry is None:
        return None
    if isinstance(carry, torch.Tensor):
        return carry.to(device)
    return tuple(c.to(device) for c in carry)
