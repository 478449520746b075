"""Reference Latent Wrap: each reference's VAE latent between its two boundary tokens from the VLM."""

import dataclasses

import comfy.utils
import torch

from ..vino_model.errors import VinoInputError

from .media import IMAGE_INPUTS, to_image
from .vae import LATENT_FORMAT


def reference_latent(samples: torch.Tensor, frames: list, label: str, pipeline) -> torch.Tensor:
    """A ComfyUI LATENT's samples [1, 16, T, H, W] (unscaled) -> the MMDiT's reference latent [16, T, H, W]."""
    width, height = frames[0].size
    expected = pipeline.latent_shape(width, height, len(frames))
    if tuple(samples.shape) != expected:
        raise VinoInputError(
            f"{label}: latent has shape {tuple(samples.shape)}; expected {expected}, the HunyuanVideo latent of "
            f"the {width}x{height}, {len(frames)}-frame reference VINO prepared from it"
        )
    return LATENT_FORMAT.process_in(samples[0].float())


class ReferenceLatentWrap:
    CATEGORY = "VINO"
    DESCRIPTION = (
        "Encodes each reference of the context (Image 1, Image 2, ..., Video 1, as the encoder prepared them) "
        "with the HunyuanVideo VAE, or takes its LATENT, and wraps it in its boundary tokens from the VLM: "
        "[start, reference latent, end] per reference, in prompt order, ahead of the noisy latent in the MMDiT."
    )
    RETURN_TYPES = ("VINO_CONTEXT",)
    RETURN_NAMES = ("context",)
    OUTPUT_TOOLTIPS = ("The context with its references wrapped, for VINO Sampler.",)
    FUNCTION = "wrap"

    @classmethod
    def INPUT_TYPES(cls):
        latents = {
            f"latent_image_{k}": ("LATENT", {
                "tooltip": f"Instead of the VAE: the LATENT of Image {k} at the letterboxed size VINO gives it.",
            })
            for k in range(1, IMAGE_INPUTS + 1)
        }
        return {
            "required": {"context": ("VINO_CONTEXT", {"tooltip": "From Qwen3-VL Interleaved Encode."})},
            "optional": {
                "vae": ("VAE", {
                    "tooltip": "The HunyuanVideo VAE: core Load VAE with hunyuan_video_vae_bf16.safetensors, or "
                               "the vae output of Load VINO (embedded default).",
                }),
                **latents,
                "latent_video": ("LATENT", {"tooltip": "Instead of the VAE: the LATENT of Video 1."}),
            },
        }

    def wrap(self, context, vae=None, **latents):
        media, pipeline = context.media, context.model.pipeline
        clips = [(f"Image {k}", [image], f"latent_image_{k}") for k, image in enumerate(media.images, 1)]
        if media.video is not None:
            clips.append(("Video 1", media.video, "latent_video"))
        unused = sorted({name for name, value in latents.items() if value is not None} - {name for *_, name in clips})
        if unused:
            raise VinoInputError(f"{', '.join(unused)} connected, but the context has no such reference")
        if vae is not None and (vae.latent_dim, vae.latent_channels) != (3, LATENT_FORMAT.latent_channels):
            raise VinoInputError(
                f"vae makes {vae.latent_channels}-channel latents; VINO needs the HunyuanVideo VAE "
                f"(hunyuan_video_vae_bf16.safetensors, {LATENT_FORMAT.latent_channels} channels)"
            )
        bar = comfy.utils.ProgressBar(len(clips))
        references = []
        for label, frames, name in clips:
            if latents.get(name) is not None:
                samples = latents[name]["samples"]
            elif vae is not None:
                samples = vae.encode(to_image(frames))  # [1, 16, T', H', W'], unscaled
            else:
                raise VinoInputError(f"{label} has no latent: connect the vae (or {name})")
            references.append(reference_latent(samples, frames, label, pipeline))
            bar.update(1)
        branches = pipeline.branches(context.contexts, references, len(media.images))
        return (dataclasses.replace(context, branches=branches),)
