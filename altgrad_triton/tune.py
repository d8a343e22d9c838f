"""Autotuning: time every registered kernel's candidate configs, keep the winners per device.

The kernels declare their candidate launch configs in ``kernels._configs`` (``register``);
a launcher asks ``_configs.pick(kernel, key, ...)`` which config to use, and a forced choice
(``set_override``) wins over ``@triton.autotune``. This module

1. derives the launch shapes a recipe implies (:func:`shapes_from_recipe`, :func:`recipe_jobs`)
   or takes them by hand (:func:`parse_shape_spec`);
2. learns each launch's exact override key by *probing* its launcher on ``meta`` tensors:
   ``_configs.pick`` is wrapped for the call so that it records ``(kernel, key)`` and stops
   the launch before anything runs (:func:`probe_key`). The key is therefore the one the
   launcher computes in training, not a copy of its rule;
3. sweeps the candidates on the present GPU (:func:`sweep`): for each, ``set_override``,
   one call to compile it (a failure -- compile error, out of resources -- is recorded and
   skipped), then ``triton.testing.do_bench`` quantiles (median, p20, p80);
4. stores the fastest per key in ``<cache dir>/winners.json`` (:func:`save_winners`), tagged
   with the device name, compute capability and Triton version, and
   :func:`apply_stored_winners` forces them back in a later process -- only for the same
   device name, capability *and* Triton version, and only if the config is still one of the
   kernel's current candidates.

Cache dir: ``--cache-dir``, else ``$ALTGRAD_TUNE_DIR``, else ``~/.cache/altgrad-triton/tune``.

``winners.json``::

    {"format": "altgrad-tune winners v1",
     "entries": [{"device": "NVIDIA H100 80GB HBM3", "capability": [9, 0], "triton": "3.6.0",
                  "kernel": "fo_pool_fwd", "key": ["bfloat16", 32768],
                  "dtype": "bfloat16", "bucket": 32768,
                  "meta": {"BLOCK": 256, "num_warps": 2, "num_stages": 1},
                  "median_ms": 0.031, "p20_ms": 0.030, "p80_ms": 0.032,
                  "shape": "B=20 T=200 H=1550 (f, z, o strided)", "candidates": 11,
                  "torch": "2.11.0", "date": "2025-01-31T12:00:00+00:00"}, ...]}

An entry is identified by (device, capability, triton, kernel, key); saving again replaces
entries with the same identity and keeps every other one (other GPUs, other versions).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

CACHE_ENV = "ALTGRAD_TUNE_DIR"
WINNERS_FILE = "winners.json"
FORMAT = "altgrad-tune winners v1"
QUICK_CANDIDATES = 6
"""At most this many candidates per kernel under ``--quick`` (spread over the list)."""
QUICK_LSTM_STEPS = 64
"""Sequence length of LSTM timings under ``--quick`` (the per-step config does not depend
on T; the override key is dtype and B*H only)."""

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
FAMILIES = ("fo_pool", "lstm", "sg_loss", "elementwise")
"""Kernel families this module knows how to launch, and the kernel names each registers."""
FAMILY_KERNELS = {
    "fo_pool": ("fo_pool_fwd", "fo_pool_bwd"),
    "lstm": ("lstm_fwd", "lstm_bwd"),
    "sg_loss": ("sg_loss",),
    "elementwise": ("elementwise_fwd", "elementwise_bwd"),
}


def _configs():
    from .kernels import _configs as c  # importing the package registers every kernel

    return c


def _kmod(name: str):
    """A kernel module (``altgrad_triton.kernels.fo_pool`` etc.; the package re-exports
    functions under the same names, so attribute access would give the function)."""
    return importlib.import_module(f"altgrad_triton.kernels.{name}")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ----------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceId:
    """What a stored winner is valid for."""

    name: str
    capability: tuple[int, int]
    triton: str


def triton_version() -> str:
    import triton

    return triton.__version__


def present_device(device: torch.device | str | None = None) -> DeviceId | None:
    """The CUDA device ``device`` names (default: the current one), or None without CUDA."""
    device = torch.device("cuda" if device is None else device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return DeviceId(torch.cuda.get_device_name(index), (int(major), int(minor)), triton_version())


# ----------------------------------------------------------------------------- cache file


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit``, else ``$ALTGRAD_TUNE_DIR``, else ``~/.cache/altgrad-triton/tune``."""
    if explicit not in (None, ""):
        return Path(explicit).expanduser()
    env = os.environ.get(CACHE_ENV, "")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "altgrad-triton" / "tune"


