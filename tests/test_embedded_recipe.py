"""The embedded default's recipe at toy sizes: the world in parallel, the VLM's language, the VAE and its
round-trip ceiling, the batched native text encoder, the bundle and `generate --model`."""

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

from training import autoencoder, bench, language
from training.bundle import DEFAULTS, write_bundle
from training.model import NativeTextEncoder
from training.world import write_split
from vino_model.checkpoint import load_vino_weights, save_vino
from vino_model.errors import VinoInputError
from vino_model.generate import apply_bundle, entry_image_cfg
from vino_model.pipeline import VinoPipeline
from vino_model.tiny import make_tiny_bundle
from vino_model.vae import VinoVAE


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("tiny"))


def test_world_in_parallel_writes_what_one_process_writes(tmp_path):
    one = write_split(str(tmp_path / "one"), per_task=2, width=32, height=32, frames=5, tasks=("t2i", "tv2v"))
    two = write_split(str(tmp_path / "two"), per_task=2, width=32, height=32, frames=5, tasks=("t2i", "tv2v"),
                      workers=2)
    assert [r.task for r in one] == ["t2i", "t2i", "tv2v", "tv2v"]
    assert [r.meta for r in one] == [r.meta for r in two]
    for a, b in zip(one, two):
        assert Path(a.target).read_bytes() == Path(b.target).read_bytes()
    with pytest.raises(VinoInputError, match="expected a non-empty list"):
        write_split(str(tmp_path / "bad"), per_task=1, tasks=("t2i", "inpaint"))


