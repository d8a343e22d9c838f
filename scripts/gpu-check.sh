#!/usr/bin/env bash
# GPU check, for a machine with one CUDA GPU and no network: install the project, then
# measure the main job as a user runs it and every kernel family, and run the test suite.
#
#   scripts/gpu-check.sh                    # results in ./gpu-check-out (or $OUT)
#   OUT=/tmp/run1 scripts/gpu-check.sh
#   scripts/gpu-check.sh --install-only     # only the install step (ALTGRAD_FORCE_SHIM=1
#                                           # exercises the no-pip fallback)
#   TESTS_SECONDS=300 scripts/gpu-check.sh --tests   # install + env + the whole test suite
#                                           # under a longer limit (a lease's second call)
#   scripts/gpu-check.sh --kernels          # install + env + tune + the kernel families'
#                                           # benchmarks with a 160 s budget + tests/gpu
#                                           # (about 40 kernels for test_gpu_races.py:
#                                           # 17 s + 15 s of stress -> 120 s with the rest)
#
# Steps, in order (what matters most first). Each runs under a limit of twice what it is
# expected to take on a cold Triton cache, from the kernels it compiles (counted without a
# GPU: the launches recorded at the JIT's compile step, for sm_90; notes in the README):
# 0.39 s per compile on one core, 12 s to start Python, torch and the data, and 0.1 s per
# timed candidate (LSTM 0.15 s). The 0.39 s is measured, not assumed: CPU time (getrusage,
# ptxas included) of compiling the LSTM step kernels for sm_90 with Triton 3.6.0, the GPU
# machine's release, bf16 at B=20 H=1150 (wt2-lstm's training launch): median of 8 after
# the process's first (0.31-0.42 s; the first 0.62 s), on the 2-core AMD EPYC CI VM,
# 2026-12-04. There fo-pool took 0.19 s and Triton 3.9.0's LSTM 0.53 s; the GPU machine's
# own CPU has not been timed. The estimates add up to about 255 s and the limits to
# 475 s: a cold first run, install included, fits 480 s with room to spare (one device
# call with a timeout of about 490 s), and a 15-minute device lease holds it with a rerun
# of one step.
#   env        device, driver, versions                                        no compile
#   tune-*     altgrad-tune --quick for the two recipes, both run.dtype values, training,
#              validation and test launches (winners stored in $OUT/tune and applied by
#              every later step); the warm-up compiles on the cores it may use (16 on the
#              target):
#              tune-qrnn 80 kernels, 82 timings: 12 + 80 x 0.39 / 16 + 8 = 22 s -> 45
#              tune-lstm 128 kernels (96 + 32 PDL variants), 82 timings:
#                        12 + 128 x 0.39 / 16 + 12 = 27 s -> 55
#   doctor     altgrad-doctor wt2-lstm: every kernel family in fp32 and bf16 at that recipe's
#              shapes, checked against its reference and timed (pass / fallback); the first
#              check of the kernels themselves, after the tuning so that the LSTM runs its
#              stored winners; fo-pool, the synthesizers' kernels, the SG loss and the head
#              autotune their 4-10 candidates per kernel and dtype: about 110 compiles, one
#              after another: 12 + 110 x 0.39 = 55 s at most, less what is cached -> 60
#              (an estimate from the candidate counts: not measured on a GPU)
#   train-*    `altgrad-train recipes/wt2.toml` and `recipes/wt2-lstm.toml` through the real
#              CLI on wikitext-2-small (shipped: no network), 2 capped epochs each (the first
#              compiles; the second is the one reported), at the tuned winners; the fused LM
#              head's vocabulary is not tuned, so it autotunes its 8 candidates per dtype:
#              qrnn-bf16-triton 19 kernels (fo-pool 4 train + 4 eval, synthesizer 3, head 8)
#                        12 + 19 x 0.39 = 19 s -> 40
#              qrnn-fp32-triton 16 kernels (fo-pool 8, head 8): 18 s -> 40
#              lstm-bf16-triton at most 35 (LSTM 12 train + 12 eval with the plain, graph and
#                        PDL variants, synthesizer 3, head 8): 26 s -> 55
#              lstm-bf16-cudnn at most 8 (the head): 15 s -> 30
#              lstm-bf16-torch none: 12 s -> 25
#   slices     altgrad-bench --slices: one table of those runs (tokens/s, peak GPU memory,
#              does the loss fall, ratio against triton)                       no compile
#   profile    altgrad-bench --profile: torch.profiler, top kernels of one bf16 segment each
#              (the tuned kernels, cached by then)                                     -> 25
#   bench      altgrad-bench --quick over the kernel families (its own 25 s budget) -> 35
#   tests      the README's test command, `python -m pytest -q`, whole (40 s here: on a
#              GPU it compiles every kernel test's shapes and will likely need the longer
#              `--tests` call, which runs only this step); its summary is always written:
#              pytest's own, or, when a test outlived the limit and was killed, a tally of
#              what had run
# A step that fails or runs past its limit is reported in the summary, never dropped; a
# failing step does not stop the later ones; the script exits non-zero if any step failed.
#
# What comes back (few files, as a device lease returns at most 8): $OUT/gpu-check.log
# (every step's output), $OUT/report.md (the tables to paste into docs/benchmarks.md, with
# device, date and versions), $OUT/benchmarks.csv (rows to append to docs/benchmarks.csv),
# $OUT/summary.txt and $OUT/tune/winners.json. Training runs go to a scratch folder.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-./gpu-check-out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-work.XXXXXX")"
LOG="$OUT/gpu-check.log"
: >"$LOG"
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
RUNS=()
PYTEST_EXTRA=()
SHIM_DIR=""
trap 'rm -rf "$WORK"; if [[ -n "$SHIM_DIR" ]]; then rm -rf "$SHIM_DIR"; fi' EXIT

