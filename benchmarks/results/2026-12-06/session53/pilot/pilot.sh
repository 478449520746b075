#!/usr/bin/env bash
# session 53 CPU pilot: ti2v-only stage 3 from the committed seed, t drawn high (logit_mean 1.5), with and without
# the "order" twin (the two images reversed)
# /tmp/seed0: the committed seed (training/embedded-src/stage3 at HEAD); /tmp/s53/ti2v: python -m training.world
# --out /tmp/s53/ti2v --seed 5311 --per-task 400 --size 128 --tasks ti2v --video-format npz
cd /work/main
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
common=(training/configs/embedded/stage3.toml
  "data.manifest=[\"/tmp/s53/ti2v/manifest.jsonl\"]" "data.tasks={\"ti2v\": 1}"
  data.cache=/tmp/s53/cache model.init=/tmp/seed0
  model.qwen=training/embedded-src/qwen3vl model.vae=training/embedded-src/vae.safetensors
  model.compile=false optim.bf16=false data.batch_size=6 data.prefill_workers=1
  run.steps=60 run.fit_decay=false optim.warmup_steps=10 optim.lr=1e-4 optim.cooldown=0.1 optim.ema=0
  log.every=1 log.profile=0 eval.every=0 checkpoint.every=100000 run.seed=5301 flow.logit_mean=1.5)
rows='{"binding": 0, "places": 0, "sizes": 0, "count": 0, "single": 0, "backdrop": 0, "new_shape": 0, "new_color": 0, "labels": 0, "order": 2, "motion": 0}'
.venv/bin/python -m training.run "${common[@]}" run.out=/tmp/s53/order "flow.contrast_samples=$rows" > /tmp/s53/order.log 2>&1
.venv/bin/python -m training.run "${common[@]}" run.out=/tmp/s53/plain flow.contrast=0 > /tmp/s53/plain.log 2>&1
