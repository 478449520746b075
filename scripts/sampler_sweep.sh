#!/usr/bin/env bash
# Sampler settings against a bundle's defaults, on a tuning world: held-out prompts (pairs the model never trained
# on) from a seed of their own, so a setting is chosen without looking at the write-ups' held-out sets (seed 0 and
# 7, scripts/score_heldout.sh), which then confirm it. Each VARIANT is a name and vino_model.generate options; each
# generates every task file, is scored by training.bench into OUT/NAME/scores.json and paired with the first
# variant (benchmarks/paired_scores.py) into OUT/NAME/paired.md. Made for the lent GPU (four generating processes
# share it), it runs on a CPU too.
#   bash scripts/sampler_sweep.sh BUNDLE OUT "base:" "steps50:--steps 50" "cfg6:--cfg 6" ...
#   PY, WORKERS, DATA=data/embedded/tune, SEED=3, PER_TASK=24, TASKS=(all nine), SIZE=128, SHARDS=4;
#   UNTIL=EPOCH: start no variant after it (the ones done are kept)
set -euo pipefail
source scripts/embedded_inputs.sh
need_bundle "bash scripts/sampler_sweep.sh BUNDLE OUT NAME:OPTIONS NAME:OPTIONS... (the others paired with the \
first)" 3 "$@" || exit 2
PY=${PY:-.venv/bin/python}
WORKERS=${WORKERS:-$(nproc)}
DATA=${DATA:-data/embedded/tune}
SIZE=${SIZE:-128}
export VIDEO_FORMAT=${VIDEO_FORMAT:-npz} SHARDS=${SHARDS:-4} GROUND_TRUTH=0 MODEL=$1 PY
out=$2
shift 2
for variant in "$@"; do
  case $variant in
    *:*) ;;
    *) echo "variant '$variant': expected NAME:OPTIONS (OPTIONS may be empty)" >&2; exit 2 ;;
  esac
done

world "$DATA" --per-task "${PER_TASK:-24}" --split heldout --seed "${SEED:-3}" ${TASKS:+--tasks "$TASKS"}
sets=()
for set in image video; do [ ! -f "$DATA/tasks_$set.json" ] || sets+=("$set"); done

mkdir -p "$out"
first=
for variant in "$@"; do
  name=${variant%%:*} options=${variant#*:}
  if [ -n "${UNTIL:-}" ] && [ "$(date +%s)" -ge "$UNTIL" ]; then
    echo "=== $(date +%T) out of time: $name and the variants after it not run"
    break
  fi
  echo "=== $(date +%T) $name: ${options:-the defaults of the bundle}"
  read -ra opts <<< "$options"
  if ! SETS="${sets[*]}" bash scripts/bench_embedded.sh "$DATA" "$out/$name" "${opts[@]}" > "$out/$name.log" 2>&1; then
    tail -n 20 "$out/$name.log" >&2
    exit 1
  fi
  cat "$out/$name/table.txt"
  if [ -z "$first" ]; then
    first=$name
  else
    "$PY" benchmarks/paired_scores.py "$out/$first/scores.json" "$out/$name/scores.json" | tee "$out/$name/paired.md"
  fi
done
