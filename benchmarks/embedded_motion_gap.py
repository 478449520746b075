"""How much a stage-3 model takes a clone's motion from its reference video.

For each clone sample of a world split, the flow-matching loss under its short caption with its own reference video
is compared with the loss under the next clone's video of another motion, at the same noise and t
(`training.loop.motion_gap`, the stage's `eval_motion_gap`, here over a held-out split of your choosing). It prints
the mean loss under the samples' own videos and the gap, the mean increase: about 0 for a model that does not take
the motion from the video, whatever the loss.

Then which motion the first sampling step draws, under the long caption (the prompt): at t = 1, x_t is the noise
whatever x0 is, so the loss with x0 set to a candidate is the distance from the model's prediction of x0 to it. Each
clone's target is drawn again under every motion and still (`training.world.moved`); the nearest is the motion
drawn. It prints how many of the clones the model draws the motion of their own video ("right"), of the same
direction at the other speed, still, or of another direction; and how many it draws the motion of the swapped video
under the next clone's. No sampling: a few minutes on a CPU.

    python benchmarks/embedded_motion_gap.py --init runs/embedded/stage3/export/vino-ema.safetensors \
        --data data/embedded/heldout --samples 24 [--set model.qwen=... model.vae=...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training import model  # noqa: E402
from training.config import load as load_config  # noqa: E402
from training.data import Batch, LatentCache, TrainData, build_index, target_spec  # noqa: E402
from training.loop import (MOTION_GAP_TIMES, model_inputs, motion_gap, motion_partners, motion_samples,  # noqa: E402
                           motion_twin)
from training.manifest import read_manifest  # noqa: E402
from training.world import DIRECTIONS, MOTION_TWIN_TASKS, SPEEDS, moved, render  # noqa: E402
from vino_model.errors import VinoInputError, run_cli  # noqa: E402
from vino_model.pipeline import parse_dtype  # noqa: E402
from vino_model.vae import VinoVAE  # noqa: E402

MOTIONS = (None, *({"direction": d, "speed": s} for d in DIRECTIONS for s in SPEEDS))  # None: still
READINGS = ("right", "speed", "still", "wrong")  # the motion wanted; its direction at the other speed; still; other


def reading(drawn, wanted) -> str:
    """Which of READINGS a drawn motion is, for the motion wanted."""
    if drawn == wanted:
        return "right"
    if drawn is None:
        return "still"
    return "speed" if drawn["direction"] == wanted["direction"] else "wrong"


def first_step_motion(trainee, candidates, references, context, task, device) -> int:
    """The index in MOTIONS of the candidate target latent nearest the model's prediction of x0 at t = 1, one
    forward for all of `candidates` at the same noise."""
    n = len(candidates)
    noise = torch.randn((1, *candidates.shape[1:]), generator=torch.Generator().manual_seed(0)).repeat(n, 1, 1, 1, 1)
    batch = Batch(candidates, [references] * n, [context] * n, [task] * n)
    losses, _ = trainee(*model_inputs(batch, noise, torch.ones(n), device))
    return int(losses.float().argmin())


def readout(trainee, data, samples, device) -> dict[str, int]:
    """The count of each of READINGS over the clones under their own video ("own right", ...), and under the next
    clone's of another motion ("swapped right", ...)."""
    loaded = motion_samples(data, samples, long_caption=True)
    tally = dict.fromkeys((f"{label} {r}" for label in ("own", "swapped") for r in READINGS), 0)
    partners = dict(motion_partners([one.context for one in loaded]))
    for i, (sample, x0, references, context, task) in enumerate(loaded):
        record = sample.record
        spec = target_spec(record, data.cfg, data.reference_area)
        candidates = torch.stack([data.cache.encode_frames([Image.fromarray(f) for f in render(moved(
            record.meta["scene"], motion))], spec, f"clone {record.id} drawn again") for motion in MOTIONS])
        if candidates.shape[1:] != x0.shape:
            raise VinoInputError(f"--data: clone {record.id}'s target drawn again encodes to "
                                 f"{tuple(candidates.shape[1:])}, its cached latent is {tuple(x0.shape)}")
        readings = [("own", references, context, sample.record)]
        if i in partners:
            other = loaded[partners[i]]
            twin, swapped = motion_twin(context, references, other.context, other.references)
            readings.append(("swapped", swapped, twin, other.sample.record))
        for label, refs, ctx, source in readings:
            wanted = source.meta["ref_video"]["objects"][0]["motion"]
            drawn = MOTIONS[first_step_motion(trainee, candidates, refs, ctx, task, device)]
            tally[f"{label} {reading(drawn, wanted)}"] += 1
    return tally


def load(init, config, records, overrides, device, tasks=MOTION_TWIN_TASKS) -> tuple:
    """(the export `init` in eval mode on `device`, a TrainData over `records` of `tasks` (their latents cached by the
    VAE of the config), their samples) for the stage config `config` with `overrides`."""
    cfg = load_config(config, [f"model.init={init}", "model.compile=false",
                               f"data.tasks={json.dumps(dict.fromkeys(tasks, 1.0))}",
                               f"optim.bf16={str(torch.device(device).type == 'cuda').lower()}", *overrides])
    trainee, reference = model.build(cfg)
    vae = VinoVAE.load(cfg.model.vae, device=device, dtype=parse_dtype(cfg.data.vae_dtype))
    cache = LatentCache(cfg.data.cache, vae, cfg.model.vae, cfg.data.vae_dtype)
    samples, _ = build_index(records, cfg.data, cache, reference.reference_area, 0, 1, lambda obj: [obj])
    data = TrainData(samples, cache, cfg.data, reference.reference_area, 0, 0, 1, read_media=True)
    return trainee.eval().to(device), data, samples


