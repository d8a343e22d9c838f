"""Config check without a GPU: compile every tuning candidate of every kernel family for a
GPU target (sm_90 by default) with Triton's bundled ptxas, at the shapes a recipe launches,
and read each kernel's registers, spill bytes and shared memory.

A candidate over the target's shared memory per block raises OutOfResources at its first
launch; one that spills runs, slowly. Either would be a trap for the tuner, Triton's
autotuner and a stored winner, so the config generators must not offer one; this module
is how that is checked (``altgrad-tune --check-configs``, and a CI test).

Shapes matter: Triton specialises integer arguments on divisibility by 16 (and on 1), so a
candidate is compiled with the signature its launch would have (B, H, strides of the
recipe). The LSTM's launch modes differ only in a PDL wait or where the step index comes
from, so each tile is compiled once, in the plain mode.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import torch

from .. import kernels
from ..kernels import tuning
from .jobs import RecipeShapes, dtype_name

SM90_SHARED_LIMIT = 232_448
"""Bytes of shared memory one block may use on sm_90 (227 KB, the opt-in maximum)."""

_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class CompileSpec:
    """One kernel to compile: which candidate of which tuning kernel, at which shape."""

    kernel: str  # tuning name, e.g. "lstm_fwd"
    shape: str  # e.g. "B=20 H=1550 train"
    dtype: str  # storage dtype name
    meta: tuple  # the candidate's sorted (name, value) items
    module: str  # kernel module under altgrad_triton.kernels
    fn: str  # the @triton.jit function's name there
    args: tuple  # sorted (arg name, value): "*bf16" pointer, int, bool/str/None constexpr

    @property
    def config(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.meta if k != "num_stages")


@dataclass
class CompileResult:
    spec: CompileSpec
    seconds: float = 0.0
    registers: int = -1
    spill_bytes: int = -1  # spill stores + loads, bytes per thread
    shared_bytes: int = -1
    error: str = ""
    fits: bool = field(default=False)


def _spec(kernel, shape, dtype, meta, module, fn, args) -> CompileSpec:
    return CompileSpec(
        kernel, shape, dtype_name(dtype), tuple(sorted(meta.items())), module, fn,
        tuple(sorted(args.items())),
    )  # fmt: skip


def _tiles(kernel: str) -> list[dict]:
    """A kernel's candidates without the launch-mode keys, each once."""
    seen, out = set(), []
    for m in tuning.candidates(kernel):
        tile = {k: v for k, v in m.items() if k not in ("LAUNCH", "GRAPH_STEPS", "SPLIT_K")}
        if tuple(sorted(tile.items())) not in seen:
            seen.add(tuple(sorted(tile.items())))
            out.append(tile)
    return out


def lstm_specs(batch: int, hidden: int, dtype: torch.dtype, train: bool,
               prec: str | None = None) -> list[CompileSpec]:  # fmt: skip
    """The LSTM step kernels a launch at (batch, hidden) may run: the tiles whose BLOCK_B
    covers the batch (the launchers keep only those), forward (and backward when training);
    ``prec`` the fp32 dot's input precision (default: what a launch would use now)."""
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
        for m in _tiles(kernel):
            if m["BLOCK_B"] == want:
                out.append(_spec(kernel, shape, dtype, m, "lstm", fn, {**args, **m}))
    return out


def fo_pool_specs(batch: int, hidden: int, dtype: torch.dtype, output_gate: bool,
                  train: bool) -> list[CompileSpec]:  # fmt: skip
    """fo-pool forward (with checkpoints when training) and backward (every tuned chunk on
    every forward chunk's checkpoints) on the raw [T, B, G*H] projection, fp32 c0."""
    t, g = _TYPES[dtype], 3 if output_gate else 2
    common = {"T": 200, "B": batch, "H": hidden, "sxt": batch * g * hidden, "sxb": g * hidden,
              "sxh": 1, "HAS_O": output_gate, "x": f"*{t}"}  # fmt: skip
    fwd = {**common, "c0": "*fp32", "h": f"*{t}", "ckpt": "*fp32", "c_last": "*fp32",
           "HAS_C0": True, "STORE_CKPT": train}  # fmt: skip
    shape = f"B={batch} H={hidden} {'train' if train else 'eval'}"
    out = [_spec("fo_pool_fwd", shape, dtype, m, "fo_pooling", "_fo_pool_fwd_kernel", {**fwd, **m})
           for m in _tiles("fo_pool_fwd")]  # fmt: skip
    if not train:
        return out
    bwd = {**common, "ckpt": "*fp32", "dh": f"*{t}", "dc_last": "*fp32", "dx": f"*{t}",
           "dc0": "*fp32", "HAS_DH": True, "HAS_DC": True, "STORE_DC0": True}  # fmt: skip
    chunks = sorted({m["CHUNK"] for m in tuning.candidates("fo_pool_fwd")})
    for m in _tiles("fo_pool_bwd"):
        for every in chunks:
            args = {**bwd, **m, "CKPT_EVERY": every, "STEPS": max(m["CHUNK"], every)}
            meta = {**m, "CKPT_EVERY": every}
            out.append(_spec("fo_pool_bwd", shape, dtype, meta, "fo_pooling",
                             "_fo_pool_bwd_kernel", args))  # fmt: skip
    return out


