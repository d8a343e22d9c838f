"""Builders: a recipe turned into the components of a run.

Each builder reads one part of the recipe and returns library objects, which take plain
arguments and know nothing of recipes (``RNNLanguageModel``, the synthesizers,
``SyntheticBoundary``, a torch optimizer). ``build`` calls them in the order that fixes a
seed's numbers, so keep it: the global RNG is seeded, the model draws its initial weights
from it, and only then do ranks > 0 reseed for their own dropout masks. The synthesizer
touches no global RNG at all (see ``build_synthesizer``), so a synthetic-gradient run and
the BPTT run of the same seed see the same weights, data and dropout masks.

A new option is a new case in one builder: another optimizer in ``make_optimizer`` (and
its recipe-wins settings in ``apply_recipe_settings``), another synthesizer in
``make_synthesizer``, another layer kind in ``build_model``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import data
from ..config.backends import backend_problem, kernel_backend
from ..config.names import char_level
from ..config.recipe import DataConfig, OptimConfig, Recipe, SyntheticConfig
from ..core.boundary import SyntheticBoundary
from ..core.carry import join_state
from ..core.model import Dropouts, RNNLanguageModel, next_tokens_context
from ..core.schedule import AlternationPlan, CosineWarmRestarts, TrainingPlan
from ..core.synthesizers import (
    AuthorsSynthesizer,
    ConditionedSynthesizer,
    LinearSynthesizer,
    MLPSynthesizer,
    Synthesizer,
    ToolkitElementwiseSynthesizer,
)
from ..errors import UserError
from ..kernels.guard import KernelGuard
from . import distributed as ddp
from .evaluation import Evaluation
from .kernel_check import make_guard
from .memory import check_memory
from .segments import SegmentObjective, SegmentPlan
from .values import parent_folder, training_shape

# ---------------------------------------------------------------------------- device


def launch_device(recipe: Recipe) -> torch.device:
    """The device a training process starts on (``run.device``)."""
    return pick_device(recipe.run.device)


def launch_world(recipe: Recipe, world_size: int) -> None:
    """A one-line error unless ``data.batch_size`` splits evenly over ``world_size`` ranks."""
    ddp.check_divisible(recipe.data.batch_size, world_size)


def pick_device(name: str, key: str = "run.device") -> torch.device:
    """``run.device`` (or the option ``key``): auto (CUDA when there is one), cpu or cuda."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}: 'cuda' asked for but no CUDA device is available; use cpu or auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_backend(backend: str, cell: str, device: torch.device) -> None:
    """A one-line UserError when ``run.backend`` cannot run ``cell`` layers on ``device``
    (the rule: ``backends.backend_problem``)."""
    problem = backend_problem(backend, cell, device.type)
    if problem:
        raise UserError(f"run.backend: {problem}")


def usable_cores() -> int:
    """The cores this process may run on (a container's or ``taskset``'s share, which
    ``os.cpu_count`` does not see)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_cpu_threads(asked: int, device: torch.device, console: Any) -> int:
    """PyTorch's CPU threads: ``run.threads``, or (0) its default capped at the cores this
    process may use; on a CPU run, a warning when other jobs already load those cores, since
    oversubscribed cores make small CPU ops 10-100x slower (two or three runs on 2 cores
    crawled at 81-181 tok/s against about 670 alone). Returns the count."""
    threads = asked or min(torch.get_num_threads(), usable_cores())
    torch.set_num_threads(threads)
    if device.type == "cpu":
        cores, load = usable_cores(), _load_average()
        if load is not None and load + threads > cores + 0.5:
            console.print(
                f"warning: this machine is busy (load {load:.1f} on {cores} cores, and this "
                f"run adds {threads} threads): runs that share cores slow each other down; "
                "give each run.threads=1, or run them one after another",
                markup=False,
            )
    return threads


def _load_average() -> float | None:
    """The 1-minute load average, None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def apply_tuned_configs(device: torch.device, console: Any) -> None:
    """Force altgrad-tune's stored kernel configs for this GPU and Triton version."""
    if device.type != "cuda":
        return
    from .winners import apply_stored_winners

    n = apply_stored_winners(device)
    console.print(f"altgrad-tune: {n} stored kernel config(s) applied", markup=False)


# ---------------------------------------------------------------------------- data, model


