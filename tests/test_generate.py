"""End to end: every task kind through `python -m vino_model.generate` on a tiny random VINO."""

import json
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tiny_demo import write_demo
from vino_model import media
from vino_model.checkpoint import quantize_rows, read_state_dict, save_vino
from vino_model.config import VinoConfig
from vino_model.errors import VinoInputError
from vino_model.generate import main
from vino_model.pipeline import VinoPipeline
from vino_model.tasks import DEFAULTS, get_task, read_task_file
from vino_model.tiny import DEMO_TASK_FILES, SHIPPED_BUNDLE, TINY_DEFAULTS, bundle_defaults, output_defaults

SIZE = ["--width", "48", "--height", "32", "--frames", "5", "--steps", "2"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    bundle, tasks = write_demo(folder)
    return bundle, tasks, json.loads(tasks.read_text())


def model_args(bundle):
    return ["--checkpoint", str(bundle / "vino.safetensors"), "--qwen", str(bundle / "qwen3vl"),
            "--vae", str(bundle / "vae.safetensors"), "--device", "cpu"]


# (width, height, frames) each task must produce with SIZE: the user's size, the base image's
# letterboxed size (128x128 at the tiny model's 64x64 reference area) or the reference video's.
EXPECTED = {
    "t2i": (48, 32, 1), "t2v": (48, 32, 5), "i2v": (64, 64, 5), "ti2v": (48, 32, 5),
    "ti2i": (64, 64, 1), "tv2v": (64, 48, 5), "tiv2v": (64, 48, 5), "clone": (64, 48, 5),
}


def test_every_task_kind_through_the_cli(demo, tmp_path):
    bundle, tasks, entries = demo
    assert {e["task"] for e in entries} == set(EXPECTED)
    out = tmp_path / "out"
    assert main(["--tasks", str(tasks), "--out", str(out), "--save-latents", *SIZE, *model_args(bundle)]) == 0
    for entry in entries:
        width, height, frames = EXPECTED[entry["task"]]
        stem = out / f"{entry['index']}_{entry['task']}"
        if frames == 1:
            image = Image.open(stem.with_suffix(".png"))
            assert image.size == (width, height)
        else:
            video, _ = media.read_video(stem.with_suffix(".mp4"))
            assert len(video) == frames and video[0].size == (width, height)
        latents = load_file(str(stem) + ".latents.safetensors")["latents"]
        assert latents.shape == (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)


def test_same_seed_same_output_and_image_cfg_changes_it(demo):
    bundle, _, entries = demo
    pipe = VinoPipeline.load(bundle / "vino.safetensors", bundle / "qwen3vl", bundle / "vae.safetensors")
    entry = next(e for e in entries if e.get("ref_image_have_base"))
    images = [media.read_image(p) for p in entry["ref_image_paths"]]
    kwargs = dict(steps=2, seed=7, sample_posterior=False)
    a = pipe.generate("ti2i", entry["caption"], images, have_base=True, **kwargs)
    b = pipe.generate("ti2i", entry["caption"], images, have_base=True, **kwargs)
    c = pipe.generate("ti2i", entry["caption"], images, have_base=True, image_cfg=2.0, **kwargs)
    assert (a.latents == b.latents).all()
    assert (a.latents - c.latents).abs().max() > 1e-4


def test_int8_rows_generate_what_the_float_weights_do_within_a_percent(demo, tmp_path):
    """training.bundle --int8's storage: the same seed's latents from int8 rows and from the weights they came from."""
    bundle, _, entries = demo
    state, config = read_state_dict(bundle / "vino.safetensors")
    save_vino(tmp_path / "int8.safetensors", quantize_rows(state), VinoConfig.from_dict(config))
    entry = next(e for e in entries if e["task"] == "ti2v")
    images = [media.read_image(p) for p in entry["ref_image_paths"]]
    latents = []
    for weights in (bundle / "vino.safetensors", tmp_path / "int8.safetensors"):
        pipe = VinoPipeline.load(weights, bundle / "qwen3vl", bundle / "vae.safetensors")
        latents.append(pipe.generate("ti2v", entry["caption"], images, steps=2, seed=7, frames=5, width=48,
                                     height=32, sample_posterior=False).latents)
    error = (latents[1] - latents[0]).abs().max() / latents[0].abs().max()
    assert 0 < error < 0.01, error


def test_a_bundles_own_negative_prompt_is_the_one_an_unset_negative_takes(demo):
    """The embedded default trains and is scored with no negative prompt: a graph left to the model's default
    must condition its guidance on that, not on the release's long one."""
    bundle, _, entries = demo
    pipe = VinoPipeline.load(bundle / "vino.safetensors", bundle / "qwen3vl", bundle / "vae.safetensors")
    entry = next(e for e in entries if e["task"] == "t2i")
    media_ = pipe.prepare_media([], None, None, 17)

    def uncond(negative):
        contexts = pipe.encode_context(get_task("t2i"), entry["caption"], media_, negative, text_cfg=4.0)
        return contexts.contexts["uncond"].text_states

    release = uncond(None)
    assert torch.equal(release, uncond(DEFAULTS["image"]["negative"]))
    pipe.output_defaults = output_defaults({"negative_image": ""})
    assert torch.equal(uncond(None), uncond("")) and not torch.equal(uncond(None), release)


@pytest.mark.parametrize(
    "task, change, message",
    [
        ({"task": "paint"}, None, "unknown task 'paint'"),
        ({"task": "ti2v", "caption": "Image 3 walks in"}, None, "Image 3"),
        ({"task": "t2v"}, ["--frames", "20"], "frames=20"),
        ({"task": "t2i"}, ["--width", "50"], "width"),
        ({"task": "i2v", "ref_image_paths": ["tiny.png"]}, None, "Image 1: reference image is 8x8"),
        ({"task": "tv2v"}, None, "needs a reference video"),
        ({"task": "clone", "ref_image_paths": ["tiny.png", "tiny.png"]}, None, "exactly 1 reference images"),
        ({"task": "ti2v"}, ["--negative-video", "Image 1 is blurry", "--image-cfg", "2"], "image-free guidance branch"),
        ({"task": "ti2v"}, ["--negative-video", "Image 3 is blurry"], "negative prompt: "),
    ],
)
def test_bad_input_is_a_clear_error(demo, tmp_path, capsys, task, change, message):
    bundle, _, entries = demo
    Image.new("RGB", (8, 8), "red").save(tmp_path / "tiny.png")
    ti2v = next(e for e in entries if e["task"] == "ti2v")
    entry = {"index": 0, "caption": "a red circle", "ref_image_paths": ti2v["ref_image_paths"] if task["task"] == "ti2v" else []}
    entry.update(task)
    (tmp_path / "tasks.json").write_text(json.dumps([entry]))
    args = ["--tasks", str(tmp_path / "tasks.json"), "--out", str(tmp_path / "out"), *SIZE, *(change or []),
            *model_args(bundle)]
    assert main(args) == 2
    assert message in capsys.readouterr().err



def test_shards_split_a_task_file_and_write_what_one_process_writes(demo, tmp_path, capsys):
    bundle, _, _ = demo
    entries = [{"index": i, "task": "t2i", "caption": f"a red circle number {i}"} for i in range(5)]
    (tmp_path / "tasks.json").write_text(json.dumps(entries))
    common = ["--tasks", str(tmp_path / "tasks.json"), *SIZE, *model_args(bundle)]
    assert main([*common, "--out", str(tmp_path / "all")]) == 0
    for k in range(3):
        assert main([*common, "--out", str(tmp_path / f"shard{k}"), "--shard", f"{k}/3"]) == 0
    assert sorted(p.name for p in (tmp_path / "shard1").iterdir()) == ["1_t2i.png", "4_t2i.png"]
    for i in range(5):
        together = Image.open(tmp_path / "all" / f"{i}_t2i.png")
        alone = Image.open(tmp_path / f"shard{i % 3}" / f"{i}_t2i.png")
        assert list(alone.getdata()) == list(together.getdata())
    assert main([*common, "--out", str(tmp_path / "bad"), "--shard", "3/3"]) == 2
    assert "--shard '3/3': expected K/N" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "past"), "--shard", "6/8"]) == 0  # 5 entries: none for shard 6
    assert not (tmp_path / "past").exists()


