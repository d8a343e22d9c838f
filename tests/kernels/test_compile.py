"""The fo-pool, SG-loss and LSTM kernels compile for an H100 (sm_90) and an A100 (sm_80)
without a GPU, and their memory-ordering protocol survives the compile on both.

The interpreter runs the kernels' Python, not Triton's GPU code generation (layouts, the
scans' lowering, loop-carried values, constexpr branches); this compiles them to a cubin
with Triton's bundled ptxas, in a subprocess without TRITON_INTERPRET, for each storage
dtype and signature that training uses. On a GPU machine tests/gpu compiles and runs them
for real instead. Whether every tuning candidate of every family fits each supported
architecture (sm_80, sm_86, sm_89, sm_90: shared memory, spills) is tests/tune/test_fitrecord.py's
question, answered from the record ``altgrad-tune --check-configs --record`` writes.

For the LSTM's split-K steps it also reads the PTX: the ticket is one
``atom.acq_rel.gpu`` after a ``bar.sync`` (the kernel's; Triton 3.9's scalar-atomic
lowering happens to place one there too), the last arriver reads partials with
``ld.global.cg`` (L2), PDL variants wait on ``griddepcontrol``, and W_hh's padded row
stride lets its tiles stream as 16-byte ``cp.async`` copies. The plain (non-PDL) step
kernels and the SG loss are also compiled for sm_80, the oldest supported architecture
(sm_86 and sm_89 take the same code path in Triton), and pass the same ticket checks
there; PDL needs sm_90. The order checks
(``pdl_problems``, ``ticket_problems``) read the PTX line by line: ``griddepcontrol.wait``
before the first global read, ``launch_dependents`` after the ticket, a ``bar.sync``
between the last store and the ticket and another before the ``.cg`` reads; a test breaks
each property in the real PTX and shows the check rejects it.
"""

import os
import re
import subprocess
import sys

import pytest
from altgrad_triton.kernels import interpreting

from tests.helpers import require_bundled_ptxas

pytestmark = pytest.mark.skipif(
    not interpreting(), reason="a GPU machine compiles the kernels in tests/gpu"
)

SCRIPT = r"""
import importlib
import pathlib
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

fp = importlib.import_module("altgrad_triton.kernels.fo_pooling")
sg = importlib.import_module("altgrad_triton.kernels.sg_loss")
OUT = pathlib.Path(sys.argv[1])  # the PTX the order checks read, one file per kernel


def jit_of(k):
    while not isinstance(k, triton.runtime.jit.JITFunction):
        k = k.fn
    return k


def build(kernel, types, constexprs, warps, aligned=(), arch=90, **options):
    # compile for sm_<arch>; aligned: the arguments the JIT would mark 16-divisible
    fn = jit_of(kernel)
    sig = {n: types.get(n, "constexpr" if n in constexprs else "i32") for n in fn.arg_names}
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                        options={"num_warps": warps, **options})
    assert ck.asm["cubin"], kernel
    return ck.asm["ptx"]


for dt, has_o, (block, chunk, warps) in (("bf16", True, (64, 16, 4)), ("fp32", False, (32, 8, 1))):
    x = {"x": f"*{dt}", "h": f"*{dt}", "dh": f"*{dt}", "dx": f"*{dt}"}
    f32 = {n: "*fp32" for n in ("c0", "ckpt", "c_last", "dc_last", "dc0")}
    common = {"sxh": 1, "HAS_O": has_o, "BLOCK_H": block, "CHUNK": chunk}
    build(fp._fo_pool_fwd_kernel, {**x, **f32},
          {**common, "HAS_C0": True, "STORE_CKPT": True}, warps)
    build(fp._fo_pool_bwd_kernel, {**x, **f32},
          {**common, "CKPT_EVERY": chunk, "HAS_DH": True, "HAS_DC": True, "STORE_DC0": True,
           "STEPS": chunk}, warps)
ptrs = {n: "*fp32" for n in ("pred", "target", "grad", "partial", "loss", "stats")}
for arch, suffix in ((90, ""), (80, "-sm80")):
    ptx = build(sg._sg_loss_kernel, {**ptrs, "counter": "*i32", "target_scale": "fp32"},
                {"STORE_GRAD": True, "STATS": True, "BLOCK": 512, "BLOCK_R": 16, "BLOCK_J": 16},
                4, arch=arch)
    (OUT / f"sg_loss{suffix}.ptx").write_text(ptx)

lstm = importlib.import_module("altgrad_triton.kernels.lstm")
for direction, dt, pdl, graph, arch in (
        ("fwd", "bf16", True, True, 90), ("bwd", "bf16", True, True, 90),
        ("fwd", "fp32", False, False, 90), ("bwd", "fp32", False, False, 90),
        ("fwd", "fp32", False, False, 80), ("bwd", "fp32", False, False, 80)):
    store = (["gx_ptr", "w_ptr", "h_ptr"] if direction == "fwd"
             else ["w_ptr", "dhseq_ptr", "dhT_ptr", "dg_ptr"])
    fp32 = (["c_ptr", "act_ptr", "part_ptr"] if direction == "fwd"
            else ["act_ptr", "c_ptr", "dc_ptr", "dh0_ptr", "part_ptr"])
    types = {**{n: f"*{dt}" for n in store}, **{n: "*fp32" for n in fp32}, "count_ptr": "*i32"}
    cx = {"DOT_PREC": "tf32", "USE_PDL": pdl, "STEP_FROM_MEMORY": graph, "BLOCK_B": 32,
          "BLOCK_H": 32 if direction == "fwd" else 64, "BLOCK_K": 64}
    cx.update({"SAVE_ACT": True} if direction == "fwd" else {"HAS_DHSEQ": True, "HAS_DHT": True})
    if graph:
        types["step_base"] = "*i32"
    else:
        cx["step_base"] = None
    kernel = lstm._lstm_fwd_step_kernel if direction == "fwd" else lstm._lstm_bwd_step_kernel
    ptx = build(kernel, types, cx, 4, aligned=[*types, "ldw"], arch=arch, num_stages=3,
                launch_pdl=pdl)
    name = f"lstm {direction} {dt} sm_{arch}"
    suffix = ("-pdl" if pdl else "") + ("-sm80" if arch == 80 else "")
    (OUT / f"lstm-{direction}-{dt}{suffix}.ptx").write_text(ptx)
    assert ptx.count("atom.global.gpu.acq_rel.add") == 1, name
    before = ptx[: ptx.index("atom.global.gpu.acq_rel.add")]
    assert "bar.sync" in before[-600:], f"{name}: no barrier right before the ticket"
    assert "ld.global.cg" in ptx, name
    assert ("griddepcontrol.wait" in ptx) == pdl, name
    if direction == "fwd" and dt == "bf16":  # W_hh rows in 16-byte async copies
        assert "cp.async.cg.shared.global" in ptx and ", 0x10" in ptx, name

print("compiled")
"""


