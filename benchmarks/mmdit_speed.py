"""MMDiT forward speed at the release's default video size: ours vs diffusers, same random 13B weights.

    python benchmarks/mmdit_speed.py [--out results.json] [--repeats 3]

Both models share the same bf16 tensors on the GPU (ours is assigned diffusers' parameters), so the
13B weights are held once. Prints ratios against diffusers measured in the same run, effective
TFLOP/s by the anchor formula (2 x linear params x tokens + 4 x tokens^2 x 3072 per block, 60 blocks)
and peak memory. Shapes follow ../shared/spec/anchors.md: output 480x848, 85 frames (latent 22x60x106).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vino_model.config import preset  # noqa: E402
from vino_model.mmdit import VinoMMDiT  # noqa: E402


def linear_params(model) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def flops(model, tokens: int, blocks: int = 60, hidden: int = 3072) -> float:
    return 2 * linear_params(model) * tokens + 4 * tokens**2 * hidden * blocks


def timed(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="mmdit_speed.json")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from diffusers import HunyuanVideoTransformer3DModel

    cfg = preset("hunyuanvideo-13b").mmdit
    dev, dt = torch.device("cuda"), torch.bfloat16
    started = time.time()
    with torch.device("meta"):
        theirs = HunyuanVideoTransformer3DModel()
        ours = VinoMMDiT(cfg)
    theirs = theirs.to_empty(device=dev).to(dt)
    with torch.no_grad():
        for prm in theirs.parameters():
            prm.normal_(0, 0.02)
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    theirs.eval(), ours.eval()
    print(f"built 13B on {torch.cuda.get_device_name()} in {time.time() - started:.0f} s", flush=True)

    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(1, 16, 22, 60, 106, device=dev, dtype=dt, generator=g)
    t = torch.tensor([500.0], device=dev)
    guidance = torch.tensor([1000.0], device=dev)
    text256 = torch.randn(1, 256, 4096, device=dev, dtype=dt, generator=g)
    text900 = torch.randn(1, 900, 4096, device=dev, dtype=dt, generator=g)
    ref = torch.randn(16, 1, 60, 106, device=dev, dtype=dt, generator=g)
    boundary = torch.randn(1, 2, 3072, device=dev, dtype=dt, generator=g)
    pooled = torch.zeros(1, 768, device=dev, dtype=dt)
    noisy_tokens = 22 * 30 * 53

    results = {"device": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    rows = []
    with torch.inference_mode():
        want = theirs(x, t, text256, torch.ones(1, 256, dtype=torch.bool, device=dev), pooled, guidance, return_dict=False)[0]
        got = ours(x, t, text256, guidance=guidance, pooled=pooled)
        rel = ((got.float() - want.float()).norm() / want.float().norm()).item()
        results["t2v_rel_error_vs_diffusers_bf16"] = rel
        print(f"t2v output, ours vs diffusers (bf16): relative error {rel:.2e}", flush=True)

        def run(name, fn, tokens, model):
            torch.cuda.reset_peak_memory_stats()
            seconds = timed(fn, args.repeats)
            row = {"name": name, "seconds": seconds, "tokens": tokens, "tflops": flops(model, tokens) / seconds / 1e12,
                   "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
            rows.append(row)
            print(f"{name:55s} {seconds:6.2f} s  {row['tflops']:5.0f} TFLOP/s  peak {row['peak_gib']:.1f} GiB", flush=True)

        mask256 = torch.ones(1, 256, dtype=torch.bool, device=dev)
        run("diffusers t2v (256 text tokens)", lambda: theirs(x, t, text256, mask256, pooled, guidance, return_dict=False),
            noisy_tokens + 256, theirs)
        for backend in ("auto", "cudnn", "flash"):
            ours.attention_backend = backend
            run(f"ours t2v (256 text tokens), attention={backend}", lambda: ours(x, t, text256, guidance=guidance),
                noisy_tokens + 256, ours)
        for backend in ("auto", "cudnn"):
            ours.attention_backend = backend
            run(f"ours 1 reference + 900 text tokens, attention={backend}",
                lambda: ours(x, t, text900, references=[[ref]], boundary=[boundary], guidance=guidance),
                noisy_tokens + 1590 + 2 + 900, ours)
    base = rows[0]["seconds"]
    for row in rows:
        row["speedup_vs_diffusers_t2v"] = base / row["seconds"]
    results["rows"] = rows
    Path(args.out).write_text(json.dumps(results, indent=1))
    print("\nratio vs diffusers t2v (same run):")
    for row in rows:
        print(f"  {row['name']:55s} {row['speedup_vs_diffusers_t2v']:.2f}x")


if __name__ == "__main__":
    main()
