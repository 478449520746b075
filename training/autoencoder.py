"""Train a tiny HunyuanVideo VAE (the real diffusers class, VINO's 16 channels and 4x/8x compression)
on the procedural world, for the embedded default.

Clips and stills are rendered in memory from `training.world` (train split, every task kind's targets
and references), flipped and reversed at random. The loss is L1 + MSE on pixels plus a small KL term,
with the posterior sampled as in training a latent diffusion VAE. The scaling factor is set so that
the posterior means have unit standard deviation over a held batch, and goes into the file's metadata
(`VinoVAE.save`), so every reader scales the same way.

    python -m training.autoencoder --out models/embedded-src/vae.safetensors --steps 4000
    python -m training.autoencoder --score models/embedded-src/vae.safetensors   (the round-trip ceiling)

Training ends by scoring held-out renders after a VAE round trip with `training.bench`: that is the
ceiling of any model on this VAE, and the first number to check (a VAE that blurs colours caps every task).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLHunyuanVideo
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vino_model.errors import VinoInputError, run_cli
from vino_model.files import atomic_output
from vino_model.preprocess import frames_to_tensor, tensor_to_frames
from vino_model.vae import CONFIG_METADATA_KEY, VinoVAE

from .bench import score
from .manifest import TASKS
from .world import render, sample

log = logging.getLogger("vino.train")


def _scenes(job):
    """Rendered uint8 frames of one sample's target and references: a list of [T, H, W, 3]."""
    task, index, seed, size, frames = job
    meta, _, _ = sample(task, seed, index, size, size, frames)
    scenes = [meta["scene"], *meta["ref_images"]] + ([meta["ref_video"]] if meta["ref_video"] else [])
    return [render(scene) for scene in scenes]