def read_corpus(d: DataConfig) -> data.Corpus:
    """The corpus ``[data]`` names, read (and downloaded if allowed) as training reads it:
    the one place a recipe becomes ``data.load_corpus``'s arguments (the trainer and a
    trained run's ``split`` both come here)."""
    return data.load_corpus(d.corpus, d.path or None, d.cache_dir or None, download=d.download)


def load_corpus(recipe: Recipe, corpus: data.Corpus | None = None) -> data.Corpus:
    """The recipe's corpus (or ``corpus``), every split's batch size checked up front: a test
    split too short for ``data.test_batch_size`` fails now, not after training."""
    d = recipe.data
    corpus = corpus or read_corpus(d)
    for key, split in (
        ("batch_size", "train"),
        ("eval_batch_size", "valid"),
        ("test_batch_size", "test"),
    ):
        data.check_batch_size(len(getattr(corpus, split)), getattr(d, key), f"data.{key}")
    return corpus


def build_model(recipe: Recipe, vocab_size: int) -> RNNLanguageModel:
    """``[model]`` and ``run.backend`` as a language model (initial weights from the global RNG)."""
    m = recipe.model
    return RNNLanguageModel(
        vocab_size,
        cell=m.cell,
        emb_size=m.emb_size,
        hidden_size=m.hidden_size,
        layers=m.layers,
        tie_weights=m.tie_weights,
        window=m.window,
        output_gate=m.output_gate,
        dropout=Dropouts(**dataclasses.asdict(m.dropout)),
        backend=recipe.run.backend,
    )


# ---------------------------------------------------------------------------- optimizers


def make_optimizer(
    cfg: OptimConfig, params: Iterable[nn.Parameter], device: torch.device | None = None
) -> torch.optim.Optimizer:
    """``[optim]``: the language model's optimizer. On CUDA, Adam is PyTorch's fused
    implementation (one kernel for every parameter instead of several per tensor).
    ``nt-asgd`` starts as plain SGD; the trainer replaces it by averaged SGD when NT-ASGD
    triggers (``asgd.py``)."""
    if cfg.name == "adam":
        return adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, device=device)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)


def adam(
    params: Iterable[nn.Parameter], *, lr: float, weight_decay: float, device: torch.device | None
) -> torch.optim.Adam:
    """Adam, fused on CUDA: the same update, fewer launches; its state dict is the same."""
    fused = device is not None and device.type == "cuda"
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def set_hyperparameters(optimizer: torch.optim.Optimizer, **values: float) -> None:
    """Put ``values`` into every parameter group."""
    for group in optimizer.param_groups:
        group.update(values)


def apply_recipe_settings(
    recipe: Recipe,
    optimizer: torch.optim.Optimizer,
    synth_optimizer: torch.optim.Optimizer | None,
) -> None:
    """After ``load_state_dict`` on resume, which brings back the saved settings: the
    recipe's win (the learning rate is set by the schedule at every segment anyway)."""
    o = recipe.optim
    momentum = {"momentum": o.momentum} if o.name == "sgd" else {}
    set_hyperparameters(optimizer, weight_decay=o.weight_decay, **momentum)
    if synth_optimizer is not None:
        s = recipe.synthetic
        set_hyperparameters(synth_optimizer, lr=s.lr, weight_decay=s.weight_decay)


# ---------------------------------------------------------------------------- synthesizer


def synthesizer_seed(seed: int, rank: int) -> int:
    """The seed of the synthesizer's own RNG stream (initial weights, noise, dropout)."""
    return (ddp.rank_seed(seed, rank) + 104_729) % (2**63)


