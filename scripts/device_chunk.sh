#!/usr/bin/env bash
# One call of the lent GPU as one whole stage-3 run. A call lasts at most 600 s and the machine goes back 30 s after
# it, often before the next call arrives: sessions 35 and 36 each lost a run spread over three calls
# (scripts/device_detached.sh) when one call found a bare machine. Here each call trains, cools and exports by
# itself, going on from training/embedded-src/stage3 as the working tree holds it: the committed seed for the first
# call, then the trunk the last call brought back (scripts/take_chunk.sh puts it there, uncommitted; a trunk carried
# beside the tracked tree would take a call over its 64 MiB). So a bare machine costs a call its set-up, not the
# session its run.
# The blocks run uncompiled (COMPILE=1 to compile): in session 37 a bare machine's uncompiled run made 740 steps in
# its 540 s, a warm machine's compiled one 500 (the compile cache served 2 of its 10 graphs).
#
#   SEED=37 CHUNK=1 bash scripts/device_chunk.sh   # on the device; carry [".whl-gpu"]
#   bash scripts/take_chunk.sh /work/.device/N runs/s37/c1   # here, before the next call
#
# SEED (one per session) and CHUNK (new each call) name the run's draws (seed SEED * 100 + CHUNK) and, on a bare
# machine, its world: there the world is made anyway (66 s in session 37; the stage's set-up after it, 93-103 s with
# its prefill, took as long on a warm machine), so each bare call trains on a world of its own. A call that finds the
# machine warm goes on with the world made there. The world is 13,200 samples (BASE_PER_TASK=3000 t2i and t2v,
# TASK_PER_TASK=800 of each task): until session 61 it was 25,500 (6,000 and 1,500), which a call drew 1.3 times
# over. Halved, a bare H100's call of CALL_SECONDS=420 SCORE=video trained 630 steps, not 340 (session 60): the world
# took 48 s (65), the prefill 47 s (75), and a step 0.40 s (0.49; the forward at step 300 took 128 ms against 196), and
# a warm machine's next call 820.
# Back in $OUT (at most 64 MiB, 8 files), in this order while they fit: call.log (this call's output), logs.tgz (the
# run's train.jsonl and config.json), trunk.safetensors (the next call's seed), and vino-ema.safetensors (the run's
# cooled EMA export, which is bundled and scored). A file over 15.75 MiB comes in parts of at most that (NAME.part-aa,
# -ab, ...: take_chunk.sh joins them). Until session 66 the parts were of at most 15 MiB: a grown model's float32
# exports (31 MiB each) took three parts each, and the call's scores found no eighth file left.
# The EMA export also stays on the machine as runs/chunks/CHUNK/vino-ema.safetensors, where the next call finds it
# while the machine is warm: the next run deletes its own, so scoring several calls' exports, or their average
# (scripts/device_score.sh's A+B), needs these copies. Session 58 could not score its two calls' average: the first
# call's export was gone from the machine, too big to carry back beside the tree, and too little time was left to
# start another machine.
# SCORE="SET ..." (scripts/device_score.sh's sets) also scores that export in the same call, once the trunk and the
# export are packed, and brings the scores back as scores.tgz (scores-SET.json, tables.txt, score.log), which
# take_chunk.sh unpacks. The scoring is stopped SCORE_END seconds after the call's start (default 585), so a slow
# score costs its own results, never the run's; leave it room with a shorter CALL_SECONDS (in session 58 the video,
# image and t2i120 sets took about 225 s on an H100, the video set alone 2.5 minutes of it). In session 59 a machine
# came at one of fifteen starts and was taken back during the next call: a call that both trains and scores needs
# no second machine. Session 60's call on a bare H100 (CALL_SECONDS=380 SCORE=video) trained 340 steps, scored the
# videos in 137 s and ended at 523 s: CALL_SECONDS=420 fits with SCORE=video.
set -uo pipefail
start=$(date +%s)
: "${SEED:?SEED: a number, one per session}" "${CHUNK:?CHUNK: the number of this call, a new one each call}"
SCORE_END=${SCORE_END:-585}
[[ $SCORE_END =~ ^[0-9]+$ ]] || { echo "SCORE_END '$SCORE_END': expected whole seconds from the call's start" >&2
                                  exit 2; }
out=${OUT:?OUT: the folder that comes back}
CALL_SECONDS=${CALL_SECONDS:-540}  # from here to the stage's end (its last evaluation and export take up to 25 s
                                   # of it); of the call's 600 s, the rest packs $OUT and leaves a margin
TRAIN=${TRAIN:-bash scripts/train_embedded.sh}
# A run of 800-1,000 steps: a 50-step warm-up (the trunk is at the full rate; Adam's moments start anew), an EMA of
# about 200 steps (0.999's 1,000 would leave 45% of the export at the call's starting weights and 15% at the cooled
# ones), and no checkpoint or evaluation before the end (the run never resumes; each took 2-15 s)
CHUNK_ARGS="log.profile=0 optim.warmup_steps=50 optim.ema=0.995 checkpoint.every=100000 eval.every=100000"
E=runs/embedded/stage3
log=$out/call.log

