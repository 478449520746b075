"""The node pack's own logic, in process: the LATENT convention against ComfyUI's HunyuanVideo VAE, the
embedded VAE behind core VAE nodes, reference inputs, safe output names, imports without ComfyUI."""

import importlib.util
import json
import math
import subprocess
import sys

import pytest
import torch
from diffusers import AutoencoderKLHunyuanVideo

from comfy_host import HOST, PYTHON, REPO

sys.path.append(str(HOST))  # appended: the repo's own `nodes/` must not shadow ComfyUI's nodes.py, nor the reverse
comfy_cli_args = pytest.importorskip("comfy.cli_args", reason="no ComfyUI host; run: bash scripts/install_comfyui.sh")
comfy_cli_args.args.cpu = True  # before comfy.model_management is imported: no CUDA probing

import comfy.sd  # noqa: E402

from vino_model.vae import VinoVAE, make_tiny_vae  # noqa: E402


def load_module(name: str, path, package_dir=None):
    """A module (or package) from its file, as ComfyUI loads packs: the names here clash with the repo's own."""
    locations = [str(package_dir)] if package_dir else None
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=locations)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


comfy_nodes = load_module("comfy_core_nodes", HOST / "nodes.py")  # core VAE Encode / VAE Decode
pack = load_module("vino_pack", REPO / "__init__.py", REPO)
from vino_pack.nodes import media, video  # noqa: E402
from vino_pack.nodes.vae import LATENT_FORMAT, EmbeddedVAE  # noqa: E402
from vino_pack.vino_model.errors import VinoInputError  # noqa: E402
from vino_pack.vino_model.tasks import NEGATIVE_PROMPTS  # noqa: E402


def random_hunyuan_video_vae(seed: int = 0) -> AutoencoderKLHunyuanVideo:
    """The full-size HunyuanVideo VAE (the architecture of hunyuan_video_vae_bf16.safetensors), random weights."""
    with torch.device("meta"):
        model = AutoencoderKLHunyuanVideo()
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim > 1:
                param.normal_(0, 1 / math.sqrt(param[0].numel()), generator=generator)
            elif "norm" in name and name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.normal_(0, 0.02, generator=generator)
    return model.eval()