def make_synthesizer(
    cfg: SyntheticConfig,
    state_size: int,
    backend: str = "auto",
    context_size: int = 0,
    generator: torch.Generator | None = None,
    init_generator: torch.Generator | None = None,
) -> nn.Module:
    """The synthesizer ``[synthetic]`` asks for, for a joined state of ``state_size`` per row.

    ``context_size`` > 0 wraps it in a ``ConditionedSynthesizer`` for contexts of that width.
    ``generator``: where its training noise and dropout masks come from (on the device it
    will run on); ``init_generator``: where its initial weights come from (a CPU generator);
    None draws either from the global RNG.
    """
    base: Synthesizer
    if cfg.synthesizer == "linear":
        base = LinearSynthesizer(state_size)
    elif cfg.synthesizer == "mlp":
        base = MLPSynthesizer(
            state_size, cfg.hidden, cfg.layers, cfg.dropout, generator, init_generator
        )
    elif cfg.synthesizer == "authors":
        base = AuthorsSynthesizer(
            cfg.hidden,
            window=cfg.authors.window,
            zoneout=cfg.authors.zoneout,
            input_noise=cfg.input_noise,
            init=cfg.init,
            sequence=cfg.authors.sequence,
            backend=backend,
            generator=generator,
            init_generator=init_generator,
        )
    else:
        base = ToolkitElementwiseSynthesizer(
            cfg.cell,
            cfg.hidden,
            cfg.dropout,
            cfg.input_noise,
            backend,
            generator,
            init_generator,
            init=cfg.init,
        )
    return ConditionedSynthesizer(base, context_size, state_size) if context_size else base


def make_boundary(
    cfg: SyntheticConfig,
    synthesizer: nn.Module,
    tokens_per_segment: int,
    backend: str,
    joined: tuple[int, ...] | None = None,
) -> SyntheticBoundary:
    """The boundary that trains ``synthesizer`` with its own Adam, as ``[synthetic]`` says;
    ``synthetic.target_scale = 0`` means the tokens of one segment. ``joined``: the state
    tensors the synthesizer sees (None: all)."""
    device = next(synthesizer.parameters()).device
    return SyntheticBoundary(
        synthesizer,
        adam(synthesizer.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, device=device),
        cfg.scale,
        fit_in_real=cfg.fit_in_real,
        target_scale=cfg.target_scale or tokens_per_segment,
        backend=backend,
        reduction=cfg.reduction,
        advance=cfg.advance,
        joined=joined,
        split_target=cfg.split_target,
    )


def synthesizer_state(
    cfg: SyntheticConfig, model: RNNLanguageModel
) -> tuple[tuple[int, ...] | None, int]:
    """The carried state tensors the synthesizer sees (None: all, ``synthetic.join``) and
    their joined size per batch row: the synthesizer's input, and with the batch the N of
    its kernels and of the SG loss (altgrad-tune sizes its jobs by it)."""
    joined = None if cfg.join == "all" else model.recurrent_state_indices()
    zero = model.init_state(1)
    return joined, int(join_state(zero if joined is None else [zero[i] for i in joined]).shape[1])


def build_synthesizer(
    recipe: Recipe, model: RNNLanguageModel, device: torch.device, rank: int
) -> tuple[SyntheticBoundary, torch.Generator]:
    """The synthesizer and its boundary, and the generator of its training noise.

    Its initial weights come from a CPU generator of their own, seeded by
    ``synthesizer_seed(seed, 0)`` (the same weights on every rank); its noise and dropout
    masks from a generator on ``device`` seeded per rank. No global RNG is drawn from or
    reseeded, CPU or CUDA, so the model sees the same initial weights, dropout masks and data
    as the BPTT run of the same seed: the runs differ by the synthetic gradient alone
    (``synthetic.scale = 0`` reproduces BPTT exactly; a test checks it). The weights equal
    those of a global CPU RNG seeded the same, as runs made before this generator had.
    """
    s = recipe.synthetic
    joined, state_size = synthesizer_state(s, model)
    generator = torch.Generator(device=device)
    generator.manual_seed(synthesizer_seed(recipe.run.seed, rank))
    init_generator = torch.Generator().manual_seed(synthesizer_seed(recipe.run.seed, 0))
    backend = kernel_backend(recipe.run.backend)
    synth = make_synthesizer(
        s,
        state_size,
        backend,
        s.context_tokens * recipe.model.emb_size,
        generator,
        init_generator,
    ).to(device)
    shape = training_shape(recipe)
    tokens = shape.batch_size * shape.bptt  # per segment
    return make_boundary(s, synth, tokens, backend, joined), generator


# ---------------------------------------------------------------------------- everything


