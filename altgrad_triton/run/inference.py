"""Use a trained run: load it, score text with it, sample from it, fine-tune from it.

    run = load_run("runs/wt2-small")                      # best checkpoint, eval mode
    run.score(run.split("test"), batch_size=1).ppl        # the trainer's own evaluation
    ids, unknown = run.encode_file(Path("my.txt"))        # the run's tokenisation
    run.score(ids, pointer=published_settings("wikitext-2"))   # + continuous cache
    run.score(run.split("test"), progress=True)           # a bar on stderr while it runs
    "".join(run.generate(50, prompt="The", seed=1))       # sampling

``altgrad-eval`` and ``altgrad-generate`` are thin wrappers over these; the checkpoint is
read by ``checkpoint.Checkpointer.load_model``, as a fine-tuning reads its parent. A
checkpoint is read the same way whoever wrote it (one process or torchrun: the model file
holds the whole model either way), and the model is built for the device and backend at
hand, not the ones it was trained on. What the run's recipe says comes from the builders as
plain values (``LoadedRun.values``), so nothing here reads a recipe key.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from .. import data
from ..config.backends import backend_problem
from ..config.names import char_level
from ..config.recipe import Recipe
from ..core.model import RNNLanguageModel, autocast
from ..core.pointer import PointerCache, PointerSettings
from ..data import EOS, Vocabulary
from ..errors import UserError
from ..kernels.guard import KernelGuard, guarding
from ..progress import ProgressOption
from .build import build_model, pick_device, recipe_corpus
from .checkpoint import checks, layout
from .checkpoint.checkpointer import Checkpointer, MissingCheckpoint
from .evaluation import evaluate
from .folder import RunFolder
from .kernel_check import make_guard
from .metrics import bits, perplexity
from .values import RunValues, run_values, with_backend

MIN_TEMPERATURE = 1e-3
"""Below this, logits / temperature can overflow float32 (AWD-LSTM's generate.py floor)."""

MAX_WORDS = 1_000_000
"""The most tokens one ``generate`` call samples: about ten novels, more than any use of a
sampler reads; a bound that catches a typo (``--words 1000000000000`` would run for days)."""


@dataclass(frozen=True)
class Score:
    """A text's mean cross-entropy under a model, and how it was measured."""

    loss: float  # nats per token
    tokens: int  # targets scored
    batch_size: int
    bptt: int
    char_level: bool
    pointer: PointerSettings | None = None

    @property
    def ppl(self) -> float:
        return perplexity(self.loss)

    @property
    def bpc(self) -> float:
        """Bits per token: per character for a character-level model."""
        return bits(self.loss)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "loss": self.loss,
            "ppl": self.ppl,
            "tokens": self.tokens,
            "batch_size": self.batch_size,
            "bptt": self.bptt,
        }
        if self.char_level:
            out["bpc"] = self.bpc
        out["pointer"] = None if self.pointer is None else dataclasses.asdict(self.pointer)
        return out


