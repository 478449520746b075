"""What the embedded MMDiT's patch size costs a CPU: 30 sampling steps with CFG (two forwards a step), random
weights in float32, at the embedded size (a 16x16 latent: 128x128 pixels; 1 frame, or 5 latent frames = 17).

    python benchmarks/mmdit_patch_cpu.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import load as load_config  # noqa: E402
from vino_model.config import preset  # noqa: E402
from vino_model.mmdit import VinoMMDiT  # noqa: E402

STAGE0 = Path(__file__).resolve().parents[1] / "training" / "configs" / "embedded" / "stage0.toml"
STEPS = 30


@torch.no_grad()
def seconds_per_forward(model: VinoMMDiT, frames: int, repeats: int) -> float:
    latents, text = torch.randn(2, 16, frames, 16, 16), torch.randn(2, 30, model.cfg.text_dim)
    timestep, guidance = torch.full((2,), 500.0), torch.full((2,), 1000.0)
    model(latents, timestep, text, None, None, None, guidance)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        model(latents, timestep, text, None, None, None, guidance)
    return (time.perf_counter() - started) / repeats


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = {k: tuple(v) if isinstance(v, list) else v for k, v in load_config(STAGE0).model.mmdit.items()}
    for patch in ((1, 2, 2), (1, 1, 1)):
        config = dataclasses.replace(preset("tiny").mmdit, **{**shape, "patch_size": patch})
        model = VinoMMDiT(config).eval()
        image, video = (seconds_per_forward(model, frames, args.repeats) * STEPS for frames in (1, 5))
        print(f"patch {'x'.join(map(str, patch))}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
              f"parameters; {STEPS} steps with CFG: image {image:.1f} s, 17-frame video {video:.1f} s")


if __name__ == "__main__":
    main()