record() { # record NAME CODE SECONDS
  names+=("$1")
  codes+=("$2")
  secs+=("$3")
}

step() { # step NAME LIMIT_S CMD...: run under a time limit, append to the log, record it
  # (SIGINT at the limit, as Ctrl-C: training saves and exits; SIGKILL 10 s later)
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS code
  local out="$WORK/$name.out"
  echo "=== $name (limit ${limit} s): $*" | tee -a "$LOG"
  set +e
  timeout --signal="${STEP_SIGNAL:-INT}" --kill-after=10 "$limit" "$@" 2>&1 | tee "$out" |
    tee -a "$LOG"
  code=${PIPESTATUS[0]}
  set -e
  if [[ $code -eq 124 ]]; then
    echo "=== $name: stopped by its ${limit} s limit" | tee -a "$LOG" "$out"
  elif [[ $code -eq 137 ]]; then
    echo "=== $name: killed 10 s after its ${limit} s limit" | tee -a "$LOG" "$out"
  fi
  echo "=== $name: exit $code after $((SECONDS - start)) s" | tee -a "$LOG"
  record "$name" "$code" "$((SECONDS - start))"
}

train() { # train NAME LIMIT_S RECIPE OVERRIDES...: a capped run of the real command
  local name=$1 limit=$2 recipe=$3
  shift 3
  step "train-$name" "$limit" "$PY" -m altgrad_triton.cli.train "$recipe" \
    data.corpus=wikitext-2-small data.path= run.epochs=2 run.max_eval_batches=2 \
    run.out_dir="$WORK/runs" run.name="$name" run.log_every=1000 "$@"
  if [[ -s "$WORK/runs/$name/metrics.jsonl" ]]; then RUNS+=("$WORK/runs/$name"); fi
}

section() { # section TITLE STEP [LINES]: a step's output as a fenced block of report.md
  local out="$WORK/$2.out"
  echo "## $1"
  echo
  echo '```'
  if [[ ! -f "$out" ]]; then
    echo "(step $2 did not run)"
  elif [[ -n "${3:-}" ]]; then
    tail -n "$3" "$out"
  else
    cat "$out"
  fi
  echo '```'
  echo
}

report() { # the tables to paste into docs/benchmarks.md, with device, date and versions
  {
    echo "# gpu-check $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    section "Device and versions" env
    section "Step summary" summary
    section "altgrad-train through the CLI (capped epochs; the last one reported)" slices
    section "Where a training segment's time goes (torch.profiler)" profile
    section "Kernel benchmarks (altgrad-bench --quick)" bench
    section "Tests (the README's command; its last lines)" tests 15
    section "GPU tests (tests/gpu; its last lines)" gpu-tests 15
  } >"$OUT/report.md"
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
  ln -s "$ROOT/tests" "$shim/tests" # the tests import tests.helpers
  export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
  # The repo root must not come before the shim: its altgrad_triton/ has no kernels/.
  # PYTHONSAFEPATH (Python >= 3.11) keeps `python -m`/`-c` from prepending the cwd,
  # pytest's pythonpath=["."] (pyproject) is overridden to nothing, and its import mode is
  # append: tests/ is a package, so the default (prepend) would put the repo root, the
  # package's parent, first in sys.path.
  export PYTHONSAFEPATH=1
  PYTEST_EXTRA=(-o "pythonpath=" --import-mode=append)
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
    printf '%-22s %6s %8s\n' step exit seconds
    for i in "${!names[@]}"; do
      printf '%-22s %6s %8s\n' "${names[$i]}" "${codes[$i]}" "${secs[$i]}"
    done
    echo "total ${SECONDS} s; failed steps: $failed"
  } | tee "$OUT/summary.txt" "$WORK/summary.out" | tee -a "$LOG"
  [[ $failed -eq 0 ]]
}

# -------------------------------------------------------------------------------- steps
start=$SECONDS
set +e
install_project >"$WORK/install.out" 2>&1 # in this shell: the shim's exports must persist
code=$?
set -e
echo "=== install" | tee -a "$LOG"
tee -a "$LOG" <"$WORK/install.out"
record install "$code" "$((SECONDS - start))"
if [[ "${1:-}" == "--install-only" ]]; then
  summary
  exit $?
