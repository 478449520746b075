"""Fill a stage's latent cache ahead of its run: `python -m training.cache CONFIG [section.key=value ...]`.

Encodes every target and reference of the config's manifests (the tasks it gives a share) with its VAE, references
at model.reference_area (the preset's when 0), so that the stage starts training at once when it runs: stage 3's
task samples can be cached while stage 0 trains. Entries are keyed by content; a run that finds one skips it.
`--shard K/N` encodes every Nth distinct medium, so N processes side by side share the reading where it bounds one
process (a small VAE on a GPU: stage 3's 48,000 task media took 196 s in session 22, 245 a second, the GPU often
idle).

    python -m training.cache training/configs/embedded/stage3.toml [--shard 0/4]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from vino_model.errors import run_cli
from vino_model.generate import parse_shard

from . import config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.cache", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="a stage config (.toml or .json), e.g. training/configs/embedded/stage3.toml")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. data.cache_batch=16")
    parser.add_argument("--device", help="where the VAE encodes (default: cuda when there is one)")
    parser.add_argument("--shard", default="0/1", metavar="K/N",
                        help="encode only the distinct media K, K+N, K+2N, ... (N processes fill one cache together)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    def command():
        shard, shards = parse_shard(args.shard)
        cfg = config.load(args.config, args.overrides)
        import torch

        from vino_model.config import preset
        from vino_model.pipeline import parse_dtype
        from vino_model.vae import VinoVAE

        from .data import LatentCache, fillable
        from .manifest import read_manifest

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        vae = VinoVAE.load(cfg.model.vae, device=device, dtype=parse_dtype(cfg.data.vae_dtype))
        cache = LatentCache(cfg.data.cache, vae, cfg.model.vae, cfg.data.vae_dtype, False)
        with cache.filling(cfg.data.manifest):  # a run that starts meanwhile waits for it before it indexes the cache
            area = cfg.model.reference_area or preset(cfg.model.preset).reference_area
            records = [record for manifest in cfg.data.manifest for record in read_manifest(manifest)]
            items = [item for record in records if cfg.data.draws(record.task)
                     for item in fillable(record, cfg.data, area)]
            # one medium (a reference many records share) falls to one shard
            items = list({(path, json.dumps(spec, sort_keys=True)): (path, spec) for path, spec in items}.values())
            items = items[shard::shards]
            encoded = cache.fill(items, cfg.data.cache_batch)
        print(f"{encoded} of {len(items)} media encoded into {cfg.data.cache} ({len(items) - encoded} were there "
              "or unreadable)")

    return run_cli(command)


if __name__ == "__main__":
    sys.exit(main())
