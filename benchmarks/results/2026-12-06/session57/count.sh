#!/usr/bin/env bash
# session 57 CPU: a checkpoint's count prompts (t2i120's 27, heldout13's 60), bundled, generated and counted
# usage: count.sh CHECKPOINT NAME [BASE_OUTPUTS_PREFIX ...]
set -e
cd /work/main
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
P=.venv/bin/python
ck=$1 n=$2; shift 2
$P -m training.bundle --checkpoint $ck --qwen training/embedded-src/qwen3vl \
  --vae training/embedded-src/vae.safetensors --out /tmp/s57/b-$n --video-format npz > /tmp/s57/bundle-$n.log 2>&1
for set in t2i120 h13; do
  for k in 0 1; do
    $P -m vino_model.generate --model /tmp/s57/b-$n --tasks /tmp/s55c/count-$set.json --out /tmp/s57/out-$n-$set \
      --shard $k/2 > /tmp/s57/gen-$n-$set-$k.log 2>&1 &
  done
  wait
done
for pair in "t2i120 data/embedded/heldout-t2i120" "h13 /tmp/s55c/heldout13"; do
  set -- $pair
  echo "== $n, $1"
  $P benchmarks/embedded_count.py $2 /tmp/s57/out-$n-$1 | tail -1
done
