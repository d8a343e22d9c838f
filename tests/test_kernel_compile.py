"""The fo-pool, SG-loss, LSTM and LM-head (linear_ce) kernels compile for an H100 (sm_90)
without a GPU.

The interpreter runs the kernels' Python, not Triton's GPU code generation (layouts, the
scans' lowering, loop-carried values, constexpr branches); this compiles them to a cubin
with Triton's bundled ptxas, in a subprocess without TRITON_INTERPRET, for each storage
dtype and signature that training uses. On a GPU machine tests/gpu compiles and runs them
for real instead.

For the LSTM's split-K steps it also reads the PTX: the ticket is one
``atom.acq_rel.gpu`` after a ``bar.sync`` (the kernel's; Triton 3.9's scalar-atomic
lowering happens to place one there too), the last arriver reads partials with
``ld.global.cg`` (L2), PDL variants wait on ``griddepcontrol``, and W_hh's padded row
stride lets its tiles stream as 16-byte ``cp.async`` copies.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from altgrad_triton.kernels import interpreting

pytestmark = pytest.mark.skipif(
    not interpreting(), reason="a GPU machine compiles the kernels in tests/gpu"
)

SCRIPT = r"""
import importlib
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

fp = importlib.import_module("altgrad_triton.kernels.fo_pooling")
sg = importlib.import_module("altgrad_triton.kernels.sg_loss")


def jit_of(k):
    while not isinstance(k, triton.runtime.jit.JITFunction):
        k = k.fn
    return k


def build(kernel, types, constexprs, warps, aligned=(), **options):
    # compile for sm_90; aligned: the arguments the JIT would mark 16-divisible
    fn = jit_of(kernel)
    sig = {n: types.get(n, "constexpr" if n in constexprs else "i32") for n in fn.arg_names}
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32),
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
build(sg._sg_loss_kernel, {**ptrs, "counter": "*i32", "target_scale": "fp32"},
      {"STORE_GRAD": True, "STATS": True, "BLOCK": 512, "BLOCK_R": 16, "BLOCK_J": 16}, 4)

lstm = importlib.import_module("altgrad_triton.kernels.lstm")
for direction, dt, pdl, graph in (("fwd", "bf16", True, True), ("bwd", "bf16", True, True),
                                  ("fwd", "fp32", False, False), ("bwd", "fp32", False, False)):
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
    ptx = build(kernel, types, cx, 4, aligned=[*types, "ldw"], num_stages=3, launch_pdl=pdl)
    name = f"lstm {direction} {dt}"
    assert ptx.count("atom.global.gpu.acq_rel.add") == 1, name
    before = ptx[: ptx.index("atom.global.gpu.acq_rel.add")]
    assert "bar.sync" in before[-600:], f"{name}: no barrier right before the ticket"
    assert "ld.global.cg" in ptx, name
    assert ("griddepcontrol.wait" in ptx) == pdl, name
    if direction == "fwd" and dt == "bf16":  # W_hh rows in 16-byte async copies
        assert "cp.async.cg.shared.global" in ptx and ", 0x10" in ptx, name

# the LM head's row kernel, every autotune candidate: no register spills (ptxas -v) and
# shared memory within an H100's 232,448 bytes per block
import pathlib, re, subprocess, tempfile
from triton.backends.nvidia.compiler import get_ptxas
lce = importlib.import_module("altgrad_triton.kernels.linear_ce")
ptxas = get_ptxas(90).path  # the ptxas Triton itself uses for sm_90
for dt in ("bf16", "fp32"):
    for meta in lce.configs_linear_ce():
        fn = jit_of(lce._ce_rows_kernel)
        types = {"logits": f"*{dt}", "targets": "*i64", "loss": "*fp32", "scale": "fp32"}
        cx = {"GRAD": True, "BLOCK_V": meta["BLOCK_V"]}
        sig = {n: types.get(n, "constexpr" if n in cx else "i32") for n in fn.arg_names}
        ck = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=cx),
                            target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": meta["num_warps"]})
        name = f"linear_ce {dt} {meta}"
        assert ck.metadata.shared <= 232448, (name, ck.metadata.shared)
        with tempfile.TemporaryDirectory() as tmp:
            src = pathlib.Path(tmp) / "k.ptx"
            src.write_text(ck.asm["ptx"])
            log = subprocess.run([ptxas, "-arch=sm_90a", "-v", str(src), "-o",
                                  str(src.with_suffix(".cubin"))],
                                 capture_output=True, text=True, check=True).stderr
        spills = [int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", log)]
        assert spills and not any(spills), (name, log)
print("compiled")
"""


def test_kernels_compile_for_sm90():
    import triton

    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    if not any(bin_dir.glob("ptxas*")):
        pytest.skip("this Triton has no bundled ptxas")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-3000:]
