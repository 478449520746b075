#!/usr/bin/env bash
# A stage-3 export's t2i tail and its weight soup. The tail: 60 steps of t2i alone from the export (batch 32, lr
# 1e-4, long captions, stage 3's noise) on a t2i world of its own (600 samples, seed 5521). The soup: the average of
# the export and the tail (python -m training.average), weight W on the tail.
# Why: the mixture's other tasks pull the count twin's gap down (benchmarks/embedded_task_pull.py), and stage-3
# exports draw "two" objects as one or three. Session 56's tail of session 55's export drew 58 of 87 held-out count
# prompts right (the export 40) but cost the videos (t2v 0.802 -> 0.693). Session 57's soups at W 0.5 kept the count
# (57 and 54 of 87) and the videos' cost too (session 56's export: t2v 0.886 -> 0.770); at W 0.25 little count, most
# of the cost (benchmarks/results/2026-12-06/embedded-session57.md). It stays as a probe of what such a tail moves:
# `model.trainable=[...]` after the -- picks the weights that train.
#   bash scripts/t2i_tail.sh EXPORT OUT [-- training.run options]
# EXPORT: a stage-3 export (file or sharded folder). OUT gets world/ and cache/ (its latents, keyed by content: both
# made once and kept for the next export), run/ (the tail's training run: run/export/vino.safetensors is the tail)
# and soup.safetensors, both anew each run. On the 2-core CPU about 17 minutes.
# W=0.5, STEPS=60, SEED=5501 (the tail's draws), PER_TASK=600, BATCH=32, PY=.venv/bin/python, THREADS=2;
# training options after a -- go to training.run (after the tail's own).
set -euo pipefail
if [ $# -lt 2 ] || [ ! -e "$1" ]; then
  echo "usage: bash scripts/t2i_tail.sh EXPORT OUT [-- training.run options]; EXPORT: a stage-3 export (a" \
    ".safetensors file or a sharded folder) that exists" >&2
  exit 2
fi
export_=$1 out=$2
shift 2
[ $# -eq 0 ] || { [ "$1" = -- ] || { echo "t2i_tail: '$1': expected -- before training.run options" >&2; exit 2; }; shift; }
PY=${PY:-.venv/bin/python}
W=${W:-0.5}
# the soup's weights, "export,tail"; none for a W outside (0, 1)
if ! weights=$("$PY" -c "import sys; w = float(sys.argv[1]); 0 < w < 1 or sys.exit(1); print(f'{1 - w},{w}')" "$W" \
    2>/dev/null); then
  echo "t2i_tail: W=$W; expected the tail's weight in the soup, a number between 0 and 1 (both exclusive)" >&2
  exit 2
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${THREADS:-2}
mkdir -p "$out"
if [ ! -f "$out/world/manifest.jsonl" ]; then
  rm -rf "$out/world.partial"
  "$PY" -m training.world --out "$out/world.partial" --seed 5521 --per-task "${PER_TASK:-600}" --tasks t2i \
    --size 128 --workers "${THREADS:-2}" > /dev/null
  mv "$out/world.partial" "$out/world"
fi
batch=${BATCH:-32}
rm -rf "$out/run"
"$PY" -m training.run training/configs/embedded/stage3.toml \
  "data.manifest=[\"$out/world/manifest.jsonl\"]" "data.tasks={\"t2i\": 1}" data.long_caption=1.0 \
  data.cache="$out/cache" model.init="$export_" \
  model.qwen=training/embedded-src/qwen3vl model.vae=training/embedded-src/vae.safetensors \
  model.compile=false optim.bf16=false data.batch_size="$batch" data.image_batch_size="$batch" \
  data.prefill_workers=1 run.steps="${STEPS:-60}" run.fit_decay=false optim.warmup_steps=10 optim.lr=1e-4 \
  optim.cooldown=0.1 optim.ema=0 log.every=1 log.profile=0 eval.every=0 checkpoint.every=100000 \
  run.seed="${SEED:-5501}" run.out="$out/run" "$@"
"$PY" -m training.average "$export_" "$out/run/export/vino.safetensors" \
  --weights "$weights" --out "$out/soup.safetensors"
echo "t2i_tail: the tail $out/run/export/vino.safetensors, the soup $out/soup.safetensors (tail weight $W)"
