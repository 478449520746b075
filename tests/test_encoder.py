"""The VLM side on a tiny random Qwen3-VL: prompt layout, query positions and causality,
hidden_states[-2], boundary markers, gradients, and the caption rewrite."""

import copy
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

from vino_model.encoder import (
    REWRITE_SYSTEM_PROMPT,
    InterleavedEncoder,
    MemoisedMedia,
    MMEncoder,
    boundary_positions,
    check_labels,
    fingerprint,
    render_prompt,
)
from vino_model.errors import VinoInputError
from vino_model.tiny_qwen import make_tiny_qwen3vl

NUM_QUERIES = 16
TEXT_DIM = 48
BOUNDARY_DIM = 40


@pytest.fixture(scope="session")
def qwen_folder(tmp_path_factory):
    return make_tiny_qwen3vl(tmp_path_factory.mktemp("qwen3vl"), seed=0)


@pytest.fixture(scope="session")
def encoder(qwen_folder):
    torch.manual_seed(0)
    mm_encoder = MMEncoder(vlm_hidden=64, num_queries=NUM_QUERIES, text_dim=TEXT_DIM, boundary_dim=BOUNDARY_DIM)
    return InterleavedEncoder.from_folder(qwen_folder, mm_encoder)


def noise_image(width, height, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


IMAGES = [noise_image(96, 64, 1), noise_image(64, 64, 2)]
# 8 frames at 4 fps = 2 s; read at 2 fps that is 4 frames, i.e. 2 groups of 2 frames.
VIDEO = [noise_image(64, 48, 10 + i) for i in range(8)]
VIDEO_FPS = 4.0
PROMPT = "Put the hat from Image 2 on the person in Image 1, moving as in Video 1."


def with_mm_encoder(encoder, mm_encoder):
    return InterleavedEncoder(encoder.vlm, encoder.processor, mm_encoder)


def copy_of(mm_encoder):
    clone = MMEncoder(64, NUM_QUERIES, TEXT_DIM, BOUNDARY_DIM)
    clone.load_state_dict(mm_encoder.state_dict())
    return clone


# ---------------------------------------------------------------- the tiny Qwen3-VL folder


def test_tiny_folder_loads_with_transformers_classes(qwen_folder):
    model = Qwen3VLForConditionalGeneration.from_pretrained(qwen_folder)
    processor = AutoProcessor.from_pretrained(qwen_folder)
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessor"
    assert type(processor.video_processor).__name__ == "Qwen3VLVideoProcessor"
    assert processor.tokenizer.padding_side == "left"

    ids = processor.tokenizer.convert_tokens_to_ids
    assert model.config.vision_start_token_id == ids("<|vision_start|>")
    assert model.config.vision_end_token_id == ids("<|vision_end|>")
    assert model.config.image_token_id == ids("<|image_pad|>")
    assert model.config.video_token_id == ids("<|video_pad|>")
    assert model.config.text_config.vocab_size == len(processor.tokenizer)
    assert processor.tokenizer("<|im_start|>user\n").input_ids[0] == ids("<|im_start|>")


def test_tiny_folder_is_deterministic_and_trains_on_the_corpus(tmp_path, qwen_folder):
    same = make_tiny_qwen3vl(tmp_path / "same", seed=0)
    other = make_tiny_qwen3vl(tmp_path / "other", seed=1, corpus=["a zebra grazes", "zebra stripes"] * 20)

    reference = load_file(qwen_folder / "model.safetensors")
    assert all(torch.equal(reference[k], v) for k, v in load_file(same / "model.safetensors").items())
    assert not torch.equal(reference["lm_head.weight"], load_file(other / "model.safetensors")["lm_head.weight"])
    assert (same / "tokenizer.json").read_text() == (qwen_folder / "tokenizer.json").read_text()

    zebra_tokenizer = AutoProcessor.from_pretrained(other).tokenizer
    assert len(zebra_tokenizer(" zebra").input_ids) == 1


# ---------------------------------------------------------------- the prompt


def test_prompt_lists_labelled_inputs_before_the_text(encoder):
    assert render_prompt(encoder.processor, "Make it snow.", num_images=2, has_video=True) == (
        "<|im_start|>system\n"
        "You are a helpful assistant aimed at generating an output video caption.<|im_end|>\n"
        "<|im_start|>user\n"
        "Image 1: <|vision_start|><|image_pad|><|vision_end|>"
        "Image 2: <|vision_start|><|image_pad|><|vision_end|>"
        "Video 1: <|vision_start|><|video_pad|><|vision_end|>"
        "Make it snow.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


@pytest.mark.parametrize(
    "text, num_images, has_video, message",
    [
        ("the hat in Image 3", 2, False, "prompt mentions Image 3 but 2 images are connected"),
        ("the hat in Image 1", 0, True, "prompt mentions Image 1 but no images are connected"),
        ("the motion of Video 1", 1, False, "prompt mentions Video 1 but no video is connected"),
        ("Video 1 then Video 2", 0, True, "prompt mentions Video 2 but VINO takes at most one video"),
    ],
)
def test_check_labels_names_the_missing_input(text, num_images, has_video, message):
    with pytest.raises(VinoInputError, match=message):
        check_labels(text, num_images, has_video)


def test_check_labels_accepts_connected_inputs():
    check_labels("Image 1 and Image 2 dance as in Video 1", 2, True)
    check_labels("a plain text prompt", 0, False)


def test_encode_rejects_bad_media(encoder):
    with pytest.raises(VinoInputError, match="at most one video"):
        encoder.encode("two clips", video=[VIDEO, VIDEO], video_fps=VIDEO_FPS)
    with pytest.raises(VinoInputError, match="video_fps"):
        encoder.encode("a clip", video=VIDEO)
    with pytest.raises(VinoInputError, match="at least 2"):
        encoder.encode("a still", video=VIDEO[:1], video_fps=VIDEO_FPS)
    with pytest.raises(VinoInputError, match="Image 2"):
        encoder.encode("the cat from Image 2", images=IMAGES[:1])
    with pytest.raises(VinoInputError, match="control token"):
        encoder.encode("a cat <|image_pad|>", images=IMAGES[:1])


def test_from_folder_rejects_a_folder_that_is_not_qwen3vl(tmp_path):
    with pytest.raises(VinoInputError, match="no config.json"):
        InterleavedEncoder.from_folder(tmp_path / "missing", MMEncoder(64, NUM_QUERIES, TEXT_DIM, BOUNDARY_DIM))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(VinoInputError, match="'llama'"):
        InterleavedEncoder.from_folder(tmp_path, MMEncoder(64, NUM_QUERIES, TEXT_DIM, BOUNDARY_DIM))


# ---------------------------------------------------------------- the mm_encoder weights


def test_mm_encoder_has_the_vino_ckpt_keys_and_shapes():
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in MMEncoder().state_dict().items()}
    assert shapes == {
        "metaquery": (256, 2560),
        "connector.norm_qwen.weight": (2560,),
        "connector.mlp.0.weight": (16384, 2560),
        "connector.mlp.0.bias": (16384,),
        "connector.mlp.2.weight": (4096, 16384),
        "connector.mlp.2.bias": (4096,),
        "connector_vae_branch.norm_qwen.weight": (2560,),
        "connector_vae_branch.mlp.0.weight": (12288, 2560),
        "connector_vae_branch.mlp.0.bias": (12288,),
        "connector_vae_branch.mlp.2.weight": (3072, 12288),
        "connector_vae_branch.mlp.2.bias": (3072,),
    }
    connector = MMEncoder(vlm_hidden=8, num_queries=2, text_dim=4, boundary_dim=4).connector
    assert connector.norm_qwen.eps == 1e-6 and connector.mlp[1].approximate == "tanh"


def test_metaquery_init_std_is_one_over_sqrt_width():
    torch.manual_seed(0)
    metaquery = MMEncoder(vlm_hidden=400, num_queries=256, text_dim=8, boundary_dim=8).metaquery
    assert metaquery.std().item() == pytest.approx(400**-0.5, rel=0.02)


# ---------------------------------------------------------------- hidden states and queries


def test_text_states_are_the_connector_over_layer_minus_2_of_prompt_and_queries(encoder):
    """A manual run: token embeddings + metaquery through all decoder layers but the last, no final norm."""
    context = encoder.encode("A red fox runs across a snowy field.")
    input_ids = encoder.prepare_inputs("A red fox runs across a snowy field.")["input_ids"]
    prompt_length = input_ids.shape[1]

    lm = encoder.vlm.model.language_model
    with torch.no_grad():
        hidden = torch.cat([lm.embed_tokens(input_ids), encoder.mm_encoder.metaquery[None]], dim=1)
        positions = torch.cat([torch.arange(prompt_length), prompt_length - 1 + torch.arange(NUM_QUERIES)])
        rope = lm.rotary_emb(hidden, positions.view(1, 1, -1).expand(3, 1, -1))
        for layer in lm.layers[:-1]:
            hidden = layer(hidden, position_embeddings=rope)  # causal without a mask
        expected = encoder.mm_encoder.connector(hidden[0])

    assert context.text_states.shape == (prompt_length + NUM_QUERIES, TEXT_DIM)
    torch.testing.assert_close(context.text_states, expected, atol=1e-5, rtol=1e-4)
    assert context.boundary_tokens.shape == (0, 2, BOUNDARY_DIM)
    assert (context.num_images, context.has_video) == (0, False)


def test_queries_take_positions_after_the_multimodal_prompt(encoder):
    calls = []
    lm = encoder.vlm.model.language_model
    hook = lm.register_forward_pre_hook(lambda _, args, kwargs: calls.append(kwargs["position_ids"]), with_kwargs=True)
    try:
        encoder.encode(PROMPT, IMAGES, VIDEO, video_fps=VIDEO_FPS)
    finally:
        hook.remove()

    inputs = encoder.prepare_inputs(PROMPT, IMAGES, VIDEO, video_fps=VIDEO_FPS)
    rope_index, _ = encoder.vlm.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"], inputs["video_grid_thw"]
    )
    prompt_positions, query_positions = calls
    torch.testing.assert_close(prompt_positions, rope_index)
    last = prompt_positions[:, 0, -1]
    assert len(set(last.tolist())) == 1  # the prompt ends in text: one position on all three axes
    assert last[0] < inputs["input_ids"].shape[1] - 1  # mRoPE gives visual inputs fewer positions than tokens
    assert query_positions.shape == (3, 1, NUM_QUERIES)
    for axis in range(3):
        assert query_positions[axis, 0].tolist() == list(range(last[axis], last[axis] + NUM_QUERIES))


