"""Deepen a VINO export: more single blocks after its last, each a copy of that block with its gate at zero.

    python -m training.grow training/embedded-src/stage3 --single 2 --out grown --shard-size 14MB

A single block adds `proj_out(...) * gate` to its input, and its gate is the last third of its modulation
(`norm.linear`). With those rows and biases at zero the new blocks add exactly nothing, so the grown model draws what
the export draws until training moves the gates; the copied weights give the rest of each block a trained start.
With --split the last block and its copies share its gate in equal parts instead: no longer exactly what the export
draws, but every block trains from the first step (a zero gate also shuts out its block's other gradients).
The grown config travels in the output's metadata, and stage 3 reads its architecture from its `model.init`, so a
run goes on from the output as from any export. With --int8 its matrices go in as int8 rows
(`vino_model.checkpoint.quantize_rows`, read back as float32), about half the bytes: room for a grown seed beside the
tracked tree in a lent GPU call's 64 MiB. The output's name appears only once it is whole.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from vino_model.checkpoint import join_vino_state, load_vino_weights, quantize_rows, save_vino
from vino_model.config import VinoConfig
from vino_model.convert import parse_size
from vino_model.errors import VinoInputError, run_cli

SINGLE = "transformer.single_transformer_blocks"


def grow(state: dict[str, torch.Tensor], config: VinoConfig, single: int,
         split: bool = False) -> tuple[dict[str, torch.Tensor], VinoConfig]:
    """`state` with `single` more single blocks, their gates at zero, and its config to match. `split`: the last block
    and its copies share its gate in equal parts instead, so each starts with a trained gate's size."""
    if single < 1:
        raise VinoInputError(f"--single {single}: expected at least 1 block to add")
    count, hidden = config.mmdit.num_single_blocks, config.mmdit.hidden
    last = f"{SINGLE}.{count - 1}."
    block = {key[len(last):]: value for key, value in state.items() if key.startswith(last)}
    if count < 1 or not block:
        raise VinoInputError(f"the export has no single block {count - 1} to copy; expected a VINO with single blocks")
    grown = dict(state)
    share = 1 / (single + 1) if split else 0.0
    for index in range(count - 1 if split else count, count + single):
        for name, value in block.items():
            value = value.clone()
            if name in ("norm.linear.weight", "norm.linear.bias"):
                value[2 * hidden:] *= share  # (shift, scale, gate): the gate
            grown[f"{SINGLE}.{index}.{name}"] = value
    mmdit = dataclasses.replace(config.mmdit, num_single_blocks=count + single)
    return grown, dataclasses.replace(config, mmdit=mmdit)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.grow", description=__doc__.split("\n\n")[0])
    p.add_argument("export", help="a VINO export: our .safetensors file or a sharded folder")
    p.add_argument("--single", type=int, required=True, help="how many single blocks to add")
    p.add_argument("--out", required=True, help="output .safetensors file, or a folder with --shard-size")
    p.add_argument("--split", action="store_true",
                   help="the last block and its copies share its gate (near, not exactly, what the export draws)")
    p.add_argument("--shard-size", help="split into shards of at most this size, e.g. 14MB")
    p.add_argument("--int8", action="store_true", help="the matrices as int8 rows, about half the bytes")
    args = p.parse_args(argv)

    def run():
        config, transformer, mm_encoder = load_vino_weights(args.export)
        state, config = grow(join_vino_state(transformer, mm_encoder or {}), config, args.single, args.split)
        state = quantize_rows(state) if args.int8 else state
        print(save_vino(args.out, state, config, parse_size(args.shard_size) if args.shard_size else None))
    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
