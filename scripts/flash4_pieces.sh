#!/usr/bin/env bash
# FlashAttention-4 for a lent GPU machine (Python 3.12, torch 2.11 + CUDA 13, no package registry), in pieces
# that travel one a call beside the repository (a call carries 64 MiB in all): the packages unpacked, xz'd
# (69 MB) and cut into 25 MB pieces under .whl-fa4/pN/ (ignored by git). Takes about 4 minutes on 2 cores.
#
#   bash scripts/flash4_pieces.sh
#
# A path named in `carry` is removed from the machine by the next call that does not name it, so each call
# carries one piece and copies it out at once; the last one unpacks them (the cutlass DSL's packages sit
# outside its own folder, which a .pth file adds where pip installs it, but not under --target):
#   call k (carry [".whl-fa4/pk"]):  mkdir -p /tmp/parts; cp .whl-fa4/pk/piece.* /tmp/parts/
#   then:  cat /tmp/parts/piece.* | xz -d | tar x -C /tmp/fa4site   (after mkdir -p /tmp/fa4site)
#          export PYTHONPATH=/tmp/fa4site:/tmp/fa4site/nvidia_cutlass_dsl/dsl_packages:$PYTHONPATH
#   python benchmarks/speed.py --phase forward,flash4,compile --attention cudnn,flash4
set -euo pipefail
cd "$(dirname "$0")/.."
out=.whl-fa4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pinned=(flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1
        nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 quack-kernels==0.6.5
        apache-tvm-ffi==0.1.15.post2 torch-c-dlpack-ext==0.1.5)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  -d "$work/wheels" "${pinned[@]}"
mkdir "$work/site"
for wheel in "$work"/wheels/*.whl; do
  unzip -q -o "$wheel" -d "$work/site"  # keeps the shared libraries' modes, as pip does
done
rm -rf "$work"/site/nvidia_cutlass_dsl/cu13/lib/stubs/aarch64*  # the x86-64 machine needs none
tar -C "$work/site" --sort=name -cf - . | xz -9e -T2 > "$work/site.tar.xz"
split -b 25000000 -d "$work/site.tar.xz" "$work/piece."
rm -rf "$out.partial" && mkdir -p "$out.partial"
n=0
for piece in "$work"/piece.*; do
  n=$((n + 1))
  mkdir "$out.partial/p$n" && mv "$piece" "$out.partial/p$n/"
done
rm -rf "$out" && mv "$out.partial" "$out"
du -sb "$out"/*
sha256sum "$work/site.tar.xz"
