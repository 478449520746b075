"""How many copies a model drew for each count prompt of a world split ("two small red stars"), as training.bench
finds them: the objects of the prompted colour and shape, and of the colour alone. Last line: the tally of
(prompted, found).

    python benchmarks/results/2026-12-05/session45/count_found.py DATA OUTPUTS
e.g. data/embedded/heldout-t2i120 output/s42/t2i120 (the outputs of scripts/score_heldout.sh), or a split and the
outputs of `python -m vino_model.generate --model BUNDLE --tasks TASKS --out OUTPUTS` (session45/count_eval.sh).
"""
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))

from training.bench import _conform, _matching, find_blobs, palette_labels, Tolerances  # noqa: E402
from training.manifest import read_manifest  # noqa: E402


def main(data, outputs):
    tally = Counter()
    for index, record in enumerate(read_manifest(str(Path(data) / "manifest.jsonl"))):
        objects = record.meta["scene"]["objects"] if record.task == "t2i" else []
        if len(objects) < 2 or len({(o["shape"], o["color"]) for o in objects}) != 1:
            continue
        frames = _conform(np.asarray(Image.open(Path(outputs) / f"{index}_t2i.png").convert("RGB")),
                          record.meta["scene"])
        blobs = find_blobs(frames, palette_labels(frames), Tolerances())[0]
        matching = len(_matching(blobs, objects[0]))
        coloured = sum(b.color == objects[0]["color"] for b in blobs)
        tally[(len(objects), matching)] += 1
        print(f"{index:4d} prompted {len(objects)} found {matching} (of its colour {coloured})  {record.caption_long}")
    print("(prompted, found): prompts", dict(sorted(tally.items())))


if __name__ == "__main__":
    main(*sys.argv[1:])
