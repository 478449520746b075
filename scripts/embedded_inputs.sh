# Sourced by scripts/train_embedded.sh, stage0_ab.sh and the scoring scripts: how they make the embedded default's
# inputs. Uses PY, WORKERS, SIZE and SRC from the sourcing script.

HELDOUT_SETS="image video video12 refvideo4 clone12 t2i120"  # scripts/score_heldout.sh's sets

is_heldout_set() { [[ " $HELDOUT_SETS " == *" $1 "* ]]; }  # SET

heldout_sets() {  # WHAT SET...: each SET one of HELDOUT_SETS, or an error naming WHAT and the set
  local set
  for set in "${@:2}"; do
    is_heldout_set "$set" && continue
    echo "$1: unknown set '$set'; expected one of: ${HELDOUT_SETS// /, }" >&2
    return 2
  done
}

need_bundle() {  # USAGE MIN ARGS...: USAGE and status 2 unless there are MIN ARGS or more, the first a bundle
  local usage=$1 min=$2; shift 2
  [ $# -ge "$min" ] && [ -f "$1/defaults.json" ] && return 0
  echo "usage: $usage; BUNDLE: a folder that training.bundle wrote (its defaults.json, vino.safetensors, qwen3vl/," \
    "vae.safetensors)" >&2
  return 2
}

left() {  # seconds a run may take: LIMIT, or what is left until UNTIL (epoch seconds), whichever is less (0: no bound)
  local limit=${LIMIT:-0} until_left
  if [ -n "${UNTIL:-}" ]; then
    until_left=$(( UNTIL - $(date +%s) ))
    [ "$until_left" -gt 1 ] || until_left=1
    [ "$limit" -gt 0 ] && [ "$limit" -lt "$until_left" ] || limit=$until_left
  fi
  echo "$limit"
}

world() {  # OUT [training.world args...]: render a world split unless its manifest is there (videos as
           # VIDEO_FORMAT: mp4, or npz for a machine without PyAV); a split made with other arguments (another
           # SEED) is an error, not a silent reuse
  local dir=$1; shift
  local made="--size $SIZE $*"
  if [ -f "$dir/manifest.jsonl" ]; then
    if [ -f "$dir/made-with" ] && [ "$(cat "$dir/made-with")" != "$made" ]; then
      echo "$dir was made with '$(cat "$dir/made-with")', not '$made': remove it to make it anew" >&2
      return 1
    fi
    return 0
  fi
  "$PY" -m training.world --out "$dir" --size "$SIZE" --workers "$WORKERS" --video-format "${VIDEO_FORMAT:-mp4}" "$@"
  echo "$made" > "$dir/made-with"
}

seed_parts() {  # the committed language model and VAE (training/embedded-src/) go into $SRC, unless it has its
                # own or FROM_SCRATCH=1 (then the sourcing script trains them). The committed VAE's decoder is
                # already tuned, so it is the tuned decoder too (and none trains beside the stages)
  [ "${FROM_SCRATCH:-0}" = 1 ] && return
  mkdir -p "$SRC"
  [ -e "$SRC/qwen3vl" ] || cp -r training/embedded-src/qwen3vl "$SRC/qwen3vl"
  if [ ! -e "$SRC/vae.safetensors" ]; then  # a decoder is tuned for one encoder: both come from the same file
    cp training/embedded-src/vae.safetensors "$SRC/vae.safetensors"
    cp training/embedded-src/vae.safetensors "$SRC/vae-decoder.safetensors"
  fi
}

gpu_site() {  # WHEELS: on a lent GPU, the packages it lacks (scripts/gpu_wheels.sh) into /tmp/site, once a machine,
              # and PYTHONPATH to them and the repository; a WHEELS folder that is not there installs nothing
  if [ -d "$1" ] && [ ! -d /tmp/site/deepspeed ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$1"/*.whl \
      || return 3
  fi
  export PYTHONPATH=/tmp/site:$PWD
}
