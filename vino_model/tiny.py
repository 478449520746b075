"""Tiny random VINO bundles: the real code paths at CPU-friendly sizes, for tests and demos.

`python -m vino_model.tiny OUT` writes OUT/vino.safetensors, OUT/qwen3vl/ and OUT/vae.safetensors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from .checkpoint import save_vino
from .config import EncoderConfig, VinoConfig, preset
from .encoder import MMEncoder
from .mmdit import VinoMMDiT
from .tiny_qwen import make_tiny_qwen3vl
from .vae import make_tiny_vae

BUNDLE_FILES = ("vino.safetensors", "qwen3vl", "vae.safetensors")
# The trained embedded default that ships with the project (training/bundle.py writes it; `demo/` holds
# one held-out world sample per task kind, its task files and references).
SHIPPED_BUNDLE = Path(__file__).resolve().parent / "embedded"
DEMO_TASK_FILES = ("demo/tasks_image.json", "demo/tasks_video.json")


def is_bundle(folder: Path) -> bool:
    return all((folder / part).exists() for part in BUNDLE_FILES)


def random_vino_state(config: VinoConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    mmdit = VinoMMDiT(config.mmdit)
    mm = MMEncoder(config.encoder.vlm_hidden, config.encoder.num_queries, config.mmdit.text_dim, config.mmdit.hidden)
    state = {f"transformer.{k}": v for k, v in mmdit.state_dict().items()}
    state.update({f"mm_encoder.{k}": v for k, v in mm.state_dict().items()})
    return state


def make_tiny_bundle(out: str | Path, seed: int = 0) -> Path:
    """Write a complete tiny random bundle (a no-op when it is already there)."""
    out = Path(out)
    if all((out / name).exists() for name in BUNDLE_FILES):
        return out
    out.mkdir(parents=True, exist_ok=True)
    qwen = make_tiny_qwen3vl(out / "qwen3vl", seed=seed)
    vlm_hidden = json.loads((qwen / "config.json").read_text())["text_config"]["hidden_size"]
    base = preset("tiny")
    config = dataclasses.replace(base, encoder=EncoderConfig(vlm_hidden=vlm_hidden, num_queries=base.encoder.num_queries))
    make_tiny_vae(seed).save(out / "vae.safetensors")
    save_vino(out / "vino.safetensors", random_vino_state(config, seed), config)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for the bundle")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(make_tiny_bundle(args.out, args.seed))


if __name__ == "__main__":
    main()
