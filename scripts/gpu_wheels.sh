#!/usr/bin/env bash
# The wheels a lent GPU machine lacks (it has torch and transformers but no DeepSpeed, diffusers or pydantic,
# and reaches no package registry), at the versions .venv runs here, into .whl-gpu/ (11 MB, ignored by git).
# PyAV is left out: a GPU run writes its videos as .npz (VIDEO_FORMAT=npz). A device call carries `.whl-gpu`
# and starts with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl-gpu/*.whl
#
#   bash scripts/gpu_wheels.sh     # after scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=.whl-gpu
version() { .venv/bin/python -c "from importlib.metadata import version; print(version('$1'))"; }
pinned=()
for name in diffusers pydantic pydantic_core annotated_types typing_inspection hjson; do
  pinned+=("$name==$(version "$name")")
done
rm -rf "$out.partial" && mkdir -p "$out.partial"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$out.partial" "${pinned[@]}"
# DeepSpeed is published as source only; its wheel is pure Python (its ops build on first use)
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$out.partial" "deepspeed==$(version deepspeed)"
rm -rf "$out" && mv "$out.partial" "$out"
ls "$out"
du -sh "$out"
