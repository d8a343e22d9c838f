"""Recipes: TOML files turned into frozen, validated dataclasses.

A recipe is the single source of every hyper-parameter. Each key is declared once below
with its default, its allowed values and a one-line help text; validation reads those
declarations, so a new key needs no extra checking code. Problems are collected, not
raised one at a time: a user fixing a recipe sees every mistake in one go, each naming the
dotted key, the value and what is allowed.

Recipes may ``extends = "base.toml"`` (a path relative to the recipe, else a packaged
recipe's name: ``catalog.py``) and are deep-merged over their base; command-line overrides
``key.sub=value`` are applied last, their values parsed as TOML (a bare word that is not
valid TOML is taken as a string).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import UserError
from . import catalog, legacy_keys
from .backends import backend_problem


def opt(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """Declare a recipe key: its default, help text and numeric bounds."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, help: str) -> Any:
    """Declare a nested recipe section."""
    return field(default_factory=cls, metadata={"help": help})


MAX_THREADS = 1024
"""The most CPU threads a recipe may ask for (torch crashes on absurd counts, e.g. 100000)."""


MAX_EPOCHS = 1_000_000
"""More epochs than any run trains (the paper's longest is 320): a bound that catches a typo."""


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    name: str = opt("run", "run name; the run directory is out_dir/name")
    seed: int = opt(
        42, "random seed for weights, dropout, segment lengths and data order", ge=0, le=2**32 - 1
    )
    epochs: int = opt(1, "number of training epochs", ge=1, le=MAX_EPOCHS)
    out_dir: str = opt("runs", "directory that holds run directories")
    device: Literal["auto", "cpu", "cuda"] = opt("auto", "auto = cuda when available")
    backend: Literal["auto", "torch", "triton", "cudnn"] = opt(
        "auto",
        "kernels: auto = Triton on CUDA, PyTorch reference on CPU; cudnn = cuDNN's LSTM for "
        "LSTM layers (CUDA only), Triton for the rest",
    )
    kernel_check: bool = opt(
        True,
        "compare each Triton kernel with its PyTorch reference on its first launch per shape "
        "class (one more launch of each); a failing kernel falls back to PyTorch with a "
        "warning (backend auto) or stops the run (backend triton)",
    )
    dtype: Literal["float32", "bfloat16"] = opt(
        "float32", "compute dtype on CUDA (bfloat16 = autocast); CPU always float32"
    )
    max_batches: int = opt(
        0, "cap on training segments per epoch (a new window each epoch), 0 = whole epoch", ge=0
    )
    max_eval_batches: int = opt(0, "cap on evaluation segments, 0 = whole split", ge=0)
    log_every: int = opt(
        20,
        "plain-text progress line (and TensorBoard's train/* scalars) every this many segments",
        ge=1,
    )
    tensorboard: bool = opt(
        False, "also write the metrics to RUN_DIR/tensorboard/ (the tensorboard extra)"
    )
    threads: int = opt(
        0,
        "CPU threads for PyTorch, 0 = its default capped at the cores this process may use; "
        "use 1 when several runs share the cores",
        ge=0,
        le=MAX_THREADS,
    )
    parent: str = opt(
        "",
        "fine-tune: the run directory whose best checkpoint this run starts from, with averaged "
        "SGD from epoch 1 (altgrad-train --finetune sets it); empty = fresh weights",
    )


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    corpus: Literal["wikitext-2", "wikitext-103", "ptb", "wikitext-2-small", "text", "chars"] = opt(
        "wikitext-2", "which corpus; text = your own WikiText-layout folder, chars = characters"
    )
    path: str = opt("", "folder (or file, for chars) holding the corpus; empty = download/cache")
    cache_dir: str = opt("", "download cache; empty = $ALTGRAD_DATA_DIR or ~/.cache/altgrad-triton")
    download: bool = opt(True, "download known corpora when absent")
    batch_size: int = opt(20, "training batch size (columns of the token stream)", ge=1)
    eval_batch_size: int = opt(10, "validation batch size", ge=1)
    test_batch_size: int = opt(1, "test batch size", ge=1)