export PYTHONUNBUFFERED=1 PY=${PY:-python3} WORKERS=${WORKERS:-$(nproc)} VIDEO_FORMAT=npz
source "$(dirname "${BASH_SOURCE[0]}")/embedded_inputs.sh"
# shellcheck disable=SC2086  # SCORE: the sets, one word each; checked before the run rather than after it
heldout_sets SCORE ${SCORE:-} || exit 2
gpu_site .whl-gpu || exit 3

init=training/embedded-src/stage3
compile=false
[ "${COMPILE:-0}" != 1 ] || compile=true
draws=$((SEED * 100 + CHUNK)) && world=$draws
[ ! -f data/embedded/world ] || world=$(cat data/embedded/world)  # a warm machine's
mkdir -p data/embedded && echo "$world" > data/embedded/world
rm -rf "$E" runs/embedded/handoff.tar  # an earlier call's run on this machine is done (its call took what it wrote)
echo "=== $(date +%T) chunk $CHUNK of session $SEED (world $world) from $init, compiled: $compile" | tee "$log"

# BUNDLE empty: the script ends once the stage has exported
SEED=$world STAGE_UNTIL=$((start + CALL_SECONDS)) START_AT=3 INIT=$init BUNDLE= EARLY_CEILING=0 \
  BASE_PER_TASK=${BASE_PER_TASK:-3000} TASK_PER_TASK=${TASK_PER_TASK:-800} \
  STAGE3_ARGS="$CHUNK_ARGS run.seed=$draws model.compile=$compile ${STAGE3_ARGS:-}" \
  $TRAIN >> "$log" 2>&1
status=$?
echo "=== $(date +%T) the run ended with status $status" >> "$log"
if [ -f "$E/export/vino-ema.safetensors" ]; then
  mkdir -p "runs/chunks/$CHUNK" && cp "$E/export/vino-ema.safetensors" "runs/chunks/$CHUNK/"
  echo "=== kept as runs/chunks/$CHUNK/vino-ema.safetensors while the machine stays" >> "$log"
fi

shopt -s nullglob
tar czf "$out/logs.tgz" "$E"/logs/train.jsonl "$E"/config.json 2>/dev/null
kept=0  # a file and 256 KiB kept for the scores, packed last
[ -z "${SCORE:-}" ] || kept=1
room=$(( (64 << 20) - (1 << 20) - $(stat -c %s "$out/logs.tgz") - kept * (256 << 10) ))  # and a MiB for call.log
files=2  # logs.tgz, call.log
part=$(( (16 << 20) - (256 << 10) ))  # a file comes back if it is at most 16 MiB
back() {  # FILE: into $OUT while it fits, leaving the kept files, in parts of at most $part bytes
  local file=$1 size parts
  [ -f "$file" ] || { echo "no $file" >> "$log"; return; }
  size=$(stat -c %s "$file")
  parts=$(( size > part ? (size + part - 1) / part : 1 ))
  if [ "$size" -gt "$room" ] || [ $((files + parts + kept)) -gt 8 ]; then
    echo "no room left for $file ($size bytes)" >> "$log"
    return
  fi
  if [ "$parts" = 1 ]; then cp "$file" "$out/"; else split -n "$parts" "$file" "$out/$(basename "$file").part-"; fi
  room=$((room - size)) files=$((files + parts))
}
back "$E/export/trunk.safetensors"
back "$E/export/vino-ema.safetensors"
if [ -n "${SCORE:-}" ] && [ -f "runs/chunks/$CHUNK/vino-ema.safetensors" ]; then
  left=$((start + SCORE_END - $(date +%s)))
  scores=/tmp/device-chunk/scores
  rm -rf /tmp/device-chunk && mkdir -p "$scores"
  if [ "$left" -lt 10 ]; then
    echo "=== no time left to score ($left s to SCORE_END)" >> "$log"
  else
    echo "=== $(date +%T) scoring the export ($SCORE) for at most $left s" >> "$log"
    # shellcheck disable=SC2086  # SCORE: the sets, one word each
    OUT=$scores timeout "$left" ${SCORER:-bash scripts/device_score.sh} "runs/chunks/$CHUNK/vino-ema.safetensors" \
      $SCORE > "$scores/score.out" 2>&1
    scored=$?
    [ "$scored" != 124 ] || echo "=== the scoring was stopped at $SCORE_END s from the call's start" >> "$log"
    echo "=== $(date +%T) the scoring ended with status $scored" >> "$log"
    room=$((room + (256 << 10))) kept=0
    tar czf /tmp/device-chunk/scores.tgz -C "$scores" . && back /tmp/device-chunk/scores.tgz
  fi
fi
tail -c 2000 "$log"
exit "$status"
