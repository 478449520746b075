#!/usr/bin/env bash
# The embedded default: the procedural world, the tiny Qwen3-VL's language, the tiny VAE,
# VINO stages 0-3, the bundle (vino_model/embedded/) and its benchmark on held-out prompts, on one GPU. The
# language model and the VAE, its decoder tuned, start from training/embedded-src/ (FROM_SCRATCH=1 trains them
# too, the decoder beside the stages: sharing the GPU slowed stage 1 ninefold). Every step skips what is already
# done, so a stopped run picks up where it was (a stage resumes from its last checkpoint). UNTIL=epoch-seconds
# (or LIMIT=seconds) bounds the decoder and the stages: a stage still running then is stopped, and the script
# exits 75 ("run again to go on"). STAGE_UNTIL=epoch-seconds instead ends each stage on its own by then (its
# run.seconds): it exports and hands off, so a machine's last seconds go to the stage, not to a killed one.
#
#   bash scripts/train_embedded.sh            # PY=python3 WORKERS=16 ... to change the defaults below
set -euo pipefail
PY=${PY:-.venv/bin/python}
WORKERS=${WORKERS:-$(nproc)}
SIZE=${SIZE:-128}                      # the world's frame side (training/configs/embedded/ are set for 128)
BASE_PER_TASK=${BASE_PER_TASK:-4000}   # t2i and t2v samples for stages 0-2
TASK_PER_TASK=${TASK_PER_TASK:-800}    # samples of each of the nine task kinds for stage 3
HELDOUT_PER_TASK=${HELDOUT_PER_TASK:-24}
LM_STEPS=${LM_STEPS:-1500}
VAE_STEPS=${VAE_STEPS:-8000}
VAE_INIT=${VAE_INIT:-}                # a VAE file to go on from instead of starting from scratch
VAE_POOL=${VAE_POOL:-4000}            # world samples rendered for the VAE
VAE_BATCH=${VAE_BATCH:-8}             # clips per VAE video step (4x as many stills)
DECODER_STEPS=${DECODER_STEPS:-8000}  # then the decoder alone, beside the stages (the encoder stays fixed)
SEED=${SEED:-0}                        # the worlds' and the stages' random streams (run.seed): stage 3 goes on over
                                       # several machines, and each with its own SEED sees new samples and draws
                                       # (sessions 15-17 all ran seed 0: the same 51,000 samples in the same order)
STAGE_ARGS=${STAGE_ARGS:-}             # key=value overrides for every stage (run.steps=2 for a smoke run);
                                       # STAGE0_ARGS .. STAGE3_ARGS for one stage
LAST_STAGE=${LAST_STAGE:-3}            # stop after this stage (and the decoder): the rest can run on another machine
HANDOFF=runs/embedded/handoff.tar      # after each stage, the one export the next step reads: all a fresh machine
                                       # needs (with RESUME) to go on from there
RESUME=${RESUME:-}                     # a handoff.tar from an earlier machine: its export goes in first
START_AT=${START_AT:-0}                # the first stage to run: the ones before it were done on earlier machines, and
INIT=${INIT:-}                         # stage START_AT starts from INIT, an earlier export (a file, or a sharded folder:
                                       # training/embedded-src/). The long stage grows this way over several machines
STAGE_BENCH=${STAGE_BENCH:-}           # stages (1 or 2, space-separated) whose EMA export also runs the benchmark's t2i
                                       # and t2v prompts (output/embedded-bench-stageN/): does a later stage lose them?
FILL_SHARDS=${FILL_SHARDS:-4}          # processes that fill stage 3's cache of the task media (half as many for the base)
BUNDLE=${BUNDLE-vino_model/embedded}   # empty: end once the stages have exported (no bundle, no benchmark)
EARLY_CEILING=${EARLY_CEILING:-1}      # 0: skip the early check of the VAE's ceiling (about 120 s, longer than a
                                       # halved world's render): for a short run from the committed VAE, already scored
SRC=models/embedded-src

step() { echo "=== $(date +%T) $*"; }