@dataclass(frozen=True, kw_only=True)
class DropoutConfig:
    input: float = opt(0.4, "locked dropout on the embedding output", ge=0, lt=1)
    hidden: float = opt(0.3, "locked dropout between recurrent layers", ge=0, lt=1)
    output: float = opt(0.4, "locked dropout on the last layer's output", ge=0, lt=1)
    embedding: float = opt(0.1, "drops whole words from the embedding matrix", ge=0, lt=1)
    weight: float = opt(
        0.1, "weight drop on recurrent weights (LSTM W_hh, QRNN linear)", ge=0, lt=1
    )


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    cell: Literal["qrnn", "lstm"] = opt("qrnn", "recurrent cell")
    emb_size: int = opt(400, "embedding size (= last layer size when tied)", ge=1)
    hidden_size: int = opt(1550, "hidden units per layer (last layer = emb_size when tied)", ge=1)
    layers: int = opt(4, "recurrent layers", ge=1)
    tie_weights: bool = opt(True, "share the embedding and decoder weights")
    window: int = opt(2, "QRNN convolution window of the first layer (1 above)", ge=1, le=2)
    output_gate: bool = opt(True, "QRNN output gate")
    dropout: DropoutConfig = section(DropoutConfig, "dropouts")


@dataclass(frozen=True, kw_only=True)
class BpttConfig:
    length: int = opt(200, "truncation length (segment length) of TBPTT", ge=1)
    random_length: bool = opt(True, "AWD-LSTM's random segment length, lr scaled by len/bptt")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    name: Literal["adam", "sgd", "nt-asgd"] = opt(
        "adam", "optimizer of the language model; nt-asgd = AWD-LSTM's SGD, then averaged SGD"
    )
    lr: float = opt(1e-3, "peak learning rate", gt=0)
    weight_decay: float = opt(1.2e-6, "L2 weight decay", ge=0)
    momentum: float = opt(0.0, "SGD momentum", ge=0, lt=1)
    clip: float = opt(0.25, "gradient-norm clip, 0 = off", ge=0)
    ar_alpha: float = opt(2.0, "activation regularisation on the last layer", ge=0)
    tar_beta: float = opt(1.0, "temporal activation regularisation on the last layer", ge=0)
    nonmono: int = opt(
        5,
        "nt-asgd: average once validation is worse than the best of the epochs before the "
        "last nonmono",
        ge=1,
    )


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    kind: Literal["constant", "cosine_restarts"] = opt(
        "cosine_restarts", "constant lr, or cosine annealing with warm restarts (SGDR)"
    )
    periods: list[int] = opt([160, 160], "restart periods in epochs; the last one repeats")
    lr_min: float = opt(0.0, "learning rate at the bottom of each cosine", ge=0)


@dataclass(frozen=True, kw_only=True)
class AlternationConfig:
    start: Literal["real", "synthetic"] = opt("real", "gradient mode of epoch 1")
    switch_epochs: list[int] = opt([], "epochs at whose start the mode switches")
    switch_at_restarts: bool = opt(False, "switch mode at every warm restart")


@dataclass(frozen=True, kw_only=True)
class AuthorsConfig:
    """``[synthetic.authors]``: what only the authors' synthesizer reads; each key defaults
    to what the authors' code does."""

    defaults: bool = opt(
        True,
        "the authors' values for every [synthetic] key this recipe leaves unset (false: the "
        "toolkit's defaults for those)",
    )
    sequence: Literal["element", "scan"] = opt(
        "scan",
        "element = each scalar its own sequence, one step a call; scan = the flattened joined "
        "state is one sequence (what their QRNN code does)",
    )
    window: int = opt(2, "QRNN window of the authors' synthesizer", ge=1, le=2)
    zoneout: float = opt(0.1, "zoneout on the forget gate of the authors' synthesizer", ge=0, lt=1)


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    enabled: bool = opt(False, "train a synthesizer and use synthetic gradients")
    synthesizer: Literal["toolkit", "authors", "mlp", "linear"] = opt(
        "toolkit",
        "what predicts dL_future/d state: toolkit = this toolkit's element-wise synthesizer "
        "(each scalar into a cell of input size 1, one kernel); authors = the authors' code's "
        "(Linear(1->hidden), a QRNN layer, Linear(hidden->1)), with [synthetic.authors]; "
        "mlp / linear = DNI's, on the whole joined state",
    )
    cell: Literal["qrnn", "gru", "lstm"] = opt("qrnn", "cell of the toolkit's synthesizer")
    hidden: int = opt(50, "hidden units of the mlp / element-wise synthesizer", ge=1)
    layers: int = opt(1, "hidden layers of the mlp synthesizer", ge=1)
    dropout: float = opt(0.1, "dropout inside the synthesizer", ge=0, lt=1)
    input_noise: float = opt(
        0.5, "sigma of the element-wise synthesizer's N(1, sigma) input noise", ge=0
    )
    scale: float = opt(0.1, "weight of the synthetic gradient injected at the boundary", ge=0)
    lr: float = opt(1e-3, "Adam learning rate of the synthesizer", gt=0)
    target_scale: float = opt(
        1.0, "synthesizer units: fitted to this x the gradient; 0 = tokens per segment", ge=0
    )
    fit_in_real: bool = opt(True, "keep fitting the synthesizer in real mode")
    context_tokens: int = opt(
        0, "cDNI: also condition on the embeddings of the next N tokens (0 = state only)", ge=0
    )
    init: Literal["zero", "uniform"] = opt(
        "zero", "element-wise synthesizer's output layer: zero (DNI) or uniform(-0.1, 0.1)"
    )
    reduction: Literal["mean", "sum"] = opt(
        "mean", "regression loss over the batch x state elements: mean or sum of squared errors"
    )
    advance: Literal["once", "every_call"] = opt(
        "once",
        "a recurrent synthesizer's state: advances once per boundary, or at every call (also "
        "at s_{k+1} in synthetic mode)",
    )
    join: Literal["all", "recurrent"] = opt(
        "all",
        "joined state: every carried tensor, or the recurrent states only (not a window-2 "
        "QRNN's carried last input)",
    )
    split_target: bool = opt(
        False,
        "synthetic mode: fit the real and the injected parts of the target separately (two "
        "backward passes' worth: half their sum, twice the weight)",
    )
    weight_decay: float = opt(0.0, "L2 weight decay of the synthesizer's Adam", ge=0)
    authors: AuthorsConfig = section(AuthorsConfig, "the authors' synthesizer only")
    alternation: AlternationConfig = section(AlternationConfig, "SG/real alternation")


