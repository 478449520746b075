"""The MMDiT against diffusers (the oracle), and VINO's interleaved sequence."""

import pytest
import torch
from diffusers import HunyuanVideoTransformer3DModel

from vino_model.config import preset
from vino_model.errors import VinoInputError
from vino_model.mmdit import VinoMMDiT, reference_layout

CFG = preset("tiny").mmdit


@pytest.fixture(scope="module")
def oracle():
    torch.manual_seed(0)
    model = HunyuanVideoTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=CFG.num_heads, attention_head_dim=CFG.head_dim,
        num_layers=CFG.num_double_blocks, num_single_layers=CFG.num_single_blocks,
        num_refiner_layers=CFG.num_refiner_blocks, text_embed_dim=CFG.text_dim, pooled_projection_dim=CFG.pooled_dim,
        rope_axes_dim=CFG.rope_axes,
    ).eval()
    with torch.no_grad():  # diffusers zero-initialises some layers; random values make the comparison bite
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


@pytest.fixture(scope="module")
def ours(oracle):
    model = VinoMMDiT(CFG).eval()
    model.load_state_dict(oracle.state_dict(), strict=True)
    return model


def inputs(batch=2, frames=3, height=8, width=12, text_len=7):
    g = torch.Generator().manual_seed(1)
    return dict(
        x=torch.randn(batch, 16, frames, height, width, generator=g),
        t=torch.tensor([500.0, 20.0][:batch]),
        g=torch.full((batch,), 1000.0),
        text=torch.randn(batch, text_len, CFG.text_dim, generator=g),
        pooled=torch.randn(batch, CFG.pooled_dim, generator=g),
    )


def test_text_to_video_matches_diffusers(oracle, ours):
    a = inputs()
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False  # a padded prompt in the batch
    with torch.no_grad():
        want = oracle(a["x"], a["t"], a["text"], mask, a["pooled"], a["g"], return_dict=False)[0]
        got = ours(a["x"], a["t"], a["text"], mask, guidance=a["g"], pooled=a["pooled"])
    assert want.abs().mean() > 0.5
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_layout_of_the_spec_worked_example():
    # One reference image and 85 output frames (22 latent frames): start t=0, image t=1, end t=2, output 3..24.
    positions, start = reference_layout([(16, 1, 60, 106)], (16, 22, 60, 106), (1, 2, 2))
    image_tokens = 30 * 53
    assert start == 1 + image_tokens + 1
    assert positions[0].tolist() == [0, 0, 0]
    assert positions[1 : 1 + image_tokens, 0].unique().tolist() == [1]
    assert positions[1, 1:].tolist() == [0, 0] and positions[image_tokens, 1:].tolist() == [29, 52]
    assert positions[1 + image_tokens].tolist() == [2, 0, 0]
    noisy_t = positions[start:, 0]
    assert noisy_t.min() == 3 and noisy_t.max() == 24 and noisy_t.numel() == 22 * image_tokens


def test_layout_with_two_images_and_a_video():
    positions, start = reference_layout([(16, 1, 4, 4), (16, 1, 2, 6), (16, 3, 4, 4)], (16, 2, 4, 4), (1, 2, 2))
    # image 1: start 0, latent 1, end 2; image 2: start 3, latent 4, end 5; video: start 6, latent 7..9, end 10
    starts_and_ends = [0, 1 + 4, 1 + 4 + 1, 1 + 4 + 1 + 1 + 3, 1 + 4 + 1 + 1 + 3 + 1]
    assert [positions[i, 0].item() for i in starts_and_ends] == [0, 2, 3, 5, 6]
    assert positions[start:, 0].unique().tolist() == [11, 12]


