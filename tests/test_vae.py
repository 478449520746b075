import json
import re

import pytest
import torch
from diffusers import AutoencoderKLHunyuanVideo
from safetensors import safe_open
from safetensors.torch import save_file

from vino_model.errors import VinoInputError
from vino_model.vae import SCALING_FACTOR, VinoVAE, _diffusers_names, make_tiny_vae


@pytest.fixture(scope="module")
def vae():
    return make_tiny_vae(seed=0)


def _pixels(frames, height=16, width=24, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, height, width, generator=generator) * 2 - 1  # [B, 3, T, H, W]


@pytest.mark.parametrize(("frames", "latent_frames"), [(1, 1), (9, 3)])
def test_encode_decode_shapes(vae, frames, latent_frames):
    latents = vae.encode(_pixels(frames))
    assert latents.shape == (1, 16, latent_frames, 2, 3)
    pixels = vae.decode(latents)
    assert pixels.shape == (1, 3, frames, 16, 24) and pixels.dtype == torch.float32
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0


def test_latents_carry_the_scaling_factor(vae):
    pixels = _pixels(1)
    with torch.no_grad():
        mode = vae.model.encode(pixels).latent_dist.mode()
        decoded = vae.model.decode(mode).sample.clamp(-1, 1)
    latents = vae.encode(pixels, sample=False)
    torch.testing.assert_close(latents, mode * SCALING_FACTOR)
    torch.testing.assert_close(vae.decode(latents), decoded)


def test_mode_is_deterministic_and_sample_follows_the_generator(vae):
    pixels = _pixels(1)
    mode = vae.encode(pixels, sample=False)
    assert torch.equal(mode, vae.encode(pixels, sample=False))
    first = vae.encode(pixels, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, vae.encode(pixels, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(first, vae.encode(pixels, generator=torch.Generator().manual_seed(2)))
    assert not torch.equal(first, mode)


def test_bad_shapes_are_input_errors(vae):
    with pytest.raises(VinoInputError, match="T = 4k\\+1"):
        vae.encode(_pixels(4))
    with pytest.raises(VinoInputError, match="expected \\[B, 16, T, H, W\\]"):
        vae.decode(torch.zeros(1, 4, 1, 4, 4))


def test_tiled_decode_splits_into_tiles_and_matches_untiled(vae):
    # No spatial structure, so tiles blend into the untiled image up to the zero padding at a tile's inner edges:
    # over 40 random latents it moved a pixel (of range [-1, 1]) by 3e-5 at the median and 1e-3 at most
    latents = torch.randn(1, 16, 1, 1, 1, generator=torch.Generator().manual_seed(0)).repeat(1, 1, 1, 6, 6)
    calls = []
    hook = vae.model.decoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        untiled = vae.decode(latents)
        tile = {"tile_sample_min_height": 32, "tile_sample_min_width": 32}
        vae.model.enable_tiling(**tile, tile_sample_stride_height=24, tile_sample_stride_width=24)
        tiled = vae.decode(latents, tiled=True)
    finally:
        hook.remove()
    assert len(calls) == 1 + 4  # 48x48 pixels in 2x2 overlapping tiles of 32
    assert tiled.shape == untiled.shape == (1, 3, 1, 48, 48)
    torch.testing.assert_close(tiled, untiled, atol=2e-3, rtol=0)


def test_save_load_round_trip(vae, tmp_path):
    custom = VinoVAE(vae.model, scaling_factor=0.5)
    path = custom.save(tmp_path / "vae.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        config = json.loads(handle.metadata()["config"])
    assert config["block_out_channels"] == [16, 16, 16, 16] and config["scaling_factor"] == 0.5
    loaded = VinoVAE.load(path)
    assert loaded.scaling_factor == 0.5
    latents = custom.encode(_pixels(1), sample=False)
    torch.testing.assert_close(loaded.encode(_pixels(1), sample=False), latents, atol=0, rtol=0)
    torch.testing.assert_close(loaded.decode(latents), custom.decode(latents), atol=0, rtol=0)


def test_load_diffusers_folder_and_repo(vae, tmp_path):
    vae.model.save_pretrained(tmp_path / "HunyuanVideo" / "vae")
    latents = vae.encode(_pixels(1), sample=False)
    for path in (tmp_path / "HunyuanVideo" / "vae", tmp_path / "HunyuanVideo"):
        loaded = VinoVAE.load(path)
        assert loaded.scaling_factor == SCALING_FACTOR
        torch.testing.assert_close(loaded.decode(latents), vae.decode(latents), atol=0, rtol=0)
    half = VinoVAE.load(tmp_path / "HunyuanVideo", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.decode(latents).isfinite().all()


def test_missing_key_is_named(vae, tmp_path):
    path = vae.save(tmp_path / "vae.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = handle.metadata()
    del tensors["decoder.conv_in.conv.bias"]
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(VinoInputError, match="1 missing: decoder.conv_in.conv.bias"):
        VinoVAE.load(path)


def test_unreadable_paths_are_input_errors(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(VinoInputError, match="broken.safetensors"):
        VinoVAE.load(tmp_path / "broken.safetensors")
    with pytest.raises(VinoInputError, match="no config.json"):
        VinoVAE.load(tmp_path)


def test_file_without_config_is_read_as_the_full_size_vae(vae, tmp_path):
    """ComfyUI's hunyuan_video_vae_bf16.safetensors: diffusers names, no config, the default sizes."""
    save_file(vae.model.state_dict(), str(tmp_path / "comfy.safetensors"))
    expected = re.escape("wrong shape: decoder.conv_in.conv.bias (16,) (expected (512,))")
    with pytest.raises(VinoInputError, match=expected) as error:
        VinoVAE.load(tmp_path / "comfy.safetensors")
    assert "unexpected" not in str(error.value)


def _comfy_names(state_dict, levels=4):
    """Name a diffusers state dict the way ComfyUI's own VAE modules do (LDM style)."""
    comfy = {}
    for key, tensor in state_dict.items():
        match = re.match(r"decoder\.up_blocks\.(\d+)\.", key)
        if match:
            key = key.replace(match[0], f"decoder.up.{levels - 1 - int(match[1])}.")
        key = re.sub(r"down_blocks\.(\d+)", r"down.\1", key)
        for diffusers, ldm in [
            ("resnets.", "block."), ("downsamplers.0.", "downsample."), ("upsamplers.0.", "upsample."),
            ("mid_block.block.0.", "mid.block_1."), ("mid_block.block.1.", "mid.block_2."),
            ("mid_block.attentions.0.", "mid.attn_1."), ("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"),
            ("to_v", "v"), ("to_out.0", "proj_out"), ("conv_shortcut", "nin_shortcut"), ("conv_norm_out", "norm_out"),
        ]:
            key = key.replace(diffusers, ldm)
        comfy[key] = tensor[..., None, None, None] if ".attn_1." in key and tensor.ndim == 2 else tensor
    return comfy


def test_comfyui_ldm_names_are_renamed():
    model = AutoencoderKLHunyuanVideo(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4)
    state_dict = model.state_dict()
    comfy = _comfy_names(state_dict)
    assert comfy["encoder.mid.attn_1.q.weight"].shape == (16, 16, 1, 1, 1)
    assert "decoder.up.0.block.0.nin_shortcut.conv.weight" in comfy  # the finest level, diffusers' last block
    assert "decoder.up.3.upsample.conv.conv.weight" in comfy
    renamed = _diffusers_names(comfy)
    assert renamed.keys() == state_dict.keys()
    assert all(torch.equal(renamed[key], state_dict[key]) for key in state_dict)
