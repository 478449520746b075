#!/usr/bin/env bash
# Stage-3 exports' held-out scores, made on the lent GPU in one call: each export's bundle (videos as npz: no PyAV
# there), then scripts/score_heldout.sh's sets generated in float32, which gives the 2-core CPU's scores check for
# check (session 52: 52 of 52 prompts), and only the scores and tables back in $OUT. A call returns at most 8 files,
# so the generated media stay on the machine. The video set's 144 videos took 2.5 minutes on an H100.
#   bash scripts/device_score.sh CHECKPOINT [CHECKPOINT ...] [SET ...] [-- vino_model.generate options]
#   # carry [".whl-gpu"]
# CHECKPOINT: an export (file or sharded folder, e.g. training/embedded-src/stage3), or exports joined by "+", whose
# average (python -m training.average, equal weights) is made on the machine: a call carries at most 64 MiB, room
# for one export in the seed's place, but a warm machine still holds the last run's (session 54 scored
# runs/embedded/stage3/export/vino-ema.safetensors and its average with the seed in one call of 297 s).
# SETS as score_heldout.sh's (default: video image t2i120). Back in $OUT: for one CHECKPOINT, scores-SET.json for
# each set, tables.txt and score.log; for several, the same in $OUT/1, $OUT/2, ... (in the order given), score.log
# in $OUT. WORK=/tmp/device-score (the bundles and the outputs), SHARDS=6, PY=python3, WHEELS=.whl-gpu (installed
# into /tmp/site once a machine); score_heldout.sh's DATA, HELDOUT_SEED, SIZE, PER_TASK and T2I_PER_TASK pass through.
set -euo pipefail
source scripts/embedded_inputs.sh
usage="usage: bash scripts/device_score.sh CHECKPOINT [CHECKPOINT ...] [SET ...] [-- generate options]"
checkpoints=()
while [ $# -gt 0 ] && [ "$1" != -- ] && ! is_heldout_set "$1"; do
  IFS=+ read -ra parts <<< "$1"
  for part in "${parts[@]}"; do
    if [ -z "$part" ] || [ ! -e "$part" ]; then
      echo "$usage; CHECKPOINT '$1': '$part' is not a stage-3 export (a .safetensors file or a sharded folder) that" \
        "exists, nor a set ($HELDOUT_SETS)" >&2
      exit 2
    fi
  done
  checkpoints+=("$1")
  shift
done
[ ${#checkpoints[@]} -gt 0 ] || { echo "$usage; CHECKPOINT: a stage-3 export (a .safetensors file or a sharded" \
  "folder) that exists" >&2; exit 2; }
out=${OUT:?OUT: the folder that comes back}
sets=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do sets+=("$1"); shift; done
[ ${#sets[@]} -gt 0 ] || sets=(video image t2i120)
files=$(( ${#checkpoints[@]} * (${#sets[@]} + 1) + 1 ))  # each checkpoint's scores and tables, and one log
if [ "$files" -gt 8 ]; then
  echo "${#checkpoints[@]} checkpoint(s) of ${#sets[@]} set(s) make $files files; a call returns at most 8 (each" \
    "checkpoint's scores-SET.json and tables.txt, and score.log)" >&2
  exit 2
fi
[ $# -eq 0 ] || shift  # the --: the rest goes to vino_model.generate
work=${WORK:-/tmp/device-score}
wheels=${WHEELS:-.whl-gpu}
export PY=${PY:-python3} SHARDS=${SHARDS:-6} PYTHONUNBUFFERED=1
gpu_site "$wheels" || exit 3

log=$out/score.log
: > "$log"
status=0
for n in "${!checkpoints[@]}"; do
  spec=${checkpoints[$n]}
  dest=$out
  [ ${#checkpoints[@]} = 1 ] || dest=$out/$((n + 1))
  mine=$work/$((n + 1))
  rm -rf "$mine" && mkdir -p "$mine" "$dest"
  echo "=== $((n + 1)): $spec" >> "$log"
  checkpoint=$spec
  if [[ $spec == *+* ]]; then
    IFS=+ read -ra parts <<< "$spec"
    checkpoint=$mine/average.safetensors
    "$PY" -m training.average "${parts[@]}" --out "$checkpoint" >> "$log" 2>&1 || { status=1; continue; }
  fi
  "$PY" -m training.bundle --checkpoint "$checkpoint" --qwen training/embedded-src/qwen3vl \
    --vae training/embedded-src/vae.safetensors --out "$mine/bundle" --video-format npz >> "$log" 2>&1 \
    || { status=1; continue; }
  bash scripts/score_heldout.sh "$mine/bundle" "$mine/scores" "${sets[@]}" -- --dtype float32 "$@" >> "$log" 2>&1 \
    || status=1
  for set in "${sets[@]}"; do
    [ ! -f "$mine/scores/scores-$set.json" ] || cp "$mine/scores/scores-$set.json" "$dest/"
    table=$mine/scores/$set/table.txt
    [ ! -f "$table" ] || { echo "== $set"; cat "$table"; } >> "$dest/tables.txt"
  done
done
tail -n 40 "$log"
exit "$status"