def test_language_model_learns_the_world_captions(tmp_path):
    out = tmp_path / "qwen3vl"
    size = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 16}
    pairs = language.world_captions(36, seed=0)
    assert len(pairs) == 36 and len({caption for caption, _ in pairs}) > 20
    caption, objects = pairs[0]
    assert objects.split(" ")[0] in caption  # the reply starts with a shape the caption names
    language.train(out, steps=30, batch_size=8, lr=3e-3, text=size, captions=36, seed=0, device="cpu")
    model = Qwen3VLForConditionalGeneration.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert model.config.text_config.hidden_size == 32
    assert not (tmp_path / "qwen3vl.partial").exists()
    ids = torch.tensor([language.chat_ids(processor.tokenizer, caption, objects)])
    assert processor.tokenizer.decode(ids[0]).endswith(f"assistant\n{objects}<|im_end|>\n")
    trained = model(input_ids=ids, labels=ids).loss.item()
    assert trained < 0.8 * np.log(len(processor.tokenizer))  # well under a uniform guess after 30 steps
    separation = language.attribute_separation(out)
    assert set(separation) == {"shape", "color", "size"} and all(0 < v < 10 for v in separation.values())
    at_word = language.attribute_separation(out, where="word")  # the changed tokens alone move more than the mean
    assert all(at_word[k] > separation[k] for k in separation), (at_word, separation)
    with pytest.raises(VinoInputError, match="where must be"):
        language.attribute_separation(out, where="middle")
    with pytest.raises(VinoInputError, match="exists"):
        language.train(out, 1, 2, 1e-3, size, 8, 0, "cpu")
    # going on from it with the binding term keeps its tokenizer and sizes, and trains the heads' reading
    bound = language.train(tmp_path / "bound", steps=2, batch_size=8, lr=1e-3, text={}, captions=36, seed=0,
                           device="cpu", binding=1.0, init=out)
    assert (bound / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()
    again = Qwen3VLForConditionalGeneration.from_pretrained(bound)
    assert again.config.text_config.hidden_size == 32
    assert not torch.equal(again.model.language_model.layers[0].mlp.up_proj.weight,
                           model.model.language_model.layers[0].mlp.up_proj.weight)
    with pytest.raises(VinoInputError, match="--init .*config.json"):
        language.train(tmp_path / "none", 1, 2, 1e-3, size, 8, 0, "cpu", init=tmp_path / "missing")


def test_binding_labels_mark_each_object_phrase():
    caption = ("a picture of a small red star in the bottom left corner and a large striped blue cross at the top "
               "on a gray background")
    assert [(caption[a:b], *named) for a, b, *named in language.mentions(caption)] == [
        ("star in the bottom left corner", "red", "star", "small"), ("cross at the top", "blue", "cross", "large")]
    edit = "turn the green circle into two medium-sized yellow squares"
    assert [(edit[a:b], *named) for a, b, *named in language.mentions(edit)] == [
        ("circle", "green", "circle", None), ("squares", "yellow", "square", "medium")]
    assert language.mentions("make the background white") == []
    processor = AutoProcessor.from_pretrained(Path(__file__).parents[1] / "training/embedded-src/qwen3vl")
    ids, labels = language.chat_tokens(processor.tokenizer, caption, "star red small plain")
    assert ids == language.chat_ids(processor.tokenizer, caption, "star red small plain")
    words = {processor.tokenizer.decode([i]).strip(): tuple(label.tolist()) for i, label in zip(ids, labels)}
    colours, sizes = list(language.COLORS), list(language.SIZES)
    assert words["corner"] == (colours.index("red"), language.SHAPES.index("star"), sizes.index("small"))
    assert words["top"] == (colours.index("blue"), language.SHAPES.index("cross"), sizes.index("large"))
    assert words["red"] == words["background"] == words["picture"] == (-100, -100, -100)
    phrase_tokens = sum(len(processor.tokenizer(" " + caption[a:b], add_special_tokens=False).input_ids)
                        for a, b, *_ in language.mentions(caption))
    assert int((labels[:, 0] >= 0).sum()) == int((labels[:, 2] >= 0).sum()) == phrase_tokens
    states = [torch.randn(1, len(ids), 4) for _ in range(4)]
    for bound, classes in [((0, 1), (6, 5)), ((0, 1, 2), (6, 5, 3))]:
        heads = torch.nn.ModuleList(torch.nn.Linear(4, n) for _ in language.READ_LAYERS for n in classes)
        assert language.binding_loss(states, heads, labels[None], bound).item() > 0
        assert float(language.binding_loss(states, heads, torch.full_like(labels[None], -100), bound)) == 0
    sized = torch.nn.ModuleList(torch.nn.Linear(4, 3) for _ in language.READ_LAYERS)
    unsized = labels.clone()
    unsized[:, 2] = -100  # a size the caption does not name: read for colour and shape alone
    assert language.binding_loss(states, sized, unsized[None], (2,)).item() == 0
    with pytest.raises(VinoInputError, match="--bind color,weight: expected attributes from color, shape, size"):
        language.train(Path("unused"), 1, 2, 1e-3, {}, 8, 0, "cpu", bind=("color", "weight"))


def test_identity_term_keeps_each_token_readable_at_the_layers_vino_reads(tmp_path):
    """identity_loss is low when each state points at its own token's embedding and high when the states are
    another token's; a language model trained with it reads its tokens back from those layers far better than
    one trained on next-token prediction alone."""
    embeddings = torch.randn(50, 16)
    tokens = torch.randint(0, 50, (2, 7))
    labels = tokens.masked_fill(torch.arange(7) >= 5, -100)  # two padded positions
    own = [embeddings[tokens] * 3] * 3  # at every layer, each state is its token's embedding (any scale)
    other = [embeddings[(tokens + 1) % 50]] * 3
    assert language.identity_loss(own, embeddings, labels) < 0.5 * language.identity_loss(other, embeddings, labels)

    size = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 16}
    readback = {}
    for weight in (0.0, 1.0):
        out = language.train(tmp_path / f"lm-{weight}", steps=40, batch_size=8, lr=3e-3, text=size, captions=48,
                             seed=0, device="cpu", identity=weight)
        model = Qwen3VLForConditionalGeneration.from_pretrained(out)
        tokenizer = AutoProcessor.from_pretrained(out).tokenizer
        ids = torch.tensor([language.chat_ids(tokenizer, caption, objects)
                            for caption, objects in language.world_captions(48, seed=1)[:1]])
        hidden = model.model.language_model(input_ids=ids, output_hidden_states=True).hidden_states
        readback[weight] = language.identity_loss(hidden, model.get_input_embeddings().weight, ids).item()
    assert readback[1.0] < 0.5 * readback[0.0], readback


def test_object_pixels_weigh_more_than_the_grey_background():
    pixels = torch.zeros(1, 3, 1, 2, 2)
    pixels[0, :, 0, 0, 0] = torch.tensor([0.8, -0.8, -0.8])  # a red pixel; the rest mid-grey
    weights = autoencoder.object_weights(pixels, 8.0)
    assert weights[0, 0, 0, 0, 0] == 8.0 and weights.flatten()[1:].eq(1.0).all()