def test_seed_per_entry_draws_each_entry_from_its_own_noise(demo, tmp_path):
    bundle, _, _ = demo
    entries = [{"index": i, "task": "t2i", "caption": "a red circle"} for i in (3, 4)]  # one prompt twice
    (tmp_path / "tasks.json").write_text(json.dumps(entries))
    common = ["--tasks", str(tmp_path / "tasks.json"), *SIZE, *model_args(bundle), "--seed", "5"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    assert main([*common, "--out", str(tmp_path / "own"), "--seed-per-entry"]) == 0
    pixels = {(run, i): list(Image.open(tmp_path / run / f"{i}_t2i.png").getdata()) for run in ("one", "own")
              for i in (3, 4)}
    assert pixels["one", 3] == pixels["one", 4]  # one seed: the same prompt, the same picture
    assert pixels["own", 3] != pixels["own", 4]
    assert main([*common[:-1], "8", "--out", str(tmp_path / "seed8")]) == 0  # entry 3's own seed is 5 + 3
    assert list(Image.open(tmp_path / "seed8" / "3_t2i.png").getdata()) == pixels["own", 3]


def test_task_file_is_parsed_never_evaluated(tmp_path):
    (tmp_path / "a.png").touch()
    (tmp_path / "t.json").write_text(json.dumps([{"task": "i2v", "caption": "x", "ref_image_paths": '["a.png"]'}]))
    assert read_task_file(tmp_path / "t.json")[0].ref_image_paths == [tmp_path / "a.png"]
    (tmp_path / "t.json").write_text(json.dumps([{"task": "i2v", "caption": "x", "ref_image_paths": "__import__('os')"}]))
    with pytest.raises(VinoInputError, match="not a JSON list"):
        read_task_file(tmp_path / "t.json")


def test_demo_runs_every_task_kind_of_the_shipped_demo(tmp_path, monkeypatch):
    """The README's main command: the shipped demo tasks (one held-out world prompt per task kind) at the
    embedded default's 64x64 and 17 frames; without the trained weights in the checkout, on a tiny random model."""
    monkeypatch.chdir(tmp_path)
    main(["--demo", "--out", "out", "--steps", "1", "--device", "cpu"])
    entries = [e for name in DEMO_TASK_FILES for e in json.loads((SHIPPED_BUNDLE / name).read_text())]
    assert len(entries) == 9 and len({e["task"] for e in entries}) == 8  # ti2i twice: with and without a base
    for entry in entries:
        image = entry["task"] in ("t2i", "ti2i")
        path = tmp_path / "out" / f"{entry['index']}_{entry['task']}.{'png' if image else 'mp4'}"
        if image:
            with Image.open(path) as picture:
                assert picture.size == (64, 64)
        else:
            frames, _ = media.read_video(path)
            assert len(frames) == 17 and frames[0].size == (64, 64)


def test_a_bundles_steps_video_is_what_an_unset_steps_takes_for_videos_only(demo, tmp_path, monkeypatch):
    """defaults.json's steps_video (and steps_image) over its steps, entry by entry of one task file; --steps, when
    given, for every entry."""
    bundle, _, entries = demo
    model = tmp_path / "model"
    shutil.copytree(bundle, model)
    (model / "defaults.json").write_text(json.dumps({**TINY_DEFAULTS, "steps": 3, "steps_video": 2}))
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps([e for e in entries if e["task"] in ("t2i", "t2v")]))
    taken = []
    sample = VinoPipeline.sample
    monkeypatch.setattr(VinoPipeline, "sample", lambda self, branches, shape, seed, steps, *rest, **kw:
                        taken.append((shape[2], steps)) or sample(self, branches, shape, seed, steps, *rest, **kw))
    common = ["--tasks", str(tasks), "--model", str(model), "--device", "cpu", "--width", "32", "--height", "32"]
    assert main([*common, "--out", str(tmp_path / "own")]) == 0
    assert taken == [(1, 3), (5, 2)]  # [1, C, T', H', W']: the image's 1 latent frame, the 17-frame video's 5
    taken.clear()
    assert main([*common, "--out", str(tmp_path / "given"), "--steps", "1"]) == 0
    assert taken == [(1, 1), (5, 1)]


