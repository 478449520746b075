"""Average several exports of one VINO into one (a weight soup): each tensor the weighted mean of the exports'.

    python -m training.average A.safetensors B.safetensors C.safetensors --out soup.safetensors
    python -m training.average TRUNK_A TRUNK_B --out stage3 --shard-size 14MB --dtype bfloat16

The exports must be runs of one model that went on from one set of weights (stage-3 runs from one seed), so that
their weights lie in one basin: session 47 averaged the cooled EMA exports of three such runs (sessions 42, 46 and
47, each about 2,000 steps on from session 42's seed), and the average scored above each of them on the 116 held-out
prompts (0.817; 0.779, 0.784 and 0.808 alone) and on clone (0.305; 0.228, 0.158 and 0.285)
(`benchmarks/results/2026-12-05/embedded-session47.md`). Exports of unrelated runs average to noise.

Any format `vino_model` reads goes in; the output is our layout (one file, or shards with --shard-size), in the
first export's dtype unless --dtype names one, written only once every export has been read and checked.
"""

from __future__ import annotations

import argparse
import sys

import torch

from vino_model.checkpoint import join_vino_state, load_vino_weights, save_vino
from vino_model.convert import parse_size
from vino_model.errors import VinoInputError, run_cli
from vino_model.pipeline import DTYPES


def parse_weights(text: str | None, count: int) -> list[float]:
    """--weights "1,1,2" -> one positive weight per export, summing to 1; None: equal weights."""
    if text is None:
        return [1 / count] * count
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise VinoInputError(f"--weights {text!r} is not a comma-separated list of numbers") from None
    if len(weights) != count or min(weights) <= 0:
        raise VinoInputError(f"--weights {text!r}: expected {count} positive numbers, one per export")
    return [w / sum(weights) for w in weights]


def read_export(path) -> tuple:
    """(config, state with our key names) of one export."""
    config, transformer, mm_encoder = load_vino_weights(path)
    return config, join_vino_state(transformer, mm_encoder)


def average(sources: list, out, weights: list[float] | None = None, dtype: str | None = None,
            shard_size: str | None = None):
    """Write the weighted mean of `sources`' tensors to `out`; weights None: equal."""
    if len(sources) < 2:
        raise VinoInputError(f"got {len(sources)} export; expected two or more to average")
    weights = parse_weights(None, len(sources)) if weights is None else weights
    config, first = read_export(sources[0])
    keep = {k: DTYPES[dtype] if dtype else v.dtype for k, v in first.items()}
    mean = {k: v.float() * weights[0] if v.is_floating_point() else v for k, v in first.items()}
    for source, weight in zip(sources[1:], weights[1:]):
        other_config, state = read_export(source)
        if other_config.to_json() != config.to_json():
            raise VinoInputError(f"export {source} is a VINO of another config than {sources[0]}; expected exports "
                                 "of one model")
        if state.keys() != mean.keys():
            differ = sorted(state.keys() ^ mean.keys())
            raise VinoInputError(f"export {source} holds other tensors than {sources[0]} (first differing: "
                                 f"{', '.join(differ[:4])}); expected exports of one model")
        for key, value in state.items():
            if value.shape != mean[key].shape:
                raise VinoInputError(f"export {source}: {key} is {tuple(value.shape)}, {tuple(mean[key].shape)} in "
                                     f"{sources[0]}; expected exports of one model")
            if value.is_floating_point():
                mean[key] += value.float() * weight
    state = {k: v.to(keep[k]) if v.is_floating_point() else v for k, v in mean.items()}
    return save_vino(out, state, config, parse_size(shard_size) if shard_size else None)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.average", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exports", nargs="+", help="two or more exports of one model (files or shard folders)")
    p.add_argument("--out", required=True, help="the average: a .safetensors file, or a folder with --shard-size")
    p.add_argument("--weights", help="one weight per export, comma-separated (default: equal)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="the average's floating dtype (default: the first's)")
    p.add_argument("--shard-size", help="write shards of at most this size into the folder --out, e.g. 14MB")
    args = p.parse_args(argv)
    return run_cli(lambda: print(average(args.exports, args.out, parse_weights(args.weights, len(args.exports)),
                                         args.dtype, args.shard_size)))


if __name__ == "__main__":
    sys.exit(main())
