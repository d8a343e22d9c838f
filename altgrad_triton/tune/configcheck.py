"""Config check without a GPU: compile every tuning candidate of every kernel family, as
each supported architecture offers them (``kernels.arch``: sm_80, sm_86, sm_89, sm_90), for
that architecture with Triton's bundled ptxas, at the shapes a recipe launches, and read
each kernel's registers, spill bytes and shared memory.

A candidate over its architecture's shared memory per block raises OutOfResources at its
first launch; one that spills runs, slowly. Either would be a trap for the tuner, Triton's
autotuner and a stored winner, so the config generators must not offer one; this module
is how that is checked (``altgrad-tune --check-configs``, and tests/tune/test_fitrecord.py,
which reads the results recorded by ``--record``: :mod:`.fitrecord`).

Shapes matter: Triton specialises integer arguments on divisibility by 16 (and on 1), so a
candidate is compiled with the signature its launch would have (B, H, strides of the
recipe). The LSTM's launch modes differ only in a PDL wait or where the step index comes
from, so each tile is compiled once, in the plain mode. Specs that compile to the same
kernel (the same signature, constexprs, options and target: e.g. H=1150 and H=1550, both
not divisible by 16) are compiled once (:func:`compile_key`).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import os
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .. import kernels
from ..kernels import arch as archs
from ..kernels import tuning
from ..run.shapes import RecipeShapes
from .jobs import dtype_name

ARCHS = archs.ARCHS
"""Every architecture the check compiles for: ("sm_80", "sm_86", "sm_89", "sm_90")."""

_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's or a
    ``taskset``'s share, where the platform has one), not every core of the machine."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # macOS, Windows: no affinity mask to read
        return os.cpu_count() or 1


@dataclass(frozen=True)
class CompileSpec:
    """One kernel to compile: which candidate of which tuning kernel, at which shape, for
    which architecture (the candidates themselves are that architecture's)."""

    kernel: str  # tuning name, e.g. "lstm_fwd"
    shape: str  # e.g. "B=20 H=1550 train"
    dtype: str  # storage dtype name
    meta: tuple  # the candidate's sorted (name, value) items
    module: str  # kernel module under altgrad_triton.kernels
    fn: str  # the @triton.jit function's name there
    args: tuple  # sorted (arg name, value): "*bf16" pointer, int, bool/str/None constexpr
    arch: str = "sm_90"  # the target, a name of kernels.arch.SUPPORTED

    @property
    def config(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.meta)

    @property
    def limits(self) -> archs.Limits:
        return archs.known(self.arch)


@dataclass
class CompileResult:
    spec: CompileSpec
    seconds: float = 0.0
    registers: int = -1
    spill_bytes: int = -1  # spill stores + loads, bytes per thread
    shared_bytes: int = -1
    error: str = ""
    fits: bool = field(default=False)
    recorded: bool = False  # read from a record (fitrecord), not compiled here


def _spec(kernel, shape, dtype, meta, module, fn, args, arch) -> CompileSpec:
    return CompileSpec(
        kernel, shape, dtype_name(dtype), tuple(sorted(meta.items())), module, fn,
        tuple(sorted(args.items())), arch,
    )  # fmt: skip


def _tiles(kernel: str, arch: str) -> list[dict]:
    """A kernel's candidates on ``arch`` without the launch-mode keys, each once."""
    seen, out = set(), []
    for m in tuning.candidates(kernel, arch):
        tile = {k: v for k, v in m.items() if k not in ("LAUNCH", "GRAPH_STEPS", "SPLIT_K")}
        if tuple(sorted(tile.items())) not in seen:
            seen.add(tuple(sorted(tile.items())))
            out.append(tile)
    return out


def lstm_specs(batch: int, hidden: int, dtype: torch.dtype, train: bool,
               prec: str | None = None, arch: str = "sm_90") -> list[CompileSpec]:  # fmt: skip
    """The LSTM step kernels a launch at (batch, hidden) may run on ``arch``: its tiles whose
    BLOCK_B covers the batch (the launchers keep only those), forward (and backward when
    training); ``prec`` the fp32 dot's input precision (default: what a launch would use
    now)."""
    lstm = kernels.lstm
    t, prec = _TYPES[dtype], prec or lstm._dot_precision_for(dtype)
    want = lstm._block_b(batch)
    common = {"T": 200, "B": batch, "H": hidden, "ldw": tuning.round_up(hidden, 128),
              "step": 0, "SPLIT_K": 2, "slice_shift": 0, "step_base": None,
              "USE_PDL": False, "STEP_FROM_MEMORY": False, "DOT_PREC": prec,
              "count_ptr": "*i32"}  # fmt: skip
    fwd = {**common, "gx_ptr": f"*{t}", "w_ptr": f"*{t}", "h_ptr": f"*{t}", "c_ptr": "*fp32",
           "act_ptr": "*fp32", "part_ptr": "*fp32", "SAVE_ACT": train}  # fmt: skip
    bwd = {**common, "w_ptr": f"*{t}", "act_ptr": "*fp32", "c_ptr": "*fp32",
           "dhseq_ptr": f"*{t}", "dhT_ptr": "*fp32", "dg_ptr": f"*{t}", "dc_ptr": "*fp32",
           "dh0_ptr": "*fp32", "part_ptr": "*fp32", "HAS_DHSEQ": True, "HAS_DHT": True}  # fmt: skip
    shape = f"B={batch} H={hidden} {'train' if train else 'eval'}"
    if dtype == torch.float32:
        shape += f" {prec}"
    out = []
    kinds = (("lstm_fwd", "_lstm_fwd_step_kernel", fwd), ("lstm_bwd", "_lstm_bwd_step_kernel", bwd))
    for kernel, fn, args in kinds[: 2 if train else 1]:
        for m in _tiles(kernel, arch):
            if m["BLOCK_B"] == want:
                out.append(_spec(kernel, shape, dtype, m, "lstm", fn, {**args, **m}, arch))
    return out


def fo_pool_specs(batch: int, hidden: int, dtype: torch.dtype, output_gate: bool,
                  train: bool, arch: str = "sm_90") -> list[CompileSpec]:  # fmt: skip
    """fo-pool forward (with checkpoints when training) and backward (every tuned chunk on
    every forward chunk's checkpoints) on the raw [T, B, G*H] projection, fp32 c0."""
    t, g = _TYPES[dtype], 3 if output_gate else 2
    common = {"T": 200, "B": batch, "H": hidden, "sxt": batch * g * hidden, "sxb": g * hidden,
              "sxh": 1, "HAS_O": output_gate, "x": f"*{t}"}  # fmt: skip
    fwd = {**common, "c0": "*fp32", "h": f"*{t}", "ckpt": "*fp32", "c_last": "*fp32",
           "HAS_C0": True, "STORE_CKPT": train}  # fmt: skip
    shape = f"B={batch} H={hidden} {'train' if train else 'eval'}"
    out = [_spec("fo_pool_fwd", shape, dtype, m, "fo_pooling", "_fo_pool_fwd_kernel",
                 {**fwd, **m}, arch) for m in _tiles("fo_pool_fwd", arch)]  # fmt: skip
    if not train:
        return out
    bwd = {**common, "ckpt": "*fp32", "dh": f"*{t}", "dc_last": "*fp32", "dx": f"*{t}",
           "dc0": "*fp32", "HAS_DH": True, "HAS_DC": True, "STORE_DC0": True}  # fmt: skip
    chunks = sorted({m["CHUNK"] for m in tuning.candidates("fo_pool_fwd", arch)})
    for m in _tiles("fo_pool_bwd", arch):
        for every in chunks:
            args = {**bwd, **m, "CKPT_EVERY": every, "STEPS": max(m["CHUNK"], every)}
            meta = {**m, "CKPT_EVERY": every}
            out.append(_spec("fo_pool_bwd", shape, dtype, meta, "fo_pooling",
                             "_fo_pool_bwd_kernel", args, arch))  # fmt: skip
    return out


def sg_loss_specs(n: int, rows: int, arch: str = "sm_90") -> list[CompileSpec]:
    """The SG loss over the joined fp32 state ([rows, n / rows]), with its gradient and stats."""
    args = {"pred": "*fp32", "target": "*fp32", "grad": "*fp32", "partial": "*fp32",
            "counter": "*i32", "loss": "*fp32", "stats": "*fp32", "R": rows, "D": n // rows,
            "J": 14, "CHUNK": 256, "srp": n // rows, "srt": n // rows, "target_scale": 1.0,
            "STORE_GRAD": True, "STATS": True, "BLOCK_J": 16, "BLOCK_R": 32}  # fmt: skip
    return [_spec("sg_loss", f"N={n}", torch.float32, m, "sg_loss", "_sg_loss_kernel",
                  {**args, **m}, arch) for m in _tiles("sg_loss", arch)]  # fmt: skip


def elementwise_specs(n: int, units: int, arch: str = "sm_90") -> list[CompileSpec]:
    """The element-wise synthesizer's forward and backward (fp32, dropout mask on h)."""
    import triton

    bu = triton.next_power_of_2(units)
    ptr = "*fp32"
    fwd = {**dict.fromkeys(("x", "c_prev", "w", "b", "v", "b_out", "mask", "y", "c"), ptr),
           "N": n, "U": units, "HAS_MASK": True, "BLOCK_U": bu}  # fmt: skip
    bwd = {**dict.fromkeys(("x", "c_prev", "w", "b", "v", "mask", "dy", "dc", "dx", "dc_prev",
                            "partial"), ptr),
           "N": n, "U": units, "CHUNK": 256, "HAS_MASK": True, "HAS_DY": True, "HAS_DC": True,
           "STORE_DCP": True, "BLOCK_U": bu}  # fmt: skip
    shape = f"N={n} U={units}"
    return [
        _spec(kernel, shape, torch.float32, m, "elementwise", fn, {**args, **m}, arch)
        for kernel, fn, args in (
            ("elementwise_fwd", "_ew_fwd_kernel", fwd),
            ("elementwise_bwd", "_ew_bwd_kernel", bwd),
        )  # fmt: skip
        for m in _tiles(kernel, arch)
    ]


def authors_scan_specs(n: int, units: int, dtype: torch.dtype,
                       arch: str = "sm_90") -> list[CompileSpec]:  # fmt: skip
    """The authors' synthesizer's scan over ``n`` rows of ``units``: forward reduce and
    fix-up, backward reduce and fix-up (every candidate, zoneout mask and dh present), and
    the carry pass in both directions (one fixed tile)."""
    scan = kernels.authors_synth
    t = _TYPES[dtype]
    common = {"x": f"*{t}", "keep": f"*{t}", "N": n, "U": units, "sxn": 3 * units, "sxu": 1,
              "f_scale": 1.0, "HAS_KEEP": True}  # fmt: skip
    agg = dict.fromkeys(("agg_a", "agg_b"), "*fp32")
    kinds = {
        "authors_scan_fwd": (("_fwd_reduce_kernel", agg),
                             ("_fwd_kernel", {"carry": "*fp32", "h": f"*{t}"})),
        "authors_scan_bwd": (
            ("_bwd_reduce_kernel",
             {"dh": f"*{t}", "HAS_DH": True,
              **dict.fromkeys(("fwd_a", "fwd_b", "rev_a", "rev_b"), "*fp32")}),
            ("_bwd_kernel", {"dh": f"*{t}", "c_in": "*fp32", "w_in": "*fp32", "dx": f"*{t}",
                             "HAS_DH": True})),
    }  # fmt: skip
    shape = f"N={n} U={units}"
    out = [_spec(kernel, shape, dtype, m, "authors_synth", fn, {**common, **args, **m}, arch)
           for kernel, fns in kinds.items() for m in _tiles(kernel, arch)
           for fn, args in fns]  # fmt: skip
    carry = {**agg, "seed": "*fp32", "carry": "*fp32", "final": "*fp32", "K": n // 16,
             "U": units, "HAS_SEED": True, "BLOCK_K": scan.CARRY_ROWS,
             "BLOCK_U": scan.CARRY_UNITS}  # fmt: skip
    for reverse in (False, True):
        meta = {"num_warps": 4, "REVERSE": reverse}
        out.append(_spec("authors_scan_carry", shape, torch.float32, meta, "authors_synth",
                         "_carry_kernel", {**carry, **meta}, arch))  # fmt: skip
    return out


LM_VOCABULARIES = (33_278, 10_000)
"""WikiText-2's and PTB's vocabularies: the LM head's V, one not divisible by 16 and one
divisible (the two ways Triton specialises it)."""


def linear_ce_specs(vocab: int, dtype: torch.dtype, arch: str = "sm_90") -> list[CompileSpec]:
    """The LM head's row kernel over [rows, ``vocab``] logits, with and without writing the
    gradient (training, evaluation)."""
    t = _TYPES[dtype]
    args = {"logits": f"*{t}", "targets": "*i64", "loss": "*fp32", "V": vocab,
            "s_row": vocab, "scale": 1.0}  # fmt: skip
    return [_spec("linear_ce", f"V={vocab} {'grad' if grad else 'loss'}", dtype, m,
                  "linear_ce", "_ce_rows_kernel", {**args, **m, "GRAD": grad}, arch)
            for grad in (True, False) for m in _tiles("linear_ce", arch)]  # fmt: skip


def recipe_specs(shapes: RecipeShapes, dtypes: Iterable[torch.dtype],
                 arch: str = "sm_90") -> list[CompileSpec]:  # fmt: skip
    """Every candidate ``arch`` offers of every kernel the recipe launches, in each dtype:
    training at the recipe's batch, validation and test forwards at theirs; the SG loss and
    synthesizer (always fp32) once; the LM head when the shapes know the vocabulary."""
    specs: list[CompileSpec] = []
    layers = sorted(set(shapes.hidden))
    for dtype in dtypes:
        runs = [(shapes.batch, True)] + [(b, False) for b in shapes.eval_batches]
        for batch, train in dict.fromkeys(runs):
            for h in layers:
                if shapes.cell == "lstm":
                    specs += lstm_specs(batch, h, dtype, train, arch=arch)
                else:
                    specs += fo_pool_specs(batch, h, dtype, shapes.output_gate, train, arch)
        if shapes.vocab is not None:
            specs += linear_ce_specs(shapes.vocab, dtype, arch)
    if shapes.synthetic:
        specs += sg_loss_specs(shapes.state_elements, shapes.batch, arch)
        if shapes.runs_elementwise_kernel:
            specs += elementwise_specs(shapes.state_elements, shapes.synth_hidden, arch)
        if shapes.runs_authors_scan_kernel:
            specs += authors_scan_specs(shapes.state_elements, shapes.synth_hidden,
                                        torch.float32, arch)  # fmt: skip
    return list(dict.fromkeys(specs))


LSTM_BATCHES = (10, 20, 40, 80)
"""One batch size per BLOCK_B (16/32/64/128): every LSTM tile is some batch's candidate."""

FAMILIES = ("lstm", "fo_pool", "sg_loss", "elementwise", "authors_scan", "linear_ce")


def family_specs(dtypes: Iterable[torch.dtype], families: Iterable[str] = FAMILIES,
                 hidden: int = 1550, arch: str = "sm_90") -> list[CompileSpec]:  # fmt: skip
    """Every candidate ``arch`` offers of every family at the paper's sizes (B=20, H=1550;
    the LSTM at one batch per BLOCK_B, its fp32 dots in IEEE and in TF32; the LM head at
    :data:`LM_VOCABULARIES`), whatever a shipped recipe launches."""
    families, specs = set(families), []
    for dtype in dtypes:
        if "lstm" in families:
            precs = ("ieee", "tf32") if dtype == torch.float32 else (None,)
            for batch, prec in ((b, p) for p in precs for b in LSTM_BATCHES):
                specs += lstm_specs(batch, hidden, dtype, train=True, prec=prec, arch=arch)
        if "fo_pool" in families:
            specs += fo_pool_specs(20, hidden, dtype, output_gate=True, train=True, arch=arch)
        if "linear_ce" in families:
            for vocab in LM_VOCABULARIES:
                specs += linear_ce_specs(vocab, dtype, arch)
    if "sg_loss" in families:
        specs += sg_loss_specs(20 * 3 * hidden, 20, arch)
    if "elementwise" in families:
        specs += elementwise_specs(20 * 3 * hidden, 50, arch)
    if "authors_scan" in families:
        specs += authors_scan_specs(20 * 3 * hidden, 50, torch.float32, arch)
    return list(dict.fromkeys(specs))


CHECK_DTYPES = (torch.bfloat16, torch.float32)
"""The storage dtypes the check compiles the recurrent kernels and the LM head in."""


def shipped_recipes(root: str | os.PathLike[str] = ".") -> list[Path]:
    """The shipped recipes: ``recipes/*.toml`` under ``root``."""
    return sorted(Path(root, "recipes").glob("*.toml"))


def check_scope(recipe_paths: Sequence[str | os.PathLike[str]], archs_: Sequence[str] = ARCHS,
                *, families: bool = True) -> list[CompileSpec]:  # fmt: skip
    """What ``altgrad-tune --check-configs`` compiles: for each architecture, every
    candidate it offers of every kernel the recipes launch (bf16 and fp32) and, with
    ``families``, of every family at the paper's sizes (:func:`family_specs`)."""
    from ..config import recipe as recipes
    from ..run.shapes import shapes_from_recipe

    shapes = [shapes_from_recipe(recipes.load(str(path), [])) for path in recipe_paths]
    specs: list[CompileSpec] = []
    for arch in archs_:
        archs.known(arch)  # a clear error for a name outside the table
        for s in shapes:
            specs += recipe_specs(s, CHECK_DTYPES, arch)
        if families:
            specs += family_specs(CHECK_DTYPES, arch=arch)
    return list(dict.fromkeys(specs))


# ----------------------------------------------------------------------------- compiling


def jit_function(kernel):
    """The ``JITFunction`` under a kernel's ``@triton.autotune``/``@triton.heuristics``
    wrappers: what ``triton.compile`` takes."""
    import triton

    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = kernel.fn
    return kernel


def python_function(kernel):
    """The plain Python function under a kernel's wrappers (``@triton.jit`` or, under the
    interpreter, its interpreted stand-in; ``@triton.heuristics``, ``@triton.autotune``)."""
    while not inspect.isfunction(kernel):
        kernel = kernel.fn
    return kernel


@dataclass(frozen=True)
class KernelArgs:
    """How the JIT treats a kernel's arguments, read without compiling (also under the
    interpreter, where there is no ``JITFunction``)."""

    names: tuple[str, ...]
    constexprs: frozenset[str]  # annotated tl.constexpr
    no_specialize: frozenset[str]  # do_not_specialize


def kernel_args(spec: CompileSpec) -> KernelArgs:
    """:class:`KernelArgs` of ``spec``'s function."""
    kernel = getattr(getattr(kernels, spec.module), spec.fn)
    no_spec: list = []
    wrapper = kernel
    while not inspect.isfunction(wrapper):
        jit_kwargs = getattr(wrapper, "kwargs", None)  # the interpreter's stand-in
        found = getattr(wrapper, "do_not_specialize", None) or (
            jit_kwargs.get("do_not_specialize") if isinstance(jit_kwargs, dict) else None
        )
        no_spec = list(found or no_spec)
        wrapper = wrapper.fn
    params = inspect.signature(wrapper).parameters
    names = tuple(params)
    const = {n for n, p in params.items() if "constexpr" in str(p.annotation)}
    no_spec_names = {names[i] if isinstance(i, int) else i for i in no_spec}
    return KernelArgs(names, frozenset(const), frozenset(no_spec_names))


def _signature(fn: KernelArgs, args: dict) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) as the JIT would specialise a launch with ``args``:
    pointers 16-byte aligned, ints equal to 1 folded, ints divisible by 16 marked so
    (unless the kernel opts out of specialising them)."""
    sig, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(fn.names):
        value = args[name]
        if name in fn.constexprs or value is None or isinstance(value, bool):
            sig[name], constexprs[name] = "constexpr", value
        elif isinstance(value, str):  # a pointer type
            sig[name] = value
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            sig[name] = "fp32"
        elif value == 1 and name not in fn.no_specialize:
            sig[name], constexprs[name] = "constexpr", 1
        else:
            sig[name] = "i32"
            if value % 16 == 0 and name not in fn.no_specialize:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, constexprs, attrs


def _options(spec: CompileSpec) -> dict:
    meta = dict(spec.meta)
    return {k: meta[k] for k in ("num_warps", "num_stages") if k in meta}


def compile_key(spec: CompileSpec) -> str:
    """What decides the kernel ``spec`` compiles to, as one line: the target, the function,
    its signature as the JIT specialises it and the launch options. Specs with equal keys
    compile to the same kernel (with the same sources and Triton)."""
    fn = kernel_args(spec)
    sig, constexprs, attrs = _signature(fn, dict(spec.args))
    aligned = sorted(fn.names[i[0]] for i in attrs)
    return " ".join([
        spec.arch, f"{spec.module}.{spec.fn}",
        ",".join(f"{k}:{v}" for k, v in sig.items() if v != "constexpr"),
        ",".join(f"{k}={v}" for k, v in sorted(constexprs.items())),
        "div16=" + ",".join(aligned),
        ",".join(f"{k}={v}" for k, v in sorted(_options(spec).items())),
    ])  # fmt: skip


def compile_id(spec: CompileSpec) -> str:
    """A short hash of :func:`compile_key`: how the record names a compiled kernel."""
    return hashlib.sha256(compile_key(spec).encode()).hexdigest()[:16]


_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def compile_one(spec: CompileSpec) -> CompileResult:
    """Compile ``spec`` for its architecture and read its resources from ptxas's log."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = jit_function(getattr(getattr(kernels, spec.module), spec.fn))
    sig, constexprs, attrs = _signature(kernel_args(spec), dict(spec.args))
    result = CompileResult(spec)
    start = time.perf_counter()
    log = io.StringIO()
    try:
        with (
            tempfile.TemporaryDirectory() as cache,  # never a cache hit: ptxas runs, logs
            knobs.cache.scope(),
            knobs.nvidia.scope(),
            contextlib.redirect_stdout(log),
        ):
            knobs.cache.dir = cache
            knobs.nvidia.dump_ptxas_log = True
            src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
            target = GPUTarget("cuda", spec.limits.target, 32)
            ck = triton.compile(src, target=target, options=_options(spec))
    except Exception as e:  # noqa: BLE001 - reported per candidate
        result.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
        return result
    result.seconds = time.perf_counter() - start
    result.shared_bytes = int(ck.metadata.shared)
    regs = _PTXAS_REGS.search(log.getvalue())
    spills = _PTXAS_SPILL.search(log.getvalue())
    if regs is None or spills is None:
        result.error = "no ptxas log (a cached kernel?)"
        return result
    result.registers = int(regs.group(1))
    result.spill_bytes = int(spills.group(1)) + int(spills.group(2))
    result.fits = fits(result)
    return result