def test_a_ring_weighs_an_outlines_grey_side_as_its_object_side():
    pixels = torch.zeros(1, 3, 2, 7, 7)
    pixels[0, :, 1, 3, 3] = torch.tensor([0.8, -0.8, -0.8])  # a red pixel in the second frame only
    weights = autoencoder.object_weights(pixels, 8.0, ring=2)[0, 0]
    assert weights[1, 1:6, 1:6].eq(8.0).all()  # the object and the grey within 2 px of it
    assert weights[1, 0].eq(1.0).all() and weights[1, :, 6].eq(1.0).all()  # farther out
    assert weights[0].eq(1.0).all()  # no ring spreads across frames


def test_edge_term_charges_a_blurred_outline_more_than_an_even_shift():
    sharp = torch.zeros(1, 3, 1, 8, 8)
    sharp[..., 2:6, 2:6] = 1.0
    blurred = torch.nn.functional.avg_pool3d(sharp, (1, 3, 3), stride=1, padding=(0, 1, 1), count_include_pad=False)
    shifted = sharp + (blurred - sharp).abs().mean()  # the same mean pixel error, spread evenly
    assert autoencoder.edge_error(shifted - sharp) == pytest.approx(0.0)
    assert autoencoder.edge_error(blurred - sharp) > 0.05


def test_augmentation_flips_whole_samples_and_keeps_stills_still():
    clip = torch.randint(0, 256, (1, 5, 4, 6, 3), dtype=torch.uint8)
    seen = set()
    for seed in range(24):
        out = autoencoder.to_pixels(clip.expand(2, -1, -1, -1, -1), torch.Generator().manual_seed(seed))
        assert out.shape == (2, 3, 5, 4, 6) and out.min() >= -1 and out.max() <= 1
        base = clip.permute(0, 4, 1, 2, 3).float()[0] / 127.5 - 1
        variants = {(t, h, w): base.flip([d for d, f in zip((1, 2, 3), (t, h, w)) if f])
                    for t in (0, 1) for h in (0, 1) for w in (0, 1)}
        for sample in out:  # each sample is the clip under one combination of flips
            match = [k for k, v in variants.items() if torch.equal(v, sample)]
            assert match
            seen.add(match[0])
    assert len(seen) == 8
    still = autoencoder.to_pixels(clip[:, :1], torch.Generator().manual_seed(0))
    assert still.shape == (1, 3, 1, 4, 6)


def _tiny_vae_run(out, **kw):
    return autoencoder.train(out, steps=4, batch_size=1, lr=1e-3, channels=(8, 8, 8, 8), pool_size=9, size=32,
                             frames=5, seed=0, workers=1, device="cpu", **kw)


def test_a_stopped_vae_run_goes_on_to_the_same_weights(tmp_path, monkeypatch):
    straight = load_file(_tiny_vae_run(tmp_path / "straight.safetensors", save_every=2))
    real_save = autoencoder.save_state

    def save_then_stop(*args):
        real_save(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(autoencoder, "save_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _tiny_vae_run(tmp_path / "resumed.safetensors", save_every=2)
    assert not (tmp_path / "resumed.safetensors").exists()
    assert (tmp_path / "resumed.train-state.safetensors").exists()
    monkeypatch.setattr(autoencoder, "save_state", real_save)
    resumed = load_file(_tiny_vae_run(tmp_path / "resumed.safetensors", save_every=2))
    assert not (tmp_path / "resumed.train-state.safetensors").exists()
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], msg=key)


def test_decoder_only_training_keeps_the_encoder_and_scaling(tmp_path):
    first = _tiny_vae_run(tmp_path / "vae.safetensors")
    tuned = _tiny_vae_run(tmp_path / "tuned.safetensors", init=first, decoder_only=True)
    before, after = load_file(first), load_file(tuned)
    assert VinoVAE.load(tuned).scaling_factor == VinoVAE.load(first).scaling_factor
    for key in before:
        same = torch.equal(before[key], after[key])
        assert same == key.startswith(("encoder.", "quant_conv.")), key
    with pytest.raises(VinoInputError, match="--decoder-only needs --init"):
        _tiny_vae_run(tmp_path / "x.safetensors", decoder_only=True)


