"""Train one VINO stage: `python -m training.run CONFIG [section.key=value ...]`.

    python -m training.run training/configs/tiny/stage0.toml run.steps=200 optim.lr=3e-4
    deepspeed --num_gpus 8 --module training.run training/configs/hunyuan13b/stage1.toml
    torchrun --nproc_per_node 8 -m training.run training/configs/hunyuan13b/stage1.toml

A run continues from RUN/checkpoints/latest when there is one, and writes RUN/export/vino.safetensors
(the layout Load VINO reads) when it reaches run.steps.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from vino_model.errors import run_cli

from . import config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.run", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="a stage config (.toml or .json), e.g. training/configs/tiny/stage0.toml")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. run.steps=10 optim.lr=3e-5")
    parser.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    def command():
        cfg = config.load(args.config, args.overrides)
        from .loop import train  # after the config is known good: importing DeepSpeed takes seconds

        train(cfg)

    return run_cli(command)


if __name__ == "__main__":
    sys.exit(main())
