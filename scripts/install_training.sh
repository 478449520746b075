#!/usr/bin/env bash
# Installs what `python -m training.run` needs into .venv: DeepSpeed and TensorBoard.
# Idempotent: a second run only checks and prints "ok".
#
# DeepSpeed is a source package built against the installed torch (hence --no-build-isolation). On a
# machine without a CUDA GPU it runs on its CPU accelerator, whose shared-memory collective op would
# otherwise compile (minutes on a small machine) when every training process starts: it is built here, once.
set -euo pipefail

DEEPSPEED_VERSION=0.19.8
TENSORBOARD_VERSION=2.21.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"

fail() { echo "install_training: $*" >&2; exit 1; }
say() { echo "install_training: $*"; }

[ -x "$PY" ] || fail "no virtualenv at $ROOT/.venv; run scripts/setup.sh first"
"$PY" -c "import torch" 2>/dev/null || fail ".venv has no torch; install the project first (scripts/setup.sh)"
if "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then accelerator=cuda; else accelerator=cpu; fi

has() {  # has PACKAGE VERSION [cpu]: that version is installed (with the prebuilt CPU op when asked)
    "$PY" - "$@" <<'PYEOF' 2>/dev/null
import glob, importlib.util, os, sys
from importlib.metadata import version
name, wanted, *needs = sys.argv[1:]
if version(name) != wanted:
    sys.exit(1)
if needs == ["cpu"]:  # found without importing deepspeed, which takes seconds
    root = importlib.util.find_spec(name).submodule_search_locations[0]
    sys.exit(not glob.glob(os.path.join(root, "ops", "comm", "deepspeed_shm_comm_op*.so")))
PYEOF
}

op=(); [ "$accelerator" = cpu ] && op=(cpu)
if has deepspeed "$DEEPSPEED_VERSION" "${op[@]}"; then
    say "deepspeed $DEEPSPEED_VERSION ($accelerator): ok"
else
    say "building deepspeed $DEEPSPEED_VERSION for $accelerator into .venv (a few minutes)"
    "$PY" -m pip install --quiet --no-build-isolation "deepspeed==$DEEPSPEED_VERSION" \
        || fail "pip install deepspeed==$DEEPSPEED_VERSION failed"
    if [ "$accelerator" = cpu ]; then  # again, now with its build helpers (py-cpuinfo, ninja) in place
        DS_BUILD_SHM_COMM=1 "$PY" -m pip install --quiet --no-build-isolation --no-cache-dir --force-reinstall \
            --no-deps "deepspeed==$DEEPSPEED_VERSION" || fail "building deepspeed's CPU collective op failed"
    fi
    has deepspeed "$DEEPSPEED_VERSION" "${op[@]}" || fail "deepspeed $DEEPSPEED_VERSION installed without its $accelerator parts"
fi

if has tensorboard "$TENSORBOARD_VERSION"; then
    say "tensorboard $TENSORBOARD_VERSION: ok"
else
    say "installing tensorboard $TENSORBOARD_VERSION into .venv"
    "$PY" -m pip install --quiet "tensorboard==$TENSORBOARD_VERSION" || fail "pip install tensorboard failed"
fi
