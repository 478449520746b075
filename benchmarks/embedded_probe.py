"""Where in the noise schedule a stage-0 model decides its objects.

Each held-out t2i ground truth is encoded, noised to t0 on the sampler's shifted schedule and denoised from
there by a stage-0 export with its native text encoder; training.bench scores the results. A model that
draws the caption scores near 1 from every t0; one that only keeps what the noise left scores near 1 at
low t0 and falls where the objects' shapes are gone. `--blank` conditions on the empty prompt instead, so
the difference is what the caption adds at that noise level.

    python benchmarks/embedded_probe.py --init runs/embedded/stage0/export/vino-ema.safetensors \
        --data data/embedded/heldout --t0 0.3 0.6 0.8 0.95 [--cfg 4] [--blank]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training import bench, model  # noqa: E402
from training.config import load as load_config  # noqa: E402
from training.manifest import read_manifest  # noqa: E402
from vino_model.preprocess import frames_to_tensor, tensor_to_frames  # noqa: E402
from vino_model.sampler import TIMESTEP_SCALE, Branch, combine_guidance, shifted_schedule, velocity  # noqa: E402
from vino_model.vae import VinoVAE  # noqa: E402


@torch.no_grad()
def denoise_from(trainee, vae, caption: str, target: np.ndarray, t0: float, steps: int, shift: float, cfg: float,
                 seed: int) -> np.ndarray:
    """The target image noised to the first schedule time <= t0, then sampled to t = 0; uint8 [H, W, 3]."""
    device = trainee.transformer.proj_out.weight.device
    x0 = vae.encode(frames_to_tensor(target[None])[None], sample=False).float()
    branches = {name: Branch(trainee.native([text])[0]) for name, text in {"cond": caption, "uncond": ""}.items()}
    schedule = shifted_schedule(steps, shift).tolist()
    start = next(i for i, t in enumerate(schedule) if t <= t0)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    x = (1 - schedule[start]) * x0 + schedule[start] * noise
    for i in range(start, steps):
        t_model = torch.tensor([schedule[i] * TIMESTEP_SCALE], dtype=torch.float32, device=device)
        v = combine_guidance(velocity(trainee.transformer, x, t_model, branches), cfg, 1.0)
        x = x - (schedule[i] - schedule[i + 1]) * v
    return tensor_to_frames(vae.decode(x))[0]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", required=True, help="a stage-0 export (vino-ema.safetensors)")
    p.add_argument("--config", default="training/configs/embedded/stage0.toml", help="its stage config (VLM path)")
    p.add_argument("--vae", default="models/embedded-src/vae-decoder.safetensors")
    p.add_argument("--data", required=True, help="a world split (training.world) with t2i entries")
    p.add_argument("--t0", type=float, nargs="+", default=[0.3, 0.6, 0.8, 0.95])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--shift", type=float, default=3.0)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--blank", action="store_true", help="condition on the empty prompt instead of the caption")
    p.add_argument("--out", default="output/embedded-probe")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides the export was trained with (model.native_layer=-4)")
    args = p.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # bfloat16 on the GPU, as the stage trained; float32 on a CPU, where bfloat16 matmuls crawl
    bf16 = str(device == "cuda").lower()
    cfg = load_config(args.config, [f"model.init={args.init}", "model.mmdit={}", f"optim.bf16={bf16}", *args.set])
    trainee, _ = model.build(cfg)
    trainee.eval().to(device)
    vae = VinoVAE.load(args.vae, device=device)
    data = Path(args.data)
    records = list(read_manifest(data / "manifest.jsonl"))
    for t0 in args.t0:
        def draw(e, t0=t0):
            target = np.asarray(Image.open(records[int(e.index)].target).convert("RGB"))
            caption = "" if args.blank else e.caption
            return denoise_from(trainee, vae, caption, target, t0, args.steps, args.shift, args.cfg, e.index)

        print(f"t0 = {t0}{' (empty prompt)' if args.blank else ''}")
        print(bench.t2i_table(data, Path(args.out) / f"t0-{t0}{'-blank' if args.blank else ''}", draw))


if __name__ == "__main__":
    main()
