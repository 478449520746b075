"""Run a task file (the release's JSON format) through VINO and write PNG / MP4 files.

    python -m vino_model.generate --tasks tasks.json --checkpoint vino.safetensors \
        --qwen Qwen3-VL-4B-Instruct --vae hunyuan_video_vae_bf16.safetensors --out outputs/
    torchrun --nproc-per-node 2 -m vino_model.generate ...   (sequence parallel over 2 GPUs)

A task file is a JSON list of {index, task, caption, ref_image_paths?, ref_video_path?, ref_image_have_base?}.
`--demo` runs the embedded default (vino_model/embedded, a small VINO trained by `training/` on the
procedural world) on its demo tasks, one held-out prompt per task kind, at 64x64 and 17 frames. Where
the trained weights are not in the checkout, it runs those tasks on a tiny random model (noise out).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from . import media
from .errors import VinoInputError, run_cli
from .mmdit import ATTENTION_BACKENDS
from .parallel import init_from_env
from .pipeline import DTYPES, VinoPipeline
from .tasks import TASKS, read_task_file
from .tiny import (BUNDLE_FILES, DEMO_TASK_FILES, SHIPPED_BUNDLE, bundle_defaults, image_cfg_for, is_bundle,
                   make_tiny_bundle, output_defaults)

log = logging.getLogger("vino")

DEMO_MODEL = Path(".cache/vino-demo/model")  # --demo's stand-in while the trained default is not checked out


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m vino_model.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=Path, help="task file (JSON list)")
    p.add_argument("--checkpoint", type=Path, help="vino.ckpt, our .safetensors file or a sharded folder")
    p.add_argument("--qwen", type=Path, help="Qwen3-VL folder (Qwen3-VL-4B-Instruct for the official weights)")
    p.add_argument("--vae", type=Path, help="HunyuanVideo VAE: diffusers folder or one .safetensors file")
    p.add_argument("--model", type=Path, help="a bundle folder (vino.safetensors, qwen3vl/, vae.safetensors, defaults.json), "
                   "e.g. vino_model/embedded: sets --checkpoint/--qwen/--vae and its sampling defaults")
    p.add_argument("--out", type=Path, default=Path("output"), help="output folder (default: output/)")
    p.add_argument("--demo", action="store_true",
                   help="the embedded default on its demo tasks (every task kind), at the size it was trained for")
    p.add_argument("--width", type=int, help="output width (default 640 for images, 848 for videos)")
    p.add_argument("--height", type=int, help="output height (default 640 for images, 480 for videos)")
    p.add_argument("--frames", type=int, help="output frames, 4k+1 (default 85; 81 for video edits)")
    p.add_argument("--steps", type=int, help="sampling steps (default 50; a bundle's own, which may differ for "
                   "images and videos)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seed-per-entry", action="store_true",
                   help="each task-file entry draws its noise from SEED + its index instead of SEED: prompts that "
                        "differ in a word or two are then not drawn from one noise (a benchmark's prompts count as "
                        "independent draws)")
    p.add_argument("--cfg", type=float, help="text CFG (default 5 for images, 7 for videos)")
    p.add_argument("--image-cfg", type=float,
                   help="image CFG of every task; 1 (the default) is off, 1-3 for reference tasks. Unset, a bundle's "
                        "defaults may give some tasks their own")
    p.add_argument("--shift", type=float, help="schedule shift (default 5 for images, 7 for videos)")
    p.add_argument("--negative-image", help="negative prompt for image tasks ('' for none)")
    p.add_argument("--negative-video", help="negative prompt for video tasks ('' for none)")
    p.add_argument("--reference-mode", choices=["sample", "mode"], default="sample",
                   help="encode references with a posterior sample (the release) or its mode (reproducible)")
    p.add_argument("--tiled-decode", action="store_true", help="decode the VAE in tiles to save memory")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="default bfloat16 on GPU, float32 on CPU")
    p.add_argument("--attention", default="auto", choices=ATTENTION_BACKENDS,
                   help="attention kernel: torch SDPA's (auto, cudnn, flash, efficient, math), or flash4 "
                        "(FlashAttention-4, exact; needs the flash-attn-4 package and a Hopper or Blackwell GPU)")
    p.add_argument("--save-latents", action="store_true", help="also write the final latents as safetensors")
    p.add_argument("--video-suffix", choices=[".mp4", ".webm", ".gif", ".webp", media.RAW_CLIP], default=".mp4",
                   help="the videos' format (default .mp4; .npz keeps every pixel and needs no PyAV)")
    p.add_argument("--compile", action="store_true", help="torch.compile the blocks (about 1.25x on an H100)")
    p.add_argument("--fp8", action="store_true", help="FP8 linear layers on Hopper GPUs (faster, approximate)")
    p.add_argument("--step-cache", type=float, default=0.0, metavar="THRESHOLD",
                   help="first-block step caching (approximate): reuse the deep blocks' residual while the first "
                        "block's changes by less than this relative amount, e.g. 0.05; 0 is off")
    p.add_argument("--max-gpu-memory", type=float, metavar="GB",
                   help="fit a GPU of this size: stream blocks from CPU memory, visit the VLM and VAE")
    p.add_argument("--shard", default="0/1", metavar="K/N",
                   help="run only the task file's entries K, K+N, K+2N, ... (N processes side by side share a GPU "
                        "that one small model leaves idle)")
    return p.parse_args(argv)


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 0 <= K < N."""
    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and int(k) < int(n)):
        raise VinoInputError(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/4")
    return int(k), int(n)


# ---------------------------------------------------------------- running a task file

# image_cfg_tasks: {task: image CFG} over image_cfg, "ti2i_ref" naming ti2i with ref_image_have_base. Steps are
# not among them: a bundle may give images and videos their own (steps_image, steps_video over steps), so an unset
# --steps is resolved per entry by the pipeline's output_defaults.
BUNDLE_DEFAULTS = ("width", "height", "frames", "cfg", "image_cfg", "image_cfg_tasks", "shift", "negative_image",
                   "negative_video")


def apply_bundle(args) -> dict:
    """--model DIR: the bundle's three parts, and its defaults.json for every option left unset. Returns those
    defaults (their steps are the pipeline's, per output kind)."""
    folder = args.model
    parts = {name: folder / part for name, part in zip(("checkpoint", "qwen", "vae"), BUNDLE_FILES)}
    missing = [str(p) for p in parts.values() if not p.exists()]
    if missing:
        raise VinoInputError(f"--model {folder} is not a VINO bundle: missing {', '.join(missing)}")
    for name, path in parts.items():
        if getattr(args, name) is None:
            setattr(args, name, path)
    defaults = bundle_defaults(folder)
    given = {name for name in BUNDLE_DEFAULTS if getattr(args, name, None) is not None}
    for name in BUNDLE_DEFAULTS:
        if name not in given and name in defaults:
            setattr(args, name, defaults[name])
    if "image_cfg" in given:
        args.image_cfg_tasks = None  # the user's image CFG serves every task
    return defaults


def entry_image_cfg(args, entry) -> float:
    """The image CFG of one task-file entry: the bundle's for its task, if it has one, else image_cfg."""
    given = {"image_cfg": args.image_cfg, "image_cfg_tasks": getattr(args, "image_cfg_tasks", None)}
    return image_cfg_for(given, entry.task, entry.ref_image_have_base)


def run(args) -> list[Path]:
    parallel, device = init_from_env(args.device)  # several GPUs under torchrun: sequence parallel
    is_writer = parallel is None or parallel.rank == 0
    task_files = [args.tasks]
    if args.demo:
        task_files = [SHIPPED_BUNDLE / name for name in DEMO_TASK_FILES]
        if is_bundle(SHIPPED_BUNDLE):
            args.model = args.model or SHIPPED_BUNDLE
        else:  # the trained weights are not in this checkout: the same tasks on a tiny random model
            if is_writer:
                make_tiny_bundle(DEMO_MODEL)  # also adds defaults.json to one written before it had one
            if parallel is not None:
                torch.distributed.barrier()
            args.model = DEMO_MODEL  # its defaults.json: 64x64, 17 frames, 4 steps
            log.warning("demo: no trained embedded default in %s; running a tiny RANDOM model instead (its "
                        "outputs are noise: they show the path runs)", SHIPPED_BUNDLE)
    bundle = apply_bundle(args) if args.model else None
    args.image_cfg = 1.0 if args.image_cfg is None else args.image_cfg
    if task_files == [None]:
        raise VinoInputError("--tasks is required (or use --demo)")
    for name in ("checkpoint", "qwen", "vae"):
        if getattr(args, name) is None:
            raise VinoInputError(f"--{name} is required (or --model, or --demo)")
    shard, shards = parse_shard(args.shard)
    entries = [entry for file in task_files for entry in read_task_file(file)][shard::shards]
    if not entries:  # a shard past the end of a short task file: nothing to load the model for
        log.info("shard %d/%d: no entries", shard, shards)
        return []
    dtype = args.dtype or ("bfloat16" if str(device).startswith("cuda") else "float32")
    started = time.perf_counter()
    pipe = VinoPipeline.load(args.checkpoint, args.qwen, args.vae, device, dtype, args.attention, args.compile,
                             args.fp8, args.max_gpu_memory)
    pipe.mmdit.sequence_parallel = parallel
    if bundle is not None:
        pipe.output_defaults = output_defaults(bundle)  # its steps for each output kind
    log.info("loaded VINO in %.1f s", time.perf_counter() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in entries:
        task = TASKS[entry.task]
        images = [media.read_image(p) for p in entry.ref_image_paths]
        video, fps = media.read_video(entry.ref_video_path) if entry.ref_video_path else (None, None)
        negative = args.negative_image if task.output == "image" else args.negative_video
        seed = args.seed + entry.index if args.seed_per_entry else args.seed
        started = time.perf_counter()
        result = pipe.generate(
            entry.task, entry.caption, images, video, fps, entry.ref_image_have_base, args.width, args.height,
            args.frames, args.steps, seed, args.cfg, entry_image_cfg(args, entry), args.shift, negative,
            sample_posterior=args.reference_mode == "sample", tiled_decode=args.tiled_decode,
            cache_threshold=args.step_cache,
        )
        if not is_writer:
            continue
        stem = args.out / f"{entry.index}_{entry.task}"
        if result.frames.shape[0] == 1:
            path = media.write_png(stem.with_suffix(".png"), result.frames[0], {"prompt": entry.caption})
        else:
            path = media.write_video(stem.with_suffix(args.video_suffix), result.frames, result.fps)
        written.append(path)
        if args.save_latents:
            save_file({"latents": result.latents.float().cpu().contiguous()}, str(stem) + ".latents.safetensors")
        log.info("%s %s: %s (%.1f s)", entry.index, entry.task, path, time.perf_counter() - started)
    return written


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    return run_cli(lambda: print("\n".join(str(p) for p in run(args))))


if __name__ == "__main__":
    sys.exit(main())
