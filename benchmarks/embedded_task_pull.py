"""Which tasks' training steps pull a stage-3 model's count word down, read from its gradients.

The count twin's gap is the loss of a count scene ("two small blue squares") under its twin's number ("three ...")
minus its loss under its own, at the same noise and t: the more the model reads the number, the larger. For each
task, the gradient of its flow-matching loss on the split's first --samples samples of it is set against the gradient
of that gap on the split's first --count-samples count scenes. A plain gradient step on the task changes the gap by
-lr times their inner product, to first order: a task whose `pull` is negative erodes the count as it learns. The
cosine says how much of the task's step points that way. No sampling: a few minutes on a CPU.

    python benchmarks/embedded_task_pull.py --init runs/s55/c1/vino-ema.safetensors --data data/embedded/heldout \
        [--samples 4] [--count-samples 8] [--times 0.8 0.95] [--set model.qwen=... model.vae=...]
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from embedded_motion_gap import load, noised_losses, probe_parser, probe_records  # noqa: E402
from training.manifest import TASKS  # noqa: E402
from training.world import swap_count  # noqa: E402
from vino_model.errors import VinoInputError, run_cli  # noqa: E402


def loss_gradient(trainee, losses) -> torch.Tensor:
    """The flat gradient of the mean of `losses` over the trainable parameters (zeros where one takes none)."""
    params = [p for p in trainee.parameters() if p.requires_grad]
    grads = torch.autograd.grad(torch.stack(losses).mean(), params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])


def sample_losses(trainee, data, sample, index: int, times: list[float], device, twin: str | None = None) -> list:
    """The loss of `sample` (read as in evaluation: long caption, nothing dropped) at each of `times`, one noise drawn
    from `index`; with `twin`, the loss under that twin caption minus its own, at the same noise."""
    x0, references, context, task = data.load(sample, np.random.default_rng(index), dropout=False)
    own = dataclasses.replace(context, key=None, twins=())
    contexts = [own] if twin is None else [own, dataclasses.replace(own, text=dict(context.twins)[twin])]
    losses = noised_losses(trainee, x0, [references] * len(contexts), contexts, task, times, index, device)
    return [loss[0] if twin is None else loss[1] - loss[0] for loss in losses]


def count_gap(trainee, data, samples, counted: list[int], times: list[float], device) -> list:
    """The count twin's gap of each of `counted` (indices into `samples`) at each of `times`, as tensors."""
    return [g for i in counted for g in sample_losses(trainee, data, samples[i], i, times, device, "count")]


def task_pulls(trainee, data, samples, counted: list[int], samples_per_task: int, times: list[float], device) -> dict:
    """{"gap": the mean count gap of `counted`; task: (its mean loss, pull, cosine)} for each task of `samples`, its
    first `samples_per_task` samples: pull is minus the inner product of its loss gradient with the gap's."""
    gap = count_gap(trainee, data, samples, counted, times, device)
    gap_grad = loss_gradient(trainee, gap)
    out = {"gap": torch.stack(gap).mean().item()}
    for task in TASKS:
        chosen = [i for i, s in enumerate(samples) if s.record.task == task][:samples_per_task]
        if not chosen:
            continue
        losses = [x for i in chosen for x in sample_losses(trainee, data, samples[i], i, times, device)]
        grad = loss_gradient(trainee, losses)
        inner = torch.dot(grad, gap_grad).item()
        out[task] = (torch.stack(losses).mean().item(), -inner,
                     -inner / (grad.norm() * gap_grad.norm()).clamp_min(1e-12).item())
    return out


def has_count_twin(record) -> bool:
    """Whether a t2i scene read under its long caption has a count twin (its copies named in full)."""
    return record.task == "t2i" and swap_count(record.caption_long, record.meta["scene"]["objects"]) is not None


def main(argv=None) -> None:
    p = probe_parser(__doc__, "samples of each task and t2i count scenes", [0.8, 0.95])
    p.add_argument("--count-samples", type=int, default=8, help="the split's first t2i scenes with a count twin")
    args = p.parse_args(argv)
    if args.samples < 1 or args.count_samples < 1 or not all(0 < t <= 1 for t in args.times):
        raise VinoInputError(f"--samples {args.samples}, --count-samples {args.count_samples}, --times {args.times}: "
                             "expected at least one sample of each and each t in (0, 1]")

    def pick(records):  # the first --samples of each task, and --count-samples more count scenes
        records = list(records)
        first = [r for t in TASKS for r in [r for r in records if r.task == t][:args.samples]]
        scenes = [r for r in records if has_count_twin(r) and r not in first]
        return first + scenes[:args.count_samples]

    records, device = probe_records(args, pick, "sample")
    tasks = [t for t in TASKS if any(r.task == t for r in records)]
    for init in args.init:
        trainee, data, samples = load(init, args.config, records, [*args.set, "data.long_caption=1.0"], device,
                                      tasks=tasks)
        t2i = [i for i, s in enumerate(samples) if s.record.task == "t2i"][:args.samples]  # t2i's own pull's
        counted = [i for i, s in enumerate(samples) if has_count_twin(s.record) and i not in t2i]
        if not counted:
            raise VinoInputError(f"--data {args.data}: no t2i scene with a count twin beyond t2i's first "
                                 f"{args.samples}")
        pulls = task_pulls(trainee, data, samples, counted, args.samples, args.times, device)
        print(f"{init[-50:]}: count gap {pulls.pop('gap'):.4f} over {len(counted)} scenes, t {args.times}")
        print("| task | samples | loss | pull (-g_task . g_gap) | cosine |\n|---|---|---|---|---|")
        for task, (loss, pull, cosine) in pulls.items():
            print(f"| {task} | {min(args.samples, sum(s.record.task == task for s in samples))} | {loss:.4f} | "
                  f"{pull:+.3e} | {cosine:+.4f} |")


if __name__ == "__main__":
    run_cli(main)