def test_queries_see_the_prompt_and_the_prompt_never_sees_the_queries(encoder):
    prompt = "Put the hat from Image 2 on the person in Image 1."
    base = encoder.encode(prompt, IMAGES)
    prompt_length = base.text_states.shape[0] - NUM_QUERIES

    other_queries = copy_of(encoder.mm_encoder)
    with torch.no_grad():
        other_queries.metaquery.normal_()
    changed = with_mm_encoder(encoder, other_queries).encode(prompt, IMAGES)
    torch.testing.assert_close(changed.text_states[:prompt_length], base.text_states[:prompt_length])
    assert (changed.text_states[prompt_length:] - base.text_states[prompt_length:]).abs().max() > 1e-3

    reworded = encoder.encode(prompt.replace("hat", "scarf"), IMAGES)
    assert (reworded.text_states[-NUM_QUERIES:] - base.text_states[-NUM_QUERIES:]).abs().max() > 1e-3


# ---------------------------------------------------------------- boundary tokens


def test_boundary_tokens_sit_on_each_inputs_outer_vision_markers(encoder):
    config = encoder.vlm.config
    start, end = config.vision_start_token_id, config.vision_end_token_id
    own = dict(vars(encoder.processor))
    inputs = encoder.prepare_inputs(PROMPT, IMAGES, VIDEO, video_fps=VIDEO_FPS)
    assert vars(encoder.processor) == own  # the processor keeps the outer pair without being changed itself
    ids = inputs["input_ids"][0]
    groups = inputs["video_grid_thw"][0, 0].item()
    assert groups == 2
    # one pair per image, one pair per 2-frame group, and the video's outer pair
    assert (ids == start).sum() == (ids == end).sum() == 2 + groups + 1

    positions = boundary_positions(ids, start, end, num_images=2, has_video=True)
    starts, ends = (ids == start).nonzero().flatten(), (ids == end).nonzero().flatten()
    assert positions.tolist() == [
        [starts[0], ends[0]],
        [starts[1], ends[1]],
        [starts[2], ends[-1]],  # the video's first start and last end, around its timestamped groups
    ]
    for image, (first, last) in enumerate(positions[:2].tolist()):
        assert ids[first + 1 : last].eq(config.image_token_id).all()
        assert ids[first + 1 : last].numel() == inputs["image_grid_thw"][image].prod() // 4
    video_first, video_last = positions[2].tolist()
    video_tokens = (ids == config.video_token_id).nonzero().flatten()
    assert video_first < video_tokens.min() and video_tokens.max() < video_last
    assert ids[video_first + 1] != start  # a timestamp comes before the first group's own start marker
    assert ids[video_last - 1] == end  # the last group's own end marker

    # with both connectors equal, a boundary token is the text state at its marker
    same_connectors = MMEncoder(64, NUM_QUERIES, TEXT_DIM, TEXT_DIM)
    same_connectors.connector_vae_branch.load_state_dict(same_connectors.connector.state_dict())
    context = with_mm_encoder(encoder, same_connectors).encode(PROMPT, IMAGES, VIDEO, video_fps=VIDEO_FPS)
    assert (context.num_images, context.has_video) == (2, True)
    torch.testing.assert_close(context.boundary_tokens, context.text_states[positions])


