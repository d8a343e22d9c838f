#!/usr/bin/env bash
# CI leg: the package as a user gets it. Builds the wheel, installs it WITHOUT extras in a
# fresh venv, and from a folder outside the clone trains a tiny model from a packaged recipe
# by name, resumes it, evaluates it and generates from it. Any failure fails CI.
#   .ci/wheel-leg.sh            (from anywhere; .ci/run calls it before the tests)
# ALTGRAD_WHEEL_LEG_KEEP=1 keeps its temporary folder (printed) for a look afterwards.
set -euo pipefail
clone="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
if [ "${ALTGRAD_WHEEL_LEG_KEEP:-0}" != 1 ]; then trap 'rm -rf "$tmp"' EXIT; fi
start=$SECONDS
step() { echo "wheel leg [$((SECONDS - start))s]: $*"; }

step "building the wheel"
# from the files git would commit (no stale build/ output of earlier builds can slip in)
mkdir "$tmp/src"
git -C "$clone" ls-files -z --cached --others --exclude-standard \
  | (cd "$clone" && tar --null -T - -cf -) | tar -xf - -C "$tmp/src"
python3 -m pip wheel --no-deps --quiet -w "$tmp/dist" "$tmp/src" >"$tmp/build.log" 2>&1 \
  || { cat "$tmp/build.log" >&2; exit 1; }
wheel=$(ls "$tmp"/dist/*.whl)
recipes=$(python3 -m zipfile -l "$wheel" | grep -c 'altgrad_triton/recipes/.*\.toml' || true)
[ "$recipes" -gt 0 ] || { echo "wheel leg: no recipe in $wheel" >&2; exit 1; }

step "installing $(basename "$wheel") ($recipes recipes) without extras in a fresh venv"
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --no-compile torch==2.13.0 "$wheel"  # no extras; --no-compile: bytecode on first import
export PATH="$tmp/venv/bin:$PATH"

mkdir "$tmp/work" && cd "$tmp/work"  # outside the clone: no recipes/ here
altgrad-train --version
altgrad-recipes ls | grep -q '^wt2-small/alt-rb5 '
tiny=(run.device=cpu run.threads=2 run.max_batches=4 run.max_eval_batches=4 run.log_every=2
  model.emb_size=16 model.hidden_size=16 synthetic.hidden=4 data.batch_size=4
  data.eval_batch_size=4 data.test_batch_size=4 bptt.length=10)

step "training a packaged recipe by name: altgrad-train wt2-small/alt-rb5"
altgrad-train wt2-small/alt-rb5 "${tiny[@]}" run.epochs=1
step "resuming it for a second (synthetic) epoch"
altgrad-train --resume runs/wt2-small-alt-rb5 run.epochs=2
grep -q '"epoch": 2, "lr": [0-9.e-]*, "mode": "synthetic"' runs/wt2-small-alt-rb5/metrics.jsonl \
  || { echo "wheel leg: the resumed epoch 2 is not in metrics.jsonl" >&2; exit 1; }

step "evaluating and generating"
printf 'the film was released in the united states .\n' >text.txt
altgrad-eval runs/wt2-small-alt-rb5 --text text.txt --json | tee eval.json
python3 -c "import json, sys; ppl = json.load(open('eval.json'))['ppl']; sys.exit(not ppl > 1)"
altgrad-generate runs/wt2-small-alt-rb5 --words 12 --seed 1 | tee generated.txt
[ -s generated.txt ] || { echo "wheel leg: altgrad-generate printed nothing" >&2; exit 1; }
step "done"
