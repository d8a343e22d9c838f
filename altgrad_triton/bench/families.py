"""The kernel families' benchmark groups: their minimal traffic and flop counts, the
shapes each family measures, and its providers (ours, the PyTorch reference,
torch.compile, cuDNN) at each shape."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .measure import Case, Env, Forward, Group

# ----------------------------------------------------------------------------- traffic


def fo_pool_bytes(steps: int, batch: int, hidden: int, size: int) -> dict[str, float]:
    """Minimal traffic of fused-gate fo-pooling with an output gate (kernels/fo_pooling.py's
    table): the forward reads the Z, F, O pre-activations and writes h; the backward reads
    dh and Z, F, O and writes their three gradients; per column the fp32 state in and out
    (c0 and c_T; dc_T and dc0). The chunk checkpoints (4 B per column per chunk of steps)
    are the kernels' choice, not counted."""
    el, col = steps * batch * hidden, batch * hidden
    fwd = el * 4 * size + col * 8
    bwd = el * 7 * size + col * 8
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}


def sg_loss_bytes(n: int, size: int = 4) -> dict[str, float]:
    """Forward reads pred and target and writes d loss / d pred; backward scales it."""
    fwd, bwd = 3 * size * n, 2 * size * n
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}


def elementwise_bytes(n: int, units: int, size: int = 4) -> dict[str, float]:
    """As in training (dropout mask, no gradient into the carry): forward reads x, c_prev,
    mask and writes c, y; backward reads x, c_prev, mask, dy and writes dx."""
    fwd = n * units * 3 * size + n * 2 * size
    bwd = n * units * 2 * size + n * 3 * size
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}


def authors_scan_bytes(n: int, units: int, size: int = 4) -> dict[str, float]:
    """Minimal traffic of the authors' scan in training (zoneout mask in the gates' dtype):
    the forward reads Z, F, O and the mask and writes h; the backward reads those and dh
    and writes dZ, dF, dO. The kernels read their inputs twice each way (reduce, then
    fix-up: 8 and 13 per element, kernels/authors_synth.py); that second read is their
    choice, not counted."""
    el = n * units
    fwd, bwd = el * 5 * size, el * 8 * size
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}


def lstm_flops(steps: int, batch: int, hidden: int, layers: int = 1) -> dict[str, float]:
    """Input and recurrent products (input size = hidden): 2 * T * B * 4H * (I + H) per layer
    forward; the backward counted as twice that (data and weight gradients)."""
    fwd = layers * 2.0 * steps * batch * 4 * hidden * (2 * hidden)
    return {"fwd": fwd, "bwd": 2 * fwd, "fwd+bwd": 3 * fwd}


def linear_ce_flops(n: int, vocab: int, dim: int) -> dict[str, float]:
    """The head's three GEMMs: logits 2 N V D forward; dh and dW 4 N V D backward. Ours
    computes the gradients inside its forward, so its fwd row holds all 6 N V D and its
    bwd row only scales them: compare the fwd+bwd rows."""
    fwd = 2.0 * n * vocab * dim
    return {"fwd": fwd, "bwd": 2 * fwd, "fwd+bwd": 3 * fwd}


# ----------------------------------------------------------------------------- families

DTYPE_OF = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Shapes:
    """What each family measures. ``full`` providers (ours, torch.compile, cuDNN) run only
    where ``Env.gpu``; the CPU reference mode keeps the PyTorch paths."""

    fo_pool: list[tuple[int, int, int]]  # (B, T, H)
    fo_pool_dtypes: list[str]
    compile_all: bool  # torch.compile at every fo_pool shape (else once, at the first, last)
    state: list[tuple[str, int, int]]  # (model label, B, joined state size) for SG/synth
    units: int  # element-wise synthesizer hidden units
    lstm_layer: list[tuple[int, int, int]]  # (B, T, H), one layer
    lstm_stack: list[tuple[int, int, int]]  # (B, T, H), 3 layers
    lstm_best: list[tuple[int, int, int]]  # (B, T, H), fp16 single layer (cuDNN's best case)
    lstm_modes: list[str]  # "bf16-autocast", "float32"
    linear_ce: list[tuple[str, int, int, int, str]]  # (label, N, V, D, dtype)
    stack_reference: bool  # also the PyTorch reference for the 3-layer stack
    e2e_models: list[tuple[str, str, list[str]]]  # (label, recipe path, dtypes)
    e2e_warm: int
    e2e_measure: int


