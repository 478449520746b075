"""Flow-matching Euler sampling with VINO's text + image classifier-free guidance."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import SamplingCancelled, VinoInputError
from .mmdit import StepCache

GUIDANCE_INPUT = 1000.0  # embedded guidance 1.0, as the model was distilled with
TIMESTEP_SCALE = 999.0


def shift_time(t, shift: float):
    """Flow matching's time shift t' = s t / (1 + (s - 1) t): s > 1 spends more of the schedule at high noise."""
    return shift * t / (1 + (shift - 1) * t)


def shifted_schedule(steps: int, shift: float) -> torch.Tensor:
    """t = linspace(1, 0, N+1) shifted to t' = s t / (1 + (s - 1) t). Returns [N+1] float64."""
    if steps < 1:
        raise VinoInputError(f"steps={steps}; expected at least 1")
    if shift <= 0:
        raise VinoInputError(f"shift={shift}; expected a positive number")
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)


def needed_branches(text_cfg: float, image_cfg: float) -> tuple[str, ...]:
    """Which model branches a guidance setting evaluates (a branch that cannot matter is skipped)."""
    if image_cfg > 1:
        return ("cond", "uncond", "uncond_img") if text_cfg > 1 else ("cond", "uncond_img")
    return ("cond",) if text_cfg == 1 else ("cond", "uncond")


def combine_guidance(v: dict[str, torch.Tensor], text_cfg: float, image_cfg: float) -> torch.Tensor:
    """VINO's guidance. v holds the branches `needed_branches` names.

    text only (image_cfg <= 1): v_uncond + s_txt (v_cond - v_uncond)
    text + image:               v_uncond_img + s_img (v_uncond - v_uncond_img) + s_txt (v_cond - v_uncond)
    image only (text_cfg <= 1): v_uncond_img + s_img (v_cond - v_uncond_img)   (the release crashes here)
    """
    if image_cfg > 1:
        if text_cfg > 1:
            return (v["uncond_img"] + image_cfg * (v["uncond"] - v["uncond_img"])
                    + text_cfg * (v["cond"] - v["uncond"]))
        return v["uncond_img"] + image_cfg * (v["cond"] - v["uncond_img"])
    if text_cfg == 1:
        return v["cond"]
    return v["uncond"] + text_cfg * (v["cond"] - v["uncond"])


@dataclass
class Branch:
    """One conditioning of the MMDiT: text states, reference latents and their boundary tokens."""

    text: torch.Tensor  # [L, text_dim]
    references: list[torch.Tensor] = field(default_factory=list)  # each [C, T_r, H_r, W_r], prompt order
    boundary: torch.Tensor | None = None  # [n_refs, 2, hidden]

    def tensors(self) -> list[torch.Tensor]:
        return [self.text, *self.references] + ([self.boundary] if self.boundary is not None else [])

    def signature(self):
        return (self.text.shape[0], tuple(tuple(r.shape) for r in self.references))


def velocity(model, x, t_model, branches: dict[str, Branch], caches: dict | None = None) -> dict[str, torch.Tensor]:
    """Evaluate every branch at x; branches with the same token layout share one batched forward. The others run
    apart, unpadded and unmasked: one forward with their texts padded was no faster on a CPU for the embedded
    model (t2i 0.95x, t2v 1.05x the time; `benchmarks/cfg_batching.py`).

    caches: None, or a dict that collects one StepCache per group of branches (step caching on).
    """
    groups: dict[tuple, list[str]] = {}
    for name, branch in branches.items():
        groups.setdefault(branch.signature(), []).append(name)
    out = {}
    for names in groups.values():
        members = [branches[n] for n in names]
        batch = len(members)
        extra = {}
        if caches is not None:
            extra["step_cache"] = caches.setdefault(tuple(names), StepCache(caches["threshold"]))
        pred = model(
            x.expand(batch, *x.shape[1:]),
            t_model.expand(batch),
            torch.stack([m.text for m in members]),
            references=[m.references for m in members],
            boundary=[m.boundary for m in members],
            guidance=torch.full((batch,), GUIDANCE_INPUT, device=x.device, dtype=torch.float32),
            **extra,
        )
        out.update({n: pred[i : i + 1] for i, n in enumerate(names)})
    return out


@torch.no_grad()
def sample(model, noise, branches: dict[str, Branch], steps: int, shift: float, text_cfg: float, image_cfg: float,
           callback=None, cancel=None, cache_threshold: float = 0.0) -> torch.Tensor:
    """Euler from t'=1 (noise) to t'=0. noise: [1, C, T, H, W].

    callback(step, steps, x0_estimate) runs after each step; cancel() is asked before each step and
    stops sampling with SamplingCancelled when it returns True (it may also raise its own error).
    cache_threshold > 0 turns on first-block step caching (approximate; see mmdit.StepCache).
    """
    caches = {"threshold": cache_threshold} if cache_threshold > 0 else None
    wanted = needed_branches(text_cfg, image_cfg)
    missing = [b for b in wanted if b not in branches]
    if missing:
        raise VinoInputError(f"guidance text_cfg={text_cfg}, image_cfg={image_cfg} needs branches {missing}")
    active = {name: branches[name] for name in wanted}
    schedule = shifted_schedule(steps, shift)
    model_times = (schedule[:-1] * TIMESTEP_SCALE).float().to(noise.device)  # one copy, no per-step host sync
    schedule = schedule.tolist()
    x = noise.float()
    dtype = next(model.parameters()).dtype
    for i in range(steps):
        if cancel is not None and cancel():
            raise SamplingCancelled(f"sampling cancelled at step {i} of {steps}")
        t, t_next = schedule[i], schedule[i + 1]
        t_model = model_times[i : i + 1]
        v = combine_guidance(
            {k: p.float() for k, p in velocity(model, x.to(dtype), t_model, active, caches).items()}, text_cfg, image_cfg
        )
        if callback is not None:
            callback(i + 1, steps, x - t * v)  # flow matching: x_t = (1 - t) x0 + t noise, v = noise - x0
        x = x - (t - t_next) * v
    return x
