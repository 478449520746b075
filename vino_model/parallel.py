"""Ulysses sequence parallelism for the MMDiT over torch.distributed (NCCL on GPUs, gloo on CPUs).

Each rank holds a contiguous slice of the image stream (uneven slices allowed, so nothing is
padded). For attention an all-to-all trades the token slice for a head slice: every rank then
attends over the whole sequence with H/P heads, and a second all-to-all trades back. The text
tokens are short and replicated on every rank: each rank attends with its own heads of them and
the text output is gathered over heads. The arithmetic per token and per head is the one-GPU
arithmetic, so the output matches a single device.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .errors import VinoInputError


class SequenceParallel:
    def __init__(self, group=None):
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.sizes: list[int] = []

    # ------------------------------------------------------------ the token split

    def split(self, tokens: int) -> None:
        """Set the per-rank slice sizes of an image stream of `tokens` tokens."""
        base, extra = divmod(tokens, self.world)
        self.sizes = [base + (1 if r < extra else 0) for r in range(self.world)]

    def shard(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        start = sum(self.sizes[: self.rank])
        return x.narrow(dim, start, self.sizes[self.rank]).contiguous()

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N_r, ...] slices of every rank -> [B, N, ...] on every rank."""
        longest = max(self.sizes)
        padded = x.new_zeros(x.shape[0], longest, *x.shape[2:])
        padded[:, : x.shape[1]] = x
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded.contiguous(), group=self.group)
        return torch.cat([p[:, :n] for p, n in zip(parts, self.sizes)], dim=1)

    # ------------------------------------------------------------ tokens <-> heads

    def check_heads(self, heads: int) -> None:
        if heads % self.world:
            raise VinoInputError(f"{heads} attention heads do not split over {self.world} GPUs; use a divisor of {heads}")

    def tokens_to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N_r, H, D] (my tokens, all heads) -> [B, N, H/P, D] (all tokens, my heads)."""
        batch, local, heads, dim = x.shape
        self.check_heads(heads)
        send = x.reshape(batch, local, self.world, heads // self.world, dim).permute(2, 1, 0, 3, 4)
        send = send.reshape(self.world * local, batch, heads // self.world, dim).contiguous()
        recv = x.new_empty(sum(self.sizes), batch, heads // self.world, dim)
        dist.all_to_all_single(recv, send, output_split_sizes=self.sizes, input_split_sizes=[local] * self.world,
                               group=self.group)
        return recv.permute(1, 0, 2, 3)

    def heads_to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, H/P, D] -> [B, N_r, H, D]."""
        batch, _, head_part, dim = x.shape
        local = self.sizes[self.rank]
        send = x.permute(1, 0, 2, 3).contiguous()
        recv = x.new_empty(self.world * local, batch, head_part, dim)
        dist.all_to_all_single(recv, send, output_split_sizes=[local] * self.world, input_split_sizes=self.sizes,
                               group=self.group)
        recv = recv.reshape(self.world, local, batch, head_part, dim).permute(2, 1, 0, 3, 4)
        return recv.reshape(batch, local, self.world * head_part, dim)

    def my_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, H, D] replicated -> [B, L, H/P, D], this rank's heads."""
        part = x.shape[2] // self.world
        return x[:, :, self.rank * part : (self.rank + 1) * part]

    def all_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, H/P, D] per rank -> [B, L, H, D] on every rank."""
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts, dim=2)

    def broadcast(self, tensors) -> None:
        """Make rank 0's values everyone's (inputs computed on each rank may differ in the last bit)."""
        for t in tensors:
            dist.broadcast(t, src=dist.get_global_rank(self.group, 0) if self.group is not None else 0, group=self.group)


def init_from_env(device: str) -> tuple[SequenceParallel | None, str]:
    """Under torchrun (WORLD_SIZE > 1): join the process group, pick this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None, device
    if str(device).startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return SequenceParallel(), device
