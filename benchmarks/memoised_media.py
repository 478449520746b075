"""What memoised media save a training step, on the CPU: the processor's time per context, and the ops of a batch's
reading by the VLM.

Each sample of a small procedural world is read twice, under its long and its short caption, as training reads a
sample's prompt variants; with the memo on the second read reuses the first one's media:

    python benchmarks/memoised_media.py [--per-task 8]

prints the milliseconds per context of each task with the memo off and on, the bytes of pixels the memo keeps
(before and after the vision tower has read them), then the tensor ops of `encode_batch` over 4 and 16 memoised
contexts of t2v, ti2i and tv2v: the VLM's own forward over the kept pixels (session 15's run) against the vision
tower's kept features (`InterleavedEncoder.read_prompts`).
A small model's step is bound by the host launching ops, so the count says the same on every machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import world  # noqa: E402
from training.config import load as load_config  # noqa: E402
from training.data import letterbox, media_specs, read_fitted, read_image  # noqa: E402
from training.logs import OpCount  # noqa: E402
from training.manifest import read_manifest  # noqa: E402
from training.model import build  # noqa: E402

CONFIG = ROOT / "training" / "configs" / "embedded" / "stage3.toml"


def contexts_by_task(manifest, cfg, reference_area: int) -> dict[str, list]:
    """task -> [((text, images, video, fps), key)], each sample under its long and its short caption."""
    by_task = {}
    for record in read_manifest(manifest):
        images = [letterbox(read_image(path), reference_area) for path in record.ref_images]
        video = fps = None
        if record.ref_video:
            path, spec = media_specs(record, cfg.data, reference_area)[-1]
            video, fps = read_fitted(path, spec)
        captions = (record.caption_long, record.caption_short)
        by_task.setdefault(record.task, []).extend(((caption, images, video, fps), (record.id, caption))
                                                   for caption in captions)
    return by_task


def kept_pixels(encoder) -> int:
    """Bytes of the pixel tensors that the memo holds."""
    kept = {id(tensor): tensor for inputs, _ in encoder.memo.values() for name, tensor in inputs.items()
            if name.startswith("pixel_values")}
    return sum(t.numel() * t.element_size() for t in kept.values())


def reading_ops(encoder, contexts) -> int:
    """Ops of `encode_batch` over memoised contexts (run once before, so that the memo holds them)."""
    batch, keys = [context for context, _ in contexts], [key for _, key in contexts]
    encoder.encode_batch(batch, keys)
    with OpCount() as count:
        encoder.encode_batch(batch, keys)
    return count.ops


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-task", type=int, default=8)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(CONFIG, [f"model.qwen={ROOT / 'training' / 'embedded-src' / 'qwen3vl'}"])
    cfg.model.init, cfg.model.mmdit = None, load_config(CONFIG.with_name("stage0.toml")).model.mmdit
    trainee, config = build(cfg)
    encoder = trainee.encoder
    with tempfile.TemporaryDirectory() as folder:
        world.main(["--out", folder, "--size", "128", "--per-task", str(args.per_task), "--seed", "1"])
        by_task = contexts_by_task(Path(folder) / "manifest.jsonl", cfg, config.reference_area)
    print(f"{'task':<10} {'memo off, ms':>12} {'memoised media, ms':>19}")
    for task, contexts in by_task.items():
        times = []
        for memo in (None, {}):
            encoder.memo = memo
            started = time.perf_counter()
            for context, key in contexts:
                encoder.prepared(context, key)
            times.append(1000 * (time.perf_counter() - started) / len(contexts))
        print(f"{task:<10} {times[0]:>12.2f} {times[1]:>19.2f}")
    print(f"pixels kept for the last task: {kept_pixels(encoder) / 2**20:.1f} MiB", end="")
    last = list(by_task.values())[-1]
    for start in range(0, len(last), 8):  # training's reading: the tower reads each media once, then lets it go
        encoder.encode_batch(*map(list, zip(*last[start:start + 8])))
    print(f"; once the vision tower has read them: {kept_pixels(encoder) / 2**20:.1f} MiB")
    print(f"\n{'task':<6} {'contexts':>8} {'ops, pixels every step':>23} {'ops, kept features':>19}")
    for task in ("t2v", "ti2i", "tv2v"):
        for count in (4, 16):
            ops = []
            for pixels_every_step in (True, False):  # the VLM's own forward over the kept pixels, as in session 15
                encoder.memo = {}
                if pixels_every_step:
                    encoder.read_prompts = encoder.read_prompts_with_pixels
                else:
                    del encoder.read_prompts  # the class's own
                ops.append(reading_ops(encoder, by_task[task][:count]))
            print(f"{task:<6} {count:>8} {ops[0]:>23} {ops[1]:>19}")


if __name__ == "__main__":
    main()
