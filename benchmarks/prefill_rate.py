"""Where prefill's time goes (training/prefill.py): contexts a second, the anchor being the whole prefill as a stage
runs it, against the same workers sending their outputs without pixels (what the main process then receives is
small) and against one worker's own time for a context. If dropping the pixels speeds prefill up, the pixels' way
to the main process bounds it; if prefill runs at the workers' own rate, their processing does.

    python benchmarks/prefill_rate.py MANIFEST [--workers 15] [--config training/configs/embedded/stage3.toml]

MANIFEST: a world split (python -m training.world ... --per-task 300); its latents go into --cache first.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import model  # noqa: E402
from training import prefill as P  # noqa: E402
from training.config import load as load_config  # noqa: E402
from training.data import LatentCache, TrainData, build_index, read_ahead  # noqa: E402
from training.manifest import read_manifest  # noqa: E402
from vino_model.vae import VinoVAE  # noqa: E402


def read_without_pixels(context) -> bytes:
    """A worker's whole work on a context, then its outputs with every pixel tensor emptied."""
    fitted, made = pickle.loads(P._read(context))
    for outputs in made.values():
        for output in outputs.values():
            for name, _ in P.PIXELS:
                if isinstance(output.get(name), torch.Tensor):
                    output[name] = output[name][:0].clone()
    return pickle.dumps((fitted, made), protocol=pickle.HIGHEST_PROTOCOL)


def without_pixels(data, qwen, dtype, workers: int, contexts: list) -> float:
    started = time.monotonic()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=P._start_worker,
                             initargs=(str(qwen), dtype, data.reference_area)) as pool:
        for fitted, _ in map(pickle.loads, read_ahead(pool, read_without_pixels, contexts, 4 * workers)):
            data.fitted.update(fitted)
    return time.monotonic() - started


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("manifest")
    p.add_argument("--config", default="training/configs/embedded/stage3.toml")
    p.add_argument("--workers", type=int, default=15)
    p.add_argument("--cache", default="cache/prefill-rate")
    p.add_argument("--init", default="training/embedded-src/stage3")
    p.add_argument("--qwen", default="training/embedded-src/qwen3vl")
    p.add_argument("--vae", default="training/embedded-src/vae.safetensors")
    p.add_argument("--single", type=int, default=60, help="contexts timed in this process alone")
    args = p.parse_args(argv)
    cfg = load_config(args.config, [f'data.manifest=["{args.manifest}"]', f'data.cache="{args.cache}"',
                                    f'model.init="{args.init}"', f'model.qwen="{args.qwen}"',
                                    f'model.vae="{args.vae}"', "model.compile=false"])
    trainee, config = model.build(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trainee.encoder.to(device)
    vae = VinoVAE.load(cfg.model.vae, device=device, dtype=torch.float32)
    cache = LatentCache(cfg.data.cache, vae, cfg.model.vae, "float32", True)
    samples, _ = build_index(list(read_manifest(args.manifest)), cfg.data, cache, config.reference_area, 0, 1,
                             lambda x: [x])
    fresh = lambda: TrainData(samples, cache, cfg.data, config.reference_area, 0, 0, 1, read_media=True)  # noqa: E731
    dtype = str(trainee.encoder.vlm.model.visual.dtype).removeprefix("torch.")

    data = fresh()
    trainee.encoder.memo = {}
    anchor = P.prefill(data, trainee.encoder, cfg.model.qwen, args.workers)
    n = anchor["contexts"]
    contexts = [P.full_context(s) for s in data.samples if s.record.ref_images or s.video is not None]
    bare = without_pixels(fresh(), cfg.model.qwen, dtype, min(args.workers, os.cpu_count() - 1), contexts)
    P._start_worker(str(cfg.model.qwen), dtype, data.reference_area)
    torch.set_num_threads(1)
    started = time.monotonic()
    sizes = [len(P._read(c)) for c in contexts[: args.single]]
    single = (time.monotonic() - started) / len(sizes)
    print(f"{n} contexts, {anchor['media']} media, {args.workers} workers, {sum(sizes) / len(sizes) / 1e6:.2f} MB "
          "sent a context")
    print(f"prefill (anchor):         {n / anchor['seconds']:7.1f} contexts/s  1.00x")
    print(f"without pixels:           {n / bare:7.1f} contexts/s  {anchor['seconds'] / bare:.2f}x")
    print(f"workers' own rate:        {args.workers / single:7.1f} contexts/s  "
          f"{anchor['seconds'] / (n * single / args.workers):.2f}x  ({single * 1000:.1f} ms a context in one)")


if __name__ == "__main__":
    main()
