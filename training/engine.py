"""Parallelism: the process group, DeepSpeed ZeRO around the trainee, its optimizer, schedule and EMA.

Launch with `deepspeed --num_gpus N --module training.run ...`, `torchrun --nproc_per_node N -m
training.run ...`, or plainly (one process: RANK 0 of WORLD_SIZE 1 on a free local port). Without a
GPU DeepSpeed picks its CPU accelerator and gloo. All collectives the rest of training needs are here.
"""

from __future__ import annotations

import logging
import math
import os
import socket

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator
from torch.optim.lr_scheduler import LambdaLR

from .model import Trainee, export_name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, this rank's device); a plain single process gets a one-rank group."""
    if not dist.is_initialized():
        for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
            os.environ.setdefault(key, value)
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        deepspeed.init_distributed()
    accelerator = get_accelerator()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if accelerator.device_name() != "cpu":
        accelerator.set_device(local_rank)
        device = torch.device(accelerator.device_name(local_rank))
    else:
        device = torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def gather(obj) -> list:
    """Every rank's `obj`, in rank order."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def mean(values: list[float], device) -> list[float]:
    """The mean of each value over ranks."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / dist.get_world_size()).tolist()


def barrier() -> None:
    dist.barrier()


def lr_factor(optim, steps: int):
    """Linear warm-up to 1, then cosine or linear decay to min_lr_ratio at the last step (or constant, or wsd: 1 until
    the cooldown, then 1 - sqrt of its progress). The decay's last step is `factor.last` (at first `steps`), which the
    loop may move while the run goes (run.fit_decay); the loop fixes wsd's first cooling step in `factor.cooling_from`
    once it has written the trunk there."""

    def factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.schedule == "constant":
            return 1.0
        if optim.schedule == "wsd":
            start = cooldown_start(factor, optim)
            if step < start:
                return 1.0
            # 1 - sqrt: Hägele et al. 2024 (arXiv 2405.18392) found it the best cooldown shape, and a 20% cooldown
            # as good as a cosine over the whole run
            shape = 1 - math.sqrt(min(1.0, (step - start) / max(1, factor.last - start)))
        else:
            progress = min(1.0, (step - optim.warmup_steps) / max(1, factor.last - optim.warmup_steps))
            shape = 0.5 * (1 + math.cos(math.pi * progress)) if optim.schedule == "cosine" else 1 - progress
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * shape

    factor.last = steps  # attributes of a plain function: LambdaLR's state_dict leaves them out
    factor.cooling_from = None
    return factor


def cooldown_start(factor, optim) -> int:
    """wsd: the first step of the cooldown, where the run's weights are its trunk. Until the loop fixes it, it follows
    `factor.last`: the last `optim.cooldown` of the steps, never inside the warm-up."""
    if factor.cooling_from is not None:
        return factor.cooling_from
    return max(optim.warmup_steps, factor.last - round(optim.cooldown * factor.last))


def deepspeed_config(cfg) -> dict:
    optim = cfg.optim
    return {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": optim.accumulation,
        "gradient_clipping": optim.grad_clip,
        "bf16": {"enabled": optim.bf16, "check_grad_overflow": optim.check_overflow},
        "zero_optimization": {
            "stage": optim.zero_stage, "contiguous_gradients": True, "overlap_comm": False,
            **({"offload_optimizer": {"device": "cpu", "pin_memory": True}} if optim.offload_optimizer else {}),
        },
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
        # its throughput timer synchronises the device at each forward and each step: the host could never run
        # ahead of the GPU (the loop times its steps itself)
        "timers": {"throughput": {"enabled": False}},
    }


class DecayFit:
    """run.fit_decay: puts the schedule's last step (lr_factor's `last`) where run.seconds should run out, from the
    seconds a step has taken in this invocation over about the last `window` steps, after its first `skip` steps.
    A recent window, not the whole run: compiled blocks spend the first few hundred steps compiling (session 21:
    1.8 s a step over the first 100, 0.4 s from step 300), and a rate that kept those would end the decay too soon."""

    def __init__(self, factor, run, start: int, skip: int = 50, window: int = 200):
        self.factor, self.steps, self.seconds = factor, run.steps, run.seconds
        self.enabled = run.fit_decay and run.seconds > 0
        self.after, self.window, self.points = start + skip, window, []

    def update(self, step: int, spent: float) -> int | None:
        """At a settled step, `spent` seconds into the budget: the decay's new last step (None: not moved)."""
        if not self.enabled or step < self.after:
            return None
        points = self.points
        points.append((step, spent))
        while len(points) > 2 and step - points[1][0] >= self.window:
            points.pop(0)  # the oldest point kept is the last one at least `window` steps back
        if len(points) < 2:
            return None
        per_step = (spent - points[0][1]) / max(1, step - points[0][0])
        self.factor.last = min(self.steps, step + max(0, int((self.seconds - spent) / max(per_step, 1e-9))))
        return self.factor.last


def build_engine(cfg, trainee: Trainee):
    """DeepSpeed engine over the trainee: AdamW on the trainable parameters (matrices decay), the schedule."""
    decay, no_decay = [], []
    for name, p in trainee.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and not name.endswith("metaquery") else no_decay).append(p)
    groups = [{"params": ps, "weight_decay": wd} for ps, wd in ((decay, cfg.optim.weight_decay), (no_decay, 0.0)) if ps]
    if cfg.optim.offload_optimizer:  # ZeRO-Offload steps on the CPU with DeepSpeed's vectorised AdamW
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                                     adamw_mode=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
    scheduler = LambdaLR(optimizer, lr_factor(cfg.optim, cfg.run.steps))
    engine, *_ = deepspeed.initialize(model=trainee, optimizer=optimizer, lr_scheduler=scheduler,
                                      config=deepspeed_config(cfg))
    return engine


class EMA:
    """Exponential moving average of the trained weights, fp32, keyed by exported name.

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so the starting weights fade at
    once: with a flat 0.999, 13.5% of a fresh model's random weights would still be in the average after
    2,000 steps."""

    def __init__(self, trainee: Trainee, decay: float):
        self.decay = decay
        self.params = {export_name(n): p for n, p in trainee.named_parameters() if p.requires_grad}
        self.shadow = {name: p.detach().float().clone() for name, p in self.params.items()}

    def decay_after(self, updates: int) -> float:
        """The decay of the update that follows `updates` earlier ones."""
        return min(self.decay, (1 + updates) / (10 + updates))

    @torch.no_grad()
    def update(self, updates: int) -> None:
        """Fold in the current weights; `updates` is how many updates came before (the step, on resume too)."""
        weight = 1 - self.decay_after(updates)
        shadows = [self.shadow[name] for name in self.params]  # two multi-tensor ops, not two ops per tensor
        torch._foreach_mul_(shadows, 1 - weight)
        torch._foreach_add_(shadows, list(self.params.values()), alpha=weight)

    def state_dict(self) -> dict:
        return {name: t.cpu() for name, t in self.shadow.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, t in state.items():
            self.shadow[name].copy_(t)
