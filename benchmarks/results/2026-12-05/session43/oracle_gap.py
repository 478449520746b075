"""Upper bound of the motion gap: latent MSE between each held-out clone's target and the same target moved the
partner's way (same start), as a model sure of the motion would pay under the wrong video at t -> 1 weighting 1."""
import sys
sys.path.insert(0, "/work/main")
import numpy as np, torch
from training.manifest import read_manifest
from training.world import moved, render, reference_motion
from training.loop import motion_partners
from vino_model.vae import VinoVAE
from vino_model.preprocess import frames_to_tensor
from types import SimpleNamespace
torch.set_num_threads(1)
recs = [r for r in read_manifest("/work/main/data/embedded/heldout/manifest.jsonl") if r.task == "clone"][:24]
ctx = [SimpleNamespace(motion=reference_motion(r.meta)) for r in recs]
vae = VinoVAE.load("/work/main/training/embedded-src/vae.safetensors")
def enc(frames):
    with torch.no_grad():
        return vae.encode(frames_to_tensor(frames)[None], sample=False)[0]
gaps, norms = [], []
for i, j in motion_partners(ctx):
    scene = recs[i].meta["scene"]; other = recs[j].meta["ref_video"]["objects"][0]["motion"]
    a, b = enc(render(scene)), enc(render(moved(scene, other)))
    gaps.append(float(((a - b) ** 2).mean())); norms.append(float((a ** 2).mean()))
    print(recs[i].meta["scene"]["objects"][0]["motion"], other, round(gaps[-1], 4))
print("mean latent MSE own vs moved the partner's way:", round(np.mean(gaps), 4),
      "latent mean square:", round(np.mean(norms), 3), len(gaps))
