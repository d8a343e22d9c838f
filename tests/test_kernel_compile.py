"""The fo-pool and SG-loss kernels compile for an H100 (sm_90) without a GPU.

The interpreter runs the kernels' Python, not Triton's GPU code generation (layouts, the
scans' lowering, loop-carried values, constexpr branches); this compiles them to a cubin
with Triton's bundled ptxas, in a subprocess without TRITON_INTERPRET, for each storage
dtype and signature that training uses. On a GPU machine tests/gpu compiles and runs them
for real instead.
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

fp = importlib.import_module("altgrad_triton.kernels.fo_pool")
sg = importlib.import_module("altgrad_triton.kernels.sg_loss")


def jit_of(k):
    while not isinstance(k, triton.runtime.jit.JITFunction):
        k = k.fn
    return k


def build(kernel, types, constexprs, warps):
    sig = {n: types.get(n, "constexpr" if n in constexprs else "i32")
           for n in jit_of(kernel).arg_names}
    src = ASTSource(fn=jit_of(kernel), signature=sig, constexprs=constexprs)
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    assert ck.asm["cubin"], kernel


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
