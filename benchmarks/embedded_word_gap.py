"""How much a stage-0 model reads each attribute word of its caption.

For each t2i sample of a world split, the flow-matching loss with its own long caption is compared with the
loss when one word of its first object changes: the shape, the colour or the size ("a small red circle" ->
"a small red square"; the world lists these captions in each record's meta, "word_swaps"), at the same noise
and the same t (spread over the sampler's shifted schedule). The gap is the mean increase. A model that ignores a
word scores about 0 for it; `eval_text_gap` (another sample's whole caption) would hide which word that is. In
scenes of two objects of two colours, "binding" exchanges their colours (`training.world.swap_binding`, made here
for worlds rendered before it): the caption names the same words, so a model that reads the colours but does not
tie each to its object scores about 0 for it while its colour gap stays high; "places" puts each of two objects
where the other should be (`swap_places`), "sizes" exchanges their sizes (`swap_sizes`), "count" gives a count
scene the other number (`swap_count`), "single" names one of its objects (`swap_single`), and "backdrop" exchanges
a split background's two tones (`swap_backdrop`). No sampling: cheap enough for a CPU.

    python benchmarks/embedded_word_gap.py --init runs/embedded/stage0/export/vino-ema.safetensors \
        --data data/embedded/base --samples 64 [--set model.qwen=... model.vae=...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training import model  # noqa: E402
from training.config import load as load_config  # noqa: E402
from training.data import Batch, Context  # noqa: E402
from training.loop import losses_under  # noqa: E402
from training.manifest import read_manifest  # noqa: E402
from training.world import ATTRIBUTES, TWIN_SWAPS  # noqa: E402
from vino_model.preprocess import frames_to_tensor  # noqa: E402
from vino_model.sampler import shift_time  # noqa: E402
from vino_model.vae import VinoVAE  # noqa: E402


SWAPS = (*ATTRIBUTES, *TWIN_SWAPS)


@torch.no_grad()
def word_gaps(trainee, vae, records, times: list[float], seed: int = 0) -> dict[str, float]:
    """Mean loss increase per swap (SWAPS) over `records` (t2i), the count of samples each used, and "loss": the
    mean loss under the samples' own captions."""
    device = trainee.transformer.proj_out.weight.device
    gaps = {name: [] for name in SWAPS}
    own = []
    for index, record in enumerate(records):
        target = np.asarray(Image.open(record.target).convert("RGB"))
        x0 = vae.encode(frames_to_tensor(target[None])[None], sample=False).float().cpu()
        kept = {"own": record.caption_long, **record.meta.get("word_swaps", {})}
        for name, swap in TWIN_SWAPS.items():
            twin = swap(record.caption_long, record.meta["scene"])
            if twin and name not in kept:
                kept[name] = twin
        contexts = [Context(text, [], None, None) for text in kept.values()]
        batch = Batch(x0, [[]], contexts[:1], ["t2i"])
        generator = torch.Generator().manual_seed(seed * 100_003 + index)
        noise = torch.randn((len(times), *x0.shape[1:]), generator=generator)
        losses = [losses_under(trainee, batch, noise[j:j + 1], torch.tensor([t]), contexts, len(contexts), device)
                  for j, t in enumerate(times)]  # [time][caption]
        per_caption = dict(zip(kept, np.asarray(losses).T))  # caption -> its loss at each t
        own.append(per_caption["own"].mean())
        for name in SWAPS:
            if name in per_caption:
                gaps[name].append(per_caption[name] - per_caption["own"])
    return {"loss": float(np.mean(own))} | {k: float(np.mean(v)) if v else float("nan") for k, v in gaps.items()} | \
        {f"{k}_samples": len(v) for k, v in gaps.items()} | \
        {f"{k}_by_time": np.mean(v, axis=0).tolist() if v else [float("nan")] * len(times) for k, v in gaps.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", nargs="+", required=True, help="stage-0 exports (vino-ema.safetensors)")
    p.add_argument("--config", default="training/configs/embedded/stage0.toml", help="their stage config")
    p.add_argument("--data", required=True, help="a world split (training.world) with t2i samples")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--shift", type=float, default=3.0, help="t spread evenly over (0, 1), then shifted as sampled")
    p.add_argument("--times", type=int, default=4, help="t values per sample")
    p.add_argument("--at", type=float, nargs="+", help="these t values instead (1: pure noise, where sampling starts)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every export")
    p.add_argument("--pairs", action="store_true", help="only scenes of two or more objects (TWIN_SWAPS)")
    p.add_argument("--by-time", action="store_true", help="also each gap at each t")
    args = p.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = str(device == "cuda").lower()
    uniform = (np.arange(args.times) + 0.5) / args.times
    times = args.at or shift_time(uniform, args.shift).tolist()
    records = [r for r in read_manifest(Path(args.data) / "manifest.jsonl")
               if r.task == "t2i" and (not args.pairs or len(r.meta["scene"]["objects"]) > 1)][: args.samples]
    print(f"{'export':60s} {'loss':>8s} " + " ".join(f"{name:>8s}" for name in SWAPS) +
          f" samples ({', '.join(TWIN_SWAPS)})")
    for init in args.init:
        cfg = load_config(args.config, [f"model.init={init}", "model.mmdit={}", f"optim.bf16={bf16}", *args.set])
        trainee = model.build(cfg)[0].eval().to(device)
        vae = VinoVAE.load(cfg.model.vae, device=device)
        gaps = word_gaps(trainee, vae, records, times)
        print(f"{init[-60:]:60s} {gaps['loss']:8.4f} " + " ".join(f"{gaps[name]:8.4f}" for name in SWAPS) +
              f" {gaps['shape_samples']} ({', '.join(str(gaps[name + '_samples']) for name in TWIN_SWAPS)})")
        if args.by_time:
            for j, t in enumerate(times):
                by_time = " ".join(f"{gaps[name + '_by_time'][j]:8.4f}" for name in SWAPS)
                print(f"{'  at t = %.3f' % t:60s} {'':8s} {by_time}")


if __name__ == "__main__":
    main()