def test_vae_trains_and_its_round_trip_ceiling_is_scored(tmp_path):
    out = autoencoder.train(tmp_path / "vae.safetensors", steps=2, batch_size=1, lr=1e-3, channels=(8, 8, 8, 8),
                            pool_size=9, size=32, frames=5, seed=0, workers=1, device="cpu")
    vae = VinoVAE.load(out)
    assert vae.scaling_factor != pytest.approx(0.476986)  # its own, measured on held clips
    ceiling = autoencoder.ceiling(vae, count=2, size=32, frames=5)
    assert set(ceiling) == {"t2i", "t2v"} and all(0.0 <= v <= 1.0 for v in ceiling.values())
    # a VAE that returns its input exactly would score the ground truth's 1.0
    identity = Namespace(encode=lambda pixels, sample=False: pixels, decode=lambda latents: latents)
    assert autoencoder.ceiling(identity, count=2, size=32, frames=5) == {"t2i": 1.0, "t2v": 1.0}


def test_native_text_encoder_reads_a_batch_as_it_reads_each_caption(tiny):
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny / "qwen3vl")
    tokenizer = AutoProcessor.from_pretrained(tiny / "qwen3vl").tokenizer
    native = NativeTextEncoder(model.model.language_model, tokenizer, layer=-3, max_tokens=64)
    captions = ["a red star", "", "two large striped blue squares move slowly to the left"]
    batch = native(captions)
    for caption, states in zip(captions, batch):
        alone = native([caption])[0]
        assert states.shape == alone.shape
        torch.testing.assert_close(states, alone, atol=1e-5, rtol=1e-4)