def winners_path(directory: str | os.PathLike[str] | None = None) -> Path:
    return cache_dir(directory) / WINNERS_FILE


@dataclass(frozen=True)
class Winner:
    """One stored winner: a forced config for ``(kernel, key)`` on one device/Triton."""

    device: str
    capability: tuple[int, int]
    triton: str
    kernel: str
    key: tuple
    meta: dict[str, int]
    median_ms: float | None = None
    p20_ms: float | None = None
    p80_ms: float | None = None
    shape: str = ""
    candidates: int = 0
    torch: str = ""
    date: str = ""

    def identity(self) -> tuple:
        return (self.device, tuple(self.capability), self.triton, self.kernel, tuple(self.key))

    def to_json(self) -> dict[str, Any]:
        key = list(self.key)
        return {
            "device": self.device,
            "capability": list(self.capability),
            "triton": self.triton,
            "kernel": self.kernel,
            "key": key,
            "dtype": key[0] if key else None,
            "bucket": key[1] if len(key) > 1 else None,
            "meta": dict(self.meta),
            "median_ms": self.median_ms,
            "p20_ms": self.p20_ms,
            "p80_ms": self.p80_ms,
            "shape": self.shape,
            "candidates": self.candidates,
            "torch": self.torch,
            "date": self.date,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Winner:
        try:
            cap = d["capability"]
            meta = d["meta"]
            if not isinstance(meta, dict) or not all(
                isinstance(k, str) and isinstance(v, int) for k, v in meta.items()
            ):
                raise ValueError(f"meta must map names to integers, got {meta!r}")
            return cls(
                device=str(d["device"]),
                capability=(int(cap[0]), int(cap[1])),
                triton=str(d["triton"]),
                kernel=str(d["kernel"]),
                key=tuple(d["key"]),
                meta=dict(meta),
                median_ms=d.get("median_ms"),
                p20_ms=d.get("p20_ms"),
                p80_ms=d.get("p80_ms"),
                shape=str(d.get("shape", "")),
                candidates=int(d.get("candidates", 0)),
                torch=str(d.get("torch", "")),
                date=str(d.get("date", "")),
            )
        except (KeyError, TypeError, IndexError) as e:
            raise ValueError(f"bad winner entry {d!r}: {type(e).__name__}: {e}") from None


def load_winners(path: str | os.PathLike[str]) -> list[Winner]:
    """Entries of a winners file; [] when it does not exist. ValueError when malformed."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ValueError(f"{path}: expected an object with an 'entries' list")
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
    return [Winner.from_json(e) for e in data["entries"]]


def save_winners(path: str | os.PathLike[str], new: Sequence[Winner]) -> Path:
    """Merge ``new`` into the file at ``path`` (same identity replaced), atomically."""
    path = Path(path)
    try:
        old = load_winners(path)
    except ValueError as e:
        warnings.warn(f"{e}; starting a fresh winners file", stacklevel=2)
        old = []
    merged = {w.identity(): w for w in old}
    for w in new:
        merged[w.identity()] = w
    entries = sorted(merged.values(), key=lambda w: tuple(str(x) for x in w.identity()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(
        json.dumps({"format": FORMAT, "entries": [w.to_json() for w in entries]}, indent=1) + "\n"
    )
    os.replace(tmp, path)
    return path


def apply_stored_winners(
    device: torch.device | str, cache_dir: str | os.PathLike[str] | None = None
) -> int:
    """Force the stored winners that fit this device; return how many were applied.

    An entry applies only when its device name, compute capability and Triton version all
    equal the present ones (:func:`present_device`), its kernel is registered and its config
    is still among that kernel's candidates. Everything else is ignored. A missing file
    gives 0; a malformed one gives 0 and a warning (a training run must not die of a cache).
    """
    here = present_device(device)
    if here is None:
        return 0
    path = winners_path(cache_dir)
    try:
        entries = load_winners(path)
    except (ValueError, OSError) as e:
        warnings.warn(f"altgrad-tune winners ignored: {e}", stacklevel=2)
        return 0
    configs = _configs()
    registered = set(configs.kernels())
    applied = 0
    for w in entries:
        if (w.device, tuple(w.capability), w.triton) != (here.name, here.capability, here.triton):
            continue
        if w.kernel not in registered or w.meta not in configs.candidates(w.kernel):
            continue
        configs.set_override(w.kernel, w.key, w.meta)
        applied += 1
    return applied


# ----------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class RecipeShapes:
    """The launch shapes a recipe implies for training on a GPU."""

    cell: str  # "qrnn" | "lstm"
    batch: int
    bptt: int
    hidden: tuple[int, ...]  # output size of each recurrent layer
    dtype: torch.dtype  # of the recurrent kernels (run.dtype: autocast bf16 or fp32)
    state_size: int  # joined state per batch row (every carried tensor of every layer)
    output_gate: bool = True
    synthetic: bool = False
    synthesizer: str = "elementwise"
    synth_cell: str = "qrnn"
    synth_hidden: int = 50

    @property
    def state_elements(self) -> int:
        """Elements of the joined state for the whole batch: N of the SG loss/synthesizer."""
        return self.batch * self.state_size


def shapes_from_recipe(recipe) -> RecipeShapes:
    """Layer sizes and the joined state size, from the model the recipe builds (on ``meta``).

    The SG loss and the element-wise synthesizer always run in fp32 (the joined state is
    promoted to fp32 and the boundary runs outside autocast); the recurrent kernels run in
    ``run.dtype``.
    """
    from .model import RNNLanguageModel
    from .synthetic import join_state

    with torch.device("meta"):
        model = RNNLanguageModel(2, recipe.model, "torch")
    hidden = tuple(int(layer.hidden_size) for layer in model.layers)
    state_size = int(join_state(model.init_state(1)).shape[1])
    s = recipe.synthetic
    return RecipeShapes(
        cell=recipe.model.cell,
        batch=recipe.data.batch_size,
        bptt=recipe.bptt.length,
        hidden=hidden,
        dtype=DTYPES[recipe.run.dtype],
        state_size=state_size,
        output_gate=recipe.model.output_gate,
        synthetic=s.enabled,
        synthesizer=s.synthesizer,
        synth_cell=s.cell,
        synth_hidden=s.hidden,
    )


# ----------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One launch to tune: ``make(device)`` allocates inputs there and returns a closure that
    calls the kernel's launcher once (no explicit config: the override registry decides)."""

    kernel: str
    family: str
    shape: str
    dtype: torch.dtype
    make: Callable[[torch.device], Callable[[], Any]]
    batch: int | None = None  # for the LSTM's BLOCK_B pruning
    key: tuple | None = None  # filled by probe_key

    @property
    def label(self) -> str:
        return f"{self.kernel} {self.shape} {dtype_name(self.dtype)}"


def _rand(shape, dtype, device, scale=1.0):
    """Normal(0, scale) values in ``dtype`` (just an allocation on ``meta``)."""
    if device.type == "meta":
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.randn(shape, dtype=torch.float32, device=device).mul_(scale).to(dtype)


def _gate(shape, dtype, device):
    """Uniform(0, 1) values (gate activations) in ``dtype``."""
    if device.type == "meta":
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.rand(shape, device=device).to(dtype)


def fo_pool_jobs(
    batch: int, steps: int, hidden: int, dtype: torch.dtype, output_gate: bool = True
) -> list[Job]:
    """Forward and backward scan; f, z, o are chunks of one [T, B, 3H] projection (strided
    views, as ``cells.QRNN`` passes them)."""
    fp = _kmod("fo_pool")
    n = 3 if output_gate else 2
    shape = f"B={batch} T={steps} H={hidden}"

    def gates(device):
        proj = _gate((steps, batch, n * hidden), dtype, device)
        parts = proj.chunk(n, -1)
        return parts[0], parts[1], (parts[2] if output_gate else None)

    def fwd(device):
        f, z, o = gates(device)
        c0 = _rand((batch, hidden), dtype, device)
        return lambda: fp.fo_pool_forward(f, z, o, c0, save_c=True)

    def bwd(device):
        f, z, o = gates(device)
        c0 = _rand((batch, hidden), dtype, device)
        cseq = _rand((steps, batch, hidden), torch.float32, device)
        dh = _rand((steps, batch, hidden), dtype, device)
        return lambda: fp.fo_pool_backward(f, z, o, c0, cseq, dh, None, want_dc0=True)

    return [
        Job("fo_pool_fwd", "fo_pool", shape, dtype, fwd, batch),
        Job("fo_pool_bwd", "fo_pool", shape, dtype, bwd, batch),
    ]


def lstm_jobs(batch: int, steps: int, hidden: int, dtype: torch.dtype) -> list[Job]:
    """Forward and backward per-step kernels over a whole segment (``steps`` launches)."""
    lm = _kmod("lstm")
    shape = f"B={batch} T={steps} H={hidden}"
    bound = hidden**-0.5

    def weights(device):
        w = _rand((4 * hidden, hidden), dtype, device, bound)
        return w

    def fwd(device):
        gx = _rand((steps, batch, 4 * hidden), dtype, device)
        w = weights(device)
        h0 = _rand((batch, hidden), dtype, device, 0.5)
        c0 = _rand((batch, hidden), dtype, device, 0.5)
        return lambda: lm.lstm_segment_forward_triton(gx, w, h0, c0, save_for_backward=True)

    def bwd(device):
        w = weights(device)
        h_all = _rand((steps + 1, batch, hidden), dtype, device, 0.5)
        c_all = _rand((steps + 1, batch, hidden), torch.float32, device)
        act = _gate((steps, batch, 4 * hidden), torch.float32, device)
        dh = _rand((steps, batch, hidden), dtype, device)
        return lambda: lm.lstm_segment_backward_triton(w, h_all, c_all, act, dh, None, None)

    return [
        Job("lstm_fwd", "lstm", shape, dtype, fwd, batch),
        Job("lstm_bwd", "lstm", shape, dtype, bwd, batch),
    ]


def sg_loss_jobs(n: int, dtype: torch.dtype = torch.float32) -> list[Job]:
    sg = _kmod("sg_loss")

    def fwd(device):
        pred = _rand((n,), dtype, device)
        target = _rand((n,), dtype, device)
        return lambda: sg.sg_mse_loss_forward(pred, target, want_grad=True)

    return [Job("sg_loss", "sg_loss", f"N={n}", dtype, fwd)]


def elementwise_jobs(n: int, units: int, dtype: torch.dtype = torch.float32) -> list[Job]:
    """As in training: dropout mask on; backward with dy only (the carry is detached, so no
    dc in and no dc_prev out)."""
    ew = _kmod("elementwise")
    shape = f"N={n} U={units}"

    def inputs(device):
        x = _rand((n,), dtype, device)
        c_prev = _rand((n, units), dtype, device, 0.5)
        w = _rand((3, units), dtype, device)
        b = _rand((3, units), dtype, device, 0.1)
        v = _rand((units,), dtype, device, 0.1)
        b_out = _rand((1,), dtype, device)
        mask = _gate((n, units), dtype, device)
        return x, c_prev, w, b, v, b_out, mask

    def fwd(device):
        args = inputs(device)
        return lambda: ew.elementwise_forward(*args)

    def bwd(device):
        args = inputs(device)
        dy = _rand((n,), dtype, device)
        return lambda: ew.elementwise_backward(*args, dy, None, want_dc_prev=False)

    return [
        Job("elementwise_fwd", "elementwise", shape, dtype, fwd),
        Job("elementwise_bwd", "elementwise", shape, dtype, bwd),
    ]


def recipe_jobs(shapes: RecipeShapes, *, quick: bool = False) -> list[Job]:
    """Every tunable launch of one training segment of the recipe (distinct layer sizes)."""
    jobs: list[Job] = []
    for h in dict.fromkeys(shapes.hidden):  # distinct, in layer order
        if shapes.cell == "qrnn":
            jobs += fo_pool_jobs(shapes.batch, shapes.bptt, h, shapes.dtype, shapes.output_gate)
        else:
            steps = min(shapes.bptt, QUICK_LSTM_STEPS) if quick else shapes.bptt
            jobs += lstm_jobs(shapes.batch, steps, h, shapes.dtype)
    if shapes.synthetic:
        n = shapes.state_elements
        if shapes.synthesizer == "elementwise" and shapes.synth_cell == "qrnn":
            jobs += elementwise_jobs(n, shapes.synth_hidden)
        jobs += sg_loss_jobs(n)
    return jobs


def parse_shape_spec(spec: str, default_dtype: torch.dtype, *, quick: bool = False) -> list[Job]:
    """``family:K=V,K=V`` -> jobs. Families and keys:

    * ``fo_pool:B=20,T=200,H=1550`` (``O=0`` for no output gate)
    * ``lstm:B=20,T=200,H=1150``
    * ``sg_loss:N=109000``
    * ``elementwise:N=109000,U=50``

    Any spec may add ``dtype=bfloat16`` (else ``--dtype``). A kernel name (``fo_pool_fwd``)
    in place of the family keeps only that kernel.
    """
    family, sep, rest = spec.partition(":")
    family = family.strip()
    only = None
    for fam, names in FAMILY_KERNELS.items():
        if family in names:
            family, only = fam, family
    if family not in FAMILY_KERNELS or not sep:
        known = ", ".join(list(FAMILY_KERNELS) + [k for v in FAMILY_KERNELS.values() for k in v])
        raise UserError(f"--shapes {spec!r}: expected FAMILY:K=V,... with FAMILY one of {known}")
    values: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        k, eq, v = part.partition("=")
        if not eq:
            raise UserError(f"--shapes {spec!r}: {part!r} is not K=V")
        values[k.strip()] = v.strip()
    dtype = default_dtype
    if "dtype" in values:
        name = values.pop("dtype")
        if name not in DTYPES:
            raise UserError(f"--shapes {spec!r}: dtype must be one of {', '.join(DTYPES)}")
        dtype = DTYPES[name]
    need = {
        "fo_pool": ("B", "T", "H"),
        "lstm": ("B", "T", "H"),
        "sg_loss": ("N",),
        "elementwise": ("N",),
    }[family]
    optional = {"fo_pool": ("O",), "elementwise": ("U",)}.get(family, ())
    unknown = set(values) - set(need) - set(optional)
    missing = [k for k in need if k not in values]
    if unknown or missing:
        raise UserError(
            f"--shapes {spec!r}: {family} needs {', '.join(need)}"
            + (f" (optional {', '.join(optional)})" if optional else "")
            + (f"; unknown {sorted(unknown)}" if unknown else "")
            + (f"; missing {missing}" if missing else "")
        )
    try:
        ints = {k: int(v) for k, v in values.items()}
    except ValueError:
        raise UserError(f"--shapes {spec!r}: values must be integers") from None
    if any(v < 1 for k, v in ints.items() if k != "O"):
        raise UserError(f"--shapes {spec!r}: sizes must be >= 1")
    if family == "fo_pool":
        jobs = fo_pool_jobs(ints["B"], ints["T"], ints["H"], dtype, bool(ints.get("O", 1)))
    elif family == "lstm":
        steps = min(ints["T"], QUICK_LSTM_STEPS) if quick else ints["T"]
        jobs = lstm_jobs(ints["B"], steps, ints["H"], dtype)
    elif family == "sg_loss":
        jobs = sg_loss_jobs(ints["N"], dtype)
    else:
        jobs = elementwise_jobs(ints["N"], ints.get("U", 50), dtype)
    return [j for j in jobs if only is None or j.kernel == only]


# ----------------------------------------------------------------------------- probing


class _Probed(Exception):
    """Raised by the wrapped ``pick`` to stop a probed launch before it runs."""


@contextlib.contextmanager
def _recording_pick(seen: list[tuple[str, tuple]]) -> Iterator[None]:
    configs = _configs()
    real = configs.pick

    def spy(kernel, key, heuristic):
        seen.append((kernel, tuple(key)))
        raise _Probed

    configs.pick = spy
    try:
        yield
    finally:
        configs.pick = real


def probe_key(job: Job) -> tuple:
    """The override key ``job``'s launcher asks ``_configs.pick`` for, learnt by calling it on
    ``meta`` tensors with ``pick`` replaced by a recorder that stops the launch (nothing is
    allocated for real, nothing compiles, no GPU needed). Raises RuntimeError when the
    launcher never asks for ``job.kernel`` (then it cannot be tuned through overrides)."""
    seen: list[tuple[str, tuple]] = []
    with _recording_pick(seen):
        call = job.make(torch.device("meta"))
        with contextlib.suppress(_Probed):
            call()
    keys = [key for kernel, key in seen if kernel == job.kernel]
    if not keys:
        raise RuntimeError(
            f"{job.kernel}: its launcher did not consult the _configs registry "
            f"(asked for {seen or 'nothing'}); cannot force its configs"
        )
    return keys[0]


def unique_jobs(jobs: Sequence[Job]) -> list[Job]:
    """Probe every job's key and keep the first job of each (kernel, key)."""
    out, seen = [], set()
    for job in jobs:
        if job.key is None:
            job.key = probe_key(job)
        ident = (job.kernel, job.key)
        if ident not in seen:
            seen.add(ident)
            out.append(job)
    return out


# ----------------------------------------------------------------------------- candidates


def _spread(items: list, k: int) -> list:
    """``k`` items spread evenly over ``items`` (first and last included)."""
    if len(items) <= k:
        return list(items)
    if k == 1:
        return [items[0]]
    idx = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in idx]