# The export of stage N that the next step reads (training/configs/embedded/): stage 1 starts from stage 0's EMA
# weights, stages 2 and 3 from the plain weights of the stage before, the bundle from stage 3's EMA weights.
NEXT_READS=(vino-ema vino vino vino-ema)
handoff() {  # STAGE: write $HANDOFF from the stage's export
  tar cf "$HANDOFF.partial" "runs/embedded/stage$1/export/${NEXT_READS[$1]}.safetensors"
  mv "$HANDOFF.partial" "$HANDOFF"
}
bundle_and_bench() {  # STAGE BUNDLE DATA OUT [training.world args]: the stage's EMA export as a bundle (with the tuned
                      # decoder), then the benchmark of it on DATA, a held-out world split made first if missing
  local stage=$1 bundle=$2 data=$3 out=$4
  shift 4
  "$PY" -m training.bundle --checkpoint "runs/embedded/stage$stage/export/vino-ema.safetensors" --qwen "$SRC/qwen3vl" \
    --vae "$SRC/vae-decoder.safetensors" --out "$bundle" --video-format "${VIDEO_FORMAT:-mp4}"
  world "$data" --per-task "$HELDOUT_PER_TASK" --split heldout --seed 0 "$@"
  MODEL="$bundle" bash scripts/bench_embedded.sh "$data" "$out"
}
if [ -n "$RESUME" ]; then
  step "resume from $RESUME"
  tar --skip-old-files -xf "$RESUME"  # files already here (a later state) stay
fi

source scripts/embedded_inputs.sh
seed_parts  # the committed language model and VAE, unless FROM_SCRATCH=1

early_ceiling() {  # the VAE's round-trip ceiling on held-out renders: the encoder must keep colours and layout
  "$PY" -m training.autoencoder --score "$SRC/vae.safetensors" --size "$SIZE" --require "${VAE_EARLY_CEILING:=0.25}"
}
ceiling_pid=
# a VAE made before (the committed one): checked beside the world, not after it
if [ "$EARLY_CEILING" != 0 ] && [ -f "$SRC/vae.safetensors" ]; then
  early_ceiling > "$SRC/vae-early-ceiling.log" 2>&1 &  # it (123 s in session 27, the world 126 s)
  ceiling_pid=$!
fi
step "world (train split) and the tiny VLM's language, the VAE, in parallel"
world data/embedded/base --per-task "$BASE_PER_TASK" --tasks t2i,t2v --seed $((2 * SEED)) &
world_base=$!
world data/embedded/tasks --per-task "$TASK_PER_TASK" --seed $((2 * SEED + 1)) &
world_tasks=$!
world data/embedded/eval --per-task 4 --split heldout --seed 1000  # stage 3's evaluation set, whatever SEED
[ -d "$SRC/qwen3vl" ] || "$PY" -m training.language --out "$SRC/qwen3vl" --steps "$LM_STEPS"
vae_args=(--size "$SIZE" --batch-size "$VAE_BATCH" --pool "$VAE_POOL" --workers "$WORKERS")
[ -f "$SRC/vae.safetensors" ] || "$PY" -m training.autoencoder --out "$SRC/vae.safetensors" --steps "$VAE_STEPS" "${vae_args[@]}" \
  ${VAE_INIT:+--init "$VAE_INIT" --lr 5e-4}
wait "$world_base" "$world_tasks"

done_up_to=-1  # the last stage with an export: earlier ones are done even when their files were not kept
for stage in 0 1 2 3; do
  [ -f "runs/embedded/stage$stage/export/${NEXT_READS[$stage]}.safetensors" ] && done_up_to=$stage
done
[ "$done_up_to" -ge $((START_AT - 1)) ] || done_up_to=$((START_AT - 1))
cache_pids=()
fill() {  # MANIFEST LOG SHARDS: its media, as stage 3 reads them, into the latent cache, in the background, by SHARDS
  # processes (reading the media bounded one: 245 a second in session 22, the GPU often idle)
  local shard
  for shard in $(seq 0 $(($3 - 1))); do
    # shellcheck disable=SC2086
    timeout "$(left)" "$PY" -m training.cache training/configs/embedded/stage3.toml "run.seed=$SEED" $STAGE_ARGS \
      ${STAGE3_ARGS:-} "data.manifest=[\"$1\"]" --shard "$shard/$3" > "$2.$shard" 2>&1 &
    cache_pids+=($!)
  done
}
if [ "$LAST_STAGE" = 3 ] && [ "$done_up_to" -lt 3 ]; then  # stage 3's task media go into the cache meanwhile,
  fill data/embedded/tasks/manifest.jsonl "$SRC/stage3-cache.log" "$FILL_SHARDS"  # from here on
  # when stage 3 is next it also reads the base media (stages 0-2 would have cached them): a second fill beside,
  # of half as many media
  [ "$done_up_to" -lt 2 ] || fill data/embedded/base/manifest.jsonl "$SRC/stage3-base-cache.log" \
    $(((FILL_SHARDS + 1) / 2))
fi
step "the VAE's round-trip ceiling on held-out renders (VAE_EARLY_CEILING=${VAE_EARLY_CEILING:=0.25})"
status=0
if [ "$EARLY_CEILING" = 0 ]; then
  step "skipped (EARLY_CEILING=0)"