def test_latent_convention_matches_comfyuis_hunyuan_video_vae():
    """ComfyUI's own HunyuanVideo VAE (what core Load VAE builds from hunyuan_video_vae_bf16.safetensors, whose
    keys are diffusers' names) and VINO's agree once LATENTs are scaled by the HunyuanVideo latent format."""
    model = random_hunyuan_video_vae()
    ours, comfy_vae = VinoVAE(model), comfy.sd.VAE(sd=model.state_dict())
    image = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(1))  # IMAGE [B, H, W, C]

    latent = comfy_nodes.VAEEncode().encode(comfy_vae, image)[0]["samples"]  # [1, 16, 1, 4, 4], unscaled
    scaled = ours.encode(image.permute(3, 0, 1, 2)[None] * 2 - 1, sample=False)
    torch.testing.assert_close(LATENT_FORMAT.process_in(latent), scaled, atol=1e-5, rtol=1e-4)

    decoded = comfy_nodes.VAEDecode().decode(comfy_vae, {"samples": LATENT_FORMAT.process_out(scaled)})[0]
    expected = ((ours.decode(scaled)[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)  # [T, H, W, 3]
    torch.testing.assert_close(decoded, expected, atol=1e-4, rtol=1e-4)
    unscaled = comfy_nodes.VAEDecode().decode(comfy_vae, {"samples": scaled})[0]
    assert (unscaled - expected).abs().max() > 0.01  # the conversion matters


def test_embedded_vae_works_behind_core_vae_nodes():
    tiny = make_tiny_vae()
    vae = EmbeddedVAE(tiny)
    frames = torch.rand(5, 32, 48, 3, generator=torch.Generator().manual_seed(2))  # a 5-frame video as an IMAGE batch
    latent = comfy_nodes.VAEEncode().encode(vae, frames)[0]["samples"]
    assert latent.shape == (1, 16, 2, 4, 6)
    expected_latent = tiny.encode(frames.permute(3, 0, 1, 2)[None] * 2 - 1, sample=False)
    torch.testing.assert_close(LATENT_FORMAT.process_in(latent), expected_latent)

    decoded = comfy_nodes.VAEDecode().decode(vae, {"samples": latent})[0]
    assert decoded.shape == (5, 32, 48, 3) and 0 <= decoded.min() and decoded.max() <= 1
    expected = ((tiny.decode(expected_latent)[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(decoded, expected)
    tiled = comfy_nodes.VAEDecodeTiled().decode(vae, {"samples": latent}, 64, 32, 64, 8)[0]
    assert tiled.shape == decoded.shape


def test_images_are_labelled_in_input_order_and_gaps_are_refused():
    red, blue = torch.zeros(1, 16, 24, 3), torch.ones(2, 20, 20, 4)
    red[..., 0] = 1.0
    images = media.gather_images({"image_1": red, "image_2": blue})
    assert [image.size for image in images] == [(24, 16), (20, 20), (20, 20)]
    assert images[0].getpixel((0, 0)) == (255, 0, 0) and images[1].mode == "RGB"
    with pytest.raises(VinoInputError, match="image_3 is connected but image_2 is not"):
        media.gather_images({"image_1": red, "image_3": red})
    with pytest.raises(VinoInputError, match="at most 8"):
        media.gather_images({"image_1": torch.zeros(9, 16, 16, 3)})


def test_one_video_from_either_input():
    frames = torch.rand(6, 16, 16, 3)
    clip, fps = media.gather_video({"video_frames": frames, "video_fps": 12.5})
    assert len(clip) == 6 and fps == 12.5
    as_video = video.as_video(frames, 30000 / 1001)  # NTSC, as a float
    assert as_video.get_components().frame_rate.denominator == 1001
    clip, rate = media.gather_video({"video": as_video})
    assert len(clip) == 6 and rate == pytest.approx(30000 / 1001)
    with pytest.raises(VinoInputError, match="both video and video_frames"):
        media.gather_video({"video": as_video, "video_frames": frames})
    assert media.gather_video({"video_fps": 24.0}) == (None, None)


@pytest.mark.parametrize("prefix, safe", [
    ("VINO/video", "VINO/video"),
    ("../../etc/passwd", "etc/passwd"),
    ("/abs/path/x", "abs/path/x"),
    ("C:\\Users\\me\\clip", "C_/Users/me/clip"),
    ("a/./b//c", "a/b/c"),
    ("bad<name>?", "bad_name__"),
    ("../..", video.DEFAULT_PREFIX),
])
def test_filename_prefix_never_leaves_the_output_folder(prefix, safe):
    assert video.safe_prefix(prefix) == safe


def test_every_node_is_prefixed_described_and_tooltipped():
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("VINO_") and node_id not in comfy_nodes.NODE_CLASS_MAPPINGS
        assert cls.CATEGORY == "VINO" and len(cls.DESCRIPTION) > 40
        spec = cls.INPUT_TYPES()
        for name, (_, *options) in [*spec["required"].items(), *spec.get("optional", {}).items()]:
            assert options and options[0].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_vino_model_and_the_pack_import_without_comfyui():
    script = (
        "import importlib.util, sys\n"
        "import vino_model.pipeline\n"
        f"spec = importlib.util.spec_from_file_location('pack', {str(REPO / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(REPO)!r}])\n"
        "pack = importlib.util.module_from_spec(spec); spec.loader.exec_module(pack)\n"
        "assert pack.NODE_CLASS_MAPPINGS == {}, pack.NODE_CLASS_MAPPINGS\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('comfy', 'folder_paths', 'comfy_api')]\n"
    )
    subprocess.run([str(PYTHON), "-c", script], cwd=REPO, check=True, timeout=300)


def test_embedded_default_is_the_shipped_bundle_unless_models_vino_embedded_holds_one(tmp_path, monkeypatch):
    from vino_pack.nodes import register
    from vino_pack.vino_model.tiny import make_tiny_bundle

    shipped = make_tiny_bundle(tmp_path / "pack" / "embedded")  # stands in for vino_model/embedded
    monkeypatch.setattr(register, "SHIPPED_BUNDLE", shipped)
    monkeypatch.setattr(register, "_roots", lambda folder: [tmp_path / "models"])
    assert register.embedded_bundle() == shipped
    (tmp_path / "models" / "embedded").mkdir(parents=True)  # an incomplete folder does not count
    assert register.embedded_bundle() == shipped
    own = make_tiny_bundle(tmp_path / "models" / "embedded")
    assert register.embedded_bundle() == own
    (own / "vae.safetensors").unlink()
    (shipped / "vae.safetensors").unlink()
    with pytest.raises(VinoInputError, match="no embedded default model"):
        register.embedded_bundle()


def test_the_embedded_defaults_steps_and_negative_are_what_the_nodes_zero_and_default_take(tmp_path, monkeypatch):
    """Load VINO (embedded default) -> Interleaved Encode (the model's default negative) -> VINO Sampler (steps 0):
    the bundle's own steps and negative prompt, as the CLI and the benchmark use them, not the release's."""
    from vino_pack.nodes import register
    from vino_pack.nodes.encode import InterleavedEncode
    from vino_pack.nodes.loader import LoadVinoEmbedded
    from vino_pack.nodes.sampler import VinoSampler
    from vino_pack.vino_model.tiny import make_tiny_bundle

    bundle = make_tiny_bundle(tmp_path / "embedded")
    defaults = json.loads((bundle / "defaults.json").read_text())
    (bundle / "defaults.json").write_text(json.dumps({**defaults, "steps": 3, "steps_video": 2, "negative_image": ""}))
    monkeypatch.setattr(register, "embedded_bundle", lambda: bundle)
    vino, _ = LoadVinoEmbedded().load("float32", "auto")
    encode = InterleavedEncode()
    (context,) = encode.encode(vino, "t2i", "a red circle", True, "ignored", False, 17)
    (empty,) = encode.encode(vino, "t2i", "a red circle", False, "", False, 17)
    (release,) = encode.encode(vino, "t2i", "a red circle", False, NEGATIVE_PROMPTS["image"], False, 17)
    uncond = {name: c.contexts.contexts["uncond"].text_states for name, c in
              (("default", context), ("empty", empty), ("release", release))}
    assert torch.equal(uncond["default"], uncond["empty"]) and not torch.equal(uncond["default"], uncond["release"])

    pipeline = vino.load_part(vino.mmdit)
    steps = []
    sample = pipeline.sample
    monkeypatch.setattr(pipeline, "sample", lambda branches, shape, seed, n, *rest, **kw:
                        steps.append(n) or sample(branches, shape, seed, n, *rest, **kw))
    (latent,) = VinoSampler().sample(vino, context, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0)
    (video,) = encode.encode(vino, "t2v", "a red circle slides to the right", True, "ignored", False, 17)
    VinoSampler().sample(vino, video, 0, 0, 5, 0, 0.0, 0.0, 0.0, 0)
    assert steps == [3, 2]  # an image takes the bundle's steps, a video its steps_video
    assert latent["samples"].shape[-2:] == (defaults["height"] // 8, defaults["width"] // 8)