def job_candidates(job: Job, *, quick: bool = False) -> list[dict[str, int]]:
    """The kernel's registered candidates; under ``quick`` at most ``QUICK_CANDIDATES`` of
    them, and for configs with a BLOCK_B (the LSTM) only the smallest block covering B (what
    the kernel's own autotuner keeps)."""
    metas = _configs().candidates(job.kernel)
    if not quick:
        return metas
    if job.batch is not None and metas and all("BLOCK_B" in m for m in metas):
        sizes = sorted({m["BLOCK_B"] for m in metas})
        want = next((s for s in sizes if s >= job.batch), sizes[-1])
        metas = [m for m in metas if m["BLOCK_B"] == want]
    return _spread(metas, QUICK_CANDIDATES)


def format_meta(meta: dict[str, int]) -> str:
    upper = [f"{k}={v}" for k, v in meta.items() if k.isupper()]
    launch = [f"{k.removeprefix('num_')}={v}" for k, v in meta.items() if not k.isupper()]
    return " ".join(upper + launch)


# ----------------------------------------------------------------------------- sweeping

Timing = tuple[float, float, float]  # median, p20, p80 in ms


@dataclass
class Trial:
    meta: dict[str, int]
    timing: Timing | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.timing is not None


@dataclass
class SweepResult:
    job: Job
    trials: list[Trial] = field(default_factory=list)
    aborted: str | None = None

    @property
    def winner(self) -> Trial | None:
        ok = [t for t in self.trials if t.ok]
        return min(ok, key=lambda t: t.timing[0]) if ok else None


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 160:
        first = first[:157] + "..."
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def gpu_timer(warmup_ms: float, rep_ms: float) -> Callable[[Callable[[], Any]], Timing]:
    """``triton.testing.do_bench`` quantiles (median, p20, p80) in ms."""
    from triton.testing import do_bench

    def timer(fn: Callable[[], Any]) -> Timing:
        med, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return float(med), float(p20), float(p80)

    return timer


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sweep(
    job: Job,
    metas: Sequence[dict[str, int]],
    device: torch.device,
    timer: Callable[[Callable[[], Any]], Timing],
    progress: Callable[[Job, Trial], None] | None = None,
) -> SweepResult:
    """Time ``job`` with each config forced through ``set_override`` on its key.

    A config that fails (compile error, out of resources, launch error) is recorded and
    skipped. If the device itself is broken afterwards (a sticky CUDA error), the sweep
    stops there (``aborted``). The override that was in place before is restored.
    """
    configs = _configs()
    key = job.key if job.key is not None else probe_key(job)
    job.key = key
    result = SweepResult(job)
    previous = configs.get_override(job.kernel, key)
    try:
        call = job.make(device)
        for meta in metas:
            trial = Trial(dict(meta))
            try:
                configs.set_override(job.kernel, key, meta)
                call()  # compile + first launch: errors surface here
                _synchronize(device)
                trial.timing = timer(call)
            except Exception as e:  # noqa: BLE001 - a failing candidate is data, not a crash
                trial.error = _one_line(e)
                try:
                    _synchronize(device)
                except Exception as sticky:  # noqa: BLE001
                    result.trials.append(trial)
                    result.aborted = (
                        f"device unusable after {format_meta(meta)}: {_one_line(sticky)}"
                    )
                    break
            result.trials.append(trial)
            if progress is not None:
                progress(job, trial)
    finally:
        configs.set_override(job.kernel, key, previous)
    return result


