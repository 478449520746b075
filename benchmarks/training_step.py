"""Seconds of an embedded stage-3 training step (forward, backward, DeepSpeed's step) on synthetic batches, for the
code of one checkout or two, measured in the same run: the second against the first as a ratio.

    python benchmarks/training_step.py [--roots OLD_CHECKOUT .] [--steps 40] [--batch 256]
    python benchmarks/training_step.py --variants "" "model.compile=true" --warmup 30   # config changes, one root

(an old checkout without the weights: `mkdir old && git archive REV vino_model training/*.py training/configs |
tar x -C old`; on the lent GPU it travels as an untracked folder of the working tree)

Each checkout is measured in its own process (its `training` and `vino_model` imported from its root), from the
committed stage-3 seed and VLM of this checkout. Cases: text-to-image batches, and image batches whose samples
hold 1-3 reference images in a new mix every step (the mixed batches of ti2i_ref, whose layout the MMDiT cannot
keep from step to step). The loss is read back once every 10 steps, as the training loop does since session 17.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
CASES = {"t2i": [0], "mixed references": [1, 2, 3]}


def measure(root: Path, steps: int, batch: int, overrides: list[str], warmup: int) -> dict:
    """ms a step for each case, with `root`'s code and the stage-3 config changed by `overrides`."""
    sys.path.insert(0, str(root))
    import torch
    from PIL import Image

    from training import engine
    from training.config import load
    from training.data import Context
    from training.model import build

    seed = HERE / "training" / "embedded-src"
    cfg = load(root / "training" / "configs" / "embedded" / "stage3.toml",
               [f"model.init={seed / 'stage3'}", f"model.qwen={seed / 'qwen3vl'}", *overrides])
    rank, world, device = engine.init_distributed()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    trainee, _ = build(cfg)
    ds = engine.build_engine(cfg, trainee)
    ds.train()
    channels = trainee.transformer.cfg.in_channels
    image = Image.new("RGB", (128, 128), "red")
    rng = random.Random(0)
    out = {}
    for case, counts in CASES.items():
        def step(n: int):
            refs = [rng.choice(counts) for _ in range(batch)]
            contexts = [Context("".join(f"Image {i + 1} " for i in range(k)) + f"a red square number {b % 50}",
                                [image] * k, None, None, key=(b % 50, k)) for b, k in enumerate(refs)]
            x0 = torch.randn(batch, channels, 1, 16, 16, device=device)
            references = [[torch.randn(channels, 1, 16, 16, device=device) for _ in range(k)] for k in refs]
            loss, _ = ds(x0, torch.randn_like(x0), torch.rand(batch, device=device), references, contexts)
            ds.backward(loss.mean())
            ds.step()
            return loss.detach().mean()

        for n in range(warmup):  # the memo, the layouts, cuDNN's plans (and compiled graphs)
            step(n)
        sync()
        begun, losses = time.perf_counter(), []
        for n in range(steps):
            losses.append(step(n))
            if n % 10 == 9:
                float(torch.stack(losses).sum())
                losses = []
        sync()
        out[case] = 1000 * (time.perf_counter() - begun) / steps
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--roots", nargs="+", default=[str(HERE)], help="checkouts to measure, the first the baseline")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--variants", nargs="+", default=[""],
                   help="config changes to measure, each a space-separated list of section.key=value ('' for none)")
    p.add_argument("--warmup", type=int, default=10, help="steps of each case before the timed ones")
    p.add_argument("--one", help=argparse.SUPPRESS)  # measure this root in this process, print JSON
    p.add_argument("--overrides", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        result = measure(Path(args.one).resolve(), args.steps, args.batch, args.overrides.split(), args.warmup)
        print(json.dumps(result))
        return
    results = []
    for root in args.roots:
        for variant in args.variants:
            run = subprocess.run([sys.executable, __file__, "--one", root, "--steps", str(args.steps), "--batch",
                                  str(args.batch), "--warmup", str(args.warmup), f"--overrides={variant}"],
                                 capture_output=True, text=True)
            if run.returncode:
                raise SystemExit(f"{root} {variant!r}: exit {run.returncode}\n{run.stderr[-3000:]}")
            results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    for case in CASES:
        line = f"{case:18s} " + "  ".join(f"{r[case]:7.1f} ms" for r in results)
        if len(results) > 1:
            line += "  " + "  ".join(f"{results[0][case] / r[case]:.2f}x" for r in results[1:])
        print(line)


if __name__ == "__main__":
    main()