@pytest.fixture(scope="module")
def ptx(tmp_path_factory) -> dict[str, str]:
    """Compile the kernels for sm_90 and sm_80 once (the script's own checks included); their
    PTX by name: sg_loss, lstm-{fwd,bwd}-{bf16-pdl,fp32} (sm_90), and the same names with
    -sm80 for the sm_80 builds of sg_loss and the fp32 steps."""
    require_bundled_ptxas()
    out = tmp_path_factory.mktemp("ptx")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)], capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-3000:]
    return {p.stem: p.read_text() for p in out.glob("*.ptx")}


def test_kernels_compile_for_sm90_and_sm80(ptx):
    assert sorted(ptx) == ["lstm-bwd-bf16-pdl", "lstm-bwd-fp32", "lstm-bwd-fp32-sm80",
                           "lstm-fwd-bf16-pdl", "lstm-fwd-fp32", "lstm-fwd-fp32-sm80", "sg_loss",
                           "sg_loss-sm80"]  # fmt: skip


# --------------------------------------------------------------------------- PTX order
# PTX is read in text order: Triton emits a kernel's basic blocks in program order and the
# instructions checked here sit on straight-line paths (the wait before the step's first
# branch; the barrier, the ticket and launch_dependents in one block; the last arriver's
# block after it), so text order is execution order for them.

_GLOBAL_READ = re.compile(r"^(?:@!?%p\d+\s+)?(?:ld\.global|cp\.async\.\w+\.shared\.global)")
_GLOBAL_STORE = re.compile(r"^(?:@!?%p\d+\s+)?st\.global")
_CG_READ = re.compile(r"^(?:@!?%p\d+\s+)?ld\.global\.cg")
_TICKET = "atom.global.gpu.acq_rel.add"


def _lines(ptx: str) -> list[str]:
    return [line.strip() for line in ptx.splitlines()]


def _first(lines: list[str], match, start: int = 0) -> int | None:
    return next((i for i in range(start, len(lines)) if match(lines[i])), None)


def pdl_problems(ptx: str) -> list[str]:
    """A PDL step kernel waits for the previous grid (``griddepcontrol.wait``) before its
    first global read, and releases its dependents only after its ticket."""
    lines = _lines(ptx)
    wait = _first(lines, lambda s: s.startswith("griddepcontrol.wait"))
    read = _first(lines, _GLOBAL_READ.match)
    ticket = _first(lines, lambda s: _TICKET in s)
    release = _first(lines, lambda s: s.startswith("griddepcontrol.launch_dependents"))
    problems = []
    if wait is None or read is None or wait > read:
        problems.append(f"griddepcontrol.wait at line {wait}, first global read at {read}")
    if release is None or ticket is None or release < ticket:
        problems.append(f"launch_dependents at line {release}, the ticket at {ticket}")
    return problems