def winners_from(results: Sequence[SweepResult], here: DeviceId) -> list[Winner]:
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    out = []
    for r in results:
        best = r.winner
        if best is None:
            continue
        med, p20, p80 = best.timing
        out.append(
            Winner(
                device=here.name,
                capability=here.capability,
                triton=here.triton,
                kernel=r.job.kernel,
                key=tuple(r.job.key),
                meta=dict(best.meta),
                median_ms=round(med, 6),
                p20_ms=round(p20, 6),
                p80_ms=round(p80, 6),
                shape=r.job.shape,
                candidates=len(r.trials),
                torch=torch.__version__,
                date=now,
            )
        )
    return out


def tune_all(
    jobs: Sequence[Job],
    device: torch.device,
    here: DeviceId,
    timer: Callable[[Callable[[], Any]], Timing],
    console,
    *,
    quick: bool = False,
    path: Path | None = None,
) -> tuple[list[SweepResult], list[Winner], Path | None]:
    """Sweep every job (printing a table each), then store the winners at ``path`` (None:
    do not store). Stops early if the device is left in an error state."""
    results = []
    started = time.perf_counter()
    for job in jobs:
        metas = job_candidates(job, quick=quick)
        t0 = time.perf_counter()
        r = sweep(job, metas, device, timer)
        results.append(r)
        console.print(result_table(r))
        console.print(
            f"  {len(metas)} candidates in {time.perf_counter() - t0:.1f} s", markup=False
        )
        if r.aborted:
            console.print("stopping: the device is in an error state", markup=False)
            break
    winners = winners_from(results, here)
    saved = save_winners(path, winners) if winners and path is not None else None
    console.print(summary_table(results, saved))
    console.print(
        f"tuned {len(winners)}/{len(results)} launches in {time.perf_counter() - started:.1f} s",
        markup=False,
    )
    return results, winners, saved


