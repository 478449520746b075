"""Sequence-parallel MMDiT forward at the release's default video size on 1..N GPUs.

    torchrun --nproc-per-node 1 benchmarks/parallel.py --out one.json
    torchrun --nproc-per-node 2 benchmarks/parallel.py --out two.json --reference one.pt

Random bf16 weights of the real 13B config, identical on every rank (same seed); one reference image
and 900 text tokens. Rank 0 saves its output so the next run can be compared with the one-GPU result.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vino_model.config import preset  # noqa: E402
from vino_model.mmdit import VinoMMDiT  # noqa: E402
from vino_model.parallel import init_from_env  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--save-output", help="write rank 0's output here (torch.save)")
    p.add_argument("--reference", help="compare with this saved one-GPU output")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true")
    args = p.parse_args()
    parallel, device = init_from_env("cuda")
    if parallel is None:
        torch.cuda.set_device(0)
        device = "cuda:0"
    world = 1 if parallel is None else parallel.world
    with torch.device("meta"):
        model = VinoMMDiT(preset("hunyuanvideo-13b").mmdit)
    model = model.to_empty(device=device).to(torch.bfloat16).eval().requires_grad_(False)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for prm in model.parameters():
            prm.normal_(0, 0.02, generator=g)
    model.sequence_parallel = parallel
    model.attention_backend = "cudnn"
    if args.compile:
        from vino_model.speedups import compile_blocks

        compile_blocks(model)
    rand = lambda *s: torch.randn(*s, device=device, dtype=torch.bfloat16, generator=g)  # noqa: E731
    x, text, ref, boundary = rand(1, 16, 22, 60, 106), rand(1, 900, 4096), rand(16, 1, 60, 106), rand(1, 2, 3072)
    t, guidance = torch.tensor([500.0], device=device), torch.tensor([1000.0], device=device)

    def forward():
        return model(x, t, text, references=[[ref]], boundary=[boundary], guidance=guidance)

    with torch.inference_mode():
        out = forward()
        times = []
        for _ in range(args.repeats):
            if parallel is not None:
                dist.barrier()
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = forward()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    if parallel is None or parallel.rank == 0:
        row = {"gpus": world, "device": torch.cuda.get_device_name(), "seconds": round(seconds, 4),
               "compile": args.compile, "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
               "date": time.strftime("%Y-%m-%d")}
        if args.reference:
            want = torch.load(args.reference, weights_only=True).to(out.device)
            row["rel_error_vs_one_gpu"] = ((out.float() - want.float()).norm() / want.float().norm()).item()
        if args.save_output:
            torch.save(out.cpu(), args.save_output)
        Path(args.out).write_text(json.dumps(row, indent=1))
        print(json.dumps(row), flush=True)
    if parallel is not None:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