def test_only_noisy_tokens_leave_and_references_matter(ours):
    a = inputs(batch=1)
    ref = torch.randn(16, 1, 6, 10)  # a reference of another size than the output
    boundary = torch.randn(1, 2, CFG.hidden)
    with torch.no_grad():
        plain = ours(a["x"], a["t"], a["text"], guidance=a["g"])
        with_ref = ours(a["x"], a["t"], a["text"], references=[[ref]], boundary=[boundary], guidance=a["g"])
        other_boundary = ours(a["x"], a["t"], a["text"], references=[[ref]], boundary=[boundary * 2], guidance=a["g"])
    assert with_ref.shape == a["x"].shape
    assert (with_ref - plain).abs().max() > 1e-3
    assert (with_ref - other_boundary).abs().max() > 1e-3


def test_batch_with_different_reference_counts_equals_one_by_one(ours):
    a = inputs(batch=2)
    refs = [[torch.randn(16, 1, 4, 6)], [torch.randn(16, 1, 8, 8), torch.randn(16, 5, 4, 4)]]
    bounds = [torch.randn(1, 2, CFG.hidden), torch.randn(2, 2, CFG.hidden)]
    text_mask = torch.ones(2, 7, dtype=torch.bool)
    text_mask[0, 4:] = False
    with torch.no_grad():
        together = ours(a["x"], a["t"], a["text"], text_mask, refs, bounds, a["g"])
        for b in range(2):
            keep = text_mask[b]
            alone = ours(a["x"][b : b + 1], a["t"][b : b + 1], a["text"][b : b + 1, keep], None, [refs[b]],
                         [bounds[b]], a["g"][b : b + 1])
            torch.testing.assert_close(together[b : b + 1], alone, atol=2e-5, rtol=1e-5)


def test_bad_inputs_name_the_problem(ours):
    a = inputs(batch=1)
    with pytest.raises(VinoInputError, match="1 reference latents but 0 boundary"):
        ours(a["x"], a["t"], a["text"], references=[[torch.randn(16, 1, 4, 4)]], boundary=[None], guidance=a["g"])
    with pytest.raises(VinoInputError, match="reference 1 of sample 0"):
        ours(a["x"], a["t"], a["text"], references=[[torch.randn(16, 1, 5, 4)]],
             boundary=[torch.randn(1, 2, CFG.hidden)], guidance=a["g"])
    with pytest.raises(VinoInputError, match="guidance"):
        ours(a["x"], a["t"], a["text"])


def test_the_image_stream_is_each_sample_spelt_out_and_costs_the_same_ops_at_any_batch(ours):
    from training.logs import OpCount

    def batch_of(size):
        g = torch.Generator().manual_seed(size)
        shapes = [[(16, 1, 4, 6)], [], [(16, 1, 8, 8), (16, 5, 4, 4)]]  # one, none, two (an image and a video)
        refs = [[torch.randn(s, generator=g) for s in shapes[b % 3]] for b in range(size)]
        bounds = [torch.randn(len(r), 2, CFG.hidden, generator=g) if r else None for r in refs]
        return torch.randn(size, 16, 2, 4, 4, generator=g), refs, bounds

    latents, refs, bounds = batch_of(6)
    with torch.no_grad():
        stream = ours.image_stream(latents, refs, bounds)
        for b in range(6):  # [start, reference, end] per reference in prompt order, then the noisy latent
            parts = []
            for r, ref in enumerate(refs[b]):
                parts += [bounds[b][r, :1], ours.patchify(ref[None])[0], bounds[b][r, 1:]]
            want = torch.cat(parts + [ours.patchify(latents[b : b + 1])[0]])
            torch.testing.assert_close(stream.tokens[b, : want.shape[0]], want)
            assert not stream.tokens[b, want.shape[0]:].any()  # padding
            assert stream.noisy_start[b] == want.shape[0] - 2 * 4 * 4 // 4
    counts = []
    for size in (6, 18):  # each shape group holds two references, then six
        latents, refs, bounds = batch_of(size)
        ours.image_stream(latents, refs, bounds)  # the layout is made once per shapes
        with OpCount() as count:
            ours.image_stream(latents, refs, bounds)
        counts.append(count.ops)
    assert counts[0] == counts[1]
