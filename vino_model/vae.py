"""The HunyuanVideo VAE (diffusers AutoencoderKLHunyuanVideo), scaled the way VINO's MMDiT expects.

pixels [B, 3, T, H, W] in [-1, 1], T = 4k+1  <->  latents [B, 16, (T-1)/4+1, H/8, W/8] x scaling factor.

Weights load from a diffusers folder, from one safetensors file written by `VinoVAE.save` (config in the
file's metadata), or from ComfyUI's `hunyuan_video_vae_bf16.safetensors`: that file uses the original
Tencent key names, which are diffusers' names, and the default config. A VAE state dict saved by ComfyUI
itself uses ComfyUI's internal (LDM-style) names; those are renamed on load.
"""

import json
import re
from pathlib import Path

import torch
from diffusers import AutoencoderKLHunyuanVideo
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import VinoInputError
from .files import atomic_output
from .preprocess import valid_frame_count

SCALING_FACTOR = 0.476986
CONFIG_METADATA_KEY = "config"  # safetensors metadata entry holding the diffusers config as JSON
TINY_CONFIG = {"block_out_channels": (16, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 4}
LISTED_KEYS = 12  # how many bad keys an error message names before "..."

# ComfyUI's VAE modules name parts as the LDM autoencoder does; these are the diffusers equivalents.
_LDM_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


class VinoVAE:
    """Encodes pixels to scaled latents and back; `model` is a diffusers AutoencoderKLHunyuanVideo."""

    temporal_compression = 4
    spatial_compression = 8
    latent_channels = 16

    def __init__(self, model: AutoencoderKLHunyuanVideo, scaling_factor: float = SCALING_FACTOR):
        config = model.config
        found = (config.latent_channels, config.temporal_compression_ratio, config.spatial_compression_ratio)
        wanted = (self.latent_channels, self.temporal_compression, self.spatial_compression)
        if found != wanted:
            raise VinoInputError(
                f"VAE has {found[0]} latent channels and {found[1]}x/{found[2]}x compression; "
                f"VINO expects {wanted[0]} channels and {wanted[1]}x/{wanted[2]}x"
            )
        self.model = model.eval().requires_grad_(False)
        self.scaling_factor = scaling_factor

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @classmethod
    def load(cls, path, device="cpu", dtype=torch.float32) -> "VinoVAE":
        """Load a diffusers folder (or a HunyuanVideo repo holding `vae/`), or one .safetensors file."""
        path = Path(path)
        if path.is_dir():
            config, files = _diffusers_folder(path)
            state_dict = {}
            for file in files:
                state_dict.update(_read_safetensors(file, device, dtype)[0])
        elif path.is_file() and path.suffix == ".safetensors":
            state_dict, metadata = _read_safetensors(path, device, dtype)
            config = json.loads(metadata.get(CONFIG_METADATA_KEY, "{}"))  # no config: ComfyUI's file, the defaults
        else:
            raise VinoInputError(f"VAE path {path} is neither a diffusers folder nor a .safetensors file")
        if any(key.startswith(("encoder.down.", "decoder.up.", "encoder.mid.", "decoder.mid.")) for key in state_dict):
            state_dict = _diffusers_names(state_dict)
        with torch.device("meta"):
            model = AutoencoderKLHunyuanVideo.from_config(config)
        _check_state_dict(model, state_dict, path)
        model.load_state_dict(state_dict, assign=True)
        return cls(model, scaling_factor=model.config.scaling_factor)

    def save(self, path) -> Path:
        """One safetensors file: the weights plus the diffusers config (scaling factor included) as metadata."""
        config = {key: value for key, value in self.model.config.items() if not key.startswith("_")}
        config["scaling_factor"] = self.scaling_factor
        tensors = {key: value.contiguous() for key, value in self.model.state_dict().items()}
        with atomic_output(path) as partial:
            save_file(tensors, str(partial), metadata={CONFIG_METADATA_KEY: json.dumps(config)})
        return Path(path)

    def encode(
        self, pixels: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None, tiled: bool = False
    ) -> torch.Tensor:
        """[B, 3, T, H, W] in [-1, 1] -> [B, 16, (T-1)/4+1, H/8, W/8] x scaling factor.

        sample=True draws from the posterior (the release's choice); sample=False takes its mode,
        which makes runs reproducible. tiled: as for `decode`.
        """
        frames_ok = pixels.ndim == 5 and valid_frame_count(pixels.shape[2])
        if not frames_ok or pixels.shape[1] != 3 or pixels.shape[3] % 8 or pixels.shape[4] % 8:
            raise VinoInputError(
                f"pixels have shape {tuple(pixels.shape)}; expected [B, 3, T, H, W] with T = 4k+1 "
                "and H, W multiples of 8"
            )
        self.model.use_tiling = tiled
        with torch.no_grad():
            posterior = self.model.encode(pixels.to(self.device, self.dtype)).latent_dist
            latents = posterior.sample(generator=generator) if sample else posterior.mode()
        return latents * self.scaling_factor

    def decode(self, latents: torch.Tensor, tiled: bool = False) -> torch.Tensor:
        """Scaled latents [B, 16, T', H', W'] -> float pixels [B, 3, 4(T'-1)+1, 8H', 8W'] in [-1, 1].

        tiled=True works on overlapping spatial tiles (diffusers' tiling; tile sizes set by
        `model.enable_tiling`) to bound memory. Long videos go a few latent frames at a time in
        either case, as diffusers does by default.
        """
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise VinoInputError(f"latents have shape {tuple(latents.shape)}; expected [B, 16, T, H, W]")
        self.model.use_tiling = tiled
        with torch.no_grad():
            pixels = self.model.decode(latents.to(self.device, self.dtype) / self.scaling_factor).sample
        return pixels.float().clamp(-1.0, 1.0)


def make_tiny_vae(seed: int = 0) -> VinoVAE:
    """A randomly initialised VAE with the real channel count and compression, small enough for tests."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoencoderKLHunyuanVideo(**TINY_CONFIG)
    return VinoVAE(model)


def _diffusers_folder(folder: Path) -> tuple[dict, list[Path]]:
    """The config and weight files of a diffusers VAE folder, or of the `vae/` folder inside a repo."""
    if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise VinoInputError(
            f"VAE folder {folder} has no config.json; expected a diffusers AutoencoderKLHunyuanVideo folder"
        )
    config = json.loads(config_file.read_text())
    if config.get("_class_name", "AutoencoderKLHunyuanVideo") != "AutoencoderKLHunyuanVideo":
        raise VinoInputError(f"VAE folder {folder} holds a {config['_class_name']}; expected AutoencoderKLHunyuanVideo")
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        files = sorted({folder / name for name in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = sorted(folder.glob("diffusion_pytorch_model*.safetensors"))
    if not files:
        raise VinoInputError(f"VAE folder {folder} has no diffusion_pytorch_model*.safetensors")
    return config, files


def _read_safetensors(file: Path, device, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a safetensors file, on `device` in `dtype`, and the file's metadata."""
    try:
        with safe_open(str(file), framework="pt", device=str(device)) as handle:
            tensors = {key: handle.get_tensor(key).to(dtype) for key in handle.keys()}
            return tensors, handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise VinoInputError(f"cannot read VAE weights {file}: {error}") from error


def _diffusers_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ComfyUI (LDM-style) HunyuanVideo VAE state dict to diffusers names.

    LDM numbers decoder levels from the finest (up.0) while diffusers numbers them in execution order
    (up_blocks.0 is the coarsest); attention projections are 1x1x1 convolutions there, linears here.
    """
    levels = 1 + max((int(m[1]) for key in state_dict if (m := re.match(r"decoder\.up\.(\d+)\.", key))), default=-1)
    renames = [
        (r"^encoder\.down\.(\d+)\.block\.", lambda m: f"encoder.down_blocks.{m[1]}.resnets."),
        (r"^encoder\.down\.(\d+)\.downsample\.", lambda m: f"encoder.down_blocks.{m[1]}.downsamplers.0."),
        (r"^decoder\.up\.(\d+)\.block\.", lambda m: f"decoder.up_blocks.{levels - 1 - int(m[1])}.resnets."),
        (r"^decoder\.up\.(\d+)\.upsample\.", lambda m: f"decoder.up_blocks.{levels - 1 - int(m[1])}.upsamplers.0."),
        (r"\.mid\.block_(\d)\.", lambda m: f".mid_block.resnets.{int(m[1]) - 1}."),
        (r"\.mid\.attn_1\.(norm|q|k|v|proj_out)\.", lambda m: f".mid_block.attentions.0.{_LDM_ATTENTION[m[1]]}."),
        (r"\.nin_shortcut\.", lambda m: ".conv_shortcut."),
        (r"\.norm_out\.", lambda m: ".conv_norm_out."),
    ]
    renamed = {}
    for key, tensor in state_dict.items():
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        if ".attentions.0." in key and tensor.ndim == 5:
            tensor = tensor.flatten(1)  # [C, C, 1, 1, 1] -> [C, C]
        renamed[key] = tensor
    return renamed


def _check_state_dict(model: AutoencoderKLHunyuanVideo, state_dict: dict[str, torch.Tensor], source: Path) -> None:
    """Raise VinoInputError naming the missing, unexpected and mis-shaped keys, if any."""
    expected = model.state_dict()
    shared = sorted(expected.keys() & state_dict.keys())
    problems = {
        "missing": sorted(expected.keys() - state_dict.keys()),
        "unexpected": sorted(state_dict.keys() - expected.keys()),
        "wrong shape": [
            f"{key} {tuple(state_dict[key].shape)} (expected {tuple(expected[key].shape)})"
            for key in shared
            if state_dict[key].shape != expected[key].shape
        ],
    }
    lines = [
        f"{len(keys)} {kind}: {', '.join(keys[:LISTED_KEYS])}{', ...' if len(keys) > LISTED_KEYS else ''}"
        for kind, keys in problems.items()
        if keys
    ]
    if lines:
        raise VinoInputError(f"VAE weights {source} do not fit AutoencoderKLHunyuanVideo: " + "; ".join(lines))
