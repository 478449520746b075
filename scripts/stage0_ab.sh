#!/usr/bin/env bash
# Stage-0 A/B on one GPU: arms of the embedded stage 0, each with its own config overrides, train side by side
# (the 13.7M MMDiT is launch-bound, so arms share a GPU at little cost), then each arm's EMA export is
# probed on held-out t2i prompts from pure noise (t0 = 1: plain generation) and from t0 = 0.6
# (benchmarks/embedded_probe.py), and for how much each attribute word of the caption counts
# (benchmarks/embedded_word_gap.py). Missing inputs are made first, as scripts/train_embedded.sh makes them.
#
#   bash scripts/stage0_ab.sh OUT "A=" "B=model.native_embeddings=0 data.batch_size=256"
#
# LIMIT=seconds stops the arms there, or UNTIL=epoch-seconds at that moment, whatever came before (they resume
# on the next call; the machine must still hold runs/); FINISH=1 exports an unfinished arm from its last
# checkpoint so the probe can run.
# STEPS (2000), SIZE (128), LM_STEPS (3000), VAE_STEPS (4500), VAE_BATCH (8), VAE_POOL (4000), BASE_PER_TASK (10000),
# HELDOUT (24), SAVE_EVERY (100: checkpoint steps), FROM_SCRATCH (1: train the language model and VAE instead of
# starting from training/embedded-src/), DECODER_STEPS (0: none; else the decoder-only VAE run beside the
# arms, which the probe then decodes with), PY, WORKERS. The VAE and the decoder also stop at LIMIT / UNTIL.
set -uo pipefail
PY=${PY:-.venv/bin/python}
WORKERS=${WORKERS:-$(nproc)}
STEPS=${STEPS:-2000}
SIZE=${SIZE:-128}
SRC=models/embedded-src
out=$1; shift
[ $# -gt 0 ] || { echo "stage0_ab: name at least one arm: NAME=\"key=value ...\"" >&2; exit 2; }
mkdir -p "$out" "$SRC"
source scripts/embedded_inputs.sh
seed_parts
world data/embedded/base --per-task "${BASE_PER_TASK:-10000}" --tasks t2i,t2v --seed 0 >> "$out/world.log" &
world data/embedded/heldout-t2i --per-task "${HELDOUT:-24}" --tasks t2i --split heldout --seed 0 >> "$out/world.log" &
[ -d "$SRC/qwen3vl" ] || "$PY" -m training.language --out "$SRC/qwen3vl" --steps "${LM_STEPS:-3000}" > "$out/lm.log" 2>&1 &
vae_args=(--size "$SIZE" --batch-size "${VAE_BATCH:-8}" --pool "${VAE_POOL:-4000}" --workers "$WORKERS")
[ -f "$SRC/vae.safetensors" ] || timeout "$(left)" "$PY" -m training.autoencoder --out "$SRC/vae.safetensors" \
  --steps "${VAE_STEPS:-4500}" "${vae_args[@]}" >> "$out/vae.log" 2>&1
wait
for part in "$SRC/qwen3vl" "$SRC/vae.safetensors" data/embedded/base/manifest.jsonl; do
  [ -e "$part" ] || { echo "stage0_ab: $part was not made; see the logs in $out" >&2; exit 1; }
done

arm() {  # NAME="key=value ..." [more overrides]: sets name and args (the arm's stage-0 command line)
  name=${1%%=*}
  local overrides
  read -r -a overrides <<< "${1#*=}"
  args=(training/configs/embedded/stage0.toml "run.steps=$STEPS" "run.out=runs/ab/$name" eval.samples=64
        "checkpoint.every=${SAVE_EVERY:-100}" "${overrides[@]}" "${@:2}")
  probe_set=("${overrides[@]}")
}

limit=$(left)
pids=()
if [ "${DECODER_STEPS:-0}" -gt 0 ] && [ ! -f "$SRC/vae-decoder.safetensors" ]; then  # the decoder sharpens beside the arms
  timeout "$limit" "$PY" -m training.autoencoder --init "$SRC/vae.safetensors" --decoder-only \
    --out "$SRC/vae-decoder.safetensors" --steps "$DECODER_STEPS" "${vae_args[@]}" >> "$out/vae-decoder.log" 2>&1 &
fi
for spec in "$@"; do
  arm "$spec"
  echo "$name: ${args[*]}" >> "$out/arms.txt"
  [ -f "runs/ab/$name/export/vino-ema.safetensors" ] && continue
  timeout "$limit" "$PY" -m training.run "${args[@]}" >> "$out/$name.log" 2>&1 &
  pids+=($!)
  # the first arm builds the latent cache; the others start once it is there
  [ ${#pids[@]} -gt 1 ] || until grep -q "samples in" "$out/$name.log" || ! kill -0 "${pids[0]}" 2>/dev/null; do sleep 3; done
done
for pid in "${pids[@]}"; do wait "$pid"; done

for spec in "$@"; do
  arm "$spec" run.steps=1  # run.steps=1 < the checkpoint's step: resuming only exports
  export_file=runs/ab/$name/export/vino-ema.safetensors
  if [ ! -f "$export_file" ] && [ "${FINISH:-0}" = 1 ]; then
    "$PY" -m training.run "${args[@]}" >> "$out/$name.log" 2>&1
  fi
  cp "runs/ab/$name/logs/train.jsonl" "$out/$name.jsonl" 2>/dev/null
  if [ -f "$export_file" ]; then
    vae=$SRC/vae-decoder.safetensors; [ -f "$vae" ] || vae=$SRC/vae.safetensors
    { "$PY" benchmarks/embedded_probe.py --init "$export_file" --vae "$vae" --set "${probe_set[@]}" \
        --data data/embedded/heldout-t2i --t0 0.6 1.0 --out "$out/probe-$name"
      "$PY" benchmarks/embedded_word_gap.py --init "$export_file" --set "${probe_set[@]}" \
        --data data/embedded/heldout-t2i --samples 24; } > "$out/probe-$name.txt" 2>&1 &
  else
    echo "$name: not finished (run again, or FINISH=1)"
  fi
done
wait
for spec in "$@"; do
  name=${spec%%=*}
  echo "=== $name: $(grep eval "$out/$name.jsonl" 2>/dev/null | tail -1)"
  cat "$out/probe-$name.txt" 2>/dev/null | grep -v -i "loading"
done