AUTHORS_VALUES: dict[str, Any] = {
    # parap1uie-s/alternate_sg, as its README's commands run it (--sgtype=QRNN,
    # --sg_hidden_num=50, --sg_nlayers=1, --sg_dropout=0.1): model.RNNSynthesizer, dni.py's
    # BackwardInterface, main.py's optimizer and model.RNNModel.forward's injection; the
    # QRNN layer's own settings are [synthetic.authors]'s defaults (sequence "scan": the
    # pytorch-qrnn layers are [seq, batch, feature], so the input reshaped to [N, 1, 1] is one
    # sequence of N steps, batch 1; window 2; zoneout 0.1)
    "cell": "qrnn",
    "hidden": 50,
    "dropout": 0.0,  # their 0.1 sits between synthesizer layers: none with one layer
    "input_noise": 0.5,
    "init": "uniform",
    "scale": 0.1,
    "lr": 1e-3,
    "weight_decay": 1.2e-6,
    "target_scale": 1.0,  # the raw gradient of the per-token mean loss
    "reduction": "sum",  # d/d g_hat = 2 / n (g_hat - g) with n = 1, the joined state's
    # first dimension
    "advance": "every_call",
    "join": "recurrent",  # every layer's hidden state; pytorch-qrnn keeps x_{t-1} inside
    "split_target": True,  # the injection is its own backward pass
    "fit_in_real": True,
    "context_tokens": 0,
}
"""Values ``synthetic.synthesizer = "authors"`` gives to the synthetic keys a recipe leaves
unset (unless ``synthetic.authors.defaults = false``)."""


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """``[probe]``: altgrad-probe's measure (``probe_run.py``) after validation, into
    RUN_DIR/probe.jsonl, so that a run shows how what truncation discards changes as it
    trains (``altgrad-report`` plots it)."""

    every: int = opt(
        0,
        "measure what truncation discards and what the synthesizer recovers every this many "
        "epochs, after validation (RUN_DIR/probe.jsonl); 0 = off",
        ge=0,
    )
    boundaries: list[int] = opt(
        [5, 15],
        "train-split boundaries k probed: the state after k segments of bptt.length rows "
        "from the split's first row",
    )
    max_horizon: int = opt(2, "longest horizon M in segments (M = 1, 2, 4, ... up to it)", ge=1)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    run: RunConfig = section(RunConfig, "run")
    data: DataConfig = section(DataConfig, "data")
    model: ModelConfig = section(ModelConfig, "model")
    bptt: BpttConfig = section(BpttConfig, "truncated BPTT")
    optim: OptimConfig = section(OptimConfig, "optimizer and regularisation")
    schedule: ScheduleConfig = section(ScheduleConfig, "learning-rate schedule")
    synthetic: SyntheticConfig = section(SyntheticConfig, "synthetic gradients")
    probe: ProbeConfig = section(ProbeConfig, "the truncation probe during training")


