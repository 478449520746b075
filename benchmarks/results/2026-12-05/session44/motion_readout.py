"""Which motion a stage-3 model's first sampling step draws for each held-out clone prompt.

At t = 1, x_t is the noise whatever x0 is, so the flow loss with x0 := c is the mean square between the model's
prediction of x0 and c. Each held-out clone's target is rendered again under every motion (4 directions x 2 speeds)
and still, from the same start; the candidate nearest the prediction is the motion the model draws first. Read under
the prompt's own reference video and under the video of the next clone of another motion (motion_partners).

    python benchmarks/results/2026-12-05/session44/motion_readout.py EXPORT [KEY=VALUE ...]

Session 44 ran it with data.cache=/tmp/mgcache, where benchmarks/embedded_motion_gap.py had cached the clones.
"""
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))

from training import model  # noqa: E402
from training.config import load as load_config  # noqa: E402
from training.data import LatentCache, TrainData, build_index  # noqa: E402
from training.loop import motion_partners, motion_twin  # noqa: E402
from training.manifest import read_manifest  # noqa: E402
from training.world import DIRECTIONS, SPEEDS, moved, reference_motion, render  # noqa: E402
from vino_model.preprocess import frames_to_tensor  # noqa: E402
from vino_model.vae import VinoVAE  # noqa: E402

MOTIONS = [{"direction": d, "speed": s} for d in DIRECTIONS for s in SPEEDS] + [None]  # None: still


def name(motion):
    return "still" if motion is None else f"{motion['direction']} {motion['speed']}"


def main(export, overrides=(), count=12):
    records = [r for r in read_manifest(str(ROOT / "data/embedded/heldout/manifest.jsonl")) if r.task == "clone"]
    records = records[:count]
    vae = VinoVAE.load(str(ROOT / "training/embedded-src/vae.safetensors"))
    with torch.no_grad():
        candidates = [torch.stack([vae.encode(frames_to_tensor(render(moved(r.meta["scene"], m)))[None],
                                              sample=False)[0] for m in MOTIONS]) for r in records]
    cfg = load_config(str(ROOT / "training/configs/embedded/stage3.toml"), [
        f"model.init={export}", "model.compile=false", 'data.tasks={"clone": 1.0}', "optim.bf16=false",
        f"model.qwen={ROOT}/training/embedded-src/qwen3vl",
        f"model.vae={ROOT}/training/embedded-src/vae.safetensors", *overrides])
    trainee, config = model.build(cfg)
    trainee = trainee.eval()
    cache = LatentCache(cfg.data.cache, vae, cfg.model.vae, cfg.data.vae_dtype)
    samples, _ = build_index(records, cfg.data, cache, config.reference_area, 0, 1, lambda obj: [obj])
    data = TrainData(samples, cache, cfg.data, config.reference_area, 0, 0, 1, read_media=True)
    loaded = []
    for sample in samples:
        _, references, context, task = data.load(sample, np.random.default_rng(0), dropout=False)
        record = sample.record
        context = type(context)(record.caption_long, context.images, context.video, context.video_fps,
                                None, motion=reference_motion(record.meta))
        loaded.append((record, references, context, task))
    pairs = dict(motion_partners([c for _, _, c, _ in loaded]))
    tally = Counter()
    print(f"\n{export}")
    for i, (record, references, context, task) in enumerate(loaded):
        noise = torch.randn((1, *candidates[i].shape[1:]), generator=torch.Generator().manual_seed(i))
        line = [record.id]
        readings = [("own", references, context, record.meta["ref_video"]["objects"][0]["motion"])]
        if i in pairs:
            other = loaded[pairs[i]]
            ctx, refs = motion_twin(context, references, other[2], other[1])
            readings.append(("swapped", refs, ctx, other[0].meta["ref_video"]["objects"][0]["motion"]))
        for label, refs, ctx, want in readings:
            n = len(MOTIONS)
            with torch.no_grad():
                losses, _ = trainee(candidates[i], noise.repeat(n, 1, 1, 1, 1), torch.ones(n), [refs] * n,
                                    [ctx] * n)
            losses = losses.tolist()
            drawn = MOTIONS[int(np.argmin(losses))]
            kind = ("right" if drawn == want else "still" if drawn is None else
                    "direction" if drawn["direction"] == want["direction"] else "wrong")
            tally[(label, kind)] += 1
            line.append(f"{label}: wants {name(want):11s} draws {name(drawn):11s} ({kind}; "
                        f"{losses[MOTIONS.index(want)]:.3f} vs still {losses[-1]:.3f})")
        print("  ".join(line))
    print({f"{a} {b}": c for (a, b), c in sorted(tally.items())})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