def test_native_text_encoder_can_add_the_token_embeddings(tiny):
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny / "qwen3vl")
    tokenizer = AutoProcessor.from_pretrained(tiny / "qwen3vl").tokenizer
    language_model = model.model.language_model
    plain = NativeTextEncoder(language_model, tokenizer, layer=-3, max_tokens=64)
    mixed = NativeTextEncoder(language_model, tokenizer, layer=-3, max_tokens=64, embeddings=0.5)
    caption = "a small red star in the center"
    ids = torch.tensor(plain.caption_ids(caption) + [tokenizer.eos_token_id])
    with torch.no_grad():
        embedded = language_model.embed_tokens(ids)
    states = mixed([caption])[0]
    def unit_rms(x):  # eps 1e-6 as in the encoder: it matters here, the random embeddings have a mean square of 4e-4
        return x / (x.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()

    torch.testing.assert_close(states, unit_rms(plain([caption])[0]) + 0.5 * unit_rms(embedded), atol=1e-5, rtol=1e-4)
    size = states.pow(2).mean(-1).sqrt()
    assert size.min() > 0.5 and size.max() < 1.5  # two unit-RMS parts, the second at half weight


def test_bundle_is_half_precision_complete_and_loads(tiny, tmp_path):
    out = write_bundle(tiny / "vino.safetensors", tiny / "qwen3vl", tiny / "vae.safetensors", tmp_path / "bundle",
                       {**DEFAULTS, "steps": 7})
    for name in ("vino.safetensors", "vae.safetensors", "qwen3vl/model.safetensors"):
        with safe_open(str(out / name), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}, name
    assert json.loads((out / "defaults.json").read_text())["steps"] == 7
    pipe = VinoPipeline.load(out / "vino.safetensors", out / "qwen3vl", out / "vae.safetensors")
    result = pipe.generate("t2i", "a red star", width=32, height=32, steps=2, seed=0)
    assert result.frames.shape == (1, 32, 32, 3)
    # a second bundle replaces the first as a whole
    write_bundle(tiny / "vino.safetensors", tiny / "qwen3vl", tiny / "vae.safetensors", out, DEFAULTS)
    assert json.loads((out / "defaults.json").read_text())["steps"] == DEFAULTS["steps"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no .partial or .old left behind
    with pytest.raises(VinoInputError, match="missing.safetensors"):  # a write that fails keeps the old bundle whole
        write_bundle(tiny / "vino.safetensors", tiny / "qwen3vl", tmp_path / "missing.safetensors", out,
                     {**DEFAULTS, "steps": 9})
    assert json.loads((out / "defaults.json").read_text())["steps"] == DEFAULTS["steps"]
    assert (out / "vino.safetensors").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    config, transformer, _ = load_vino_weights(tiny / "vino.safetensors")
    save_vino(tmp_path / "base.safetensors", {f"transformer.{k}": v for k, v in transformer.items()}, config)
    with pytest.raises(VinoInputError, match="no mm_encoder"):
        write_bundle(tmp_path / "base.safetensors", tiny / "qwen3vl", tiny / "vae.safetensors", tmp_path / "b2", DEFAULTS)


def test_generate_model_fills_paths_and_unset_options_from_the_bundle(tiny, tmp_path):
    out = write_bundle(tiny / "vino.safetensors", tiny / "qwen3vl", tiny / "vae.safetensors", tmp_path / "bundle",
                       {**DEFAULTS, "width": 32, "cfg": 2.5})
    args = Namespace(model=out, checkpoint=None, qwen=None, vae=None, width=None, height=48, frames=None, steps=None,
                     cfg=None, image_cfg=None, shift=None, negative_image=None, negative_video=None)
    apply_bundle(args)
    assert (args.checkpoint, args.qwen, args.vae) == (out / "vino.safetensors", out / "qwen3vl", out / "vae.safetensors")
    assert (args.width, args.height, args.cfg, args.negative_image) == (32, 48, 2.5, "")  # the user's height stays
    (out / "vae.safetensors").unlink()
    with pytest.raises(VinoInputError, match="not a VINO bundle"):
        apply_bundle(Namespace(**{**vars(args), "vae": None}))


def test_tasks_take_the_bundles_own_image_cfg_unless_the_user_sets_one(tiny, tmp_path):
    out = write_bundle(tiny / "vino.safetensors", tiny / "qwen3vl", tiny / "vae.safetensors", tmp_path / "bundle",
                       {**DEFAULTS, "image_cfg": 1.5, "image_cfg_tasks": {"i2v": 3.0, "ti2i_ref": 4.0}})
    unset = dict.fromkeys(("checkpoint", "qwen", "vae", "width", "height", "frames", "steps", "cfg", "image_cfg",
                           "shift", "negative_image", "negative_video"))
    entries = [Namespace(task="ti2i", ref_image_have_base=True), Namespace(task="ti2i", ref_image_have_base=False),
               Namespace(task="i2v", ref_image_have_base=False), Namespace(task="ti2v", ref_image_have_base=False)]

    def chosen(**given):
        args = Namespace(model=out, **{**unset, **given})
        apply_bundle(args)
        return [entry_image_cfg(args, entry) for entry in entries]

    assert chosen() == [4.0, 1.5, 3.0, 1.5]
    assert chosen(image_cfg=2.0) == [2.0, 2.0, 2.0, 2.0]  # the user's image CFG serves every task
    (out / "defaults.json").write_text(json.dumps({"image_cfg": 1.0}))  # a bundle without per-task values
    assert chosen() == [1.0, 1.0, 1.0, 1.0]


def test_bench_scores_the_ground_truth_itself(tmp_path):
    write_split(str(tmp_path), per_task=1, width=32, height=32, frames=5)
    results = bench.evaluate([str(tmp_path / "tasks_image.json"), str(tmp_path / "tasks_video.json")], None)
    assert len(results) == 9 and all(r["score"] > 0.95 and not r["missing"] for r in results)
    printed = subprocess.run([sys.executable, "-m", "training.bench", "--tasks", str(tmp_path / "tasks_image.json"),
                              "--ground-truth"], capture_output=True, text=True, check=True).stdout
    assert "t2i" in printed and "1.000" in printed


def test_a_vae_below_the_required_ceiling_is_refused():
    identity = Namespace(encode=lambda pixels, sample=False: pixels, decode=lambda latents: latents)
    assert autoencoder.check_ceiling(identity, 0.95, size=32, frames=5) == {"t2i": 1.0, "t2v": 1.0}
    grey = Namespace(encode=lambda pixels, sample=False: pixels, decode=lambda latents: latents * 0)
    with pytest.raises(VinoInputError, match="below 0.95"):
        autoencoder.check_ceiling(grey, 0.95, size=32, frames=5)
