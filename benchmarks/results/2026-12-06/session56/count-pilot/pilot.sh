#!/usr/bin/env bash
# session 56 CPU pilot: session 55's count pilot's control arm ("old": t2i only, from session 55's export, the same
# world and batches) at stage 3's own noise (flow.logit_mean 0) instead of the pilot's 1.0
cd /work/main
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
.venv/bin/python -m training.run training/configs/embedded/stage3.toml \
  "data.manifest=[\"/tmp/s55c/old/manifest.jsonl\"]" "data.tasks={\"t2i\": 1}" data.long_caption=1.0 \
  data.cache=/tmp/s55c/cache-old model.init=runs/s55/c1/vino-ema.safetensors \
  model.qwen=training/embedded-src/qwen3vl model.vae=training/embedded-src/vae.safetensors \
  model.compile=false optim.bf16=false data.batch_size=32 data.image_batch_size=32 data.prefill_workers=1 \
  run.steps=60 run.fit_decay=false optim.warmup_steps=10 optim.lr=1e-4 optim.cooldown=0.1 optim.ema=0 \
  log.every=1 log.profile=0 eval.every=0 checkpoint.every=100000 run.seed=5501 flow.logit_mean=0.0 \
  run.out=/tmp/s56/run-mean0 > /tmp/s56/mean0.log 2>&1