fi

step env 10 bash -c 'nvidia-smi -L || echo "nvidia-smi -L failed"; "$0" -c "
import sys, torch, triton
print(\"python\", sys.version.split()[0], \"torch\", torch.__version__, \"triton\", triton.__version__)
print(\"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version())
print(\"device\", torch.cuda.get_device_name() if torch.cuda.is_available() else \"none\")
"' "$PY"
finish() { # the summary, then report.md; exit non-zero if a step failed
  set +e
  summary
  local code=$?
  set -e
  report
  echo "report: $OUT/report.md"
  exit $code
}

tests_step() { # tests_step NAME LIMIT_S PYTEST_ARGS...: pytest that always ends with its summary
  # A training test traps SIGINT (it saves and resumes, as Ctrl-C does), so a timeout's
  # SIGINT would not stop pytest. Instead tests/conftest.py starts no test past
  # ALTGRAD_TEST_DEADLINE (the limit less 20 s of grace), so pytest stops by itself and
  # prints its summary; a test still running at the limit gets SIGKILL (never trapped).
  local name=$1 limit=$2
  shift 2
  ALTGRAD_TEST_DEADLINE=$(($(date +%s) + limit - 20)) STEP_SIGNAL=KILL \
    step "$name" "$limit" "$PY" -m pytest -q "$@" ${PYTEST_EXTRA[@]+"${PYTEST_EXTRA[@]}"}
  local out="$WORK/$name.out"
  if ! grep -qE '(passed|failed|skipped|deselected|error|errors|no tests ran)( .*)? in [0-9.]+s' "$out"; then
    echo "=== $name: pytest ended without its summary (killed at the limit); before that: $(pytest_tally "$out")" |
      tee -a "$LOG" "$out"
  fi
}

pytest_tally() { # pytest_tally OUT: what `pytest -q` had run, from its progress characters
  local marks
  marks=$(grep -E '^[.FEsxX]+( +\[ *[0-9]+%\])?$' "$1" | sed -E 's/ +\[.*$//' | tr -d '\n')
  printf '%d passed, %d failed, %d errors, %d skipped, %d xfailed, %d xpassed' \
    "$(tr -cd . <<<"$marks" | wc -c)" "$(tr -cd F <<<"$marks" | wc -c)" \
    "$(tr -cd E <<<"$marks" | wc -c)" "$(tr -cd s <<<"$marks" | wc -c)" \
    "$(tr -cd x <<<"$marks" | wc -c)" "$(tr -cd X <<<"$marks" | wc -c)"
}

if [[ "${1:-}" == "--tests" ]]; then
  tests_step tests "${TESTS_SECONDS:-300}"
  finish
fi
step tune-qrnn 45 "$PY" -m altgrad_triton.cli.tune recipes/wt2.toml run.dtype=bfloat16 --quick
step tune-lstm 55 "$PY" -m altgrad_triton.cli.tune recipes/wt2-lstm.toml run.dtype=bfloat16 \
  --quick
step doctor 60 "$PY" -m altgrad_triton.cli.doctor wt2-lstm --repeats 3
if [[ "${1:-}" == "--kernels" ]]; then # the kernel issues' targets: LSTM vs cuDNN, fo-pool
  step bench 180 "$PY" -m altgrad_triton.cli.bench --quick --budget 160 \
    --families lstm fo_pool sg_loss linear_ce authors_scan --csv "$OUT/benchmarks.csv"
  tests_step gpu-tests 120 tests/gpu
  finish
fi
train qrnn-bf16-triton 40 recipes/wt2.toml run.dtype=bfloat16 run.max_batches=12
train qrnn-fp32-triton 40 recipes/wt2.toml run.dtype=float32 run.max_batches=8
train lstm-bf16-triton 55 recipes/wt2-lstm.toml run.dtype=bfloat16 run.max_batches=8
train lstm-bf16-cudnn 30 recipes/wt2-lstm.toml run.dtype=bfloat16 run.max_batches=8 \
  run.backend=cudnn
train lstm-bf16-torch 25 recipes/wt2-lstm.toml run.dtype=bfloat16 run.max_batches=4 \
  run.backend=torch
if [[ ${#RUNS[@]} -gt 0 ]]; then
  step slices 15 "$PY" -m altgrad_triton.cli.bench --slices "${RUNS[@]}" \
    --csv "$OUT/benchmarks.csv"
else
  echo "=== slices: no training run finished an epoch" | tee -a "$LOG" "$WORK/slices.out"
  record slices 1 0
fi
step profile 25 "$PY" -m altgrad_triton.cli.bench --profile --slice-dtype bfloat16
step bench 35 "$PY" -m altgrad_triton.cli.bench --quick --budget 25 \
    --families lstm fo_pool sg_loss linear_ce authors_scan --csv "$OUT/benchmarks.csv"
tests_step tests 40
finish
