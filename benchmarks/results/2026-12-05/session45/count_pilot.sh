#!/usr/bin/env bash
# Session 45's CPU pilot: t2i count scenes only, stage 3 from the committed seed, each arm on its own world's count
# scenes (train split, seed 21, 700 t2i samples at 128): "old" made by aca1605's training.world (two or three
# copies, twins two <-> three), "new" by ae1279a's (two to four copies, twins COUNT_TWINS).
#   bash count_pilot.sh ARM STEPS   (session 45: 100 steps, then 300; the two 300-step arms side by side, each with
#   OMP_NUM_THREADS=1; the count twin rows are 6, the single 3, as rows says; the 100-step arms wrote to pilot-ARM)
cd /work/main
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
arm=$1
rows='{"binding": 0, "places": 0, "sizes": 0, "count": 6, "single": 3, "backdrop": 0, "motion": 0}'
.venv/bin/python -m training.run training/configs/embedded/stage3.toml \
  "data.manifest=[\"/tmp/s45/pw-$arm/count.jsonl\"]" 'data.tasks={"t2i": 1}' \
  data.cache=/tmp/s45/pcache-$arm model.init=training/embedded-src/stage3 \
  model.qwen=training/embedded-src/qwen3vl model.vae=training/embedded-src/vae.safetensors \
  model.compile=false optim.bf16=false data.batch_size=16 data.image_batch_size=16 data.prefill_workers=1 \
  run.steps=${2:-100} run.fit_decay=false optim.warmup_steps=10 optim.lr=1e-4 optim.cooldown=0.1 optim.ema=0 \
  log.every=1 log.profile=0 eval.every=0 checkpoint.every=100000 run.seed=4501 \
  "flow.contrast_samples=$rows" run.out=/tmp/s45/pilot${2:-100}-$arm
