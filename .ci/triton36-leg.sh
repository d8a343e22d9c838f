#!/usr/bin/env bash
# CI leg for the GPU machine's Triton (3.6.0; the main leg runs 3.9.0): a venv of its own
# with triton==3.6.0, then the kernel tests (CPU interpreter), the compile checks
# (tests/kernels/test_compile.py: PTX for sm_90 and sm_80; tests/tune/test_fitrecord.py: every
# candidate of sm_80, sm_86, sm_89 and sm_90 read from tests/fixtures/config_fit/3.6.0.json,
# which `altgrad-tune --check-configs --record tests/fixtures/config_fit` run with this venv
# writes, and a sample of it compiled again) there, and altgrad-tune's compile warm-up,
# which reads a private JIT hook (tests/tune/test_warmup.py), and the interpreter's bf16
# patch (tests/kernels/test_interpreter.py; the bf16 LSTM tests are among the kernel tests).
# numpy < 2.4: Triton 3.6's interpreter calls int() on 1-element arrays, which numpy 2.4
# refuses (3.7+ squeeze them).
# Usage: .ci/triton36-leg.sh   (from .ci/run; about 100 s on a 2-core machine, install included)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
VENV=.venv-triton36
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet torch==2.13.0 'triton==3.6.0' 'numpy<2.4' -e '.[dev]'
"$VENV/bin/python" -c "import triton, numpy; assert triton.__version__ == '3.6.0', triton.__version__; print('triton', triton.__version__, 'numpy', numpy.__version__)"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/kernels \
  tests/tune/test_fitrecord.py tests/tune/test_warmup.py
echo "triton 3.6.0 leg: $((SECONDS - start)) s"
