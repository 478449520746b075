"""Sample images and videos during training (rank 0): the entries of a release-format task file, generated
with the weights as they are, written to RUN/samples/step-XXXXXXXX/{index}_{task}.png|.mp4.

Stages 1-3 run `VinoPipeline` on the training modules; stage 0 samples text-to-image/video from the
native text encoder. The unconditional branch uses the empty prompt, the one condition dropout trains.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vino_model import media
from vino_model.pipeline import VinoPipeline
from vino_model.preprocess import tensor_to_frames
from vino_model.sampler import Branch, sample
from vino_model.tasks import DEFAULTS, get_task, read_task_file

from .checkpoint import step_name
from .model import Trainee

VIDEO_FPS = 24.0  # of text-to-video samples (reference-driven ones keep their video's rate)


@torch.no_grad()
def native_generation(trainee: Trainee, vae, entry, cfg, device) -> tuple:
    """Stage 0: text-to-image/video from the native text encoder; (uint8 frames, fps)."""
    task = get_task(entry.task)
    defaults = DEFAULTS[task.output]
    frames = 1 if task.output == "image" else cfg.frames
    dtype = trainee.transformer.proj_out.weight.dtype
    prompts = {"cond": entry.caption, "uncond": ""}
    branches = {name: Branch(trainee.native([text])[0].to(dtype)) for name, text in prompts.items()}
    shape = (1, vae.latent_channels, (frames - 1) // vae.temporal_compression + 1,
             cfg.height // vae.spatial_compression, cfg.width // vae.spatial_compression)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    latents = sample(trainee.transformer, noise, branches, cfg.steps, defaults["shift"], defaults["text_cfg"], 1.0)
    return tensor_to_frames(vae.decode(latents)), VIDEO_FPS


def write_samples(trainee: Trainee, vae, config, cfg, step: int, out: Path, device) -> list[Path]:
    """Generate the first cfg.limit entries of cfg.tasks (stage 0: its t2i/t2v entries)."""
    entries = read_task_file(cfg.tasks)
    if trainee.native is not None:
        entries = [e for e in entries if e.task in ("t2i", "t2v")]
    pipeline = VinoPipeline(trainee.transformer, trainee.encoder.unmemoised(), vae, config, device,
                            trainee.transformer.proj_out.weight.dtype)
    folder = out / "samples" / step_name(step)
    written = []
    for entry in entries[: cfg.limit]:
        if trainee.native is not None:
            frames, fps = native_generation(trainee, vae, entry, cfg, device)
        else:
            images = [media.read_image(p) for p in entry.ref_image_paths]
            video, fps = media.read_video(entry.ref_video_path) if entry.ref_video_path else (None, None)
            result = pipeline.generate(entry.task, entry.caption, images, video, fps, entry.ref_image_have_base,
                                       cfg.width, cfg.height, cfg.frames, cfg.steps, cfg.seed, negative_prompt="",
                                       sample_posterior=False)
            frames, fps = result.frames, result.fps
        path = folder / f"{entry.index}_{entry.task}{'.png' if len(frames) == 1 else '.mp4'}"
        if len(frames) == 1:
            media.write_png(path, frames[0])
        else:
            media.write_video(path, frames, fps or VIDEO_FPS)
        written.append(path)
    return written
