"""Tiny random VINO bundles: the real code paths at CPU-friendly sizes, for tests and demos.

`python -m vino_model.tiny OUT` writes OUT/vino.safetensors, OUT/qwen3vl/, OUT/vae.safetensors and OUT/defaults.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from .checkpoint import join_vino_state, save_vino
from .config import EncoderConfig, VinoConfig, preset
from .encoder import MMEncoder
from .errors import VinoInputError
from .mmdit import VinoMMDiT
from .tasks import DEFAULTS
from .tiny_qwen import make_tiny_qwen3vl
from .vae import make_tiny_vae

BUNDLE_FILES = ("vino.safetensors", "qwen3vl", "vae.safetensors")
# The trained embedded default that ships with the project (training/bundle.py writes it; `demo/` holds
# one held-out world sample per task kind, its task files and references).
SHIPPED_BUNDLE = Path(__file__).resolve().parent / "embedded"
DEMO_TASK_FILES = ("demo/tasks_image.json", "demo/tasks_video.json")


# A tiny random model's sampling defaults: the whole path on a CPU in seconds (its outputs are noise at any size).
TINY_DEFAULTS = {"width": 64, "height": 64, "frames": 17, "steps": 4}


def is_bundle(folder: Path) -> bool:
    return all((folder / part).exists() for part in BUNDLE_FILES)


def bundle_defaults(folder: Path) -> dict:
    """A bundle's defaults.json (training/bundle.py: width, height, frames, steps, cfg, image_cfg, shift, ...), or
    {} when it has none."""
    path = Path(folder) / "defaults.json"
    if not path.is_file():
        return {}
    try:
        defaults = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise VinoInputError(f"{path} is not valid JSON ({err}); expected the bundle's sampling defaults") from err
    if not isinstance(defaults, dict):
        raise VinoInputError(f"{path} holds a {type(defaults).__name__}; expected a JSON object of sampling defaults")
    return defaults


def image_cfg_for(bundle: dict, task: str, have_base: bool = False) -> float:
    """A task's image CFG when none is given: a bundle's own for its kind (its image_cfg_tasks; ti2i with
    ref_image_have_base is "ti2i_ref"), else its image_cfg, else the release's 1.0 (off). The CLI and the nodes
    both take it from here."""
    kind = "ti2i_ref" if task == "ti2i" and have_base else task
    own = bundle.get("image_cfg")
    return (bundle.get("image_cfg_tasks") or {}).get(kind, 1.0 if own is None else own)


def output_defaults(bundle: dict) -> dict:
    """tasks.DEFAULTS (per output kind: width, height, frames, steps, shift, text_cfg, negative) with a bundle's
    defaults over the release's: what a model left to its own defaults draws. A bundle's steps_image and steps_video
    take the place of its steps for that kind."""
    own = {"width": bundle.get("width"), "height": bundle.get("height"), "shift": bundle.get("shift"),
           "text_cfg": bundle.get("cfg")}
    result = {}
    for output, release in DEFAULTS.items():
        kind = {"negative": bundle.get(f"negative_{output}"),  # "" (none) is a negative prompt too
                "steps": bundle.get(f"steps_{output}", bundle.get("steps"))}
        if output == "video":
            kind["frames"] = bundle.get("frames")
        result[output] = {**release, **{k: v for k, v in {**own, **kind}.items() if v is not None}}
    return result


def random_vino_state(config: VinoConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    mmdit = VinoMMDiT(config.mmdit)
    mm = MMEncoder(config.encoder.vlm_hidden, config.encoder.num_queries, config.mmdit.text_dim, config.mmdit.hidden)
    return join_vino_state(mmdit.state_dict(), mm.state_dict())


def make_tiny_bundle(out: str | Path, seed: int = 0) -> Path:
    """Write a complete tiny random bundle (a no-op when it is already there)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "defaults.json").is_file():  # also into a bundle written before it had one
        (out / "defaults.json").write_text(json.dumps(TINY_DEFAULTS, indent=1) + "\n")
    if is_bundle(out):
        return out
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