@dataclass
class Components:
    """What a recipe builds: everything the training loop runs, on this rank."""

    device: torch.device
    corpus: data.Corpus
    model: RNNLanguageModel
    net: nn.Module  # what training calls: the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    plan: TrainingPlan
    train_data: torch.Tensor  # [steps, this rank's batch columns], on the device
    segments: SegmentPlan
    objective: SegmentObjective
    evaluation: Evaluation
    settings: RunSettings
    boundary: SyntheticBoundary | None = None
    synth_generator: torch.Generator | None = None
    guard: KernelGuard | None = None  # checks the kernels while the trainer runs (kernel_check)

    def evaluate(self, tokens: torch.Tensor, batch_size: int, dist: ddp.DistContext) -> float:
        """The model's mean cross-entropy per token over ``tokens`` (``evaluation``)."""
        return self.evaluation(self.model, tokens, batch_size, self.device, dist)

    def context_at(self, row: int, tokens: int) -> torch.Tensor | None:
        """The cDNI context of the boundary before ``row`` of the training columns: the
        embeddings of the next ``tokens`` inputs (``next_tokens_context``); None without."""
        if self.boundary is None or tokens == 0:
            return None
        return next_tokens_context(self.train_data, self.model.embedding.weight, row, tokens)


@dataclass(frozen=True)
class RunSettings:
    """The recipe's keys that the trainer acts on, read here once and handed over as values."""

    name: str  # run.name
    epochs: int  # run.epochs: the last epoch
    log_every: int  # run.log_every: progress and TensorBoard, in segments
    eval_batch_size: int  # data.eval_batch_size
    test_batch_size: int  # data.test_batch_size
    clip: float  # optim.clip
    context_tokens: int  # synthetic.context_tokens: cDNI's next-token context
    tensorboard: bool  # run.tensorboard
    nt_asgd: bool  # optim.name == "nt-asgd"
    nonmono: int  # optim.nonmono
    parent: Path | None  # run.parent: the run a fine-tuning starts from
    asks: dict[str, str]  # key -> the hook from outside run/ that carries it out


def run_settings(recipe: Recipe) -> RunSettings:
    r, parent = recipe, parent_folder(recipe)
    return RunSettings(
        name=r.run.name,
        epochs=r.run.epochs,
        log_every=r.run.log_every,
        eval_batch_size=r.data.eval_batch_size,
        test_batch_size=r.data.test_batch_size,
        clip=r.optim.clip,
        context_tokens=r.synthetic.context_tokens,
        tensorboard=r.run.tensorboard,
        nt_asgd=r.optim.name == "nt-asgd",
        nonmono=r.optim.nonmono,
        parent=None if parent is None else parent.path,
        asks={"probe.every": "altgrad_triton.probe.per_epoch.EpochProbe(recipe, run_dir)"}
        if r.probe.every
        else {},
    )


def segment_plan(recipe: Recipe) -> SegmentPlan:
    """The training segments of each epoch (``segments.SegmentPlan``)."""
    length, random = training_shape(recipe).bptt, recipe.bptt.random_length
    return SegmentPlan(length, random, recipe.run.max_batches, recipe.run.seed)


def segment_objective(recipe: Recipe, world_size: int = 1) -> SegmentObjective:
    """One training segment's loss (``segments.SegmentObjective``)."""
    o = recipe.optim
    return SegmentObjective(o.ar_alpha, o.tar_beta, recipe.run.dtype, world_size)


def warn_one_segment(recipe: Recipe, rows: int, console: Any) -> None:
    """A warning when a training batch column (``rows`` tokens) holds no more than one segment:
    each epoch is then a single segment, one optimizer step, and no boundary is ever
    truncated, so a synthesizer has nothing to stand in for; training still runs."""
    bptt = training_shape(recipe).bptt
    if rows - 1 <= bptt:  # a column's last token is only a target
        console.print(
            f"warning: bptt.length={bptt} is not shorter than a training batch column "
            f"({rows} tokens at data.batch_size={recipe.data.batch_size}): each epoch is one "
            "segment, so no segment boundary is ever crossed; lower data.batch_size or "
            "bptt.length",
            markup=False,
        )