def test_a_bundles_defaults_json_is_what_unset_sizes_and_guidance_take(tmp_path):
    """The trained default's defaults.json over the release's defaults (what VINO Sampler's zeros take for Load VINO
    (embedded default)); a bundle without one: the release's; a broken one: an error that names it."""
    from training.bundle import DEFAULTS as TRAINED

    (tmp_path / "defaults.json").write_text(json.dumps(TRAINED))
    ours = output_defaults(bundle_defaults(tmp_path))
    for output, frames in (("image", 1), ("video", TRAINED["frames"])):
        assert ours[output] == {"width": TRAINED["width"], "height": TRAINED["height"], "frames": frames,
                                "steps": TRAINED.get(f"steps_{output}", TRAINED["steps"]), "shift": TRAINED["shift"],
                                "text_cfg": TRAINED["cfg"], "negative": TRAINED[f"negative_{output}"]}
    assert ours["video"] != DEFAULTS["video"]
    assert output_defaults(bundle_defaults(tmp_path / "elsewhere")) == DEFAULTS
    (tmp_path / "defaults.json").write_text('{"width": 128,')
    with pytest.raises(VinoInputError, match="defaults.json is not valid JSON"):
        bundle_defaults(tmp_path)
    (tmp_path / "defaults.json").write_text("[128, 128]")
    with pytest.raises(VinoInputError, match="expected a JSON object"):
        bundle_defaults(tmp_path)
