"""Average several exports of one VINO into one (a weight soup): each tensor the weighted mean of the exports'.

    python -m training.average A.safetensors B.safetensors C.safetensors --out soup.safetensors
    python -m training.average TRUNK_A TRUNK_B --out stage3 --shard-size 14MB --dtype bfloat16

The exports must be runs of one model that went on from one set of weights (stage-3 runs from one seed), so that
their weights lie in one basin: session 47 averaged the cooled EMA exports of three such runs (sessions 42, 46 and
47, each about 2,000 steps on from session 42's seed), and the average scored above each of them on the 116 held-out
prompts (0.817; 0.779, 0.784 and 0.808 alone) and on clone (0.305; 0.228, 0.158 and 0.285)
(`benchmarks/results/2026-12-05/embedded-session47.md`). Exports of unrelated runs average to noise. An average
keeps what the runs share, not what one learnt alone: sessions 48's and 49's runs from one seed each read clone's
motion (0.447 and 0.410), and the average of their exports did not (0.325; `embedded-session49.md`).

The exports are in our layout (what training exports; `python -m vino_model.convert` writes any other format as
ours). The output is too (one file, or shards with --shard-size), in the first export's dtype unless --dtype names
one. Every export is checked against the first from the files' headers before any tensor is read, and the mean is
taken a tensor at a time, so averaging 13B exports holds the average and one tensor of each, not a float32 copy of
the model; the output's name appears only once it is whole.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

from vino_model.checkpoint import SCALE_SUFFIX, detect_format, open_safetensors, safetensors_files, save_vino
from vino_model.config import VinoConfig
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


def not_ours(source) -> VinoInputError:
    return VinoInputError(f"export {source} is not in our layout (safetensors with a VINO config); write it as ours "
                          f"first: python -m vino_model.convert {source} OUT.safetensors")


def open_export(stack: ExitStack, source) -> tuple[dict, dict | None]:
    """One export's (handles, stored config), open while `stack` lasts (vino_model.checkpoint.open_safetensors)."""
    path = Path(source)
    if not path.exists():
        raise VinoInputError(f"export {source} does not exist")
    if not path.is_dir() and path.suffix != ".safetensors":
        raise not_ours(source)
    return stack.enter_context(open_safetensors(safetensors_files(path)))


def our_config(source, handles, stored) -> VinoConfig:
    """The config of an export in our layout; an export in any other, or in int8 rows (whose rows and scales do not
    average apart), is refused."""
    if stored is None or detect_format(handles) != "vino":
        raise not_ours(source)
    if any(key.endswith(SCALE_SUFFIX) for key in handles):
        raise VinoInputError(f"export {source} is in int8 rows, which do not average; write it in floats first: "
                             f"python -m vino_model.convert {source} OUT.safetensors --dtype bfloat16")
    return VinoConfig.from_dict(stored)


def check_same_model(first: tuple, other: tuple) -> None:
    """Refuse `other` unless it is an export of `first`'s model; each (source, handles, config). Reads only the
    files' headers."""
    (first_source, first_handles, first_config), (source, handles, config) = first, other
    if config.to_json() != first_config.to_json():
        raise VinoInputError(f"export {source} is a VINO of another config than {first_source}; expected exports of "
                             "one model")
    if handles.keys() != first_handles.keys():
        differ = sorted(handles.keys() ^ first_handles.keys())
        raise VinoInputError(f"export {source} holds other tensors than {first_source} (first differing: "
                             f"{', '.join(differ[:4])}); expected exports of one model")
    for key, handle in handles.items():
        shape, first_shape = (h.get_slice(key).get_shape() for h in (handle, first_handles[key]))
        if shape != first_shape:
            raise VinoInputError(f"export {source}: {key} is {tuple(shape)}, {tuple(first_shape)} in {first_source}; "
                                 "expected exports of one model")


def average(sources: list, out, weights: list[float] | None = None, dtype: str | None = None,
            shard_size: str | None = None):
    """Write the weighted mean of `sources`' tensors to `out`; weights None: equal. The mean is taken a tensor at a
    time, in float32, so beyond the average itself one tensor of each export is held at once."""
    if len(sources) < 2:
        raise VinoInputError(f"got {len(sources)} export; expected two or more to average")
    weights = parse_weights(None, len(sources)) if weights is None else weights
    with ExitStack() as stack:
        exports = []
        for source in sources:
            handles, stored = open_export(stack, source)
            exports.append((source, handles, our_config(source, handles, stored)))
        for other in exports[1:]:
            check_same_model(exports[0], other)
        state = {}
        for key, handle in exports[0][1].items():
            first = handle.get_tensor(key)
            if not first.is_floating_point():
                state[key] = first
                continue
            mean = first.float() * weights[0]
            for (_, handles, _), weight in zip(exports[1:], weights[1:]):
                mean += handles[key].get_tensor(key).float() * weight
            state[key] = mean.to(DTYPES[dtype] if dtype else first.dtype)
    return save_vino(out, state, exports[0][2], parse_size(shard_size) if shard_size else None)


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