def build(
    recipe: Recipe,
    dist: ddp.DistContext,
    *,
    console: Any,
    corpus: data.Corpus | None = None,
    tuned_configs: bool = True,
) -> Components:
    """Every component of a run, on this rank (see the module docstring for the order)."""
    ddp.check_divisible(recipe.data.batch_size, dist.world_size)
    device = ddp.device_for(pick_device(recipe.run.device), dist)
    check_backend(recipe.run.backend, recipe.model.cell, device)
    if tuned_configs:
        apply_tuned_configs(device, console)
    guard = make_guard(recipe.run.backend, recipe.run.kernel_check, console)
    set_cpu_threads(recipe.run.threads, device, console)
    torch.manual_seed(recipe.run.seed)
    corpus = load_corpus(recipe, corpus)
    check_memory(recipe, len(corpus.vocab), device, dist.world_size)  # before allocating
    model = build_model(recipe, len(corpus.vocab)).to(device)
    boundary, synth_generator = (
        build_synthesizer(recipe, model, device, dist.rank)
        if recipe.synthetic.enabled
        else (None, None)
    )
    # every rank builds the same weights (same seed; DDP also broadcasts rank 0's), then
    # ranks > 0 reseed so that each draws its own dropout masks
    net = ddp.wrap_model(model, dist, device)
    if boundary is not None and dist.enabled:
        params = list(boundary.synthesizer.parameters())
        boundary.optimizer.register_step_pre_hook(lambda *_: ddp.average_gradients(params, dist))
    if dist.rank > 0:
        torch.manual_seed(ddp.rank_seed(recipe.run.seed, dist.rank))
    batched = data.batchify(corpus.train, recipe.data.batch_size)
    warn_one_segment(recipe, batched.shape[0], console)
    return Components(
        device=device,
        corpus=corpus,
        model=model,
        net=net,
        optimizer=make_optimizer(recipe.optim, model.parameters(), device),
        plan=training_plan(recipe),
        train_data=ddp.columns(batched, dist).to(device),
        segments=segment_plan(recipe),
        objective=segment_objective(recipe, dist.world_size if dist.enabled else 1),
        evaluation=Evaluation(
            training_shape(recipe).bptt, recipe.run.dtype, recipe.run.max_eval_batches
        ),
        settings=run_settings(recipe),
        boundary=boundary,
        synth_generator=synth_generator,
        guard=guard,
    )


def describe(parts: Components, recipe: Recipe, dist: ddp.DistContext) -> str:
    """The start-of-run line: corpus, model size, device and how the ranks share work."""
    c, d, w = parts.corpus, recipe.data, dist.world_size
    unit = "characters" if char_level(c.name) else "tokens"
    unk = "".join(
        f", {n:,} {split} words mapped to <unk>" for split, n in c.unk_counts.items() if n
    )
    pieces = [
        f"{c.name}: vocabulary {len(c.vocab):,}, train {len(c.train):,} / valid "
        f"{len(c.valid):,} / test {len(c.test):,} {unit}{unk}",
        f"model {sum(p.numel() for p in parts.model.parameters()):,} parameters on {parts.device}"
        + (f" ({torch.get_num_threads()} threads)" if parts.device.type == "cpu" else ""),
    ]
    if dist.enabled:
        pieces.append(f"{w} ranks, {d.batch_size // w} batch columns each")
        for key, size, split in (
            ("data.eval_batch_size", d.eval_batch_size, "valid"),
            ("data.test_batch_size", d.test_batch_size, "test"),
        ):
            if size % w:
                pieces.append(
                    f"{key} {size} does not divide by {w} ranks: each rank "
                    f"evaluates the whole {split} split"
                )
    return "; ".join(pieces)


def training_plan(recipe: Recipe) -> TrainingPlan:
    """The recipe's learning-rate schedule and SG/real alternation as one pure plan."""
    s, a = recipe.schedule, recipe.synthetic.alternation
    periods = tuple(s.periods) if s.kind == "cosine_restarts" else ()
    return TrainingPlan(
        CosineWarmRestarts(recipe.optim.lr, periods, s.lr_min),
        AlternationPlan(
            a.start,
            tuple(a.switch_epochs),
            a.switch_at_restarts,
            enabled=recipe.synthetic.enabled,
        ),
    )


def recipe_corpus(recipe: Recipe, *, offline: bool = False) -> data.Corpus:
    """The corpus the recipe names, read as training reads it (``read_corpus``), without the
    batch checks of ``load_corpus``: a trained run's splits (``LoadedRun.split``) and the
    vocabulary altgrad-tune keys the LM head by. ``offline``: never downloaded, whatever
    ``data.download`` says (a GPU machine may have no network)."""
    d = recipe.data
    return read_corpus(dataclasses.replace(d, download=False) if offline else d)
