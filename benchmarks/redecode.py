"""Decode a model's saved latents with another VAE: two decoders compared on the very same samples.

`vino_model.generate --save-latents` writes NAME.latents.safetensors beside each output; this decodes each into
OUT/NAME.png (stills) or OUT/NAME.npz (clips, `vino_model.media`'s raw clip), the names `training.bench` reads.
The VAE's encoder is not used, so it must be the one the model's latents came from (a decoder-only retune).

    python benchmarks/redecode.py --vae /tmp/new-vae.safetensors --latents output/heldout --out output/heldout-new
    python -m training.bench --tasks data/embedded/heldout/tasks_image.json --results output/heldout-new
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vino_model import media  # noqa: E402
from vino_model.errors import VinoInputError, run_cli  # noqa: E402
from vino_model.preprocess import tensor_to_frames  # noqa: E402
from vino_model.vae import VinoVAE  # noqa: E402

SUFFIX = ".latents.safetensors"


@torch.no_grad()
def redecode(vae_path: Path, latents: Path, out: Path) -> list[Path]:
    files = sorted(latents.glob(f"*{SUFFIX}"))
    if not files:
        raise VinoInputError(f"--latents {latents}: no *{SUFFIX} files; expected vino_model.generate --save-latents")
    vae = VinoVAE.load(vae_path, device="cpu")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for file in files:
        frames = tensor_to_frames(vae.decode(load_file(file)["latents"]).float())  # [T, H, W, 3]
        stem = out / file.name[: -len(SUFFIX)]
        if frames.shape[0] == 1:
            written.append(media.write_png(stem.with_suffix(".png"), frames[0], {}))
        else:
            written.append(media.write_video(stem.with_suffix(media.RAW_CLIP), frames, 8.0))
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vae", type=Path, required=True, help="the VAE whose decoder to use (.safetensors)")
    p.add_argument("--latents", type=Path, required=True, help="a vino_model.generate --save-latents output folder")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    return run_cli(lambda: print(f"decoded {len(redecode(args.vae, args.latents, args.out))} into {args.out}"))


if __name__ == "__main__":
    sys.exit(main())