# ---------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp)
    )


def _check_value(key: str, value: Any, tp: Any, meta: dict) -> tuple[Any, list[str]]:
    """Coerce ``value`` to ``tp`` (int -> float only) and check bounds; return problems."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            return value, [f"{key}: must be {_type_name(tp)}, got {value!r}"]
        return value, []
    if origin is list:
        if not isinstance(value, list):
            return value, [f"{key}: must be {_type_name(tp)}, got {value!r}"]
        item_tp = typing.get_args(tp)[0]
        out, problems = [], []
        for i, item in enumerate(value):
            v, p = _check_value(f"{key}[{i}]", item, item_tp, meta)
            out.append(v)
            problems += p
        return out, problems
    ok = (
        isinstance(value, bool)
        if tp is bool
        else isinstance(value, tp) and not isinstance(value, bool)
        if tp in (int, str)
        else isinstance(value, (int, float)) and not isinstance(value, bool)
    )
    if not ok:
        return value, [f"{key}: must be {_type_name(tp)}, got {value!r}"]
    if tp is float:
        value = float(value)
        if not math.isfinite(value):
            return value, [f"{key}: must be a finite number, got {value!r}"]
    if tp in (int, float):
        for name, op, text in (
            ("ge", float.__ge__, ">="),
            ("gt", float.__gt__, ">"),
            ("le", float.__le__, "<="),
            ("lt", float.__lt__, "<"),
        ):
            bound = meta.get(name)
            if bound is not None and not op(float(value), float(bound)):
                shown = int(bound) if float(bound).is_integer() else f"{bound:g}"
                return value, [f"{key}: must be {text} {shown}, got {value!r}"]
    return value, []


def field_problems(settings: Any, prefix: str = "") -> list[str]:
    """Every field of the dataclass ``settings`` checked against its type and the bounds of
    its ``opt()`` declaration: the recipe's rules, for settings made in code (the horizon
    experiment's) rather than read from TOML."""
    hints = typing.get_type_hints(type(settings))
    problems = []
    for f in dataclasses.fields(settings):
        _, found = _check_value(
            f"{prefix}{f.name}", getattr(settings, f.name), hints[f.name], f.metadata
        )
        problems += found
    return problems