def plan_shapes(env: Env, quick: bool, args) -> Shapes:
    """The paper's shapes on a GPU (fewer under ``quick``); tiny ones in CPU reference mode."""
    from ..config import recipe as recipes
    from ..run.shapes import shapes_from_recipe

    if not env.gpu:
        return Shapes(
            fo_pool=[(2, 8, 16)], fo_pool_dtypes=["float32"], compile_all=False,
            state=[("tiny", 4, 48)], units=8,
            lstm_layer=[(2, 8, 16)], lstm_stack=[], lstm_best=[], lstm_modes=["float32"],
            stack_reference=False, linear_ce=[("tiny", 96, 500, 24, "float32")],
            e2e_models=[("tiny qrnn", args.qrnn_recipe, ["float32"]),
                        ("tiny lstm", args.lstm_recipe, ["float32"])],
            e2e_warm=2, e2e_measure=3,
        )  # fmt: skip
    qrnn, lstm = (shapes_from_recipe(recipes.load(p)) for p in (args.qrnn_recipe, args.lstm_recipe))
    state = [("wt2 qrnn", qrnn.batch, qrnn.state_size), ("wt2 lstm", lstm.batch, lstm.state_size)]
    units = qrnn.synth_hidden
    if quick:
        return Shapes(
            fo_pool=[(20, 200, 1550), (20, 200, 400)], fo_pool_dtypes=["bfloat16", "float32"],
            compile_all=False, state=state[:1], units=units,
            lstm_layer=[(20, 200, 650), (20, 200, 1550), (80, 70, 1150)],
            lstm_stack=[(20, 200, 1150), (20, 200, 1550)], lstm_best=[(20, 200, 1024)],
            lstm_modes=["bf16-autocast"], stack_reference=False,
            linear_ce=[("wt2", 4000, 33278, 400, "bfloat16")],
            e2e_models=[("wt2 qrnn", args.qrnn_recipe, ["float32", "bfloat16"]),
                        ("wt2 lstm", args.lstm_recipe, ["bfloat16"])],
            e2e_warm=2, e2e_measure=3,
        )  # fmt: skip
    return Shapes(
        fo_pool=[(20, 200, 1550), (20, 200, 400)], fo_pool_dtypes=["bfloat16", "float32"],
        compile_all=True, state=state, units=units,
        lstm_layer=[(b, t, h) for b in (20, 80) for h in (650, 1150, 1550) for t in (70, 200)],
        lstm_stack=[(b, t, h) for b in (20, 80) for h in (1150, 1550) for t in (70, 200)],
        lstm_best=[(20, 200, 1024), (80, 70, 1024)],
        lstm_modes=["bf16-autocast", "float32"], stack_reference=True,
        linear_ce=[("wt2", 4000, 33278, 400, "bfloat16"), ("wt2", 4000, 33278, 400, "float32"),
                   ("wt103 vocab", 4000, 267735, 400, "bfloat16")],
        e2e_models=[("wt2 qrnn", args.qrnn_recipe, ["float32", "bfloat16"]),
                    ("wt2 lstm", args.lstm_recipe, ["float32", "bfloat16"])],
        e2e_warm=3, e2e_measure=10,
    )  # fmt: skip


def _compile(fn: Callable) -> Callable:
    import torch._dynamo

    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def kernel_cases(
    make: Callable, ours: Callable, reference: Callable, providers: Sequence[str]
) -> list[Case]:
    """The providers of a kernel family: ours (its Triton path), the PyTorch reference eager,
    and ``torch.compile`` of the reference. ``make(impl)`` builds a case from a zero-argument
    callable that returns the function to time (called lazily: compiling happens inside)."""
    made = {
        "triton": lambda: Case("triton", make(lambda: ours)),
        "torch": lambda: Case("torch", make(lambda: reference), note="reference, eager"),
        "compile": lambda: Case(
            "compile",
            make(lambda: _compile(reference)),
            note="torch.compile(reference)",
            compile=True,
        ),
    }
    return [made[p]() for p in providers]


def _gpu_providers(env: Env) -> list[str]:
    return ["triton", "torch", "compile"] if env.gpu else ["torch"]


