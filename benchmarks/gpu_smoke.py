"""The pipeline's GPU-only options end to end on a tiny bundle: block swap with the VLM and VAE visiting
(--max-gpu-memory), FP8 linears and torch.compile; each must generate, and the exact ones must agree.

    python benchmarks/gpu_smoke.py
"""

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vino_model.pipeline import VinoPipeline  # noqa: E402
from vino_model.tiny import make_tiny_bundle  # noqa: E402


def main():
    bundle = make_tiny_bundle(Path(tempfile.mkdtemp()) / "tiny")
    files = (bundle / "vino.safetensors", bundle / "qwen3vl", bundle / "vae.safetensors")
    run = dict(task="t2v", prompt="a red circle moves left", width=64, height=48, frames=9, steps=3, seed=1)
    results = {}
    for name, options in [("resident", {}), ("block swap 1 GB", {"max_gpu_memory_gb": 1.0}),
                          ("compile", {"compile": True}), ("fp8", {"fp8": True})]:
        pipe = VinoPipeline.load(*files, device="cuda", dtype="bfloat16", **options)
        if "max_gpu_memory_gb" in options:
            assert pipe.offload and next(pipe.encoder.parameters()).device.type == "cpu"
        results[name] = pipe.generate(**run).latents.float()
        torch.cuda.synchronize()
        print(f"{name:18s} ok  latents {tuple(results[name].shape)}  peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB",
              flush=True)
        torch.cuda.reset_peak_memory_stats()
    base = results["resident"]
    for name, latents in results.items():
        rel = ((latents - base).norm() / base.norm()).item()
        print(f"{name:18s} relative difference to resident: {rel:.2e}")
    assert torch.equal(results["block swap 1 GB"], base), "block swap must be bit-exact"
    assert all(torch.isfinite(x).all() for x in results.values())


if __name__ == "__main__":
    main()
