#!/usr/bin/env bash
# count prompts of a train-split world (seed 11), session 42's bundle, one sampler setting each
cd /work/main
export OMP_NUM_THREADS=2
for spec in "shift6:--shift 6" "cfg6:--cfg 6" "shift1.5:--shift 1.5" "cfg2.5:--cfg 2.5" "steps50:--steps 50"; do
  name=${spec%%:*}; args=${spec#*:}
  .venv/bin/python -m vino_model.generate --model output/b42 --tasks /tmp/s45/train-t2i/tasks_count.json \
    --out /tmp/s45/count-$name $args > /tmp/s45/gen-$name.log 2>&1
  echo "== $name"; .venv/bin/python benchmarks/results/2026-12-05/session45/count_found.py /tmp/s45/train-t2i /tmp/s45/count-$name | tail -1
done
