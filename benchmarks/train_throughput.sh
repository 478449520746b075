#!/usr/bin/env bash
# Training throughput on a lent 2-GPU machine (run from the repo root, wheels carried in .whl-train):
# the mid-size MMDiT (12 heads x 128, 8 double + 16 single blocks, about 1.3B) in stage 0 on one GPU and
# on two (ZeRO-2 across ranks), then ZeRO-2 steps of the real 13B MMDiT on two GPUs. Procedural data at
# 384x384, 33 frames (5,184 tokens a sample); the tiny Qwen3-VL and VAE (throughput is the MMDiT's).
set -uo pipefail
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl-train/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
python3 -m training.world --out /tmp/w --per-task 6 --size 384 --frames 33 > /dev/null && python3 -m vino_model.tiny /tmp/b > /dev/null 2>&1 || exit 1
mid='{"num_heads": 12, "num_double_blocks": 8, "num_single_blocks": 16, "text_dim": 64}'
big='{"text_dim": 64}'
common=(model.qwen=/tmp/b/qwen3vl model.vae=/tmp/b/vae.safetensors 'data.manifest=["/tmp/w/manifest.jsonl"]' data.cache=/tmp/cache
        data.area=147456 'data.frames=[33]' 'data.tasks={"t2v": 1.0}' data.batch_size=1 eval.every=1000000 samples.every=1000000
        checkpoint.every=1000000 log.every=5 log.progress=false optim.accumulation=1 optim.warmup_steps=5)
run() {  # name, timeout, command...
  local name=$1 limit=$2; shift 2
  echo "=== $name"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; echo "rc=$?"
  grep -E "Error|error:|OutOfMemory|Traceback" "$OUT/$name.log" | head -5
  tail -n 2 "/tmp/r/$name/logs/train.jsonl" 2>/dev/null
}
run mid-1gpu 240 python3 -m training.run training/configs/small/stage0.toml "${common[@]}" "model.mmdit=$mid" run.out=/tmp/r/mid-1gpu run.steps=40
run mid-2gpu 240 torchrun --nproc_per_node 2 -m training.run training/configs/small/stage0.toml "${common[@]}" "model.mmdit=$mid" run.out=/tmp/r/mid-2gpu run.steps=40
nvidia-smi --query-gpu=name,memory.total --format=csv
run 13b-2gpu 300 torchrun --nproc_per_node 2 -m training.run training/configs/small/stage0.toml "${common[@]}" "model.mmdit=$big" model.preset=hunyuanvideo-13b run.out=/tmp/r/13b-2gpu run.steps=6 log.every=1
for n in mid-1gpu mid-2gpu 13b-2gpu; do cp "/tmp/r/$n/logs/train.jsonl" "$OUT/$n.jsonl" 2>/dev/null; done
