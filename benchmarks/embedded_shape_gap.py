"""Whether a stage-3 model reads a replacement's new object from the instruction or keeps the old one's shape.

Session 54 drew held-out replacements with the new colour and the old shape ("replace the blue triangle with a
yellow circle" gave a yellow triangle), and clones with the reference video object's shape. For each replacement of
ti2i and tv2v in a world split, the flow-matching loss under its long instruction is compared, at the same noise and
t, with the instruction's wrong twins (training.world.REFERENCE_SWAPS):
  new_shape  the new object named with the old one's shape ("... with a yellow triangle")
  new_color  the new object named with the old one's colour (none where the two share it)
A model that draws what the instruction names pays for both. Run on a held-out split and on a training split of the
same size: a pull toward the context's shape shows as a smaller new_shape gap on the held-out pairs.
No sampling: a few minutes on a CPU.

    python benchmarks/embedded_shape_gap.py --init training/embedded-src/stage3 --data data/embedded/heldout \
        [--samples 24] [--times 0.8 0.95 1] [--set model.qwen=... model.vae=...]
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from embedded_motion_gap import gap_line, load, probe_args, probe_records, same_noise_losses  # noqa: E402
from training.world import REFERENCE_SWAPS  # noqa: E402
from vino_model.errors import VinoInputError, run_cli  # noqa: E402

TWINS = ("new_shape", "new_color")
TASKS = ("ti2i", "tv2v")


def replacements(records, per_task: int) -> list:
    """The first `per_task` replacements of each of TASKS whose long instruction has a new_shape twin."""
    records, kept = list(records), []
    for task in TASKS:
        kept += [r for r in records
                 if r.task == task and REFERENCE_SWAPS["new_shape"](r.caption_long, r.meta) is not None][:per_task]
    return kept


@torch.no_grad()
def shape_gaps(trainee, data, samples, times: list[float], device) -> dict[str, np.ndarray]:
    """Each twin's loss minus the sample's own, [sample][t] (NaN where the sample has no such twin), and "own"."""
    gaps = {name: [] for name in ("own", *TWINS)}
    for index, sample in enumerate(samples):
        x0, references, context, task = data.load(sample, np.random.default_rng(index), dropout=False)
        twins = {name: REFERENCE_SWAPS[name](context.text, sample.record.meta) for name in TWINS}
        texts = [context.text, *(twin for twin in twins.values() if twin is not None)]  # a twin is read only if any
        contexts = [dataclasses.replace(context, text=text, key=None, twins=()) for text in texts]
        losses = same_noise_losses(trainee, x0, [references] * len(texts), contexts, task, times, index,
                                   device)  # [t][own, the twins there are...]
        gaps["own"].append(losses[:, 0])
        for name, twin in twins.items():
            gaps[name].append(losses[:, texts.index(twin)] - losses[:, 0] if twin is not None
                              else np.full(len(times), np.nan))
    return {name: np.stack(values) for name, values in gaps.items()}


def main(argv=None) -> None:
    args = probe_args(__doc__, "replacements of ti2i and tv2v (each)", [0.8, 0.95, 1.0], argv)

    records, device = probe_records(args, lambda records: replacements(records, args.samples),
                                    "ti2i or tv2v replacement")
    print(f"{len(records)} replacements; mean loss increase over the own instruction at t {args.times} "
          f"(samples that rose / fell, over all t)")
    for init in args.init:
        trainee, data, samples = load(init, args.config, records, [*args.set, "data.long_caption=1.0"], device,
                                      tasks=TASKS)
        gaps = shape_gaps(trainee, data, samples, args.times, device)
        tasks = np.array([sample.record.task for sample in samples])
        for task in TASKS:
            mine = tasks == task
            if not mine.any():
                continue
            parts = [f"own {gaps['own'][mine].mean():.4f}"]
            for name in TWINS:
                rows = gaps[name][mine]
                rows = rows[~np.isnan(rows).any(axis=1)]
                if not len(rows):
                    continue
                parts.append(gap_line(name, rows))
            print(f"{init[-50:]} {task} ({int(mine.sum())}): " + "; ".join(parts))


if __name__ == "__main__":
    run_cli(main)