elif [ -n "$ceiling_pid" ]; then
  wait "$ceiling_pid" || status=$?
  cat "$SRC/vae-early-ceiling.log"
else
  early_ceiling || status=$?
fi
if [ "$status" != 0 ]; then
  [ "${#cache_pids[@]}" = 0 ] || kill "${cache_pids[@]}" 2>/dev/null
  exit 1
fi

# The stages train on this encoder's latents; the decoder goes on sharpening beside them on the same GPU
# (the bundle pairs the two: the encoder, hence every latent, is unchanged).
decoder_pid=
if [ ! -f "$SRC/vae-decoder.safetensors" ]; then
  timeout "$(left)" "$PY" -m training.autoencoder --init "$SRC/vae.safetensors" --decoder-only \
    --out "$SRC/vae-decoder.safetensors" --steps "$DECODER_STEPS" "${vae_args[@]}" >> "$SRC/vae-decoder.log" 2>&1 &
  decoder_pid=$!
fi

[ -f "$HANDOFF" ] || [ ! -f "runs/embedded/stage$done_up_to/export/${NEXT_READS[$done_up_to]}.safetensors" ] ||
  handoff "$done_up_to"
for stage in $(seq 0 "$LAST_STAGE"); do
  if [ "$stage" -le "$done_up_to" ]; then continue; fi
  # stage 3 starts while its cache fills still run: it prefills its references meanwhile, then its index waits for
  # them (training/data.py: LatentCache.wait_for_fillers) and encodes what a fill left out
  step "stage $stage"
  extra_var="STAGE${stage}_ARGS"
  init=()
  if [ "$stage" = "$START_AT" ] && [ -n "$INIT" ]; then
    init=("model.init=$INIT")
    [ "$stage" != 0 ] || init+=("model.mmdit={}")  # the export's own MMDiT config, not stage0.toml's
  fi
  budget=()
  if [ -n "${STAGE_UNTIL:-}" ]; then  # run.seconds count from the stage's set-up on (model, prefill, index): 25 s
    seconds=$(( STAGE_UNTIL - $(date +%s) - 25 ))  # for its imports before that and for the export
    [ "$seconds" -gt 0 ] || { step "STAGE_UNTIL=$STAGE_UNTIL leaves no time for stage $stage"; exit 75; }
    budget=("run.seconds=$seconds")
  fi
  status=0
  # shellcheck disable=SC2086
  timeout "$(left)" "$PY" -m training.run "training/configs/embedded/stage$stage.toml" "${init[@]}" "run.seed=$SEED" \
    $STAGE_ARGS \
    ${!extra_var:-} "${budget[@]}" || status=$?
  if [ "$status" = 124 ]; then
    step "stage $stage stopped at UNTIL/LIMIT; run again to go on from its last checkpoint"
    [ -z "$decoder_pid" ] || wait "$decoder_pid" || true
    exit 75
  fi
  [ "$status" = 0 ] || exit "$status"
  handoff "$stage"
  if [[ " $STAGE_BENCH " == *" $stage "* ]]; then
    step "stage $stage's EMA export on the held-out t2i and t2v prompts"
    bundle_and_bench "$stage" "runs/embedded/stage$stage/bundle" data/embedded/heldout-base \
      "output/embedded-bench-stage$stage" --tasks t2i,t2v
  fi
done

for pid in "${cache_pids[@]}"; do
  wait "$pid" || step "a stage-3 cache fill stopped early (see $SRC/stage3-*cache.log.*); stage 3 filled the rest"
done
if [ -z "$BUNDLE" ] && [ -z "$decoder_pid" ]; then
  step "stages done; BUNDLE is empty: no bundle and no benchmark"
  exit 0
fi
step "the tuned decoder's round-trip ceiling (must reach VAE_CEILING=${VAE_CEILING:=0.85})"
if [ -n "$decoder_pid" ]; then
  status=0
  wait "$decoder_pid" || status=$?
  [ "$status" != 124 ] || { step "the decoder stopped at UNTIL/LIMIT; run again to go on"; exit 75; }
  [ "$status" = 0 ] || { tail -n 20 "$SRC/vae-decoder.log"; exit 1; }
fi
"$PY" -m training.autoencoder --score "$SRC/vae-decoder.safetensors" --size "$SIZE" --require "$VAE_CEILING"
if [ "$LAST_STAGE" -lt 3 ]; then
  step "stages 0-$LAST_STAGE done; LAST_STAGE=3 goes on to stage $((LAST_STAGE + 1)), the bundle and the benchmark"
  exit 0
fi

step "bundle -> $BUNDLE, and its benchmark on held-out prompts"
bundle_and_bench 3 "$BUNDLE" data/embedded/heldout output/embedded-bench
