"""Prefill's rate (training/prefill.py), in contexts a second: the anchor is prefill with the vision tower on the
main process (the way it ran until session 27), against the workers running a small tower themselves and sending its
reading instead of the pixels (what it does now for the embedded default), and against the workers' own work on a
context, one process timed alone (the rate the pool would reach if the main process kept up).

    python benchmarks/prefill_rate.py MANIFEST [--workers 15] [--config training/configs/embedded/stage3.toml]

MANIFEST: a world split (python -m training.world ... --per-task 200); its latents go into --cache first. Each
pool's time includes its workers' start (importing torch and transformers, loading the processor).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import model  # noqa: E402
from training import prefill as P  # noqa: E402
from training.config import load as load_config  # noqa: E402
from training.data import LatentCache, build_index  # noqa: E402
from training.manifest import read_manifest  # noqa: E402
from vino_model.vae import VinoVAE  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("manifest")
    p.add_argument("--config", default="training/configs/embedded/stage3.toml")
    p.add_argument("--workers", type=int, default=15)
    p.add_argument("--cache", default="cache/prefill-rate")
    p.add_argument("--init", default="training/embedded-src/stage3")
    p.add_argument("--qwen", default="training/embedded-src/qwen3vl")
    p.add_argument("--vae", default="training/embedded-src/vae.safetensors")
    p.add_argument("--single", type=int, default=60, help="about as many contexts timed in this process alone")
    args = p.parse_args(argv)
    cfg = load_config(args.config, [f'data.manifest=["{args.manifest}"]', f'data.cache="{args.cache}"',
                                    f'model.init="{args.init}"', f'model.qwen="{args.qwen}"',
                                    f'model.vae="{args.vae}"', "model.compile=false"])
    trainee, config = model.build(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trainee.encoder.to(device)
    vae = VinoVAE.load(cfg.model.vae, device=device, dtype=torch.float32)
    cache = LatentCache(cfg.data.cache, vae, cfg.model.vae, "float32", True)
    records = list(read_manifest(args.manifest))
    build_index(records, cfg.data, cache, config.reference_area, 0, 1, lambda x: [x])  # every medium readable
    contexts = P.record_contexts(records, cfg.data, config.reference_area)
    dtype = str(trainee.encoder.vlm.model.visual.dtype).removeprefix("torch.")

    timed = {}
    for label, largest in (("tower on the main process (anchor)", 0), ("tower in the workers", P.WORKER_TOWER)):
        trainee.encoder.memo = {}  # afresh: no media processed or read
        P.WORKER_TOWER = largest
        timed[label] = P.prefill(contexts, {}, trainee.encoder, cfg.model.qwen, config.reference_area, args.workers)
    anchor, last = timed.values()
    n = anchor["contexts"]
    P._start_worker(str(cfg.model.qwen), dtype, config.reference_area, True)
    torch.set_num_threads(1)
    started = time.monotonic()
    sizes = [len(P._read(c)) for c in contexts[:: max(1, len(contexts) // args.single)]]  # every task
    single = (time.monotonic() - started) / len(sizes)
    print(f"{n} contexts, {last['media']} media, {args.workers} workers; the workers send "
          f"{sum(sizes) / len(sizes) / 1e6:.2f} MB a context with the tower")
    for label, filled in timed.items():
        print(f"{label:<40} {n / filled['seconds']:8.1f} contexts/s  {anchor['seconds'] / filled['seconds']:6.2f}x")
    print(f"{'the workers alone':<40} {args.workers / single:8.1f} contexts/s  "
          f"{anchor['seconds'] / (n * single / args.workers):6.2f}x  ({single * 1000:.1f} ms a context in one)")


if __name__ == "__main__":
    main()
