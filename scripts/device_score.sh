#!/usr/bin/env bash
# A stage-3 export's held-out scores, made on the lent GPU in one call: the bundle (videos as npz: no PyAV there),
# then scripts/score_heldout.sh's sets generated in float32, which gives the 2-core CPU's scores check for check
# (session 52: 52 of 52 prompts), and only the scores and tables back in $OUT. A call returns at most 8 files, so the
# generated media stay on the machine. The video set's 144 videos took 2.5 minutes on an H100.
#   bash scripts/device_score.sh CHECKPOINT [SET ...] [-- vino_model.generate options]   # carry [".whl-gpu"]
# CHECKPOINT: an export (file or sharded folder, e.g. training/embedded-src/stage3); SETS as score_heldout.sh's
# (default: video image t2i120). Back in $OUT: scores-SET.json for each set (at most 6), tables.txt and score.log.
# WORK=/tmp/device-score (the bundle and the outputs), SHARDS=6, PY=python3, WHEELS=.whl-gpu (installed into
# /tmp/site once a machine); score_heldout.sh's DATA, SIZE, PER_TASK and T2I_PER_TASK pass through.
set -euo pipefail
if [ $# -lt 1 ] || [ ! -e "$1" ]; then
  echo "usage: bash scripts/device_score.sh CHECKPOINT [SET ...] [-- generate options]; CHECKPOINT: a stage-3" \
    "export (a .safetensors file or a sharded folder) that exists" >&2
  exit 2
fi
out=${OUT:?OUT: the folder that comes back}
checkpoint=$1
shift
sets=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do sets+=("$1"); shift; done
[ ${#sets[@]} -gt 0 ] || sets=(video image t2i120)
if [ ${#sets[@]} -gt 6 ]; then
  echo "at most 6 sets a call: a call returns 8 files, two of them tables.txt and score.log" >&2
  exit 2
fi
[ $# -eq 0 ] || shift  # the --: the rest goes to vino_model.generate
work=${WORK:-/tmp/device-score}
wheels=${WHEELS:-.whl-gpu}
export PY=${PY:-python3} SHARDS=${SHARDS:-6} PYTHONUNBUFFERED=1
source scripts/embedded_inputs.sh
gpu_site "$wheels" || exit 3

log=$out/score.log
rm -rf "$work/bundle" "$work/scores" && mkdir -p "$work"
"$PY" -m training.bundle --checkpoint "$checkpoint" --qwen training/embedded-src/qwen3vl \
  --vae training/embedded-src/vae.safetensors --out "$work/bundle" --video-format npz > "$log" 2>&1
status=0
bash scripts/score_heldout.sh "$work/bundle" "$work/scores" "${sets[@]}" -- --dtype float32 "$@" >> "$log" 2>&1 \
  || status=$?
for set in "${sets[@]}"; do
  [ ! -f "$work/scores/scores-$set.json" ] || cp "$work/scores/scores-$set.json" "$out/"
  [ ! -f "$work/scores/$set/table.txt" ] || { echo "== $set"; cat "$work/scores/$set/table.txt"; } >> "$out/tables.txt"
done
tail -n 40 "$log"
exit "$status"
