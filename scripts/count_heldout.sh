#!/usr/bin/env bash
# How many copies a bundle draws for the 87 held-out count prompts ("two small blue squares"): the 27 of t2i120's
# world (seed 7) and the 60 of a t2i world of seed 13 (240 prompts), drawn alone on the CPU and counted by
# benchmarks/embedded_count.py into OUT/counts-t2i120.md and OUT/counts-h13.md. The prompts are each world's
# tasks_count.json, drawn by scripts/bench_embedded.sh into OUT/SET (the images and their scores.json).
# About 8 minutes on the 2-core CPU (SHARDS=2 processes of one thread each; 7-8 min in session 60).
#   bash scripts/count_heldout.sh BUNDLE OUT [-- vino_model.generate options...]
#   BASE=DIR: pair each prompt with an earlier model's images (DIR/t2i120, DIR/h13: its OUT). PY, WORKERS, SIZE=128,
#   DATA=data/embedded/heldout (the worlds: DATA-t2i120, shared with scripts/score_heldout.sh, and DATA-count13),
#   T2I_PER_TASK=120, COUNT13_PER_TASK=240
set -euo pipefail
source scripts/embedded_inputs.sh
usage="bash scripts/count_heldout.sh BUNDLE OUT [-- generate options]"
need_bundle "$usage" 2 "$@" || exit 2
[ $# -le 2 ] || [ "$3" = -- ] || { echo "usage: $usage; generate options go after --, not '$3'" >&2; exit 2; }
PY=${PY:-.venv/bin/python}
WORKERS=${WORKERS:-$(nproc)}
SIZE=${SIZE:-128}
SHARDS=${SHARDS:-2}
DATA=${DATA:-data/embedded/heldout}
bundle=$1 out=$2
shift 2
[ $# -eq 0 ] || shift  # the --: the rest goes to vino_model.generate
mkdir -p "$out"
for pair in "t2i120 $DATA-t2i120 ${T2I_PER_TASK:-120} 7" "h13 $DATA-count13 ${COUNT13_PER_TASK:-240} 13"; do
  read -r name data per_task seed <<< "$pair"
  world "$data" --per-task "$per_task" --split heldout --seed "$seed" --tasks t2i
  "$PY" benchmarks/embedded_count.py "$data" --tasks "$data/tasks_count.json" > /dev/null
  if ! SETS=count GROUND_TRUTH=0 MODEL=$bundle SHARDS=$SHARDS PY=$PY \
      bash scripts/bench_embedded.sh "$data" "$out/$name" "$@" > "$out/$name.log" 2>&1; then
    tail -n 20 "$out/$name.log" >&2
    exit 1
  fi
  base=()
  [ -z "${BASE:-}" ] || base=(--base "$BASE/$name")
  echo "== $name: $data"
  "$PY" benchmarks/embedded_count.py "$data" "$out/$name" "${base[@]}" | tee "$out/counts-$name.md"
done