def _build(cls: type, data: dict, prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            valid = ", ".join(fields)
            problems.append(f"{dotted}: unknown key{hint} (valid here: {valid})")
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                problems.append(f"{dotted}: must be a table [{dotted}], got {value!r}")
                continue
            kwargs[key] = _build(tp, value, f"{dotted}.", problems)
        else:
            kwargs[key], p = _check_value(dotted, value, tp, fields[key].metadata)
            problems += p
    try:
        return cls(**kwargs)
    except (TypeError, ValueError):  # only after problems were recorded above
        return cls()


RUN_NAME_PUNCTUATION = "._-+=@,"
"""What a run name may hold besides letters and digits: it is one folder below run.out_dir."""


def run_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a run name, or None. An empty name (an unset shell variable)
    would make run.out_dir itself the run folder, a separator or ``..`` another folder."""
    bad = [c for c in name if not (c.isalnum() or c in RUN_NAME_PUNCTUATION)]
    if name and not bad and not name.startswith("."):
        return None
    return (
        f"run.name: must be one non-empty folder name of letters, digits and "
        f"{' '.join(RUN_NAME_PUNCTUATION)} (not starting with '.'; no quotes, spaces or "
        f"path separators), got {name!r}"
    )


def _expand_home(r: Recipe) -> Recipe:
    """``r`` with ``~`` expanded in its path keys (a quoted ``"~/x"`` reaches us as is)."""
    home = os.path.expanduser
    return dataclasses.replace(
        r,
        run=dataclasses.replace(r.run, out_dir=home(r.run.out_dir), parent=home(r.run.parent)),
        data=dataclasses.replace(r.data, path=home(r.data.path), cache_dir=home(r.data.cache_dir)),
    )


def _cross_checks(r: Recipe) -> list[str]:
    """Checks that involve more than one key."""
    problems = [p for p in [run_name_problem(r.run.name)] if p]
    backend = backend_problem(r.run.backend, r.model.cell)  # no device yet: the cell only
    if backend:
        problems.append(f"run.backend: {backend}")
    if r.schedule.kind == "cosine_restarts" and not r.schedule.periods:
        problems.append("schedule.periods: must list at least one period for cosine_restarts")
    for i, p in enumerate(r.schedule.periods):
        if p < 1:
            problems.append(f"schedule.periods[{i}]: must be >= 1, got {p}")
    for i, e in enumerate(r.synthetic.alternation.switch_epochs):
        if e < 2:
            problems.append(
                f"synthetic.alternation.switch_epochs[{i}]: must be >= 2 (a switch "
                f"happens at the start of that epoch), got {e}"
            )
    if r.schedule.lr_min > r.optim.lr:
        problems.append(
            f"schedule.lr_min: must be <= optim.lr ({r.optim.lr:g}), got {r.schedule.lr_min:g}"
        )
    if r.optim.name == "nt-asgd" and r.optim.momentum:
        problems.append(
            f"optim.momentum: nt-asgd has none (AWD-LSTM's plain SGD, then averaged SGD), "
            f"got {r.optim.momentum:g}"
        )
    if r.run.parent and r.optim.name != "nt-asgd":
        problems.append(
            f"optim.name: fine-tuning (run.parent) is averaged SGD: set optim.name=nt-asgd "
            f"and its optim.lr, got {r.optim.name!r}"
        )
    if r.data.corpus in ("text", "chars") and not r.data.path:
        wanted = (
            "a text file (e.g. tinyshakespeare's input.txt) or a folder of train/valid/test.txt"
            if r.data.corpus == "chars"
            else "a folder of WikiText-layout train/valid/test files"
        )
        problems.append(
            f"data.path: corpus {r.data.corpus!r} needs your data: pass data.path=... naming "
            f"{wanted}"
        )
    if r.probe.every and not r.probe.boundaries:
        problems.append("probe.boundaries: must list at least one boundary when probe.every > 0")
    for i, k in enumerate(r.probe.boundaries):
        if k < 1:
            problems.append(f"probe.boundaries[{i}]: must be >= 1, got {k}")
    return problems + _synthesizer_checks(r.synthetic)


def _synthesizer_checks(s: SyntheticConfig) -> list[str]:
    """Keys that only one kind of synthesizer reads must not be set for another."""
    problems = []
    if s.synthesizer != "authors":
        unset = AuthorsConfig()
        for key in ("defaults", *legacy_keys.AUTHORS_ONLY):
            value, default = getattr(s.authors, key), getattr(unset, key)
            if value != default:
                problems.append(
                    f"synthetic.authors.{key}: only the authors' synthesizer reads it "
                    f"(synthetic.synthesizer = 'authors'); leave it at {default!r} for the "
                    f"{s.synthesizer} one, got {value!r}"
                )
    else:
        if s.cell != "qrnn":
            problems.append(f"synthetic.cell: the authors' synthesizer is a QRNN, got {s.cell!r}")
        if s.dropout:
            problems.append(
                "synthetic.dropout: the authors' synthesizer has one layer and no dropout (their "
                f"0.1 sat between layers), got {s.dropout!r}; use 0"
            )
    if s.init != "zero" and s.synthesizer not in ("toolkit", "authors"):
        problems.append(
            f"synthetic.init: 'uniform' is for the element-wise synthesizers (toolkit, "
            f"authors), got {s.synthesizer!r}"
        )
    return problems


def apply_authors_values(data: dict) -> dict:
    """``data`` with the authors' values under the synthetic keys it leaves unset, when it
    picks the authors' synthesizer (and ``synthetic.authors.defaults`` is not false).

    A key the recipe sets (or an override sets) wins, so one difference from the authors'
    code at a time can be switched back.
    """
    synthetic = data.get("synthetic")
    if not isinstance(synthetic, dict) or synthetic.get("synthesizer") != "authors":
        return data
    authors = synthetic.get("authors")
    if isinstance(authors, dict) and authors.get("defaults") is False:
        return data
    return {**data, "synthetic": {**AUTHORS_VALUES, **synthetic}}


def from_dict(data: dict) -> Recipe:
    """Build and validate a recipe from a plain dict; raise UserError listing every problem."""
    problems: list[str] = []
    data, notes = legacy_keys.migrate(data)
    for note in notes:
        print(note, file=sys.stderr)
    recipe = _build(Recipe, apply_authors_values(data), "", problems)
    if not problems:
        problems = _cross_checks(recipe)
    if problems:
        raise UserError("invalid recipe: " + "; ".join(problems))
    return _expand_home(recipe)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_toml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a recipe file, following ``extends`` chains, as one merged dict."""
    path = Path(path)
    if path.resolve() in _seen:
        raise UserError(f"{path}: 'extends' loops back to itself")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        by = f" (named by 'extends' in {_seen[-1]})" if _seen else ""
        raise UserError(f"{path}: recipe file not found{by}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read recipe ({e.__class__.__name__}: {e})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: TOML syntax error: {e}") from None
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise UserError(f"{path}: extends must be a path string, got {base!r}")
    return _merge(read_toml(_base_file(path, base), (*_seen, path.resolve())), data)


def extends_chain(path: str | Path) -> list[Path]:
    """The recipe file and each file its ``extends`` names in turn, most specific first
    (of a recipe :func:`read_toml` has read: no loop, every file there)."""
    chain = [Path(path)]
    while isinstance(
        base := tomllib.loads(chain[-1].read_text(encoding="utf-8")).get("extends"), str
    ):
        chain.append(_base_file(chain[-1], base))
    return chain


def _base_file(path: Path, base: str) -> Path:
    """The file ``extends = base`` in ``path`` names: relative to ``path``'s folder, else
    a packaged recipe of that name (a copied recipe may extend one); else the relative path,
    which read_toml reports as not found."""
    beside = path.parent / base
    if beside.is_file():
        return beside
    return catalog.packaged(base) or beside


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as TOML, or the bare string)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"override {text!r}: expected key.sub=value, e.g. optim.lr=3e-4")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides to a recipe dict (returns a new dict)."""
    for text in overrides:
        parts, value = parse_override(text)
        patch: dict = {parts[-1]: value}
        for part in reversed(parts[:-1]):
            patch = {part: patch}
        data = _merge(data, patch)
    return data


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, merge, override and validate a recipe file or packaged recipe name
    (``catalog.locate``); an invalid recipe's error names it."""
    path = catalog.locate(path)
    data = apply_overrides(read_toml(path), list(overrides))
    try:
        return from_dict(data)
    except UserError as e:
        raise UserError(f"{path}: {e}", exit_code=e.exit_code) from None