def fits(r: CompileResult) -> bool:
    """Whether a compiled candidate would run well on its architecture: compiled, no
    spills, shared memory within the block's limit."""
    return (not r.error and r.spill_bytes == 0
            and 0 <= r.shared_bytes <= r.spec.limits.shared_per_block)  # fmt: skip


def _worker_init() -> None:
    os.environ.pop("TRITON_INTERPRET", None)  # compile for the GPU, not the interpreter


def check_specs(specs: list[CompileSpec], jobs: int | None = None) -> list[CompileResult]:
    """Compile every spec on ``jobs`` processes (default: the cores this process may use),
    each distinct kernel once (:func:`compile_key`); a result per spec, in order."""
    import multiprocessing

    keys = [compile_key(s) for s in specs]
    first = {}
    for key, spec in zip(keys, specs, strict=True):
        first.setdefault(key, spec)
    todo = list(first.values())
    jobs = max(1, min(jobs or usable_cores(), len(todo)))
    saved = os.environ.pop("TRITON_INTERPRET", None)  # fresh (spawned) workers: real kernels
    try:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init) as pool:
            done = dict(zip(first, pool.map(compile_one, todo, chunksize=1), strict=True))
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved
    return [replace(done[key], spec=spec) for key, spec in zip(keys, specs, strict=True)]


