"""Convert the official vino.ckpt (or a diffusers / Tencent HunyuanVideo transformer) to our layout.

    python -m vino_model.convert vino.ckpt models/vino/vino.safetensors
    python -m vino_model.convert vino.ckpt models/vino/vino-13b --shard-size 5GB --dtype bfloat16

The pickle is read with torch.load(weights_only=True) only. The result is safetensors with the
official key names and the config in its metadata; a shard size writes a folder with an index.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from .checkpoint import join_vino_state, load_vino_weights, quantize_rows, save_vino
from .errors import VinoInputError, run_cli
from .pipeline import DTYPES, build_mm_encoder, build_mmdit

log = logging.getLogger("vino")


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)B?\s*", text.upper())
    if not match:
        raise VinoInputError(f"shard size {text!r} is not a size like 5GB or 500MB")
    return int(float(match.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[match.group(2)])


def convert(source, target, dtype=None, shard_size=None, int8=False):
    config, transformer, mm_state = load_vino_weights(source)
    torch_dtype = DTYPES[dtype] if dtype else None
    # Building the modules checks every key and shape before anything is written.
    mmdit = build_mmdit(config, transformer, torch_dtype, "cpu", f"transformer of {source}")
    mm = None
    if mm_state is not None:
        mm = build_mm_encoder(config, mm_state, torch_dtype, "cpu", f"mm_encoder of {source}").state_dict()
    else:
        log.warning("%s has no mm_encoder (a plain HunyuanVideo transformer): wrote the transformer only", source)
    state = join_vino_state(mmdit.state_dict(), mm)
    state = quantize_rows(state) if int8 else state
    return save_vino(target, state, config, parse_size(shard_size) if shard_size else None)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(prog="python -m vino_model.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="vino.ckpt, a diffusers transformer folder/file or a Tencent .pt")
    p.add_argument("target", help="output .safetensors file, or a folder when --shard-size is given")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="cast floating tensors (default: keep)")
    p.add_argument("--shard-size", help="split into shards of at most this size, e.g. 5GB")
    p.add_argument("--int8", action="store_true",
                   help="matrices as int8 rows with a float16 scale each (read back as float32): about half the bytes")
    args = p.parse_args(argv)
    return run_cli(lambda: print(convert(args.source, args.target, args.dtype, args.shard_size, args.int8)))


if __name__ == "__main__":
    sys.exit(main())
