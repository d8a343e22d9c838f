"""altgrad-tune's parallel warm-up without a GPU: the kernels it records are the ones the
JIT compiles, and compiling them on worker processes fills Triton's cache under the keys
the JIT then looks up (its own compile path finds every one and builds no IR).

It runs in a subprocess without TRITON_INTERPRET, with a stand-in CUDA driver that reports
an sm_90 target, so the kernels' real JIT path specialises real launches (on ``meta``
tensors) up to the compile step.
"""

import os
import subprocess
import sys

import pytest
from altgrad_triton.kernels import interpreting

from tests.helpers import require_bundled_ptxas

pytestmark = pytest.mark.skipif(
    not interpreting(), reason="a GPU machine warms its cache in tests/gpu/test_gpu_tune.py"
)

SCRIPT = r"""
import os, sys
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime import driver
from triton.runtime.jit import JITFunction


class SM90:  # the driver calls a launch makes before it compiles
    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0


def main():
    driver.set_active(SM90())
    from altgrad_triton import tune
    from altgrad_triton.kernels import tuning
    from altgrad_triton.tune import warmup

    def two(job, quick=False, arch=None):  # plain and graph launches of the LSTM: 2 per job
        metas = tuning.candidates(job.kernel, arch)
        return [m for m in metas if m.get("LAUNCH", 0) in (0, 2)][:2]

    warmup.job_candidates = two
    meta = torch.device("meta")
    jobs = (tune.parse_shape_spec("sg_loss:N=4096", torch.float32)
            + tune.parse_shape_spec("lstm_fwd:B=4,T=3,H=40", torch.bfloat16))
    for job in jobs:
        job.key = tune.probe_key(job)
    builds = warmup.record_builds(jobs, meta)
    names = sorted(b.name for b in builds)
    assert names == ["_lstm_fwd_step_kernel"] * 2 + ["_sg_loss_kernel"] * 2, names
    results = warmup.warm_cache(builds, 2)
    assert not any(err for _, err in results), results

    made, found = [], []  # the JIT's own compile of the same launches: cache hits only
    make_ir = ASTSource.make_ir
    ASTSource.make_ir = lambda self, *a, **k: made.append(self.fn) or make_ir(self, *a, **k)
    real = JITFunction._do_compile

    def compile_no_launch(self, key, signature, device, *rest):
        found.append(real(self, key, signature, device, *rest) is not None)
        self.device_caches[device][0].pop(key)  # uncached again: the launch stops here

    JITFunction._do_compile = compile_no_launch
    for job in jobs:
        call = job.make(meta)
        for m in two(job):
            tuning.set_override(job.kernel, job.key, m)
            call()
    assert len(found) >= 4 and all(found) and not made, (found, made)
    print("warmed", len(builds))


if __name__ == "__main__":
    main()
"""


def test_warm_up_fills_the_cache_the_jit_reads(tmp_path):
    require_bundled_ptxas()
    script = tmp_path / "warm.py"  # a file: spawned workers re-import the main module
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0 and "warmed 4" in proc.stdout, proc.stderr[-3000:]