# ---------------------------------------------------------------------------- output


def to_dict(recipe: Recipe) -> dict:
    """The recipe as nested plain dicts (what ``from_dict`` reads back)."""
    return dataclasses.asdict(recipe)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def to_toml(recipe: Recipe) -> str:
    """Render the resolved recipe as TOML, each key followed by its help text."""
    lines: list[str] = []

    def emit(obj: Any, name: str) -> None:
        scalars = [
            f for f in dataclasses.fields(obj) if not dataclasses.is_dataclass(getattr(obj, f.name))
        ]
        tables = [
            f for f in dataclasses.fields(obj) if dataclasses.is_dataclass(getattr(obj, f.name))
        ]
        if name:
            lines.append(f"\n[{name}]")
        for f in scalars:
            lines.append(
                f"{f.name} = {_toml_value(getattr(obj, f.name))}  # {f.metadata.get('help', '')}"
            )
        for f in tables:
            emit(getattr(obj, f.name), f"{name}.{f.name}" if name else f.name)

    emit(recipe, "")
    return "\n".join(lines).lstrip() + "\n"


def unused_keys(recipe: Recipe) -> list[str]:
    """Notes, one line each, on keys this recipe sets that its model does not use (said
    once, when a run starts; the recipe stays valid)."""
    m = recipe.model
    if m.layers == 1 and m.tie_weights and m.hidden_size != m.emb_size:
        return [
            f"note: model.hidden_size = {m.hidden_size} is not used: a 1-layer model with "
            f"tie_weights has one layer of model.emb_size = {m.emb_size} units"
        ]
    return []


def model_shape(recipe: Recipe) -> dict:
    """The recipe keys a resumed run must keep: they fix the shapes of the saved weights and
    the layout of the optimizers' states (checked when resuming)."""
    m = recipe.model
    shape = {
        f"model.{k}": getattr(m, k)
        for k in (
            "cell",
            "emb_size",
            "hidden_size",
            "layers",
            "tie_weights",
            "window",
            "output_gate",
        )
    }
    shape["data.corpus"] = recipe.data.corpus
    shape["optim.name"] = recipe.optim.name
    s = recipe.synthetic
    shape["synthetic.enabled"] = s.enabled
    if s.enabled:
        keys = ("synthesizer", "cell", "hidden", "layers", "context_tokens", "join")
        shape.update({f"synthetic.{k}": getattr(s, k) for k in keys})
        if s.synthesizer == "authors":
            shape["synthetic.authors.window"] = s.authors.window
    return shape