@dataclass
class LoadedRun:
    """A trained model (eval mode, on ``device``), its vocabulary and resolved recipe."""

    model: RNNLanguageModel
    vocab: Vocabulary
    recipe: Recipe
    device: torch.device
    run_dir: Path
    checkpoint: str  # "best" or "last"
    meta: dict[str, Any]  # the checkpoint's meta.json: epoch, the metrics line that made it
    synthesizer: dict[str, torch.Tensor] | None = None  # its synthesizer's weights, if any
    stopped_inside: tuple[int, int] | None = None  # (epoch, segments): a stop inside an epoch
    guard: KernelGuard | None = None  # checks the kernels while it scores and samples

    @cached_property
    def values(self) -> RunValues:
        """What the run's recipe says that using it acts on (corpus, bptt, dtype, ...)."""
        return run_values(self.recipe)

    @property
    def char_level(self) -> bool:
        return char_level(self.values.corpus)

    @property
    def epoch(self) -> int | None:
        """The epoch whose end saved this checkpoint (its metrics line's); None for one a
        stop inside an epoch saved (``stopped_inside`` says where)."""
        return (self.meta.get("metrics") or {}).get("epoch")

    @property
    def made(self) -> str:
        """Where in training the checkpoint was saved, for a person: ``epoch 2`` (at its
        end) or ``inside epoch 3, segment 131`` (a stop after 131 of its segments)."""
        if self.stopped_inside is not None:
            epoch, segment = self.stopped_inside
            return f"inside epoch {epoch}, segment {segment}"
        return f"epoch {self.epoch if self.epoch is not None else '?'}"

    # ------------------------------------------------------------------ text
    def split(self, name: str) -> torch.Tensor:
        """The ids of the run's own ``valid`` or ``test`` split (read as the trainer did)."""
        corpus = recipe_corpus(self.recipe)
        if corpus.vocab != self.vocab:
            meta = RunFolder(self.run_dir).checkpoint(self.checkpoint) / layout.META
            path = self.values.corpus_path
            raise UserError(
                f"the corpus at data.path={path or '(cache)'!r} has another vocabulary than "
                f"{meta} ({checks.vocab_difference(self.vocab, corpus.vocab)}); score that "
                "text with --text FILE instead"
            )
        return corpus.split(name)

    def encode_file(self, path: Path) -> tuple[torch.Tensor, Counter]:
        """A text file's ids, tokenised as the run's corpus was; the tokens that became
        ``<unk>``, with their counts (``data.encode_file``)."""
        return data.encode_file(Path(path), self.vocab, data.corpus_level(self.values.corpus))

    def encode_prompt(self, text: str) -> tuple[torch.Tensor, list[str]]:
        """A prompt's ids, after a line start (``<eos>``, or a newline for characters), and
        the tokens that are not in the vocabulary (fed as ``<unk>``, or left out when there
        is none). UserError when no token of a non-empty prompt is known."""
        tokens = list(text) if self.char_level else text.split()
        unknown = [t for t in tokens if t not in self.vocab]
        if tokens and len(unknown) == len(tokens):
            kind = "character" if self.char_level else "word"
            shown = ", ".join(repr(t) for t in dict.fromkeys(unknown))
            raise UserError(
                f"prompt: none of its {kind}s is in the model's vocabulary ({shown}); "
                f"use {kind}s of the training text"
            )
        if self.vocab.unk_index is None:
            tokens = [t for t in tokens if t in self.vocab]
        start = "\n" if self.char_level else EOS
        head = [start] if start in self.vocab else []
        return self.vocab.encode(head + tokens), unknown

    # ------------------------------------------------------------------ scoring
    def score(
        self,
        tokens: torch.Tensor,
        *,
        batch_size: int = 1,
        bptt: int | None = None,
        pointer: PointerSettings | None = None,
        progress: ProgressOption = False,
        title: str = "scoring",
    ) -> Score:
        """Mean cross-entropy of ``tokens`` (``evaluation.evaluate``, the trainer's own), in
        ``batch_size`` columns of ``bptt`` steps (default the recipe's ``bptt.length``),
        optionally with the continuous cache.

        ``progress``: off by default (a library prints nothing unasked); a paper-size model
        scores a test split for many minutes on a CPU, so ask: True, a bar on stderr under
        ``title`` (plain lines when stderr is not a terminal); a rich Console, the bar
        there; a function, called as ``progress(segments_done, segments)`` after each
        segment (``progress.ProgressOption``)."""
        bptt = self.values.bptt if bptt is None else bptt
        if bptt < 1:
            raise UserError(f"bptt: must be >= 1, got {bptt}")
        data.check_batch_size(len(tokens), batch_size, "batch size")
        with guarding(self.guard):  # a kernel that fails on this GPU falls back, as in training
            loss = evaluate(
                self.model,
                tokens,
                batch_size,
                bptt,
                device=self.device,
                dtype=self.values.dtype,
                pointer=None if pointer is None else PointerCache(pointer),
                progress=progress,
                title=title,
            )
        scored = (len(tokens) // batch_size - 1) * batch_size  # every row but the first
        return Score(loss, scored, batch_size, bptt, self.char_level, pointer)

    # ------------------------------------------------------------------ sampling
    def generate(
        self, n: int, *, prompt: str = "", temperature: float = 1.0, seed: int = 0
    ) -> Iterator[str]:
        """``n`` tokens sampled one after another, continuing ``prompt``; the same seed (on
        the same device) gives the same tokens. Only vocabulary tokens come out."""
        if not 0 <= n <= MAX_WORDS:
            raise UserError(f"words: must be from 0 to {MAX_WORDS:,}, got {n}")
        if not (math.isfinite(temperature) and temperature >= MIN_TEMPERATURE):
            raise UserError(f"temperature: must be >= {MIN_TEMPERATURE:g}, got {temperature}")
        if not 0 <= seed <= MAX_SEED:
            raise UserError(f"seed: must be an integer from 0 to 2**63 - 1, got {seed}")
        ids, _ = self.encode_prompt(prompt)
        self._check_finite_weights()
        generator = torch.Generator(device=self.device).manual_seed(seed)
        if len(ids) == 0:  # no prompt and no line-start token: a random first token
            ids = torch.randint(len(self.vocab), (1,), generator=generator, device=self.device)
        return self._sample(ids.to(self.device), n, temperature, generator)

    def _check_finite_weights(self) -> None:
        """UserError naming the first weight that holds NaN or inf (a run that diverged):
        such a model has no distribution to sample from."""
        for name, tensor in self.model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise UserError(
                    f"{self.run_dir}: the '{self.checkpoint}' checkpoint's weights hold NaN "
                    f"or inf ({name}), so its model gives no probabilities to sample from; "
                    "use another checkpoint (--checkpoint) or run"
                )

    @torch.no_grad()
    def _sample(
        self, ids: torch.Tensor, n: int, temperature: float, generator: torch.Generator
    ) -> Iterator[str]:
        self.model.eval()
        inputs, state = ids.view(-1, 1), self.model.init_state(1, self.device)
        for i in range(n):
            with autocast(self.device, self.values.dtype), guarding(self.guard):
                out = self.model(inputs, state)
            probs = torch.softmax(out.logits[-1, 0].float() / temperature, dim=-1)
            if not bool(torch.isfinite(probs).all()):  # finite weights that overflowed
                raise UserError(
                    f"{self.run_dir}: the model's next-token probabilities hold NaN or inf "
                    f"after {i} tokens (run.dtype={self.values.dtype}, temperature "
                    f"{temperature:g}); try a higher --temperature or --device cpu"
                )
            inputs = torch.multinomial(probs, 1, generator=generator).view(1, 1)
            state = out.state
            yield self.vocab.itos[int(inputs)]


# ---------------------------------------------------------------------------- loading


MAX_SEED = 2**63 - 1
"""The largest seed a torch.Generator takes."""


def load_run(
    path: str | Path,
    checkpoint: str = "best",
    *,
    device: str = "auto",
    backend: str | None = None,
) -> LoadedRun:
    """A trained run's model (eval mode), vocabulary and resolved recipe.

    ``checkpoint``: "best" (lowest validation loss; with NT-ASGD, averaged weights) or
    "last" (a run stopped inside its first epoch has only this one). ``device``: auto (CUDA
    when there is one), cpu or cuda. ``backend``: the kernels, default the run's own, except
    that a run trained with Triton or cuDNN on a GPU is evaluated on the CPU with the
    PyTorch reference (the same computation).
    """
    try:
        recipe, vocab, saved = Checkpointer(path).load_model(checkpoint)
    except MissingCheckpoint as e:
        raise e.picked_by(lambda tag: f'checkpoint="{tag}"') from None
    where = pick_device(device, "device")
    trained = run_values(recipe)
    backend = _usable_backend(backend, trained.backend, where, trained.cell)
    recipe = with_backend(recipe, backend)
    with torch.random.fork_rng(devices=[]):  # the initial draw is overwritten: leave no trace
        model = build_model(recipe, len(vocab))
    checks.load_weights(model, saved.weights, path)
    model = model.to(where).eval()
    # the kernel guard's warnings go to stderr: stdout may be JSON or generated text
    guard = make_guard(backend, trained.kernel_check, Console(stderr=True, highlight=False))
    return LoadedRun(
        model,
        vocab,
        recipe,
        where,
        Path(path),
        checkpoint,
        saved.meta,
        saved.synthesizer,
        saved.stopped_inside,
        guard,
    )


def _usable_backend(
    asked: str | None, trained: str, device: torch.device, cell: str = "lstm"
) -> str:
    """``asked``, else the run's own backend (``trained``), by the one rule of what runs
    where (``backends.backend_problem``): a backend asked for that cannot run here is a
    UserError; the run's own falls back to auto (the PyTorch reference off CUDA)."""
    backend = asked or trained
    problem = backend_problem(backend, cell, device.type)
    if problem is None:
        return backend
    if asked:
        raise UserError(f"backend: {problem}")
    return "auto"