def sg_loss_specs(n: int, rows: int) -> list[CompileSpec]:
    """The SG loss over the joined fp32 state ([rows, n / rows]), with its gradient and stats."""
    args = {"pred": "*fp32", "target": "*fp32", "grad": "*fp32", "partial": "*fp32",
            "counter": "*i32", "loss": "*fp32", "stats": "*fp32", "R": rows, "D": n // rows,
            "J": 14, "CHUNK": 256, "srp": n // rows, "srt": n // rows, "target_scale": 1.0,
            "STORE_GRAD": True, "STATS": True, "BLOCK_J": 16, "BLOCK_R": 32}  # fmt: skip
    return [_spec("sg_loss", f"N={n}", torch.float32, m, "sg_loss", "_sg_loss_kernel",
                  {**args, **m}) for m in _tiles("sg_loss")]  # fmt: skip


def elementwise_specs(n: int, units: int) -> list[CompileSpec]:
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
        _spec(kernel, shape, torch.float32, m, "elementwise", fn, {**args, **m})
        for kernel, fn, args in (
            ("elementwise_fwd", "_ew_fwd_kernel", fwd),
            ("elementwise_bwd", "_ew_bwd_kernel", bwd),
        )  # fmt: skip
        for m in _tiles(kernel)
    ]


def authors_scan_specs(n: int, units: int, dtype: torch.dtype) -> list[CompileSpec]:
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
    out = [_spec(kernel, shape, dtype, m, "authors_synth", fn, {**common, **args, **m})
           for kernel, fns in kinds.items() for m in _tiles(kernel)
           for fn, args in fns]  # fmt: skip
    carry = {**agg, "seed": "*fp32", "carry": "*fp32", "final": "*fp32", "K": n // 16,
             "U": units, "HAS_SEED": True, "BLOCK_K": scan.CARRY_ROWS,
             "BLOCK_U": scan.CARRY_UNITS}  # fmt: skip
    for reverse in (False, True):
        meta = {"num_warps": 4, "REVERSE": reverse}
        out.append(_spec("authors_scan_carry", shape, torch.float32, meta, "authors_synth",
                         "_carry_kernel", {**carry, **meta}))  # fmt: skip
    return out


def recipe_specs(shapes: RecipeShapes, dtypes: Iterable[torch.dtype]) -> list[CompileSpec]:
    """Every candidate of every kernel the recipe launches, in each dtype: training at the
    recipe's batch, validation and test forwards at theirs; the SG loss and synthesizer
    (always fp32) once."""
    specs: list[CompileSpec] = []
    layers = sorted(set(shapes.hidden))
    for dtype in dtypes:
        runs = [(shapes.batch, True)] + [(b, False) for b in shapes.eval_batches]
        for batch, train in dict.fromkeys(runs):
            for h in layers:
                if shapes.cell == "lstm":
                    specs += lstm_specs(batch, h, dtype, train)
                else:
                    specs += fo_pool_specs(batch, h, dtype, shapes.output_gate, train)
    if shapes.synthetic:
        specs += sg_loss_specs(shapes.state_elements, shapes.batch)
        if shapes.runs_elementwise_kernel:
            specs += elementwise_specs(shapes.state_elements, shapes.synth_hidden)
        if shapes.runs_authors_scan_kernel:
            specs += authors_scan_specs(shapes.state_elements, shapes.synth_hidden, torch.float32)
    return list(dict.fromkeys(specs))


LSTM_BATCHES = (10, 20, 40, 80)
"""One batch size per BLOCK_B (16/32/64/128): every LSTM tile is some batch's candidate."""


