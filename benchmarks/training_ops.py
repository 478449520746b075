"""Tensor ops of one embedded training step, by batch size, and of DeepSpeed's optimizer step.

The embedded model's step is bound by the host launching ops, not by the GPU's arithmetic, so the count of
ops a step dispatches is what its speed follows. Counted on the CPU (the same ops launch on a GPU):

    python benchmarks/training_ops.py [--batches 8 32] [--stages 0 1] [--references 0 1 2]

prints, per stage, the ops of a forward and backward at each batch and what one more sample costs, then
DeepSpeed's ZeRO-2 step with `optim.check_overflow` on and off.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import engine  # noqa: E402
from training.config import load as load_config  # noqa: E402
from training.data import Context  # noqa: E402
from training.logs import OpCount  # noqa: E402
from training.model import build  # noqa: E402

CONFIGS = ROOT / "training" / "configs" / "embedded"
CAPTIONS = ["a picture of two small striped blue squares on a background that is light gray on top and dark gray below",
            "a black background with a small striped green triangle in the bottom right corner",
            "a large red star moves left slowly"]


def stage_config(stage: int, check_overflow: bool = True):
    """The embedded stage's config on the committed VLM, its MMDiT fresh (stage 0's shape)."""
    cfg = load_config(CONFIGS / f"stage{stage}.toml", [f"model.qwen={ROOT / 'training' / 'embedded-src' / 'qwen3vl'}"])
    cfg.model.init, cfg.model.mmdit = None, load_config(CONFIGS / "stage0.toml").model.mmdit
    cfg.optim.check_overflow = check_overflow
    return cfg


def step_inputs(trainee, batch: int, frames: int = 5, references: int = 0):
    """A batch of `batch` samples, each with `references` reference images (128 x 128, a 16 x 16 latent)."""
    channels = trainee.transformer.cfg.in_channels
    x0 = torch.randn(batch, channels, frames, 16, 16)
    label = "".join(f"Image {i + 1} " for i in range(references))
    image = Image.new("RGB", (128, 128), "red")
    contexts = [Context(label + CAPTIONS[b % 3], [image] * references, None, None, key=(b % 3, references))
                for b in range(batch)]
    refs = [[torch.randn(channels, 1, 16, 16) for _ in range(references)] for _ in range(batch)]
    return x0, torch.randn_like(x0), torch.rand(batch), refs, contexts


def forward_backward_ops(trainee, batch: int, references: int = 0) -> int:
    trainee(*step_inputs(trainee, batch, references=references))  # fills the per-shape and per-context caches
    with OpCount() as count:
        loss, _ = trainee(*step_inputs(trainee, batch, references=references))
        loss.mean().backward()
    return count.ops


def optimizer_step_ops(check_overflow: bool) -> int:
    cfg = stage_config(0, check_overflow)
    cfg.data.batch_size = 4
    trainee, _ = build(cfg)
    ds = engine.build_engine(cfg, trainee)
    for _ in range(2):  # the first step sets up DeepSpeed's buffers
        loss, _ = ds(*step_inputs(trainee, 4, frames=1))
        ds.backward(loss.mean())
        with OpCount() as count:
            ds.step()
    return count.ops


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs=2, default=[8, 32])
    p.add_argument("--stages", type=int, nargs="+", default=[0, 1])
    p.add_argument("--references", type=int, nargs="+", default=[0],
                   help="reference images a sample (stages 1-3: the VLM reads them, the MMDiT's stream holds them)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    small, large = args.batches
    for stage in args.stages:
        trainee, _ = build(stage_config(stage))
        trainee.train()
        trainee.encoder.memo = {}  # as in training (data.keep_in_memory)
        for references in args.references if stage > 0 else [0]:
            counts = [forward_backward_ops(trainee, b, references) for b in (small, large)]
            print(f"stage {stage}, {references} reference images a sample: forward + backward {counts[0]} ops at "
                  f"batch {small}, {counts[1]} at {large}: {(counts[1] - counts[0]) / (large - small):.1f} ops per sample")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29531"), RANK="0",
                      WORLD_SIZE="1", LOCAL_RANK="0")
    dist.init_process_group("gloo")
    on, off = optimizer_step_ops(True), optimizer_step_ops(False)
    print(f"DeepSpeed ZeRO-2 step (stage 0's MMDiT): {on} ops with optim.check_overflow, {off} without "
          f"({off / on:.2f}x)")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
