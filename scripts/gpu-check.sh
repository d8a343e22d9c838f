#!/usr/bin/env bash
# GPU check, for a machine with one CUDA GPU and no network: install the project, print the
# device and versions, run the GPU tests, autotune the WT2 QRNN's kernels, benchmark every
# kernel family (--quick) and train the WT2 QRNN on random tokens for 60 s.
#
#   scripts/gpu-check.sh                    # logs and results in ./gpu-check-out (or $OUT)
#   OUT=/tmp/run1 SLICE_SECONDS=30 scripts/gpu-check.sh
#   scripts/gpu-check.sh --install-only     # only the install step (ALTGRAD_FORCE_SHIM=1
#                                           # exercises the no-pip fallback)
#
# Every step's output is tee'd to $OUT/<step>.log; $OUT also receives benchmarks.csv (the
# rows altgrad-bench appended), tune/winners.json and summary.txt. A failing step does not
# stop the later ones; the script exits non-zero if any step failed. Each step has a time
# limit (the step lines below); they add up to 6 minutes (20 + 100 + 60 + 100 + 80 s), so
# with the install the whole script fits a device lease of 15 minutes with room to rerun.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-./gpu-check-out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SLICE_SECONDS="${SLICE_SECONDS:-60}"
export PYTHONUNBUFFERED=1
export TRITON_INTERPRET=0 # tests/conftest.py defaults to the CPU interpreter otherwise
export ALTGRAD_TUNE_DIR="$OUT/tune" # altgrad-tune writes its winners there, training reads them

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if command -v python >/dev/null 2>&1; then PY=python; else PY=python3; fi
fi

names=()
codes=()
secs=()
PYTEST_EXTRA=()
SHIM_DIR=""
trap 'if [[ -n "$SHIM_DIR" ]]; then rm -rf "$SHIM_DIR"; fi' EXIT

record() { # record NAME CODE SECONDS
  names+=("$1")
  codes+=("$2")
  secs+=("$3")
}

step() { # step NAME LIMIT_S CMD...: run under a time limit, tee the log, record the result
  local name=$1 limit=$2
  shift 2
  local log="$OUT/$name.log" start=$SECONDS code
  echo "=== $name (limit ${limit} s): $*" | tee "$log"
  set +e
  timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$log"
  code=${PIPESTATUS[0]}
  set -e
  if [[ $code -eq 124 ]]; then
    echo "=== $name: stopped by its ${limit} s limit" | tee -a "$log"
  fi
  echo "=== $name: exit $code after $((SECONDS - start)) s" | tee -a "$log"
  record "$name" "$code" "$((SECONDS - start))"
}

make_shim() {
  # pyproject maps kernels/ to altgrad_triton.kernels (package-dir), so PYTHONPATH=. cannot
  # import the kernels: build a site dir whose altgrad_triton/ links every entry of the
  # repo's altgrad_triton/ and kernels/ as its kernels subpackage, and put it first.
  local shim entry
  shim="$(mktemp -d "${TMPDIR:-/tmp}/altgrad-site.XXXXXX")"
  SHIM_DIR="$shim"
  mkdir "$shim/altgrad_triton"
  for entry in "$ROOT"/altgrad_triton/*; do
    [[ "$(basename "$entry")" == "__pycache__" ]] && continue
    ln -s "$entry" "$shim/altgrad_triton/"
  done
  ln -s "$ROOT/kernels" "$shim/altgrad_triton/kernels"
  export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
  # The repo root must not come before the shim: its altgrad_triton/ has no kernels/.
  # PYTHONSAFEPATH (Python >= 3.11) keeps `python -m`/`-c` from prepending the cwd, and
  # pytest's pythonpath=["."] (pyproject) is overridden to nothing.
  export PYTHONSAFEPATH=1
  PYTEST_EXTRA=(-o "pythonpath=")
  echo "PYTHONPATH shim: $shim"
  "$PY" - "$shim" <<'PYEOF'
import sys

import altgrad_triton.cli.bench
import altgrad_triton.kernels as k

where = k.__file__
assert where.startswith(sys.argv[1]), f"altgrad_triton.kernels came from {where}, not the shim"
print(f"import check: altgrad_triton.kernels from {where}")
PYEOF
}

install_project() {
  if [[ "${ALTGRAD_FORCE_SHIM:-0}" != "1" ]]; then
    if PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
      "$PY" -m pip install --no-deps --no-build-isolation -e . 2>&1; then
      if "$PY" -c "import altgrad_triton.kernels, altgrad_triton.cli.bench" 2>&1; then
        echo "installed: pip install -e . (editable)"
        return 0
      fi
      echo "pip install -e . succeeded but the import failed: using a PYTHONPATH shim"
    else
      echo "pip install -e . failed (old setuptools? no pip?): using a PYTHONPATH shim"
    fi
  else
    echo "ALTGRAD_FORCE_SHIM=1: using a PYTHONPATH shim"
  fi
  make_shim
}

summary() {
  local i failed=0
  for i in "${!names[@]}"; do
    [[ ${codes[$i]} -ne 0 ]] && failed=$((failed + 1))
  done
  {
    echo
    echo "gpu-check summary ($OUT)"
    printf '%-10s %6s %8s\n' step exit seconds
    for i in "${!names[@]}"; do
      printf '%-10s %6s %8s\n' "${names[$i]}" "${codes[$i]}" "${secs[$i]}"
    done
    echo "total ${SECONDS} s; failed steps: $failed"
  } | tee "$OUT/summary.txt"
  [[ $failed -eq 0 ]]
}

# -------------------------------------------------------------------------------- steps
start=$SECONDS
set +e
install_project >"$OUT/install.log" 2>&1 # in this shell: the shim's exports must persist
code=$?
set -e
echo "=== install"
cat "$OUT/install.log"
record install "$code" "$((SECONDS - start))"
if [[ "${1:-}" == "--install-only" ]]; then
  summary
  exit $?
fi

step env 20 bash -c 'nvidia-smi -L || echo "nvidia-smi -L failed"; "$0" -c "
import sys, torch, triton
print(\"python\", sys.version.split()[0], \"torch\", torch.__version__, \"triton\", triton.__version__)
print(\"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version())
print(\"device\", torch.cuda.get_device_name() if torch.cuda.is_available() else \"none\")
"' "$PY"
step gpu-tests 100 "$PY" -m pytest -q tests/gpu -x ${PYTEST_EXTRA[@]+"${PYTEST_EXTRA[@]}"}
step tune 60 "$PY" -m altgrad_triton.cli.tune recipes/wt2.toml --quick --cache-dir "$OUT/tune"
step bench 100 "$PY" -m altgrad_triton.cli.bench --quick --csv "$OUT/benchmarks.csv" \
  --cache-dir "$OUT/tune"
step slice $((SLICE_SECONDS + 20)) "$PY" -m altgrad_triton.cli.bench \
  --train-slice "$SLICE_SECONDS" --csv "$OUT/benchmarks.csv" --cache-dir "$OUT/tune"

summary