def render_pool(count: int, seed: int, size: int, frames: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` samples' renders: (clips [N, T, H, W, 3], stills [M, H, W, 3]) as uint8."""
    jobs = [(TASKS[i % len(TASKS)], i // len(TASKS), seed, size, frames) for i in range(count)]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            rendered = pool.map(_scenes, jobs, chunksize=16)
    else:
        rendered = [_scenes(job) for job in jobs]
    clips = [r for group in rendered for r in group if r.shape[0] == frames]
    stills = [r[0] for group in rendered for r in group if r.shape[0] == 1] + [c[0] for c in clips[::4]]
    return np.stack(clips), np.stack(stills)


def to_pixels(frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] (on any device) -> [B, 3, T, H, W] in [-1, 1] on that device, each sample
    flipped left-right, upside down and (clips) reversed in time at random."""
    pixels = frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    flips = torch.rand(3, len(pixels), generator=generator, device="cpu").lt(0.5).to(pixels.device)
    for flip, dim in zip(flips, (4, 3, 2)):
        if dim == 2 and pixels.shape[2] == 1:
            continue
        pixels = torch.where(flip.view(-1, 1, 1, 1, 1), pixels.flip(dim), pixels)
    return pixels


def object_weights(pixels: torch.Tensor, weight: float, ring: int = 0) -> torch.Tensor:
    """Per-pixel loss weights [B, 1, T, H, W]: `weight` on saturated (object) pixels and the grey pixels up to
    `ring` px around them, 1 on the rest of the background. Objects cover a tenth of a frame; unweighted, a small
    VAE settles for the background and averages hues. With no ring an outline's object side weighs `weight` times
    its grey side, and a decoder unsure where the edge lies paints colour outward: the decoder tuned with no ring
    (committed until session 41) drew held-out clips' objects 5-8% wider than rendered, small ones at 0.302 of the
    side against 0.28; 300 decoder-only steps with a ring of 2 brought them to 0.284."""
    saturation = pixels.amax(dim=1, keepdim=True) - pixels.amin(dim=1, keepdim=True)  # in [0, 2]
    objects = (saturation > 0.3).float()
    if ring:
        objects = F.max_pool3d(objects, (1, 2 * ring + 1, 2 * ring + 1), stride=1, padding=(0, ring, ring))
    return 1 + (weight - 1) * objects


def edge_error(error: torch.Tensor) -> torch.Tensor:
    """Mean |difference| of neighbouring pixels' errors across H and W: a blurred edge costs here even
    where its pixel error is small, so the decoder keeps the world's hard shape outlines."""
    return (error.diff(dim=-1).abs().mean() + error.diff(dim=-2).abs().mean()) / 2


def step_loss(model, pixels: torch.Tensor, kl_weight: float, object_weight: float, edge_weight: float = 0.0,
              decoder_only: bool = False, object_ring: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mean |pixel error|). `decoder_only`: decode the frozen encoder's posterior mode, the latents
    VINO trains on, and leave the encoder out of the graph."""
    if decoder_only:
        with torch.no_grad():
            latents = model.encode(pixels).latent_dist.mode()
        kl = 0.0
    else:
        posterior = model.encode(pixels).latent_dist
        latents, kl = posterior.sample(), posterior.kl().mean() / pixels[0].numel()
    error = model.decode(latents).sample.float() - pixels
    weights = object_weights(pixels, object_weight, object_ring)
    loss = ((error.abs() + error.pow(2)) * weights).mean() / weights.mean() \
        + edge_weight * edge_error(error) + kl_weight * kl
    return loss, error.detach().abs().mean()


@torch.no_grad()
def ceiling(vae: VinoVAE, count: int = 16, seed: int = 1, size: int = 64, frames: int = 17) -> dict[str, float]:
    """The benchmark's score of ground-truth t2i / t2v renders after a round trip through the VAE (posterior
    mode): the best a latent model using this VAE can score. A VAE that loses colours or shapes shows here."""
    means = {}
    for task in ("t2i", "t2v"):
        scores = []
        for index in range(count):
            meta, _, _ = sample(task, seed, index, size, size, frames, split="heldout")
            pixels = frames_to_tensor(render(meta["scene"]))[None]
            decoded = vae.decode(vae.encode(pixels, sample=False))
            scores.append(score(meta, tensor_to_frames(decoded.cpu()))["score"])
        means[task] = float(np.mean(scores))
    return means


def check_ceiling(vae: VinoVAE, require: float, size: int = 64, frames: int = 17) -> dict[str, float]:
    """`ceiling`, failing with a clear error when a task's round-trip score is below `require`."""
    scores = ceiling(vae, size=size, frames=frames)
    low = {task: value for task, value in scores.items() if value < require}
    if low:
        raise VinoInputError(f"the VAE's round trip scores {low} on held-out ground truth, below {require}: every "
                             "model on it is capped there; train the VAE longer or wider before the stages")
    return scores


def _state_file(out: Path) -> Path:
    return out.with_name(f"{out.stem}.train-state.safetensors")


def save_state(path: Path, model, optimizer, step: int, generator: torch.Generator) -> None:
    """Everything a stopped run needs to go on exactly: weights, Adam moments, the step and the data
    generator, in one safetensors file (written whole or not at all)."""
    tensors = {f"model.{k}": v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        tensors.update({f"optim.{index}.{k}": torch.as_tensor(v).float().cpu().contiguous() for k, v in state.items()})
    tensors["generator"] = generator.get_state()
    metadata = {"step": str(step), CONFIG_METADATA_KEY: json.dumps(dict(model.config))}
    with atomic_output(path) as partial:
        save_file(tensors, str(partial), metadata=metadata)


def load_state(path: Path, model, optimizer, generator: torch.Generator) -> int:
    """Restore `save_state`'s file into a model of the same config; returns the step it was saved at."""
    tensors, metadata = load_file(str(path)), safe_open(str(path), "pt").metadata()
    if json.loads(metadata[CONFIG_METADATA_KEY]) != json.loads(json.dumps(dict(model.config))):
        raise VinoInputError(f"{path} holds the state of a differently shaped VAE than this run's: delete it to "
                             "start over, or run with the settings it was started with")
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    saved = optimizer.state_dict()
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            saved["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(saved)
    generator.set_state(tensors["generator"])
    return int(metadata["step"])


def train(out: Path, steps: int, batch_size: int, lr: float, channels: tuple, pool_size: int, size: int,
          frames: int, seed: int, workers: int, device: str, object_weight: float = 8.0, init: Path | None = None,
          clip_every: int = 2, edge_weight: float = 1.0, decoder_only: bool = False, save_every: int = 500,
          object_ring: int = 2) -> Path:
    """Train (or with `init`, go on training) a VAE and save it to `out`. Every `save_every` steps the whole
    training state goes to OUT-STEM.train-state.safetensors, and a run started again with the same
    settings goes on from there (the file is deleted once `out` is written).

    `decoder_only` keeps `init`'s encoder and scaling factor exactly, so latents cached with `init` stay
    valid and the VINO stages can train on them while the decoder sharpens."""
    if out.suffix != ".safetensors":
        raise VinoInputError(f"--out {out}: expected a .safetensors file")
    if decoder_only and init is None:
        raise VinoInputError("--decoder-only needs --init: the VAE whose encoder (and latents) to keep")
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = True  # fixed clip and still shapes: let cuDNN pick its 3D convolutions
    started = time.perf_counter()
    clips, stills = render_pool(pool_size, seed, size, frames, workers)
    log.info("rendered %d clips and %d stills in %.0f s", len(clips), len(stills), time.perf_counter() - started)
    clips, stills = torch.from_numpy(clips).to(device), torch.from_numpy(stills[:, None]).to(device)  # uint8
    scaling = None
    if init is not None:  # go on from a trained VAE (its own architecture)
        loaded = VinoVAE.load(init)
        model, scaling = loaded.model.requires_grad_(True).to(device), loaded.scaling_factor if decoder_only else None
    else:
        model = AutoencoderKLHunyuanVideo(block_out_channels=channels, layers_per_block=1,
                                          norm_num_groups=math.gcd(*channels, 8)).to(device)
    model.use_tiling = False
    if decoder_only:
        model.encoder.requires_grad_(False)
        model.quant_conv.requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    log.info("VAE: %s parameters, %s trained", f"{sum(p.numel() for p in model.parameters()):,}",
             f"{sum(p.numel() for p in trained):,}")
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    generator = torch.Generator().manual_seed(seed)
    step = 0
    state_file = _state_file(out)
    if state_file.exists():
        step = load_state(state_file, model, optimizer, generator)
        log.info("resumed from %s at step %d", state_file, step)
    warmup = max(1, min(steps // 50, 200))
    autocast = dict(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=device != "cpu")
    model.train()
    if decoder_only:
        model.encoder.eval()
    while step < steps:
        step += 1
        torch.manual_seed(seed * 10**9 + step)  # the posterior's noise: a resumed run draws what this one would
        on_clips = clip_every > 0 and (step - 1) % clip_every == 0  # otherwise 4x as many still images
        source = clips if on_clips else stills
        picked = torch.randint(len(source), (batch_size if on_clips else 4 * batch_size,), generator=generator)
        pixels = to_pixels(source[picked.to(device)], generator)
        with torch.autocast(**autocast):
            loss, l1 = step_loss(model, pixels, 1e-3, object_weight, edge_weight, decoder_only, object_ring)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        for group in optimizer.param_groups:  # warm-up, then cosine to 0 at `steps`
            group["lr"] = lr * min(step / warmup, 0.5 * (1 + math.cos(math.pi * min((step - 1) / steps, 1.0))))
        optimizer.step()
        if step % 100 == 0:
            log.info("step %d/%d: loss %.4f, L1 %.4f (%.0f s)", step, steps, loss.item(), l1.item(),
                     time.perf_counter() - started)
        if save_every and step % save_every == 0 and step < steps:
            save_state(state_file, model, optimizer, step, generator)
    model.eval()
    with torch.no_grad():
        held = to_pixels(clips[:batch_size], torch.Generator().manual_seed(seed + 1))
        means = model.encode(held).latent_dist.mode().float()
        error = (model.decode(means).sample.float().clamp(-1, 1) - held).abs().mean().item()
    scaling = scaling or 1.0 / means.std().item()
    log.info("held batch: L1 %.4f (pixels in [-1, 1]); scaling factor %.4f", error, scaling)
    vae = VinoVAE(model, scaling_factor=scaling)
    log.info("benchmark score of held-out renders after the VAE round trip: %s", ceiling(vae, size=size, frames=frames))
    vae.model.to("cpu")
    saved = vae.save(out)
    state_file.unlink(missing_ok=True)
    return saved


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(prog="python -m training.autoencoder", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, help="the .safetensors file to write")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=16, help="clips per video step (4x as many stills)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--channels", default="32,48,64,64", help="block_out_channels, 4 of them")
    p.add_argument("--pool", type=int, default=4000, help="world samples rendered for training")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=max(1, multiprocessing.cpu_count() - 2))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--object-weight", type=float, default=8.0, help="loss weight of object pixels over background")
    p.add_argument("--object-ring", type=int, default=2,
                   help="grey pixels this far around an object weigh as the object does (0: none; default 2)")
    p.add_argument("--init", type=Path, help="continue training this VAE file")
    p.add_argument("--clip-every", type=int, default=2, help="a video step every N steps, stills between (0: stills only)")
    p.add_argument("--edge-weight", type=float, default=1.0, help="loss weight of the error's differences across pixels")
    p.add_argument("--decoder-only", action="store_true",
                   help="with --init: train only the decoder, keeping the encoder, its latents and scaling factor")
    p.add_argument("--save-every", type=int, default=500, help="steps between saves of the resumable training state")
    p.add_argument("--score", type=Path, metavar="VAE", help="only print the round-trip benchmark score of this VAE")
    p.add_argument("--require", type=float, default=0.0, help="with --score: fail when a task scores below this")
    args = p.parse_args(argv)
    if args.score:
        return run_cli(lambda: print(check_ceiling(VinoVAE.load(args.score, device=args.device), args.require,
                                                   args.size, args.frames)))
    if args.out is None:
        raise SystemExit("--out is required (or --score VAE)")
    channels = tuple(int(c) for c in args.channels.split(","))
    if len(channels) != 4:
        raise SystemExit(f"--channels {args.channels}: expected 4 comma-separated widths (8x spatial, 4x temporal)")
    return run_cli(lambda: print(train(args.out, args.steps, args.batch_size, args.lr, channels, args.pool, args.size,
                                       args.frames, args.seed, args.workers, args.device,
                                       args.object_weight, args.init, args.clip_every, args.edge_weight,
                                       args.decoder_only, args.save_every, args.object_ring)))


if __name__ == "__main__":
    sys.exit(main())