def fo_pool_group(
    env: Env, batch: int, steps: int, hidden: int, dt: str, providers: Sequence[str]
) -> Group:
    """fo-pooling at one shape, as ``cells.QRNN`` calls it: the raw [T, B, 3H] projection
    in the storage dtype, c0 in fp32. On a GPU each direction is also set against a device
    copy of the same bytes (the "copy" rows: their ratio is the share of its speed ours
    reaches)."""
    from ..kernels import fo_pool, fo_pool_reference

    dtype = DTYPE_OF[dt]

    def make(impl):
        def build():
            gates = (2 * torch.randn(steps, batch, 3 * hidden, device=env.device)).to(dtype)
            gates.requires_grad_()
            c0 = torch.randn(batch, hidden, device=env.device, requires_grad=True)
            fn = impl()
            return (lambda: fn(gates, c0)), [gates, c0]

        return build

    def ours(*a):
        return fo_pool(*a, backend="triton")

    size = torch.finfo(dtype).bits // 8
    return Group(
        "fo_pool",
        f"B={batch} T={steps} H={hidden}",
        dt,
        kernel_cases(make, ours, fo_pool_reference, providers),
        bytes=fo_pool_bytes(steps, batch, hidden, size),
        copy_baseline=True,
    )


def fo_pool_groups(env: Env, shapes: Shapes) -> list[Group]:
    """Ours, the reference and (with ``compile_all``) torch.compile at every shape; without
    it, torch.compile runs once at the end of the whole benchmark (:func:`run_families`)."""
    groups = []
    for batch, steps, hidden in shapes.fo_pool:
        for dt in shapes.fo_pool_dtypes:
            providers = (["triton"] if env.gpu else []) + ["torch"]
            if env.gpu and shapes.compile_all:
                providers.append("compile")
            groups.append(fo_pool_group(env, batch, steps, hidden, dt, providers))
    return groups


def kernel_launches(fn: Callable[[], object]) -> int | None:
    """GPU operations (kernels, memsets, copies) that one call of ``fn`` issues, counted
    with torch.profiler after a warm-up call; None where the profiler cannot tell."""
    try:
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        return sum(1 for e in prof.events() if e.device_type == DeviceType.CUDA)
    except Exception:  # noqa: BLE001 - a note, never a failed benchmark
        return None


def _annotated(case: Case, measure: Callable[[Callable, list], str | None]) -> Case:
    """``case`` whose note gains what ``measure(fwd, leaves)`` says of its forward (nothing
    when it returns None, e.g. off a GPU)."""
    make = case.make

    def make_and_measure():
        fwd, leaves = make()
        said = measure(fwd, leaves)
        if said is not None:
            case.note = f"{case.note}; {said}" if case.note else said
        return fwd, leaves

    case.make = make_and_measure
    return case


def _launch_count(fwd: Callable, leaves: list) -> str | None:
    """How many GPU operations the forward issues (torch.profiler), on a GPU."""
    n = kernel_launches(fwd) if torch.cuda.is_available() and leaves[0].is_cuda else None
    return None if n is None else f"{n} GPU op{'s' if n != 1 else ''} per forward (torch.profiler)"


def _counting(case: Case) -> Case:
    """``case`` whose note says how many GPU operations its forward issues (on a GPU)."""
    return _annotated(case, _launch_count)


SG_TARGET_SCALE = 1000.0
"""A ``synthetic.target_scale`` of the size recipes use (tokens per segment)."""


def sg_loss_groups(env: Env, shapes: Shapes) -> list[Group]:
    """What ``SyntheticBoundary.fit`` runs: the loss against target_scale x the gradient,
    its gradient and the telemetry (sg_cos, sg_norm_ratio) -- ours in one launch, the
    reference as PyTorch ops -- with each provider's count of GPU operations per call."""
    from ..kernels import sg_mse_loss_with_stats, sg_mse_loss_with_stats_reference

    groups = []
    for label, batch, dim in shapes.state:

        def make(impl, batch=batch, dim=dim):
            def build():
                pred = torch.randn(batch, dim, device=env.device).requires_grad_()
                target = torch.randn(batch, dim, device=env.device) / SG_TARGET_SCALE
                fn = impl()
                return (lambda: fn(pred, target, SG_TARGET_SCALE)[:1]), [pred]

            return build

        def ours(p, t, s):
            return sg_mse_loss_with_stats(p, t, target_scale=s, backend="triton")

        cases = kernel_cases(make, ours, sg_mse_loss_with_stats_reference, _gpu_providers(env))
        n = batch * dim
        groups.append(
            Group(
                "sg_loss",
                f"{label} B={batch} D={dim} (N={n})",
                "float32",
                [_counting(c) if c.provider != "compile" else c for c in cases],
                bytes=sg_loss_bytes(n),
                copy_baseline=True,
            )
        )
    return groups


