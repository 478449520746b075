"""Schedule, guidance arithmetic and the sampling loop."""

import pytest
import torch

from vino_model.errors import SamplingCancelled, VinoInputError
from vino_model.sampler import Branch, combine_guidance, needed_branches, sample, shifted_schedule


def test_shifted_schedule():
    t = shifted_schedule(4, 5.0)
    assert t.tolist()[0] == 1.0 and t.tolist()[-1] == 0.0
    # t = 0.5 -> 5 * 0.5 / (1 + 4 * 0.5) = 2.5 / 3
    assert t[2].item() == pytest.approx(2.5 / 3)
    assert torch.all(t[1:] < t[:-1])
    assert torch.equal(shifted_schedule(4, 1.0), torch.linspace(1, 0, 5, dtype=torch.float64))
    with pytest.raises(VinoInputError, match="steps=0"):
        shifted_schedule(0, 5.0)


V = {"cond": torch.tensor(3.0), "uncond": torch.tensor(1.0), "uncond_img": torch.tensor(-1.0)}


@pytest.mark.parametrize(
    "text_cfg, image_cfg, branches, expected",
    [
        (1.0, 1.0, ("cond",), 3.0),
        (5.0, 1.0, ("cond", "uncond"), 1 + 5 * (3 - 1)),
        (0.5, 1.0, ("cond", "uncond"), 1 + 0.5 * (3 - 1)),
        (5.0, 2.0, ("cond", "uncond", "uncond_img"), -1 + 2 * (1 - -1) + 5 * (3 - 1)),
        (1.0, 2.0, ("cond", "uncond_img"), -1 + 2 * (3 - -1)),  # where the release crashes
        (0.8, 3.0, ("cond", "uncond_img"), -1 + 3 * (3 - -1)),
    ],
)
def test_guidance(text_cfg, image_cfg, branches, expected):
    assert needed_branches(text_cfg, image_cfg) == branches
    assert combine_guidance({k: V[k] for k in branches}, text_cfg, image_cfg).item() == pytest.approx(expected)


class ConstantVelocity(torch.nn.Module):
    """Velocity = noise - x0 for a fixed x0 per text: Euler then lands exactly on x0."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.calls = []
        self.noise = torch.zeros(())

    def forward(self, x, t, text, references=None, boundary=None, guidance=None):
        self.calls.append((x.shape[0], [len(r) for r in references], t[0].item(), guidance[0].item()))
        x0 = text.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)
        return self.noise - x0.expand_as(x)


def test_euler_flow_lands_on_the_target_and_batches_same_layouts():
    model = ConstantVelocity()
    noise = torch.randn(1, 4, 1, 2, 2)
    model.noise = noise
    branches = {
        "cond": Branch(torch.full((3, 2), 2.0)),
        "uncond": Branch(torch.full((3, 2), 1.0)),  # same layout as cond: one batched forward
        "uncond_img": Branch(torch.full((5, 2), 0.0)),  # another text length: its own forward
    }
    steps = []
    out = sample(model, noise, branches, steps=3, shift=5.0, text_cfg=4.0, image_cfg=2.0,
                 callback=lambda i, n, x0: steps.append((i, n, x0.mean().item())))
    # guided x0 = 0 + 2 (1 - 0) + 4 (2 - 1) = 6 for every element
    torch.testing.assert_close(out, torch.full_like(noise, 6.0), atol=1e-5, rtol=0)
    assert [s[:2] for s in steps] == [(1, 3), (2, 3), (3, 3)] and steps[0][2] == pytest.approx(6.0, abs=1e-4)
    assert [c[0] for c in model.calls] == [2, 1] * 3  # (cond, uncond) batched, uncond_img alone
    assert model.calls[0][2] == pytest.approx(999.0) and model.calls[0][3] == 1000.0


def test_cancel_stops_between_steps():
    model = ConstantVelocity()
    asked = []
    with pytest.raises(SamplingCancelled, match="step 2 of 5"):
        sample(model, torch.zeros(1, 1, 1, 2, 2), {"cond": Branch(torch.ones(2, 2))}, 5, 5.0, 1.0, 1.0,
               cancel=lambda: asked.append(1) or len(asked) > 2)
    assert len(model.calls) == 2


def test_missing_branch_is_named():
    with pytest.raises(VinoInputError, match="uncond"):
        sample(ConstantVelocity(), torch.zeros(1, 1, 1, 2, 2), {"cond": Branch(torch.ones(2, 2))}, 2, 5.0, 5.0, 1.0)


def test_image_free_branch_keeps_only_a_declared_base():
    from vino_model.tasks import kept_without_references

    assert kept_without_references(3, have_base=True) == [2]
    assert kept_without_references(1, have_base=False) == []  # a plain instruction edit drops its image too
    assert kept_without_references(2, have_base=False) == []


def tiny_branches():
    from vino_model.config import preset

    cfg = preset("tiny").mmdit
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(16, 1, 4, 4, generator=g)
    return {
        "cond": Branch(torch.randn(6, cfg.text_dim, generator=g), [ref], torch.randn(1, 2, cfg.hidden, generator=g)),
        "uncond": Branch(torch.randn(4, cfg.text_dim, generator=g), [ref], torch.randn(1, 2, cfg.hidden, generator=g)),
    }


def test_step_cache_is_exact_when_nothing_is_close_and_skips_deep_blocks_when_allowed():
    from vino_model.config import preset
    from vino_model.mmdit import VinoMMDiT

    torch.manual_seed(0)
    model = VinoMMDiT(preset("tiny").mmdit).eval()
    deep_calls = []
    model.single_transformer_blocks[-1].register_forward_hook(lambda *_: deep_calls.append(1))
    noise = torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    run = lambda threshold: sample(model, noise, tiny_branches(), 6, 5.0, 4.0, 1.0, cache_threshold=threshold)  # noqa: E731

    exact = run(0.0)
    assert len(deep_calls) == 12  # 6 steps x (cond, uncond)
    deep_calls.clear()
    torch.testing.assert_close(run(1e-12), exact, atol=0, rtol=0)  # never close enough: every step computed
    assert len(deep_calls) == 12
    deep_calls.clear()
    loose = run(1e9)  # always close enough: only the first step runs the deep blocks
    assert len(deep_calls) == 2
    assert torch.isfinite(loose).all() and (loose - exact).abs().max() > 0


def test_step_cache_refuses_sequence_parallelism():
    from vino_model.config import preset
    from vino_model.mmdit import StepCache, VinoMMDiT

    model = VinoMMDiT(preset("tiny").mmdit).eval()
    model.sequence_parallel = object()  # any group: the check comes before communication
    b = tiny_branches()["cond"]
    with pytest.raises(VinoInputError, match="sequence parallelism"):
        model(torch.zeros(1, 16, 1, 4, 4), torch.tensor([500.0]), b.text[None], references=[b.references],
              boundary=[b.boundary], guidance=torch.tensor([1000.0]), step_cache=StepCache(0.1))
