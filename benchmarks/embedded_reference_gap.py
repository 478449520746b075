"""Whether a stage-3 model ties each referenced object of a two-object ti2v prompt to its own motion.

A ti2v caption names each object by its image ("the object from Image 1 glides to the left while the object from
Image 2 slides upward"), always Image 1 first. For each two-object ti2v sample of a world split whose objects move
apart, the flow-matching loss under its long caption is compared, at the same noise and t, with three others:
  labels  the caption's "Image 1" and "Image 2" exchanged, the images as they were: each object told the other's way
  order   the caption as it was, the two images given in the other order: each object told the other's way again,
          now by the images' places in the prompt and in the MMDiT's sequence instead of by the caption's words
  both    both exchanged: the same request as the sample's own, told the other way round
A model that ties the labels to the images pays for `labels` and `order` and not for `both`. One that reads the
clauses' order pays for `order` only (and for `both`); one that draws the two objects alike pays for none.
No sampling: a few minutes on a CPU.

    python benchmarks/embedded_reference_gap.py --init training/embedded-src/stage3 --data data/embedded/heldout \
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
from training.loop import order_twin  # noqa: E402
from training.world import swap_labels  # noqa: E402
from vino_model.errors import VinoInputError, run_cli  # noqa: E402

READINGS = ("labels", "order", "both")


@torch.no_grad()
def reference_gaps(trainee, data, samples, times: list[float], device) -> dict[str, np.ndarray]:
    """Each of READINGS' loss minus the sample's own, [sample][t], and "own": the own loss, [sample][t]."""
    gaps = {name: [] for name in ("own", *READINGS)}
    for index, sample in enumerate(samples):
        x0, references, context, task = data.load(sample, np.random.default_rng(index), dropout=False)
        twin = swap_labels(context.text, sample.record.meta)
        if twin is None or len(references) != 2:
            raise VinoInputError(f"sample {sample.record.id}: expected a two-object ti2v sample of two motions "
                                 "under its long caption")
        own = dataclasses.replace(context, key=None, twins=())
        flipped, flipped_references = order_twin(own, references)
        contexts = [own, dataclasses.replace(own, text=twin), flipped, dataclasses.replace(flipped, text=twin)]
        losses = same_noise_losses(trainee, x0, [references, references, flipped_references, flipped_references],
                                   contexts, task, times, index, device)  # [t][reading]
        gaps["own"].append(losses[:, 0])
        for k, name in enumerate(READINGS, 1):
            gaps[name].append(losses[:, k] - losses[:, 0])
    return {name: np.stack(values) for name, values in gaps.items()}


def main(argv=None) -> None:
    args = probe_args(__doc__, "two-object ti2v samples of two motions", [0.8, 0.95, 1.0], argv)

    def moving_apart(records):  # the first --samples two-object ti2v samples whose objects move unlike each other
        return [r for r in records if r.task == "ti2v" and swap_labels(r.caption_long, r.meta)][:args.samples]

    records, device = probe_records(args, moving_apart, "ti2v sample of two objects moving apart")
    print(f"{len(records)} two-object ti2v samples; mean loss increase over the own caption at t {args.times} "
          f"(samples that rose / fell, over all t)")
    for init in args.init:
        trainee, data, samples = load(init, args.config, records, [*args.set, "data.long_caption=1.0"], device,
                                      tasks=("ti2v",))
        gaps = reference_gaps(trainee, data, samples, args.times, device)
        parts = [f"own {gaps['own'].mean():.4f}", *(gap_line(name, gaps[name]) for name in READINGS)]
        print(f"{init[-50:]}: " + "; ".join(parts))


if __name__ == "__main__":
    run_cli(main)
