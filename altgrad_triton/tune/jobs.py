"""Launches to tune: one job per kernel launch at a shape, from the shapes a recipe implies
(``run.shapes``, the builders') or the ``--shapes`` specs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .. import kernels
from ..errors import UserError
from ..kernels import guard
from ..run.shapes import RecipeShapes
from ..run.shapes import recipe_vocabulary as recipe_vocabulary  # at home in the builders
from ..run.shapes import shapes_from_recipe as shapes_from_recipe

QUICK_LSTM_STEPS = 64
"""Sequence length of LSTM timings under ``--quick`` (the per-step config does not depend
on T; the override key is dtype, B and H only)."""

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
FAMILY_KERNELS = guard.FAMILY_KERNELS  # the families and the kernel names each registers


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


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
    evaluation: bool = False  # a validation/test launch (fewer candidates under --quick)

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
    batch: int,
    steps: int,
    hidden: int,
    dtype: torch.dtype,
    output_gate: bool = True,
    train: bool = True,
) -> list[Job]:
    """Forward and backward scan on the raw [T, B, 3H] projection with an fp32 c0, as
    ``cells.QRNN`` calls them; ``train=False``: the forward only, without checkpoints, as
    evaluation runs it.

    The backward's chunks start on the forward's checkpoints, so in training it runs with
    the longer of its own CHUNK and the forward's; it is timed here on checkpoints of the
    shortest candidate spacing, so that every candidate runs as itself."""
    fp = kernels.fo_pooling
    g = 3 if output_gate else 2
    shape = f"B={batch} T={steps} H={hidden}" + ("" if train else " eval")
    spacing = min(fp.CHUNKS)

    def fwd(device):
        gates = _rand((steps, batch, g * hidden), dtype, device, 2.0)
        c0 = _rand((batch, hidden), torch.float32, device)
        return lambda: fp.fo_pool_forward(gates, c0, output_gate=output_gate, save=train)

    def bwd(device):
        gates = _rand((steps, batch, g * hidden), dtype, device, 2.0)
        ckpt = _rand((-(-steps // spacing), batch, hidden), torch.float32, device)
        dh = _rand((steps, batch, hidden), dtype, device)
        return lambda: fp.fo_pool_backward(
            gates, ckpt, spacing, dh, None, output_gate=output_gate, dc0_dtype=torch.float32
        )

    jobs = [Job("fo_pool_fwd", "fo_pool", shape, dtype, fwd, batch, evaluation=not train)]
    return jobs + [Job("fo_pool_bwd", "fo_pool", shape, dtype, bwd, batch)] if train else jobs


def lstm_jobs(
    batch: int, steps: int, hidden: int, dtype: torch.dtype, train: bool = True
) -> list[Job]:
    """The forward and the backward split-K steps over a whole segment (``steps`` launches
    each): a candidate is a tile, a K split and a launch mode (plain, PDL, CUDA graph), so
    the segment is the unit timed. ``train=False``: the forward only, without saving the
    gates (SAVE_ACT=False), as evaluation runs it."""
    lm = kernels.lstm
    shape = f"B={batch} T={steps} H={hidden}" + ("" if train else " eval")
    bound = hidden**-0.5

    def weights(device):
        w = _rand((4 * hidden, hidden), dtype, device, bound)
        return w

    def fwd(device):
        gx = _rand((steps, batch, 4 * hidden), dtype, device)
        w = weights(device)
        h0 = _rand((batch, hidden), dtype, device, 0.5)
        c0 = _rand((batch, hidden), dtype, device, 0.5)
        return lambda: lm.lstm_segment_forward(gx, w, h0, c0, save_for_backward=train)

    def bwd(device):
        w = weights(device)
        h_all = _rand((steps + 1, batch, hidden), dtype, device, 0.5)
        c_all = _rand((steps + 1, batch, hidden), torch.float32, device)
        act = _gate((steps, batch, 4 * hidden), torch.float32, device)
        dh = _rand((steps, batch, hidden), dtype, device)
        return lambda: lm.lstm_segment_backward(w, h_all, c_all, act, dh, None, None)

    jobs = [Job("lstm_fwd", "lstm", shape, dtype, fwd, batch, evaluation=not train)]
    return jobs + [Job("lstm_bwd", "lstm", shape, dtype, bwd, batch)] if train else jobs


def sg_loss_jobs(n: int, dtype: torch.dtype = torch.float32, rows: int = 1) -> list[Job]:
    """The one-launch fit pass (loss, gradient, telemetry) on ``rows`` rows (the batch; n
    must divide by it) of ``n`` elements in all: the override key is the element count."""
    sg = kernels.sg_loss
    if n % rows:
        raise ValueError(f"sg_loss_jobs: {n} elements do not split into {rows} rows")

    def fwd(device):
        pred = _rand((rows, n // rows), dtype, device)
        target = _rand((rows, n // rows), dtype, device)
        return lambda: sg.sg_loss_forward(pred, target, stats=True, want_grad=True)

    return [Job("sg_loss", "sg_loss", f"N={n}", dtype, fwd)]


def elementwise_jobs(n: int, units: int, dtype: torch.dtype = torch.float32) -> list[Job]:
    """As in training: dropout mask on; backward with dy only (the carry is detached, so no
    dc in and no dc_prev out)."""
    ew = kernels.elementwise
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


def linear_ce_jobs(rows: int, vocab: int, dtype: torch.dtype = torch.bfloat16) -> list[Job]:
    """The LM head's row kernel on one chunk of ``rows`` x ``vocab`` logits, writing their
    gradient in place (as training does). The override key is the vocabulary, which comes
    from the corpus (:func:`recipe_vocabulary`) or a ``--shapes`` spec; a head left untuned
    autotunes and pins itself at its first launch."""
    lce = kernels.linear_ce

    def fwd(device):
        logits = _rand((rows, vocab), dtype, device)
        targets = torch.zeros(rows, dtype=torch.int64, device=device)
        loss = torch.empty(rows, dtype=torch.float32, device=device)
        return lambda: lce.ce_rows_triton(logits, targets, loss, 1.0 / rows, True)

    return [Job("linear_ce", "linear_ce", f"N={rows} V={vocab}", dtype, fwd)]


def authors_scan_jobs(n: int, units: int, dtype: torch.dtype = torch.float32) -> list[Job]:
    """The authors' synthesizer's scan as training launches it: ``n`` rows (the whole
    batch's joined state, one sequence) of ``units``, zoneout's keep mask on; the backward
    with dh only (the last cell state is carried on detached). The override key is the
    element count N*U."""
    scan = kernels.authors_synth
    shape = f"N={n} U={units}"

    def inputs(device):
        gates = _rand((n, 3 * units), dtype, device, 2.0)
        c0 = _rand((units,), dtype, device, 0.5)
        keep = _gate((n, units), dtype, device).round()
        return gates, c0, keep, 1.0

    def fwd(device):
        args = inputs(device)
        return lambda: scan.authors_scan_forward(*args)

    def bwd(device):
        args = inputs(device)
        dh = _rand((n, units), dtype, device)
        return lambda: scan.authors_scan_backward(*args, dh, None)

    return [
        Job("authors_scan_fwd", "authors_scan", shape, dtype, fwd),
        Job("authors_scan_bwd", "authors_scan", shape, dtype, bwd),
    ]


RUN_DTYPES = (torch.float32, torch.bfloat16)
"""The recurrent kernels' dtypes a recipe can train in (``run.dtype``)."""


def recipe_jobs(shapes: RecipeShapes, *, quick: bool = False) -> list[Job]:
    """Every tunable launch of the recipe (distinct layer sizes), so that no training,
    validation or test step falls back to Triton's autotuner: the recurrent kernels in both
    ``run.dtype`` values (the recipe's first), training's forward and backward at the
    training batch, the forwards of validation and test at theirs without saving for a
    backward (other tuning keys, and the kernels evaluation runs); the SG loss and the
    synthesizer (always fp32) once, after the recipe's own training launches; the LM head in
    each dtype when the shapes know the vocabulary. altgrad-tune stores each winner as it
    goes, so a sweep cut short keeps the first ones."""
    jobs: list[Job] = []
    steps = min(shapes.bptt, QUICK_LSTM_STEPS) if quick and shapes.cell == "lstm" else shapes.bptt
    layers = list(dict.fromkeys(shapes.hidden))  # distinct, in layer order
    dtypes = [shapes.dtype] + [d for d in RUN_DTYPES if d != shapes.dtype]
    for dtype in dtypes:
        for h in layers:
            jobs += _recurrent_jobs(shapes, shapes.batch, steps, h, dtype, train=True)
        jobs += _head_jobs(shapes, dtype)
        if dtype == shapes.dtype:
            jobs += _synthesizer_jobs(shapes)
        for batch, h in ((b, h) for b in shapes.eval_batches for h in layers):
            jobs += _recurrent_jobs(shapes, batch, steps, h, dtype, train=False)
    return jobs


def _head_jobs(shapes: RecipeShapes, dtype: torch.dtype) -> list[Job]:
    """The fused LM head's launch at the rows of one chunk of a training segment (the key
    is the vocabulary alone: validation and test share it)."""
    if shapes.vocab is None:
        return []
    chunk = kernels.linear_ce.chunk_rows_for(shapes.vocab, "cuda")
    return linear_ce_jobs(min(shapes.batch * shapes.bptt, chunk), shapes.vocab, dtype)


def _synthesizer_jobs(shapes: RecipeShapes) -> list[Job]:
    if not shapes.synthetic:
        return []
    n = shapes.state_elements
    jobs = []
    if shapes.runs_elementwise_kernel:
        jobs += elementwise_jobs(n, shapes.synth_hidden)
    if shapes.runs_authors_scan_kernel:
        jobs += authors_scan_jobs(n, shapes.synth_hidden)
    return jobs + sg_loss_jobs(n, rows=shapes.batch)


def _recurrent_jobs(
    shapes: RecipeShapes, batch: int, steps: int, hidden: int, dtype: torch.dtype, train: bool
) -> list[Job]:
    if shapes.cell == "qrnn":
        return fo_pool_jobs(batch, steps, hidden, dtype, shapes.output_gate, train)
    return lstm_jobs(batch, steps, hidden, dtype, train)


SPEC_KEYS = {
    "fo_pool": (("B", "T", "H"), ("O",)),
    "lstm": (("B", "T", "H"), ()),
    "sg_loss": (("N",), ()),
    "elementwise": (("N",), ("U",)),
    "linear_ce": (("N", "V"), ()),
    "authors_scan": (("N",), ("U",)),
}
"""Per family: the keys a ``--shapes`` spec needs, and the optional ones."""


def parse_shape_spec(spec: str, default_dtype: torch.dtype, *, quick: bool = False) -> list[Job]:
    """``family:K=V,K=V`` -> jobs. Families and keys:

    * ``fo_pool:B=20,T=200,H=1550`` (``O=0`` for no output gate)
    * ``lstm:B=20,T=200,H=1150``
    * ``sg_loss:N=109000``
    * ``elementwise:N=109000,U=50``
    * ``linear_ce:N=1008,V=33278`` (rows of one chunk of the LM head's logits)
    * ``authors_scan:N=101000,U=50`` (N: the whole batch's joined state)

    Any spec may add ``dtype=bfloat16`` (else ``--dtype``). A kernel name (``fo_pool_fwd``)
    in place of the family keeps only that kernel.
    """
    family, only, values = _split_spec(spec)
    dtype = default_dtype
    if "dtype" in values:
        name = values.pop("dtype")
        if name not in DTYPES:
            raise UserError(f"--shapes {spec!r}: dtype must be one of {', '.join(DTYPES)}")
        dtype = DTYPES[name]
    ints = _sizes(spec, family, values)
    if family == "fo_pool":
        jobs = fo_pool_jobs(ints["B"], ints["T"], ints["H"], dtype, bool(ints.get("O", 1)))
    elif family == "lstm":
        steps = min(ints["T"], QUICK_LSTM_STEPS) if quick else ints["T"]
        jobs = lstm_jobs(ints["B"], steps, ints["H"], dtype)
    elif family == "sg_loss":
        jobs = sg_loss_jobs(ints["N"], dtype)
    elif family == "linear_ce":
        jobs = linear_ce_jobs(ints["N"], ints["V"], dtype)
    elif family == "authors_scan":
        jobs = authors_scan_jobs(ints["N"], ints.get("U", 50), dtype)
    else:
        jobs = elementwise_jobs(ints["N"], ints.get("U", 50), dtype)
    return [j for j in jobs if only is None or j.kernel == only]


def _split_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """``FAMILY:K=V,...`` -> (family, the one kernel asked for or None, {K: V})."""
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
    return family, only, values


def _sizes(spec: str, family: str, values: dict[str, str]) -> dict[str, int]:
    """The spec's sizes as integers, every needed key present and no unknown one."""
    need, optional = SPEC_KEYS[family]
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
    return ints