def family_specs(dtypes: Iterable[torch.dtype], families: Iterable[str] = ("lstm", "fo_pool",
                 "sg_loss", "elementwise", "authors_scan"),
                 hidden: int = 1550) -> list[CompileSpec]:  # fmt: skip
    """Every candidate of every family at the paper's sizes (B=20, H=1550; the LSTM at one
    batch per BLOCK_B, its fp32 dots in IEEE and in TF32), whatever a shipped recipe
    launches."""
    families, specs = set(families), []
    for dtype in dtypes:
        if "lstm" in families:
            precs = ("ieee", "tf32") if dtype == torch.float32 else (None,)
            for batch, prec in ((b, p) for p in precs for b in LSTM_BATCHES):
                specs += lstm_specs(batch, hidden, dtype, train=True, prec=prec)
        if "fo_pool" in families:
            specs += fo_pool_specs(20, hidden, dtype, output_gate=True, train=True)
    if "sg_loss" in families:
        specs += sg_loss_specs(20 * 3 * hidden, 20)
    if "elementwise" in families:
        specs += elementwise_specs(20 * 3 * hidden, 50)
    if "authors_scan" in families:
        specs += authors_scan_specs(20 * 3 * hidden, 50, torch.float32)
    return list(dict.fromkeys(specs))


# ----------------------------------------------------------------------------- compiling


def jit_function(kernel):
    """The ``JITFunction`` under a kernel's ``@triton.autotune``/``@triton.heuristics``
    wrappers: what ``triton.compile`` takes."""
    import triton

    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = kernel.fn
    return kernel


def _signature(fn, args: dict) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) as the JIT would specialise a launch with ``args``:
    pointers 16-byte aligned, ints equal to 1 folded, ints divisible by 16 marked so
    (unless the kernel opts out of specialising them)."""
    sig, constexprs, attrs = {}, {}, {}
    const_names = {fn.arg_names[i] for i in fn.constexprs}
    no_spec = set(getattr(fn, "do_not_specialize", ()) or ())
    no_spec |= {fn.arg_names[i] for i in no_spec if isinstance(i, int)}
    for i, name in enumerate(fn.arg_names):
        value = args[name]
        if name in const_names or value is None or isinstance(value, bool):
            sig[name], constexprs[name] = "constexpr", value
        elif isinstance(value, str):  # a pointer type
            sig[name] = value
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            sig[name] = "fp32"
        elif value == 1 and name not in no_spec:
            sig[name], constexprs[name] = "constexpr", 1
        else:
            sig[name] = "i32"
            if value % 16 == 0 and name not in no_spec:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, constexprs, attrs


_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def compile_one(spec: CompileSpec, capability: int = 90) -> CompileResult:
    """Compile ``spec`` for ``capability`` and read its resources from ptxas's log."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = jit_function(getattr(getattr(kernels, spec.module), spec.fn))
    meta = dict(spec.meta)
    sig, constexprs, attrs = _signature(fn, dict(spec.args))
    options = {k: meta[k] for k in ("num_warps", "num_stages") if k in meta}
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
            ck = triton.compile(src, target=GPUTarget("cuda", capability, 32), options=options)
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
    result.fits = result.spill_bytes == 0 and result.shared_bytes <= SM90_SHARED_LIMIT
    return result


def _worker_init() -> None:
    os.environ.pop("TRITON_INTERPRET", None)  # compile for the GPU, not the interpreter


def check_specs(specs: list[CompileSpec], jobs: int | None = None) -> list[CompileResult]:
    """Compile every spec on ``jobs`` processes (default: every core); results in order."""
    import multiprocessing

    jobs = jobs or os.cpu_count() or 1
    saved = os.environ.pop("TRITON_INTERPRET", None)  # fresh (spawned) workers: real kernels
    try:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init) as pool:
            return list(pool.map(compile_one, specs, chunksize=1))
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved


def results_table(results: list[CompileResult], title: str):
    """A rich table of every compiled candidate; the ones that would not run marked."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("kernel", "shape", "dtype", "config", "compile s", "registers", "spill B",
                "shared B", "verdict"):  # fmt: skip
        table.add_column(col, justify="right" if col[0].isdigit() or " " in col else "left")
    for r in results:
        s = r.spec
        verdict = "ok" if r.fits else (r.error or _why(r))
        table.add_row(s.kernel, s.shape, s.dtype, s.config, f"{r.seconds:.1f}", str(r.registers),
                      str(r.spill_bytes), str(r.shared_bytes), verdict)  # fmt: skip
    return table


def _why(r: CompileResult) -> str:
    reasons = []
    if r.shared_bytes > SM90_SHARED_LIMIT:
        reasons.append(f"shared {r.shared_bytes} > {SM90_SHARED_LIMIT}")
    if r.spill_bytes:
        reasons.append(f"spills {r.spill_bytes} B")
    return "FAILS: " + ", ".join(reasons)