# ----------------------------------------------------------------------------- tables


def result_table(r: SweepResult):
    """A rich table of one sweep: config, median, p20-p80 spread, ratio to the best."""
    from rich.table import Table

    job = r.job
    best = r.winner
    title = f"{job.kernel}  {job.shape}  {dtype_name(job.dtype)}  key {tuple(job.key)}"
    table = Table(title=title, title_justify="left")
    table.add_column("config")
    table.add_column("median ms", justify="right")
    table.add_column("p20-p80 ms", justify="right")
    table.add_column("x best", justify="right")
    table.add_column("")
    ok = sorted((t for t in r.trials if t.ok), key=lambda t: t.timing[0])
    for t in ok:
        med, p20, p80 = t.timing
        win = t is best
        table.add_row(
            format_meta(t.meta),
            f"{med:.4f}",
            f"{p20:.4f}-{p80:.4f}",
            f"{med / best.timing[0]:.2f}",
            "winner" if win else "",
            style="bold green" if win else None,
        )
    for t in r.trials:
        if not t.ok:
            table.add_row(format_meta(t.meta), "-", "-", "-", f"failed: {t.error}", style="red")
    if r.aborted:
        table.caption = f"sweep stopped: {r.aborted}"
    return table


def summary_table(results: Sequence[SweepResult], path: Path | None):
    from rich.table import Table

    table = Table(
        title="winners" + (f" -> {path}" if path else " (not saved)"), title_justify="left"
    )
    for col in ("kernel", "shape", "dtype", "key", "winner", "median ms", "ok/tried"):
        table.add_column(col)
    for r in results:
        best = r.winner
        table.add_row(
            r.job.kernel,
            r.job.shape,
            dtype_name(r.job.dtype),
            str(tuple(r.job.key)),
            format_meta(best.meta) if best else "none (all failed)",
            f"{best.timing[0]:.4f}" if best else "-",
            f"{sum(t.ok for t in r.trials)}/{len(r.trials)}",
        )
    return table


__all__ = [
    "CACHE_ENV",
    "DeviceId",
    "Job",
    "RecipeShapes",
    "SweepResult",
    "Trial",
    "Winner",
    "apply_stored_winners",
    "cache_dir",
    "elementwise_jobs",
    "fo_pool_jobs",
    "gpu_timer",
    "job_candidates",
    "load_winners",
    "lstm_jobs",
    "parse_shape_spec",
    "present_device",
    "probe_key",
    "recipe_jobs",
    "save_winners",
    "sg_loss_jobs",
    "shapes_from_recipe",
    "sweep",
    "tune_all",
    "unique_jobs",
    "winners_from",
    "winners_path",
]
