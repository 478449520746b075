"""How large a VAE's round trip draws the world's objects: each object's measured diameter (`training.bench`'s, a
fraction of the frame's side) in held-out ground-truth renders and after the VAE's encode (posterior mode) and
decode, the median per size class. A decoder that paints colour outward draws every object larger, and a model on
it fails the size check wherever its own drawing adds a little more. Then the mean of each of the benchmark's checks
(`training.bench.score`) on the same round trips: the ceiling of any model on that VAE, check by check (session 42:
moving stars come back as blobs, which the subject and steadiness checks see).

    python benchmarks/vae_sizes.py --data data/embedded/heldout --tasks t2v,ti2v --samples 48 \
        --vae training/embedded-src/vae.safetensors /tmp/other-vae.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.bench import find_blobs, object_track, palette_labels, score  # noqa: E402
from training.manifest import load_media, read_manifest  # noqa: E402
from training.world import SIZES  # noqa: E402
from vino_model.preprocess import frames_to_tensor, tensor_to_frames  # noqa: E402
from vino_model.vae import VinoVAE  # noqa: E402


def diameters(frames: np.ndarray, objects: list[dict]) -> list[tuple[str, float]]:
    """(size class, median diameter over the frames that show it / side) of each object found in `frames`."""
    blobs = find_blobs(frames, palette_labels(frames))
    found = []
    for obj in objects:
        seen = [blob.diameter for blob in object_track(blobs, obj) if blob]
        if seen:
            found.append((obj["size"], float(np.median(seen)) / min(frames.shape[1:3])))
    return found


@torch.no_grad()
def round_trip(vae: VinoVAE, frames: np.ndarray) -> np.ndarray:
    return tensor_to_frames(vae.decode(vae.encode(frames_to_tensor(frames)[None], sample=False)).float())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a world split (training.world)")
    p.add_argument("--tasks", default="t2i", help="comma-separated task kinds whose targets to measure")
    p.add_argument("--samples", type=int, default=48)
    p.add_argument("--vae", nargs="+", required=True, help="VAE files to compare")
    args = p.parse_args(argv)
    kinds = args.tasks.split(",")
    records = [r for r in read_manifest(Path(args.data) / "manifest.jsonl") if r.task in kinds][: args.samples]
    vaes = {path: VinoVAE.load(path, device="cpu") for path in args.vae}
    measured = {name: {size: [] for size in SIZES} for name in ["ground truth", *vaes]}
    checks = {name: {} for name in measured}
    for record in records:
        frames = load_media(record.target)
        objects = record.meta["scene"]["objects"]
        for name, seen in [("ground truth", frames), *((path, round_trip(vae, frames)) for path, vae in vaes.items())]:
            for size, diameter in diameters(seen, objects):
                measured[name][size].append(diameter)
            for check, value in score(record.meta, seen)["checks"].items():
                checks[name].setdefault(check, []).append(value)
    print(f"{'':60s} " + " ".join(f"{f'{size} ({nominal})':>14s}" for size, nominal in SIZES.items()))
    for name, by_size in measured.items():
        print(f"{name[-60:]:60s} " + " ".join(f"{np.median(v):8.3f} ({len(v):3d})" if v else f"{'-':>14s}"
                                               for v in by_size.values()))
    names = list(dict.fromkeys(check for by_check in checks.values() for check in by_check))
    print(f"\n{'checks (mean)':60s} " + " ".join(f"{name:>10s}" for name in names))
    for name, by_check in checks.items():
        print(f"{name[-60:]:60s} " + " ".join(f"{np.mean(by_check[c]):10.3f}" if c in by_check else f"{'-':>10s}"
                                               for c in names))


if __name__ == "__main__":
    main()
