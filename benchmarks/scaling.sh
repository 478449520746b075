#!/usr/bin/env bash
# Issue 6 on one machine of several GPUs (the lent nvidia-h200-x4 or -x8), from the repo root, with the wheels of
# scripts/gpu_wheels.sh carried in .whl-gpu. On 1, 2, 4 and 8 GPUs (as many as the machine has):
#   1. the 13B MMDiT's sequence-parallel forward at the release's default video size, one reference image
#      (benchmarks/parallel.py; each count's output compared with one GPU's);
#   2. ZeRO-2 training steps of the 13B MMDiT: stage 0 at 384x384, 33 frames (5,184 tokens a sample), batch 1 a GPU.
#      Under 4 GPUs Adam's states live in CPU memory (optim.offload_optimizer): the 13B does not fit there without
#      (benchmarks/results/2026-11-22/training.md);
#   3. the table, runs/scaling/results/scaling.md (benchmarks/scaling_table.py).
# About 25 minutes on 8 GPUs, so run it detached: bash scripts/device_detached.sh 585 'bash benchmarks/scaling.sh'
set -uo pipefail
export PYTHONUNBUFFERED=1
results=runs/scaling/results  # outlives the calls of a detached run, whose logs.tgz brings it back
mkdir -p "$results"
[ -d /tmp/site/deepspeed ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl-gpu/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD
gpus=$(nvidia-smi -L | wc -l)
counts=()
for n in 1 2 4 8; do [ "$n" -le "$gpus" ] && counts+=("$n"); done
echo "=== $(date +%T) $gpus GPUs: counts ${counts[*]}"

for n in "${counts[@]}"; do
  [ -f "$results/sp-$n.json" ] && continue
  compare=(--reference "$results/one.pt"); [ "$n" = 1 ] && compare=(--save-output "$results/one.pt")
  echo "=== $(date +%T) forward on $n GPUs"
  timeout 600 torchrun --nproc-per-node "$n" benchmarks/parallel.py --out "$results/sp-$n.json" "${compare[@]}" \
    > "$results/sp-$n.log" 2>&1 || tail -n 5 "$results/sp-$n.log"
done

[ -f /tmp/w/manifest.jsonl ] || python3 -m training.world --out /tmp/w --per-task 6 --size 384 --frames 33 --video-format npz > /dev/null
[ -d /tmp/b/qwen3vl ] || python3 -m vino_model.tiny /tmp/b > /dev/null 2>&1
common=(model.qwen=/tmp/b/qwen3vl model.vae=/tmp/b/vae.safetensors 'data.manifest=["/tmp/w/manifest.jsonl"]' data.cache=/tmp/cache
        data.area=147456 'data.frames=[33]' 'data.tasks={"t2v": 1.0}' data.batch_size=1 eval.every=0 samples.every=0
        checkpoint.enabled=false log.every=2 log.progress=false optim.accumulation=1 optim.warmup_steps=2 run.steps=10
        model.preset=hunyuanvideo-13b 'model.mmdit={"text_dim": 64}')
for n in "${counts[@]}"; do
  [ -f "$results/train-$n.jsonl" ] && continue
  offload=false; [ "$n" -lt 4 ] && offload=true
  echo "=== $(date +%T) 13B training on $n GPUs (offload_optimizer=$offload)"
  timeout 900 torchrun --nproc-per-node "$n" -m training.run training/configs/small/stage0.toml "${common[@]}" \
    "optim.offload_optimizer=$offload" "run.out=/tmp/r/13b-$n" > "$results/train-$n.log" 2>&1 || tail -n 5 "$results/train-$n.log"
  cp "/tmp/r/13b-$n/logs/train.jsonl" "$results/train-$n.jsonl" 2>/dev/null
done

python3 benchmarks/scaling_table.py "$results" | tee "$results/scaling.md"