def elementwise_groups(env: Env, shapes: Shapes) -> list[Group]:
    from ..kernels import elementwise_qrnn_synth, elementwise_qrnn_synth_reference

    units = shapes.units
    groups = []
    for label, batch, dim in shapes.state:
        n = batch * dim

        def make(impl, n=n):
            def build():
                dev = env.device
                x = torch.randn(n, device=dev)
                c_prev = torch.randn(n, units, device=dev) * 0.5
                w = torch.randn(3, units, device=dev).requires_grad_()
                b = (torch.randn(3, units, device=dev) * 0.1).requires_grad_()
                v = (torch.randn(units, device=dev) * 0.1).requires_grad_()
                b_out = torch.zeros(1, device=dev).requires_grad_()
                mask = torch.empty(n, units, device=dev).bernoulli_(0.9) / 0.9
                fn = impl()
                # as in training: the state and the carry receive no gradient, only y is used
                return (lambda: fn(x, c_prev, w, b, v, b_out, mask)[:1]), [w, b, v, b_out]

            return build

        def ours(*a):
            return elementwise_qrnn_synth(*a, backend="triton")

        cases = kernel_cases(make, ours, elementwise_qrnn_synth_reference, _gpu_providers(env))
        groups.append(
            Group(
                "elementwise",
                f"{label} N={n} U={units}",
                "float32",
                cases,
                bytes=elementwise_bytes(n, units),
            )
        )
    return groups


def _lstm_make(
    env: Env,
    kind: str,
    batch: int,
    steps: int,
    hidden: int,
    layers: int,
    mode: str,
    launch: str | None = None,
) -> Callable[[], tuple[Forward, list[torch.Tensor]]]:
    """kind: "ours" (cells.LSTM, backend triton, its steps launched as ``launch``),
    "reference" (cells.LSTM, backend torch), "nn" (torch.nn.LSTM: cuDNN on a GPU).
    mode: "bf16-autocast", "float32", "float16"."""
    from ..core.cells import LSTM
    from ..kernels._common import pdl_unavailable

    def build():
        dev = env.device
        if launch is not None and launch.endswith("pdl"):
            why = pdl_unavailable(dev)
            if why is not None:  # the kernels would fall back: do not time that as PDL
                raise RuntimeError(why)
        store = torch.float16 if mode == "float16" else torch.float32
        autocast = mode == "bf16-autocast"
        x = torch.randn(steps, batch, hidden, device=dev, dtype=store).requires_grad_()
        if kind == "nn":
            net = torch.nn.LSTM(hidden, hidden, num_layers=layers).to(dev, store)
            zeros = torch.zeros(layers, batch, hidden, device=dev, dtype=store)

            def fwd():
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                    out, _ = net(x, (zeros, zeros))
                return (out,)

            return fwd, [x, *net.parameters()]
        backend = "triton" if kind == "ours" else "torch"
        mods = [
            LSTM(hidden, hidden, backend=backend, launch=launch).to(dev, store)
            for _ in range(layers)
        ]
        zeros = torch.zeros(batch, hidden, device=dev, dtype=store)

        def fwd():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                h = x
                for m in mods:
                    h, _ = m(h, (zeros, zeros))
            return (h,)

        return fwd, [x, *(p for m in mods for p in m.parameters())]

    return build


LSTM_LAUNCHES = {"triton": "plain", "triton-pdl": "pdl", "triton-graph": "graph",
                 "triton-graph-pdl": "graph-pdl"}  # fmt: skip
"""Our LSTM providers: the kernels' launch modes (``kernels.lstm.LAUNCH_MODES``); ratios
are against "triton" (plain launches), so a mode that helps shows a ratio below 1."""


