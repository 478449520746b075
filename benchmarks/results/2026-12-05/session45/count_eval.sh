#!/usr/bin/env bash
# Session 45: BUNDLE NAME [h13] -> the count tallies (count_found.py) of the bundle's outputs for the count prompts of
# a train-split t2i world (seed 11, 150 prompts, made before ae1279a: two or three copies; 27), of the held-out
# t2i120 world (27) and, with h13, of a held-out t2i world of seed 13 (300 prompts; 72). Those worlds and their
# tasks_count.json are made as the write-up says.
cd /work/main
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
sets=("/tmp/s45/train-t2i /tmp/s45/train-t2i/tasks_count.json train" "data/embedded/heldout-t2i120 /tmp/s45/heldout-count.json held")
[ "${3:-}" != h13 ] || sets+=("/tmp/s45/h13 /tmp/s45/h13/tasks_count.json h13")
for set in "${sets[@]}"; do
  read -r data tasks name <<< "$set"
  .venv/bin/python -m vino_model.generate --model "$1" --tasks "$tasks" --out "/tmp/s45/ev-$2-$name" \
    >> "/tmp/s45/ev-$2.log" 2>&1
  echo "== $2 $name"
  .venv/bin/python benchmarks/results/2026-12-05/session45/count_found.py "$data" "/tmp/s45/ev-$2-$name" | tail -1
done
