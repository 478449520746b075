"""Probe: video guidance for clone. v = v_uncond_vid + s_vid (v_uncond - v_uncond_vid) + s_txt (v_cond - v_uncond)."""
import sys, os, json, time
sys.path.insert(0, "/work/main")
import torch
from vino_model import sampler, media as vmedia
from vino_model.pipeline import VinoPipeline, Media
from vino_model.sampler import Branch
from vino_model.tasks import TASKS, read_task_file

bundle, out, s_vid = sys.argv[1], sys.argv[2], float(sys.argv[3])
shard, shards = (int(x) for x in sys.argv[4].split("/")) if len(sys.argv) > 4 else (0, 1)
torch.set_num_threads(1)
os.makedirs(out, exist_ok=True)
d = json.load(open(f"{bundle}/defaults.json"))
pipe = VinoPipeline.load(f"{bundle}/vino.safetensors", f"{bundle}/qwen3vl", f"{bundle}/vae.safetensors", "cpu",
                         "float32")

def needed(text_cfg, image_cfg):
    return ("cond", "uncond", "uncond_vid")
def combine(v, text_cfg, image_cfg):
    return v["uncond_vid"] + s_vid * (v["uncond"] - v["uncond_vid"]) + text_cfg * (v["cond"] - v["uncond"])
if s_vid != 1:
    sampler.needed_branches, sampler.combine_guidance = needed, combine

task_file = "/work/main/data/embedded/heldout/tasks_clone12.json"
base = os.path.dirname(task_file)
for entry in read_task_file(task_file)[shard::shards]:
    t0 = time.time()
    task = TASKS[entry.task]
    images = [vmedia.read_image(p) for p in entry.ref_image_paths]
    video, fps = vmedia.read_video(entry.ref_video_path)
    m = pipe.prepare_media(images, video, fps, 17)
    w, h, f = pipe.output_shape(task, m, 128, 128, 17)
    ctx = pipe.encode_context(task, entry.caption, m, "", False, 1.0, d["cfg"])
    refs = pipe.encode_references(m, True, 0)
    br = pipe.branches(ctx, refs, len(m.images))
    if s_vid != 1:
        nv = pipe.encoder.encode("", m.images, None)
        br["uncond_vid"] = Branch(nv.text_states, refs[:len(m.images)], nv.boundary_tokens)
    lat = pipe.sample(br, pipe.latent_shape(w, h, f), 0, d["steps"], d["shift"], d["cfg"], 1.0)
    frames = pipe.decode(lat)
    vmedia.write_video(f"{out}/{entry.index}_clone.npz", frames, fps or 24.0)
    print(entry.index, round(time.time() - t0, 1), flush=True)
