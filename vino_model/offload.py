"""Run the 13B MMDiT on a small GPU: block swap with prefetch.

The first blocks stay on the GPU; the rest live in pinned CPU memory and are copied to the GPU on
a side stream while the block before them computes, then dropped again. Only the copy of the next
block is in flight at any time, so the GPU holds the resident blocks, two swapped ones and the
activations.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("vino")


def copy_ahead(x: torch.Tensor, device) -> torch.Tensor:
    """x on `device`. A host tensor bound for a GPU goes through pinned memory and does not wait for the GPU's
    queue, as a blocking copy does, so the host can run ahead of the GPU; the pinned block is not reused before
    the copy is done (the caching host allocator records it)."""
    device = torch.device(device)
    if device.type != "cuda" or x.device.type != "cpu":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def copy_ahead_grouped(tensors: list[torch.Tensor], device) -> list[torch.Tensor]:
    """`copy_ahead` of many tensors in one copy per (shape, dtype): each group is stacked on the host and the
    results are views of its stacked copy, in the order given. A batch of 512 samples with 1-3 reference
    latents each made about a thousand copies, each with its own launch and pinned block."""
    groups: dict[tuple, list[int]] = {}
    for i, x in enumerate(tensors):
        groups.setdefault((tuple(x.shape), x.dtype, x.device), []).append(i)
    out: list = [None] * len(tensors)
    for members in groups.values():
        moved = copy_ahead(torch.stack([tensors[i] for i in members]), device)
        for i, x in zip(members, moved.unbind(0)):
            out[i] = x
    return out


def module_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


class BlockSwap:
    def __init__(self, model, device, budget_bytes: int, activation_reserve_bytes: int = 6 * 2**30):
        """Keep as many blocks on `device` as fit in budget minus the rest of the model and a reserve."""
        self.device = torch.device(device)
        blocks = list(model.transformer_blocks) + list(model.single_transformer_blocks)
        block_ids = {id(b) for b in blocks}
        for name, child in model.named_children():
            if id(child) not in block_ids and name not in ("transformer_blocks", "single_transformer_blocks"):
                child.to(self.device)
        free = budget_bytes - activation_reserve_bytes - module_bytes(model) + sum(module_bytes(b) for b in blocks)
        resident = 0
        for block in blocks:
            if free - module_bytes(block) < 2 * max(module_bytes(b) for b in blocks):
                break
            free -= module_bytes(block)
            resident += 1
        self.swapped = blocks[resident:]
        for block in blocks[:resident]:
            block.to(self.device)
        self.cpu = {}
        for block in self.swapped:
            block.to("cpu")
            self.cpu[id(block)] = [p.data.pin_memory() for p in block.parameters()]
            for p, pinned in zip(block.parameters(), self.cpu[id(block)]):
                p.data = pinned
        self.stream = torch.cuda.Stream(self.device)
        self.ready: dict[int, tuple[list[torch.Tensor], torch.cuda.Event]] = {}
        self.handles = []
        for i, block in enumerate(self.swapped):
            following = self.swapped[(i + 1) % len(self.swapped)]
            self.handles.append(block.register_forward_pre_hook(self.before(block, following)))
            self.handles.append(block.register_forward_hook(self.after(block)))
        log.info("block swap: %d of %d blocks resident on %s, %d stream from pinned CPU memory",
                 resident, len(blocks), self.device, len(self.swapped))

    def fetch(self, block) -> None:
        if id(block) in self.ready:
            return
        with torch.cuda.stream(self.stream):
            copies = [pinned.to(self.device, non_blocking=True) for pinned in self.cpu[id(block)]]
            event = torch.cuda.Event()
            event.record(self.stream)
        self.ready[id(block)] = (copies, event)

    def before(self, block, following):
        def hook(module, args):
            self.fetch(block)
            copies, event = self.ready.pop(id(block))
            torch.cuda.current_stream(self.device).wait_event(event)
            for p, gpu in zip(block.parameters(), copies):
                gpu.record_stream(torch.cuda.current_stream(self.device))  # freed only after this stream is done
                p.data = gpu
            self.fetch(following)  # overlaps with this block's compute
        return hook

    def after(self, block):
        def hook(module, args, output):
            for p, pinned in zip(block.parameters(), self.cpu[id(block)]):
                p.data = pinned
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
