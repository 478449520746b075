#!/usr/bin/env bash
# All set-up on a fresh machine, idempotent: the project's virtualenv with its dependencies,
# the pinned ComfyUI host for the node tests, headless Chromium for the browser tests, and DeepSpeed
# (with its CPU collective op prebuilt) for training.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing the project and its dependencies into .venv (first run: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]" torchvision
  rm -f .venv/.installed-*
  touch "$stamp"
fi
bash scripts/install_comfyui.sh
bash scripts/install_training.sh