def ticket_problems(ptx: str, only_cg_after: bool = False) -> list[str]:
    """The last-arriver protocol: one acq_rel ticket, a ``bar.sync`` between the program's
    last global store and the ticket, and ``.cg`` reads of the partials after it behind a
    barrier; ``only_cg_after``: every global read after the ticket is ``.cg`` (sg_loss's
    last arriver reads nothing but partials)."""
    lines = _lines(ptx)
    tickets = [i for i, s in enumerate(lines) if _TICKET in s]
    if len(tickets) != 1:
        return [f"{len(tickets)} acq_rel tickets, expected 1"]
    ticket = tickets[0]
    problems = []
    stores = [i for i in range(ticket) if _GLOBAL_STORE.match(lines[i])]
    last_store = stores[-1] if stores else -1
    if not any(lines[i].startswith("bar.sync") for i in range(last_store + 1, ticket)):
        problems.append(f"no bar.sync between the last store (line {last_store}) and the ticket")
    cg = _first(lines, _CG_READ.match, ticket)
    if cg is None:
        problems.append("no ld.global.cg after the ticket")
    elif not any(lines[i].startswith("bar.sync") for i in range(ticket + 1, cg)):
        problems.append(f"no bar.sync between the ticket and the first .cg read (line {cg})")
    if only_cg_after:
        plain = [i for i in range(ticket, len(lines))
                 if _GLOBAL_READ.match(lines[i]) and not _CG_READ.match(lines[i])]  # fmt: skip
        if plain:
            problems.append(f"global reads after the ticket without .cg at lines {plain[:3]}")
    return problems


@pytest.mark.parametrize("name", ["lstm-fwd-bf16-pdl", "lstm-bwd-bf16-pdl"])
def test_pdl_wait_first_and_release_after_ticket(ptx, name):
    assert pdl_problems(ptx[name]) == [], name


@pytest.mark.parametrize(
    "name", ["lstm-fwd-fp32", "lstm-bwd-fp32", "lstm-fwd-fp32-sm80", "lstm-bwd-fp32-sm80"]
)
def test_plain_launch_has_no_grid_dependency_control(ptx, name):
    assert "griddepcontrol" not in ptx[name]


@pytest.mark.parametrize("name", ["lstm-fwd-bf16-pdl", "lstm-bwd-bf16-pdl", "lstm-fwd-fp32",
                                  "lstm-bwd-fp32", "sg_loss", "lstm-fwd-fp32-sm80",
                                  "lstm-bwd-fp32-sm80", "sg_loss-sm80"])  # fmt: skip
def test_barrier_ticket_cg_order(ptx, name):
    assert ticket_problems(ptx[name], only_cg_after=name.startswith("sg_loss")) == [], name


def _move(lines: list[str], src: int, dst: int) -> list[str]:
    out = list(lines)
    out.insert(dst, out.pop(src))
    return out


def test_order_checks_fail_on_mutated_ptx(ptx):
    """Each check rejects the real PTX with the property it guards broken."""
    fwd = _lines(ptx["lstm-fwd-bf16-pdl"])
    wait = _first(fwd, lambda s: s.startswith("griddepcontrol.wait"))
    read = _first(fwd, _GLOBAL_READ.match)
    ticket = _first(fwd, lambda s: _TICKET in s)
    release = _first(fwd, lambda s: s.startswith("griddepcontrol.launch_dependents"))
    late_wait = _move(fwd, wait, read)  # the wait now follows the first read
    assert any("wait" in p for p in pdl_problems("\n".join(late_wait)))
    early_release = _move(fwd, release, ticket)  # dependents released before the ticket
    assert any("launch_dependents" in p for p in pdl_problems("\n".join(early_release)))

    sg = _lines(ptx["sg_loss"])
    ticket = _first(sg, lambda s: _TICKET in s)
    last_store = max(i for i in range(ticket) if _GLOBAL_STORE.match(sg[i]))
    unfenced = [s for i, s in enumerate(sg) if not (last_store < i < ticket and "bar.sync" in s)]
    assert any("between the last store" in p for p in ticket_problems("\n".join(unfenced)))
    cg = _first(sg, _CG_READ.match, ticket)
    no_acquire_barrier = [s for i, s in enumerate(sg) if not (ticket < i < cg and "bar.sync" in s)]
    assert any("first .cg" in p for p in ticket_problems("\n".join(no_acquire_barrier)))
    l1 = "\n".join(sg).replace("ld.global.cg", "ld.global.ca", 1)  # one partial read via L1
    assert any("without .cg" in p for p in ticket_problems(l1, only_cg_after=True))
    assert any("no ld.global.cg" in p for p in
               ticket_problems("\n".join(sg).replace("ld.global.cg", "ld.global")))  # fmt: skip
    two = "\n".join(sg).replace(_TICKET, f"{_TICKET} x;\n{_TICKET}", 1)
    assert ticket_problems(two) == ["2 acq_rel tickets, expected 1"]