def results_table(results: list[CompileResult], title: str):
    """A rich table of every compiled candidate; the ones that would not run marked."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("arch", "kernel", "shape", "dtype", "config", "compile s", "registers",
                "spill B", "shared B", "verdict"):  # fmt: skip
        table.add_column(col, justify="right" if col[0].isdigit() or " " in col else "left")
    for r in results:
        s = r.spec
        verdict = "ok" if r.fits else (r.error or why(r))
        seconds = "recorded" if r.recorded else f"{r.seconds:.1f}"
        table.add_row(s.arch, s.kernel, s.shape, s.dtype, s.config, seconds, str(r.registers),
                      str(r.spill_bytes), str(r.shared_bytes), verdict)  # fmt: skip
    return table


def why(r: CompileResult) -> str:
    """Why a candidate would not run well, in one line ("" when it would)."""
    if r.error:
        return r.error
    limit = r.spec.limits.shared_per_block
    reasons = []
    if r.shared_bytes > limit:
        reasons.append(f"shared {r.shared_bytes} > {limit} ({r.spec.arch})")
    if r.spill_bytes:
        reasons.append(f"spills {r.spill_bytes} B")
    return "FAILS: " + ", ".join(reasons) if reasons else ""


def summary(results: list[CompileResult]) -> dict[tuple[str, str], int]:
    """Candidates checked per (architecture, kernel)."""
    out: dict[tuple[str, str], int] = {}
    for r in results:
        key = (r.spec.arch, r.spec.kernel)
        out[key] = out.get(key, 0) + 1
    return out