def lstm_groups(env: Env, shapes: Shapes) -> list[Group]:
    nn_name = "cudnn" if env.device.type == "cuda" else "nn.LSTM"
    kinds = {"torch": "reference", nn_name: "nn"} | dict.fromkeys(LSTM_LAUNCHES, "ours")
    groups = []

    def add(label, batch, steps, hidden, layers, mode, providers):
        cases = []
        for p in providers:
            note = {
                "torch": "reference loop, eager",
                nn_name: f"torch.nn.LSTM num_layers={layers}",
            }.get(p, f"launch={LSTM_LAUNCHES[p]}" if p in LSTM_LAUNCHES else "")
            launch = LSTM_LAUNCHES.get(p)
            make = _lstm_make(env, kinds[p], batch, steps, hidden, layers, mode, launch)
            cases.append(Case(p, make, note=note))
        groups.append(
            Group("lstm", label, mode, cases, flops=lstm_flops(steps, batch, hidden, layers))
        )

    ours = list(LSTM_LAUNCHES) if env.gpu else []
    for mode in shapes.lstm_modes:  # the stacks first: the rows the LSTM's targets are about
        for b, t, h in shapes.lstm_stack:
            providers = [*ours, nn_name] + (["torch"] if shapes.stack_reference else [])
            add(f"B={b} T={t} H={h} 3 layers", b, t, h, 3, mode, providers)
        for b, t, h in shapes.lstm_layer:
            add(f"B={b} T={t} H={h} 1 layer", b, t, h, 1, mode, [*ours, nn_name, "torch"])
    for b, t, h in shapes.lstm_best:
        add(f"B={b} T={t} H={h} 1 layer (cuDNN best case)", b, t, h, 1, "float16", [*ours, nn_name])
    return groups


def peak_memory(fn: Callable[[], object]) -> int | None:
    """Bytes ``fn`` allocates on the GPU at its peak above what was allocated before (a
    warm-up call first); None off a GPU."""
    if not torch.cuda.is_available():
        return None
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def forward_backward(fwd: Forward, leaves: list[torch.Tensor]) -> None:
    """One forward and one backward into ``leaves``, every output's upstream gradient ones
    (outputs of any shape: a loss, or the synthesizer's per-scalar predictions)."""
    outs = list(fwd())
    torch.autograd.grad(outs, leaves, [torch.ones_like(o) for o in outs], allow_unused=True)


def _peak_beyond_inputs(fwd: Callable, leaves: list) -> str | None:
    """The peak GPU memory of one forward + backward beyond its inputs, on a GPU."""
    peak = peak_memory(lambda: forward_backward(fwd, leaves)) if leaves[0].is_cuda else None
    return None if peak is None else f"peak {peak / 2**20:,.0f} MiB fwd+bwd beyond the inputs"


def _with_peak_memory(case: Case) -> Case:
    """``case`` whose note gives the peak GPU memory of one forward + backward beyond its
    inputs (on a GPU)."""
    return _annotated(case, _peak_beyond_inputs)


def linear_ce_unfused(h, w, b, t):
    """The head as the model computed it before the fused one: full logits, fp32 loss."""
    import torch.nn.functional as F

    return F.cross_entropy(F.linear(h, w, b).float(), t)


