"""ComfyUI's latent convention, and the embedded default's VAE as a ComfyUI VAE.

A ComfyUI LATENT holds unscaled HunyuanVideo latents, samples [B, 16, T, H, W]: its latent format multiplies
by 0.476986 on the way into a model and divides on the way out. VINO's MMDiT works on the scaled ones, so the
nodes convert at the two borders with LATENT_FORMAT: reference latents going in (process_in) and the
sampler's result going out (process_out). Core VAE Decode / VAE Encode then work unchanged, both with the
HunyuanVideo VAE from ComfyUI's Load VAE and with EmbeddedVAE below.
"""

import math

import comfy.latent_formats
import comfy.model_management as model_management
import comfy.model_patcher
import comfy.sd
import torch

from ..vino_model.vae import VinoVAE

LATENT_FORMAT = comfy.latent_formats.HunyuanVideo()


class VinoAutoencoder(torch.nn.Module):
    """The `first_stage_model` interface ComfyUI's VAE drives: pixels [B, 3, T, H, W] in [-1, 1] <-> unscaled latents.

    References are encoded with the posterior mode, as ComfyUI's own VAEs do.
    """

    def __init__(self, vae: VinoVAE):
        super().__init__()
        self.autoencoder = vae.model  # a submodule, so ComfyUI's ModelPatcher moves it
        self.vae = vae

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return LATENT_FORMAT.process_out(self.vae.encode(pixels, sample=False))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(LATENT_FORMAT.process_in(latents))


class EmbeddedVAE(comfy.sd.VAE):
    """VinoVAE behind ComfyUI's VAE, so every core VAE node accepts it.

    comfy.sd.VAE.__init__ recognises architectures by their state-dict keys and has none for a small
    HunyuanVideo config, so this sets the fields it would set, with HunyuanVideo's values.
    """

    def __init__(self, vae: VinoVAE):
        t, s = vae.temporal_compression, vae.spatial_compression
        self.first_stage_model = VinoAutoencoder(vae).eval()
        self.latent_channels, self.latent_dim, self.output_channels = vae.latent_channels, 3, 3
        self.upscale_ratio = (lambda frames: max(0, frames * t - (t - 1)), s, s)
        self.upscale_index_formula = (t, s, s)
        self.downscale_ratio = (lambda frames: max(0, math.floor((frames + t - 1) / t)), s, s)
        self.downscale_index_formula = (t, s, s)
        self.working_dtypes = [torch.bfloat16, torch.float32]
        self.disable_offload = True  # plain torch layers: loaded whole, never partly (no lowvram casting)
        self.not_video, self.crop_input = False, True
        self.extra_1d_channel, self.size = None, None
        self.device = model_management.vae_device()
        self.vae_dtype = model_management.vae_dtype(self.device, self.working_dtypes)
        self.first_stage_model.to(self.vae_dtype)
        self.output_device = model_management.intermediate_device()
        self.patcher = comfy.model_patcher.ModelPatcher(
            self.first_stage_model, load_device=self.device, offload_device=model_management.vae_offload_device()
        )

    def process_input(self, image: torch.Tensor) -> torch.Tensor:
        return image * 2.0 - 1.0

    def process_output(self, image: torch.Tensor) -> torch.Tensor:
        return ((image + 1.0) / 2.0).clamp(0.0, 1.0)

    def memory_used_encode(self, shape, dtype) -> float:  # ComfyUI's estimate for the HunyuanVideo VAE
        return 900 * max(shape[2], 2) * shape[3] * shape[4] * model_management.dtype_size(dtype)

    def memory_used_decode(self, shape, dtype) -> float:
        return 1500 * shape[2] * shape[3] * shape[4] * (4 * 8 * 8) * model_management.dtype_size(dtype)