def probe_parser(doc: str, samples: str, times: list[float]) -> argparse.ArgumentParser:
    """The arguments of a loss probe of stage-3 exports on a world split (this one, embedded_reference_gap.py and
    embedded_shape_gap.py): `samples` says which of the split's samples --samples counts, `times` are --times'
    default."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--init", nargs="+", required=True, help="stage-3 exports (a file or a sharded folder)")
    p.add_argument("--config", default="training/configs/embedded/stage3.toml", help="their stage config")
    p.add_argument("--data", required=True, help=f"a world split (training.world) with {samples}")
    p.add_argument("--samples", type=int, default=24, help=f"the split's first {samples}")
    p.add_argument("--times", nargs="+", type=float, default=times,
                   help="t of x_t = (1 - t) x0 + t noise at which each sample is compared, in (0, 1]")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every export")
    return p


def probe_args(doc: str, samples: str, times: list[float], argv) -> argparse.Namespace:
    """probe_parser's arguments, read from `argv`, each of --times in (0, 1]."""
    args = probe_parser(doc, samples, times).parse_args(argv)
    if not all(0 < t <= 1 for t in args.times):
        raise VinoInputError(f"--times {args.times}: expected each t in (0, 1]")
    return args


def probe_records(args, pick, missing: str) -> tuple[list, str]:
    """(the records `pick` keeps of --data's manifest, the device to probe on); a split where it keeps none is an
    error that names what is `missing`."""
    manifest = Path(args.data) / "manifest.jsonl"
    records = pick(read_manifest(str(manifest)))
    if not records:
        raise VinoInputError(f"--data {args.data}: {manifest} has no {missing}")
    return records, "cuda" if torch.cuda.is_available() else "cpu"


def noised_losses(trainee, x0, references: list, contexts: list, task: str, times: list[float], seed: int,
                  device) -> list[torch.Tensor]:
    """The loss of target `x0` read under each of `contexts` (with its entry of `references`), at each t of `times`,
    all from one noise drawn from `seed`: a tensor [context] for each t, with its graph (embedded_task_pull.py takes
    its gradients)."""
    generator = torch.Generator().manual_seed(seed)
    n = len(contexts)
    losses = []
    for t in times:
        noise = torch.randn((1, *x0.shape), generator=generator).repeat(n, 1, 1, 1, 1)
        batch = Batch(x0[None].repeat(n, 1, 1, 1, 1), references, contexts, [task] * n)
        loss, _ = trainee(*model_inputs(batch, noise, torch.full((n,), t), device))
        losses.append(loss)
    return losses


@torch.no_grad()
def same_noise_losses(trainee, x0, references: list, contexts: list, task: str, times: list[float], seed: int,
                      device) -> np.ndarray:
    """noised_losses as numbers: [t][context]. The probes of embedded_reference_gap.py and embedded_shape_gap.py
    compare a sample's own reading with its wrong twins this way."""
    losses = noised_losses(trainee, x0, references, contexts, task, times, seed, device)
    return np.stack([loss.float().cpu().numpy() for loss in losses])


def gap_line(name: str, gaps: np.ndarray) -> str:
    """"NAME [the mean gap at each t] (samples whose mean gap rose / fell)" of gaps [sample][t]."""
    per_t = " ".join(f"{v:+.4f}" for v in gaps.mean(axis=0))
    rose, fell = int((gaps.mean(axis=1) > 0).sum()), int((gaps.mean(axis=1) < 0).sum())
    return f"{name} [{per_t}] ({rose}/{fell})"


def main(argv=None) -> None:
    args = probe_args(__doc__, "clone samples", list(MOTION_GAP_TIMES), argv)

    manifest = Path(args.data) / "manifest.jsonl"
    records = [r for r in read_manifest(str(manifest)) if r.task in MOTION_TWIN_TASKS][:args.samples]
    if len(records) < 2:
        raise VinoInputError(f"--data {args.data}: {len(records)} sample(s) of {', '.join(MOTION_TWIN_TASKS)} in "
                             f"{manifest}; expected two or more, of different motions")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{'export':60s} {'own loss':>8s} {'gap':>8s} comparisons (pairs x t {args.times}); first step: "
          f"{', '.join(READINGS)} (own video / swapped)")
    for init in args.init:
        trainee, data, samples = load(init, args.config, records, args.set, device)
        with torch.no_grad():
            summed, own, count = motion_gap(trainee, data, samples, 0, 1, device, args.times)
            tally = readout(trainee, data, samples, device)
        first = " ".join(f"{tally['own ' + r]}/{tally['swapped ' + r]}" for r in READINGS)
        print(f"{init[-60:]:60s} {own / max(count, 1):8.4f} {summed / max(count, 1):8.4f} {count} {first}")


if __name__ == "__main__":
    run_cli(main)