def linear_ce_groups(env: Env, shapes: Shapes) -> list[Group]:
    """The fused LM head (``kernels.linear_cross_entropy``) against ``F.linear`` +
    ``F.cross_entropy`` eager and under torch.compile, and the chunked PyTorch reference
    (the CPU training path), each with its peak GPU memory in the note. Inputs in the
    storage dtype, as the model passes them under autocast; the bias untied, the weight a
    leaf (a tied embedding receives the same dW)."""
    from ..kernels import linear_cross_entropy

    groups = []
    for label, n, vocab, dim, dt in shapes.linear_ce:
        dtype = DTYPE_OF[dt]

        def make(impl, n=n, vocab=vocab, dim=dim, dtype=dtype):
            def build():
                dev = env.device
                h = torch.randn(n, dim, device=dev).to(dtype).requires_grad_()
                w = (torch.randn(vocab, dim, device=dev) * 0.05).to(dtype).requires_grad_()
                b = torch.zeros(vocab, device=dev, dtype=dtype).requires_grad_()
                t = torch.randint(0, vocab, (n,), device=dev)
                fn = impl()
                return (lambda: (fn(h, w, b, t),)), [h, w, b]

            return build

        def ours(h, w, b, t):
            return linear_cross_entropy(h, w, b, t, backend="triton")

        def chunked(h, w, b, t):
            return linear_cross_entropy(h, w, b, t, backend="torch", chunk_rows=max(1, len(t) // 8))

        cases = kernel_cases(make, ours, linear_ce_unfused, _gpu_providers(env))
        for c in cases:
            if c.provider == "torch":
                c.note = "F.linear + F.cross_entropy, eager"
            elif c.provider == "compile":
                c.note = "torch.compile(F.linear + F.cross_entropy)"
        cases.append(Case("chunked", make(lambda: chunked), note="PyTorch reference, 8 chunks"))
        groups.append(
            Group(
                "linear_ce",
                f"{label} N={n} V={vocab} D={dim}",
                dt,
                [_with_peak_memory(c) for c in cases],
                flops=linear_ce_flops(n, vocab, dim),
            )
        )
    return groups


AUTHORS_ZONEOUT = 0.1
"""The authors' zoneout (``[synthetic.authors]``'s default): a keep mask in training."""


def _authors_scan_group(env: Env, label: str, n: int, units: int, providers) -> Group:
    """The scan alone (``kernels.authors_scan``) against its PyTorch reference (what the
    synthesizer ran before: activations, zoneout, ``linear_scan``, o * c) eager and,
    with ``compile`` in ``providers``, under torch.compile."""
    from ..kernels import authors_scan, authors_scan_reference

    def make(impl):
        def build():
            dev = env.device
            gates = torch.randn(n, 3 * units, device=dev).requires_grad_()
            c0 = torch.randn(units, device=dev).requires_grad_()
            keep = torch.empty(n, units, device=dev).bernoulli_(1 - AUTHORS_ZONEOUT)
            fn = impl()
            return (lambda: fn(gates, c0, keep)), [gates, c0]

        return build

    def ours(gates, c0, keep):
        return authors_scan(gates, c0, keep, backend="triton")

    cases = kernel_cases(make, ours, authors_scan_reference, providers)
    notes = {"torch": "PyTorch reference (linear_scan), eager",
             "compile": "torch.compile(PyTorch reference)"}  # fmt: skip
    for c in cases:
        c.note = notes.get(c.provider, c.note)
    shape = f"{label} N={n} U={units} scan"
    cases = [_with_peak_memory(c) for c in cases]
    return Group("authors_scan", shape, "float32", cases, bytes=authors_scan_bytes(n, units))


def _authors_synth_group(env: Env, label: str, batch: int, dim: int, units: int, gpu: bool):
    """The whole ``AuthorsSynthesizer`` (sequence "scan", window 2, zoneout, input noise;
    training mode) on the Triton backend and on the PyTorch one: encoder, the gates'
    GEMM, the scan, decoder; forward and backward into the state and every weight."""
    from ..core.synthesizers import AuthorsSynthesizer

    def make(backend):
        def build():
            synth = AuthorsSynthesizer(units, zoneout=AUTHORS_ZONEOUT, backend=backend)
            synth.to(env.device).train()
            s = torch.randn(batch, dim, device=env.device).requires_grad_()
            return (lambda: (synth(s, None)[0],)), [s, *synth.parameters()]

        return build

    cases = [Case("torch", make("torch"), note="AuthorsSynthesizer, backend=torch")]
    if gpu:
        cases.insert(0, Case("triton", make("triton"), note="AuthorsSynthesizer, backend=triton"))
    return Group("authors_scan", f"{label} B={batch} D={dim} U={units} synthesizer", "float32",
                 [_with_peak_memory(c) for c in cases])  # fmt: skip


def authors_scan_groups(env: Env, shapes: Shapes) -> list[Group]:
    """The authors' synthesizer at each joined-state shape: its scan alone (ours, the
    PyTorch reference eager, and torch.compile of it outside ``--quick``: compiling the
    unrolled sqrt(N)-step loops takes long), then the whole synthesizer on each backend;
    peak GPU memory in the notes."""
    providers = _gpu_providers(env)
    if not shapes.compile_all:
        providers = [p for p in providers if p != "compile"]
    groups = []
    for label, batch, dim in shapes.state:
        groups.append(_authors_scan_group(env, label, batch * dim, shapes.units, providers))
        groups.append(_authors_synth_group(env, label, batch, dim, shapes.units, env.gpu))
    return groups
