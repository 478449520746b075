"""How much a stage-3 model takes a clone's motion from its reference video.

For each clone sample of a world split, the flow-matching loss under its short caption with its own reference video
is compared with the loss under the next clone's video of another motion, at the same noise and t
(`training.loop.motion_gap`, the stage's `eval_motion_gap`, here over a held-out split of your choosing). It prints
the mean loss under the samples' own videos and the gap, the mean increase: about 0 for a model that does not take
the motion from the video, whatever the loss. No sampling: a few minutes on a CPU.

    python benchmarks/embedded_motion_gap.py --init runs/embedded/stage3/export/vino-ema.safetensors \
        --data data/embedded/heldout --samples 24 [--set model.qwen=... model.vae=...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training import model  # noqa: E402
from training.config import load as load_config  # noqa: E402
from training.data import LatentCache, TrainData, build_index  # noqa: E402
from training.loop import MOTION_GAP_TIMES, motion_gap  # noqa: E402
from training.manifest import read_manifest  # noqa: E402
from training.world import MOTION_TWIN_TASKS  # noqa: E402
from vino_model.errors import VinoInputError, run_cli  # noqa: E402
from vino_model.pipeline import parse_dtype  # noqa: E402
from vino_model.vae import VinoVAE  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", nargs="+", required=True, help="stage-3 exports (vino-ema.safetensors)")
    p.add_argument("--config", default="training/configs/embedded/stage3.toml", help="their stage config")
    p.add_argument("--data", required=True, help="a world split (training.world) with clone samples")
    p.add_argument("--samples", type=int, default=24, help="the split's first clone samples")
    p.add_argument("--times", nargs="+", type=float, default=list(MOTION_GAP_TIMES),
                   help="t of x_t = (1 - t) x0 + t noise at which each pair is compared, in (0, 1]")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every export")
    args = p.parse_args(argv)

    manifest = Path(args.data) / "manifest.jsonl"
    records = [r for r in read_manifest(str(manifest)) if r.task in MOTION_TWIN_TASKS][:args.samples]
    if len(records) < 2:
        raise VinoInputError(f"--data {args.data}: {len(records)} sample(s) of {', '.join(MOTION_TWIN_TASKS)} in "
                             f"{manifest}; expected two or more, of different motions")
    if not all(0 < t <= 1 for t in args.times):
        raise VinoInputError(f"--times {args.times}: expected each t in (0, 1]")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{'export':60s} {'own loss':>8s} {'gap':>8s} comparisons (pairs x t {args.times})")
    for init in args.init:
        cfg = load_config(args.config, [f"model.init={init}", "model.compile=false",
                                        f"data.tasks={json.dumps(dict.fromkeys(MOTION_TWIN_TASKS, 1.0))}",
                                        f"optim.bf16={str(device == 'cuda').lower()}", *args.set])
        trainee, config = model.build(cfg)
        trainee = trainee.eval().to(device)
        vae = VinoVAE.load(cfg.model.vae, device=device, dtype=parse_dtype(cfg.data.vae_dtype))
        cache = LatentCache(cfg.data.cache, vae, cfg.model.vae, cfg.data.vae_dtype)
        samples, _ = build_index(records, cfg.data, cache, config.reference_area, 0, 1, lambda obj: [obj])
        data = TrainData(samples, cache, cfg.data, config.reference_area, 0, 0, 1, read_media=True)
        with torch.no_grad():
            summed, own, count = motion_gap(trainee, data, samples, 0, 1, device, args.times)
        print(f"{init[-60:]:60s} {own / max(count, 1):8.4f} {summed / max(count, 1):8.4f} {count}")


if __name__ == "__main__":
    run_cli(main)
