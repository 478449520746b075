"""How far exports draw from a base export: the relative change of the final latent, |new - base| / |base|, on the
first prompts of a held-out world's t2i and t2v, each drawn from the same noise. A yardstick for a change made to
weights outside training (a grown, split, averaged or quantized export) against what one training call moves.

    python benchmarks/latent_drift.py BASE MODEL [MODEL ...] [--data data/embedded/heldout] [--prompts 2]

BASE and each MODEL are VINO exports (a .safetensors file or a sharded folder); the tiny language model and VAE come
from training/embedded-src/ (--qwen, --vae). --size S and --frames F shrink the outputs (the bundle's size and the
prompts' frames by default): on the 2-core CPU, four exports at the defaults took more than 15 minutes, so start with
--prompts 1 --frames 9. In session 63, measured the same way by hand on one t2i prompt and one 9-frame t2v prompt, the
seed split into two more single blocks (`training.grow --split`) moved t2i 21% and t2v 14%, and a training call on
from the seed moved t2i 16% (session 62's, on from another line's trunk, 41%).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.manifest import read_manifest  # noqa: E402
from vino_model.errors import VinoInputError, run_cli  # noqa: E402
from vino_model.pipeline import VinoPipeline  # noqa: E402

TASKS = ("t2i", "t2v")


def prompts(data: Path, count: int, frames: int | None) -> list[tuple[str, str, int]]:
    """(task, caption, frames) of the first `count` prompts of each of TASKS in the world split at `data`, a video's
    frames at most `frames`."""
    manifest = data / "manifest.jsonl"
    if not manifest.is_file():
        raise VinoInputError(f"--data {data}: expected a world split with a manifest.jsonl (python -m training.world)")
    chosen = {task: [] for task in TASKS}
    for record in read_manifest(str(manifest)):
        if record.task in chosen and len(chosen[record.task]) < count:
            chosen[record.task].append((record.task, record.caption_long, min(record.frames, frames or record.frames)))
    missing = [task for task, found in chosen.items() if len(found) < count]
    if missing:
        raise VinoInputError(f"--data {data}: fewer than {count} prompts of {', '.join(missing)}")
    return [p for task in TASKS for p in chosen[task]]


def final_latents(weights: str, qwen: str, vae: str, asked: list[tuple[str, str, int]], steps: int,
                  size: int | None) -> list:
    pipe = VinoPipeline.load(weights, qwen, vae)
    return [pipe.generate(task, caption, steps=steps, seed=3, frames=frames, width=size, height=size,
                          sample_posterior=False).latents for task, caption, frames in asked]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", help="the export the others are measured from")
    p.add_argument("models", nargs="+", help="exports to measure")
    p.add_argument("--data", default="data/embedded/heldout", help="a held-out world split (its manifest.jsonl)")
    p.add_argument("--prompts", type=int, default=2, help="prompts of each of t2i and t2v")
    p.add_argument("--steps", type=int, default=8, help="sampling steps")
    p.add_argument("--size", type=int, help="the side of a square output (default: the bundle's)")
    p.add_argument("--frames", type=int, help="at most this many frames a video (default: the prompt's)")
    p.add_argument("--qwen", default=str(ROOT / "training/embedded-src/qwen3vl"))
    p.add_argument("--vae", default=str(ROOT / "training/embedded-src/vae.safetensors"))
    args = p.parse_args(argv)

    def run():
        for name in ("prompts", "steps", "size", "frames"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise VinoInputError(f"--{name} {value}: expected a whole number, at least 1")
        for path in (args.base, *args.models):
            if not Path(path).exists():
                raise VinoInputError(f"export '{path}': expected a .safetensors file or a sharded folder")
        asked = prompts(Path(args.data), args.prompts, args.frames)
        base = final_latents(args.base, args.qwen, args.vae, asked, args.steps, args.size)
        print("| model | " + " | ".join(TASKS) + " |\n|---|" + "---|" * len(TASKS))
        for model in args.models:
            drawn = final_latents(model, args.qwen, args.vae, asked, args.steps, args.size)
            cells = []
            for task in TASKS:
                pairs = [(b, d) for (t, _, _), b, d in zip(asked, base, drawn) if t == task]
                change = sum(float((d - b).norm() / b.norm()) for b, d in pairs) / len(pairs)
                cells.append(f"{100 * change:.3g}%")
            print(f"| {model} | " + " | ".join(cells) + " |")
    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
