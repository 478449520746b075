#!/usr/bin/env bash
# Here, between two calls of scripts/device_chunk.sh: takes in what call FILES_AT brought back.
#
#   bash scripts/take_chunk.sh /work/.device/N runs/s37/c1
#
# The trunk's parts, joined and converted to the seed's two shards under 16 MiB, replace training/embedded-src/stage3
# in the working tree (uncommitted), which the next call goes on from. They travel in the seed's place because a call
# takes at most 64 MiB: the tracked tree (44 MB) and the wheels (11 MB) leave no room for a 28 MB trunk beside them.
# DEST gets the joined trunk and EMA export (vino-ema.safetensors: what is bundled and scored), call.log and logs.tgz,
# and DEST/scores the export's scores when the call made them (device_chunk.sh's SCORE: scores.tgz).
set -euo pipefail
from=${1:?FILES_AT: the folder that the call brought its files back to}
dest=${2:?DEST: where the trunk, EMA export and logs of this call go}
PY=${PY:-.venv/bin/python}
seed=training/embedded-src/stage3
shopt -s nullglob

join() {  # NAME: its one file or its parts, joined into DEST
  local found=()
  [ ! -f "$from/$1" ] || found=("$from/$1")
  found+=("$from/$1".part-*)
  [ ${#found[@]} -gt 0 ] || { echo "take_chunk: $from has no $1 (nor its parts)" >&2; return 1; }
  cat "${found[@]}" > "$dest/$1.partial" && mv "$dest/$1.partial" "$dest/$1"
}

mkdir -p "$dest"
join trunk.safetensors
join vino-ema.safetensors || echo "take_chunk: no EMA export to score from this call" >&2
for f in call.log logs.tgz; do [ ! -f "$from/$f" ] || install -m 644 "$from/$f" "$dest/"; done  # files_at is read-only
if [ -f "$from/scores.tgz" ]; then
  rm -rf "$dest/scores" && mkdir -p "$dest/scores" && tar xzf "$from/scores.tgz" -C "$dest/scores"
fi
rm -rf "$seed.new"  # the new seed is made beside the old one, which it replaces only once whole
# INT8=1: the seed in int8 rows (half the bytes: room for a grown model's in a call's 64 MiB; stage 3 reads them back)
"$PY" -m vino_model.convert "$dest/trunk.safetensors" "$seed.new" --shard-size 14MB ${INT8:+--int8} > /dev/null
chmod 644 "$seed.new"/*
rm -rf "$seed" && mv "$seed.new" "$seed"
echo "$seed: the trunk of $from (uncommitted)"
