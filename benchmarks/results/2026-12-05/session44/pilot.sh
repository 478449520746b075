#!/usr/bin/env bash
# session 44 CPU pilot: clone-only stage 3 from the committed seed, t drawn high (logit_mean 1.5), with and without
# the motion twin gated at t >= 0.95
cd /work/main
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
common=(training/configs/embedded/stage3.toml
  "data.manifest=[\"/tmp/pilot/clone/manifest.jsonl\"]" "data.tasks={\"clone\": 1}"
  data.cache=/tmp/pilot/cache model.init=training/embedded-src/stage3
  model.qwen=training/embedded-src/qwen3vl model.vae=training/embedded-src/vae.safetensors
  model.compile=false optim.bf16=false data.batch_size=6 data.prefill_workers=1
  run.steps=60 run.fit_decay=false optim.warmup_steps=10 optim.lr=1e-4 optim.cooldown=0.1 optim.ema=0
  log.every=1 log.profile=0 eval.every=0 checkpoint.every=100000 run.seed=4301 flow.logit_mean=1.5)
rows='{"binding": 0, "places": 0, "sizes": 0, "count": 0, "single": 0, "backdrop": 0, "motion": 2}'
floors='{"binding": 0, "places": 0, "sizes": 0, "count": 0, "single": 0, "backdrop": 0, "motion": 0.95}'
.venv/bin/python -m training.run "${common[@]}" run.out=/tmp/s44/high-plain flow.contrast=0 > /tmp/s44/high-plain.log 2>&1
.venv/bin/python -m training.run "${common[@]}" run.out=/tmp/s44/high-twin "flow.contrast_samples=$rows" \
  "flow.contrast_min_t=$floors" > /tmp/s44/high-twin.log 2>&1
