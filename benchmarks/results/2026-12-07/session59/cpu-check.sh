#!/usr/bin/env bash
# Session 59's check of device_chunk.sh's SCORE on this CPU, as it ran. No stage ran: a stand-in TRAIN put
# session 58 call 1's trunk and export where a run leaves them. The real device_score.sh then scored the image set,
# and take_chunk.sh took the call's files in, in a worktree of the repository (/tmp/s59wt).
set -euo pipefail
cat > fake_train.sh <<'TRAIN'
mkdir -p runs/embedded/stage3/export runs/embedded/stage3/logs
cp /work/main/runs/s58/c1/trunk.safetensors /work/main/runs/s58/c1/vino-ema.safetensors runs/embedded/stage3/export/
echo '{"step": 0}' > runs/embedded/stage3/logs/train.jsonl
TRAIN
OUT=/tmp/s59wt/out PY=/work/main/.venv/bin/python SHARDS=2 TRAIN="bash fake_train.sh" SEED=59 CHUNK=1 SCORE=image \
  SCORE_END=1500 bash scripts/device_chunk.sh  # 9 min 44 s
PY=/work/main/.venv/bin/python bash scripts/take_chunk.sh /tmp/s59wt/out runs/s59/check
/work/main/.venv/bin/python benchmarks/paired_scores.py \
  /work/main/benchmarks/results/2026-12-07/session58/c1/scores-image.json runs/s59/check/scores/scores-image.json