# ---------------------------------------------------------------- training and rewriting


def test_gradients_reach_every_mm_encoder_parameter_and_no_vlm_parameter(encoder):
    trainable = with_mm_encoder(encoder, copy_of(encoder.mm_encoder)).train()
    assert not trainable.vlm.training
    context = trainable.encode("the hat in Image 2", IMAGES)
    (context.text_states.square().mean() + context.boundary_tokens.square().mean()).backward()

    for name, parameter in trainable.mm_encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert all(parameter.grad is None for parameter in trainable.vlm.parameters())


def test_reads_use_the_installed_transformers_cache_argument(encoder):
    """transformers renamed the key/value cache argument (`past_key_values` -> `cache`); reads pass the name the
    installed version takes, so neither path warns of the old one."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder.encode("the hat in Image 1", IMAGES[:1])
        encoder.encode_batch([("a hat", [], None, None), ("the hat in Image 1", IMAGES[:1], None, None)])
    assert not [w for w in caught if "past_key_values" in str(w.message)]


def test_rewrite_returns_the_greedy_continuation_only(encoder):
    request = "a fox in the snow"
    caption = encoder.rewrite(request, max_new_tokens=6)

    input_ids = encoder.prepare_inputs(request, system=REWRITE_SYSTEM_PROMPT)["input_ids"]
    generated = input_ids
    with torch.no_grad():
        for _ in range(6):
            next_id = encoder.vlm(input_ids=generated).logits[:, -1].argmax(-1, keepdim=True)
            generated = torch.cat([generated, next_id], dim=1)
            if next_id.item() in encoder.vlm.generation_config.eos_token_id:
                break
    expected = encoder.processor.tokenizer.decode(generated[0, input_ids.shape[1] :], skip_special_tokens=True)

    assert isinstance(caption, str) and caption
    assert caption == expected.strip()


def test_encode_many_matches_encode_one_by_one(encoder):
    """A training batch reads its contexts in one padded pass; each result is what `encode` gives alone."""
    def image(colour, size=64):
        return Image.new("RGB", (size, size), colour)

    video = [image((10 * i, 60, 90)) for i in range(9)]
    contexts = [
        ("a red circle", [], None, None),
        ("Image 1 moves left while Image 2 stays", [image("red"), image("blue", 96)], None, None),
        ("in Video 1 replace the square with Image 1", [image("green")], video, 8.0),
        ("", [], None, None),
    ]
    for context, many in zip(contexts, encoder.encode_many(contexts)):
        one = encoder.encode(*context)
        assert many.text_states.shape == one.text_states.shape
        torch.testing.assert_close(many.text_states, one.text_states, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(many.boundary_tokens, one.boundary_tokens, atol=1e-5, rtol=1e-4)
        assert (many.num_images, many.has_video) == (one.num_images, one.has_video)


def test_keyed_contexts_run_the_processor_once(encoder, monkeypatch):
    contexts = [("a red circle", [], None, None), ("Image 1 turns", [Image.new("RGB", (64, 64), "red")], None, None),
                ("a blue star", [], None, None)]
    expected = encoder.encode_many(contexts)
    calls = []
    process, prepared_texts = encoder.process, encoder.prepared_texts
    monkeypatch.setattr(encoder, "process", lambda *a: calls.append(a[0]) or process(*a))
    monkeypatch.setattr(encoder, "prepared_texts", lambda texts: calls.append(list(texts)) or prepared_texts(texts))
    monkeypatch.setattr(encoder, "memo", {})
    for _ in range(3):
        got = encoder.encode_batch(contexts, keys=[("s0", "short"), ("s1", "short"), ("s2", "short")])
        for b, want in enumerate(expected):
            length = want.text_states.shape[0] - encoder.mm_encoder.metaquery.shape[0]
            torch.testing.assert_close(got.text_states[b, :length], want.text_states[:length], atol=1e-5, rtol=1e-4)
    # once per key, then from the memo; the text-only contexts are tokenized together
    assert calls == [["a red circle", "a blue star"], "Image 1 turns"]


def assert_same_reading(got, expected) -> None:
    """Two readings of a padded batch agree on every token the mask keeps and on the boundary tokens (training's
    memoised reading leaves the padding unmasked: nothing reads the states there)."""
    assert torch.equal(got.mask, expected.mask)
    torch.testing.assert_close(got.text_states[got.mask], expected.text_states[expected.mask])
    assert len(got.boundary_tokens) == len(expected.boundary_tokens)
    for want, have in zip(expected.boundary_tokens, got.boundary_tokens):
        torch.testing.assert_close(have, want)


def test_memoised_media_are_processed_once_and_their_pixels_kept_once(encoder, monkeypatch):
    """A sample's prompt variants share its references: the video and images are processed once, and what the
    model reads is unchanged."""
    reversed_video = VIDEO[::-1]
    contexts = [(PROMPT, IMAGES, VIDEO, VIDEO_FPS), ("Image 1, Image 2 and Video 1 again", IMAGES, VIDEO, VIDEO_FPS),
                (PROMPT, IMAGES, reversed_video, VIDEO_FPS)]
    expected = encoder.encode_batch(contexts)
    shared_processor = encoder.processor
    monkeypatch.setattr(encoder, "memo", {})
    keys = ["long", "short", "reversed"]
    long, short, other = (encoder.prepared(context, key)[0] for context, key in zip(contexts, keys))
    videos, images = encoder.processor.video_processor, encoder.processor.image_processor
    assert isinstance(videos, MemoisedMedia) and len(videos.outputs) == 2 and len(images.outputs) == 1
    assert long["pixel_values_videos"] is short["pixel_values_videos"]
    assert long["pixel_values"] is short["pixel_values"] is other["pixel_values"]
    assert not torch.equal(long["pixel_values_videos"], other["pixel_values_videos"])
    assert_same_reading(encoder.encode_batch(contexts, keys=keys), expected)
    assert not isinstance(shared_processor.video_processor, MemoisedMedia)  # another encoder's processor is its own
    assert copy.deepcopy(videos).merge_size == videos.merge_size  # the stand-in copies like the processor
    encoder.memo = None
    assert not isinstance(encoder.processor.video_processor, MemoisedMedia)


def test_memoised_media_read_as_the_vlm_reads_them_with_the_tower_run_once_a_media(encoder, monkeypatch):
    """Training's reading (`read_prompts`: the tower's features of each media kept) against the VLM's own forward, on
    a batch that mixes text alone, images alone, a video alone and both."""
    contexts = [("a red circle", [], None, None), ("Image 1 turns", IMAGES[:1], None, None),
                ("as in Video 1", [], VIDEO, VIDEO_FPS), (PROMPT, IMAGES, VIDEO, VIDEO_FPS)]
    expected = encoder.encode_batch(contexts)
    read = []
    hook = encoder.vlm.model.visual.register_forward_hook(lambda module, args, output: read.append(args[0].shape[0]))
    monkeypatch.setattr(encoder, "memo", {})
    try:
        for _ in range(2):  # the second reading takes the kept features: the pixels are let go after the first
            assert_same_reading(encoder.encode_batch(contexts, keys=["text", "image", "video", "both"]), expected)
    finally:
        hook.remove()
    images = [encoder.memo[key][0] for key in ("image", "both")]
    videos = [encoder.memo[key][0] for key in ("video", "both")]
    assert videos[0]["pixel_values_videos"] is videos[1]["pixel_values_videos"]  # one video in two contexts
    patches = [sum(int(x[grid].prod(-1).sum()) for x in held)
               for held, grid in ((images, "image_grid_thw"), (videos[:1], "video_grid_thw"))]
    assert read == patches  # the images' pass, the video's: each read once
    assert all(x[name].numel() == 0 for x, name in [(x, "pixel_values") for x in images] +
               [(x, "pixel_values_videos") for x in videos])  # read, so let go
    memo = encoder.memo
    encoder.memo = {}
    encoder.memo = memo  # a memo whose pixels an earlier reading let go: an error, not a wrong reading
    with pytest.raises(RuntimeError, match="set `memo` to a new dict"):
        encoder.encode_batch(contexts, keys=["text", "image", "video", "both"])
    with pytest.raises(RuntimeError, match="set `memo` to None"):
        encoder.encode(*contexts[-1])


def test_a_reading_kept_before_the_vlm_moved_moves_with_it_once(encoder, monkeypatch):
    """A run's prefill keeps the tower's readings while the VLM is still on the CPU; the engine moves it to the GPU
    afterwards. The first reading of those media moves them to the VLM's device (session 29's first GPU run stopped
    on a CUDA x CPU concatenation), and later readings take the moved copy."""
    monkeypatch.setattr(encoder, "memo", {})
    encoder.encode_batch([(PROMPT, IMAGES, VIDEO, VIDEO_FPS)], keys=["both"])
    pixels = encoder.memo["both"][0]["pixel_values"]
    grid = encoder.memo["both"][0]["image_grid_thw"]
    monkeypatch.setattr(type(encoder.vlm), "device", property(lambda self: torch.device("meta")))
    (merged, deep), = encoder.media_features([pixels], [grid])
    assert merged.device.type == "meta" and all(layer.device.type == "meta" for layer in deep)
    assert encoder.media_features([pixels], [grid])[0][0] is merged  # moved once


def test_an_unmemoised_view_generates_mid_training_and_leaves_the_memo_as_it_was(encoder, monkeypatch):
    """Training's samples read with `encode`, which a memo refuses: the view reads as the encoder without a memo
    does, with the same modules, and the memo keeps its entries and its memoised processors."""
    context = (PROMPT, IMAGES, VIDEO, VIDEO_FPS)
    expected = encoder.encode(*context)
    monkeypatch.setattr(encoder, "memo", {})
    encoder.encode_batch([context], keys=["both"])  # read: the memo's pixels are let go
    view = encoder.unmemoised()
    got = view.encode(*context)
    torch.testing.assert_close(got.text_states, expected.text_states)
    torch.testing.assert_close(got.boundary_tokens, expected.boundary_tokens)
    assert view.mm_encoder is encoder.mm_encoder and view.vlm is encoder.vlm
    assert list(encoder.memo) == ["both"] and encoder.read_media
    assert isinstance(encoder.processor.video_processor, MemoisedMedia)
    with pytest.raises(RuntimeError, match="set `memo` to None"):
        encoder.encode(*context)
    encoder.memo = None
    assert encoder.unmemoised() is encoder


def test_memoised_pixels_take_the_vision_towers_dtype_which_it_casts_to_anyway(encoder):
    images = MemoisedMedia(encoder.processor.image_processor, torch.bfloat16)
    pixels = images(images=IMAGES[:1], return_tensors="pt")["pixel_values"]
    full = encoder.processor.image_processor(images=IMAGES[:1], return_tensors="pt")["pixel_values"]
    assert pixels.dtype == torch.bfloat16 and full.dtype == torch.float32
    patch_embed = copy.deepcopy(encoder.vlm.model.visual.patch_embed).to(torch.bfloat16)
    assert torch.equal(patch_embed(pixels), patch_embed(full))


def test_fingerprint_tells_media_apart_by_content_only():
    def digest(value):
        d = hashlib.blake2b()
        assert fingerprint(value, d)
        return d.digest()

    frames = np.stack([np.asarray(frame) for frame in VIDEO])
    assert digest([frames, {"fps": 2.0}]) == digest([frames.copy(), {"fps": 2.0}])
    assert digest([frames, {"fps": 2.0}]) != digest([frames, {"fps": 4.0}])
    changed = frames.copy()
    changed[3, 5, 7, 1] ^= 1
    assert digest([frames]) != digest([changed])
    assert digest(IMAGES[0]) != digest(IMAGES[0].convert("L"))
    assert digest(torch.ones(3, dtype=torch.bfloat16)) != digest(torch.ones(3, dtype=torch.float16))
    assert digest(torch.zeros(2, 3)) != digest(torch.zeros(3, 2))
    assert not fingerprint([frames, object()], hashlib.blake2b())  # its repr may not tell its content


@pytest.mark.parametrize("text", ["a red circle", "", "two small striped green triangles on the left, moving up"])
def test_text_only_contexts_tokenized_together_match_the_processor(encoder, text):
    """The training fast path: a batch of text-only prompts in one tokenizer call gives the processor's ids, types
    and mRoPE positions, dtypes included."""
    (fast, fast_positions), = encoder.prepared_texts([text])
    slow, slow_positions = encoder.prepared((text, [], None, None))
    assert set(fast) == set(slow.keys())
    for key in slow.keys():
        assert fast[key].dtype == slow[key].dtype and torch.equal(fast[key], slow[key]), key
    assert fast_positions.dtype == slow_positions.dtype and torch.equal(fast_positions, slow_positions)


def test_text_only_contexts_tokenized_together_are_checked(encoder):
    with pytest.raises(VinoInputError, match="prompt mentions Image 1 but no images are connected"):
        encoder.prepared_texts(["a cat", "the hat in Image 1"])
