"""Training on CPU through DeepSpeed (ZeRO-2, bf16): the tiny curriculum stage by stage, overfitting, an
exact resume after SIGKILL, and exports that `vino_model` loads and generates from."""

import dataclasses
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image
from safetensors.torch import load_file

from training import config as train_config
from training.data import LatentCache
from training.loop import train
from training.manifest import read_manifest
from training.run import main as run_main
from training.world import REFERENCE_SWAPS, write_split
from vino_model.config import preset
from vino_model.errors import VinoInputError
from vino_model.pipeline import VinoPipeline
from vino_model.tiny import make_tiny_bundle

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs" / "tiny"
ALL_TASKS = {t: 1.0 for t in ["t2i", "t2v", "i2v", "ti2v", "ti2i", "ti2i_ref", "tv2v", "tiv2v", "clone"]}
# What each stage runs here on top of its tiny config: few steps, a high constant learning rate.
STAGE_RUNS = {
    0: {"run.steps": 40, "optim.lr": 1e-2, "eval.every": 40, "eval.samples": 4},
    1: {"run.steps": 3, "optim.lr": 1e-2},
    2: {"run.steps": 3, "optim.lr": 1e-3},
    3: {"run.steps": 4, "optim.lr": 1e-3, "data.tasks": ALL_TASKS, "optim.accumulation": 2, "optim.ema": 0.9,
        "samples.every": 4, "samples.limit": 2, "data.keep_in_memory": True, "data.prefill_workers": 2,
        "flow.contrast": 1.0,
        "flow.contrast_samples": {"binding": 1, "places": 1, "sizes": 0, "count": 0, "single": 0,
                                  "backdrop": 1, "motion": 1}},
}


@pytest.fixture(scope="module", autouse=True)
def one_process_group():
    """Training here joins a one-rank process group (and sets its rendezvous variables); the other
    test files get neither. Tiny models run fastest on one thread; the CLI run below gets one too."""
    threads, env = torch.get_num_threads(), dict(os.environ)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    if dist.is_initialized():
        dist.destroy_process_group()
    os.environ.clear()
    os.environ.update(env)


class Curriculum:
    """The tiny curriculum on a small procedural world; each stage runs once, when first needed."""

    def __init__(self, folder: Path):
        self.folder = folder
        write_split(str(folder / "world"), per_task=2, width=32, height=32, frames=5)
        self.bundle = make_tiny_bundle(folder / "bundle")
        self.manifest = folder / "world" / "manifest.jsonl"
        self.exports = {}

    def overrides(self, stage: int, out: Path, **changes) -> list[str]:
        values = {
            "run.out": str(out),
            "model.qwen": str(self.bundle / "qwen3vl"),
            "model.vae": str(self.bundle / "vae.safetensors"),
            "data.manifest": [str(self.manifest)],
            "data.cache": str(self.folder / "cache"),
            "data.area": 1024,
            "data.frames": [1, 5],
            "optim.warmup_steps": 1,
            "optim.schedule": "constant",
            "checkpoint.every": 100,
            "eval.every": 0,
            "samples.tasks": str(self.folder / "world" / ("tasks_image.json" if stage == 0 else "tasks_video.json")),
            "samples.width": 32,
            "samples.height": 32,
            "samples.frames": 5,
            "samples.steps": 2,
            "log.every": 1,
            "log.progress": False,
        }
        if stage > 0:
            values["model.init"] = str(self.export(stage - 1))
        values.update(STAGE_RUNS[stage])
        values.update(changes)
        return [f"{key}={json.dumps(value)}" for key, value in values.items()]

    def export(self, stage: int) -> Path:
        if stage not in self.exports:
            out = self.folder / f"stage{stage}"
            self.exports[stage] = train(train_config.load(CONFIGS / f"stage{stage}.toml", self.overrides(stage, out)))
        return self.exports[stage]


@pytest.fixture(scope="module")
def curriculum(tmp_path_factory):
    return Curriculum(tmp_path_factory.mktemp("curriculum"))


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "logs" / "train.jsonl").read_text().splitlines()]


def fresh_env(**changes) -> dict:
    """The environment for a training process of its own: without the rendezvous variables that this process set
    for its own one-rank group."""
    rendezvous = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    return {**{k: v for k, v in os.environ.items() if k not in rendezvous}, **changes}


def changed(before: dict, after: dict, prefix: str) -> bool:
    keys = [k for k in before if k.startswith(prefix)]
    assert keys, prefix
    return any(not torch.equal(before[k].float(), after[k].float()) for k in keys)


def generates(export: Path, bundle: Path, task: str, caption: str, images=(), **kwargs):
    pipe = VinoPipeline.load(export, bundle / "qwen3vl", bundle / "vae.safetensors")
    return pipe.generate(task, caption, images, width=32, height=32, frames=5, steps=2, sample_posterior=False,
                         **kwargs)


def test_stage0_base_model_learns_from_the_native_text_encoder(curriculum):
    export = curriculum.export(0)
    log = records(export.parent.parent)
    evals = [r["eval_loss"] for r in log if "eval_loss" in r]
    assert len(evals) == 2 and evals[-1] < 0.75 * evals[0]  # overfitting four samples
    assert len([r["eval_text_gap"] for r in log if "eval_text_gap" in r]) == 2
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 41))
    assert all(r["tokens_per_s"] > 0 and r["steps_per_s"] > 0 and r["grad_norm"] is not None for r in steps)
    for r in steps:  # where each step's time goes: the phases add up to the step
        phases = {k: v for k, v in r.items() if k.startswith("ms_")}
        assert {"ms_data", "ms_forward", "ms_backward", "ms_optimizer", "ms_wait", "ms_reduce"} <= set(phases)
        assert sum(phases.values()) == pytest.approx(1000 / r["steps_per_s"], rel=0.05)
    assert list((export.parent.parent / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    state = load_file(export)
    assert {k.split(".")[0] for k in state} == {"transformer", "mm_encoder"}
    assert state["transformer.context_embedder.proj_in.weight"].shape[1] == 64  # the tiny VLM's width
    result = generates(export, curriculum.bundle, "t2v", "a red circle moves left")
    assert result.frames.shape == (5, 32, 32, 3)


def test_a_fixed_evaluation_world_replaces_the_training_index_first_samples(curriculum, tmp_path):
    """eval.manifest: the evaluation set comes from another world (held out, the same whatever run.seed), here
    three t2i samples where the training index would give eval.samples = 4."""
    write_split(str(tmp_path / "eval"), per_task=3, width=32, height=32, frames=5, split="heldout", tasks=["t2i"])
    for manifest, expected in [([], 4), ([str(tmp_path / "eval" / "manifest.jsonl")], 3)]:
        out = tmp_path / f"run{expected}"
        train(train_config.load(CONFIGS / "stage0.toml", curriculum.overrides(
            0, out, **{"run.steps": 1, "eval.every": 1, "eval.manifest": manifest, "samples.every": 0})))
        log = records(out)
        assert next(r for r in log if r.get("event") == "start")["eval_samples"] == expected
        assert len([r for r in log if "eval_loss" in r]) == 2  # at step 0 and at the end
    with pytest.raises(VinoInputError, match=r"manifest\(s\) \['nowhere.jsonl'\] of data.manifest / eval.manifest"):
        train(train_config.load(CONFIGS / "stage0.toml", curriculum.overrides(
            0, tmp_path / "never", **{"eval.every": 1, "eval.manifest": ["nowhere.jsonl"]})))
    assert not (tmp_path / "never").exists()
    off = tmp_path / "off"  # with the evaluation off, its world is not needed
    train(train_config.load(CONFIGS / "stage0.toml", curriculum.overrides(
        0, off, **{"run.steps": 1, "eval.every": 0, "eval.manifest": ["nowhere.jsonl"], "samples.every": 0})))
    assert next(r for r in records(off) if r.get("event") == "start")["eval_samples"] == 0


def test_stage1_trains_only_the_text_connector(curriculum):
    before, after = load_file(curriculum.export(0)), load_file(curriculum.export(1))
    assert changed(before, after, "mm_encoder.connector.")
    for frozen in ("transformer.", "mm_encoder.metaquery", "mm_encoder.connector_vae_branch."):
        assert not changed(before, after, frozen), frozen
    assert generates(curriculum.export(1), curriculum.bundle, "t2i", "a blue square").frames.shape == (1, 32, 32, 3)


def test_stage2_trains_the_mmdit_and_the_learnable_queries(curriculum):
    before, after = load_file(curriculum.export(1)), load_file(curriculum.export(2))
    for trained in ("transformer.", "mm_encoder.metaquery", "mm_encoder.connector."):
        assert changed(before, after, trained), trained
    assert not changed(before, after, "mm_encoder.connector_vae_branch.")


def test_stage3_trains_everything_on_the_task_mixture_and_writes_samples(curriculum):
    export = curriculum.export(3)
    out = export.parent.parent
    before, after = load_file(curriculum.export(2)), load_file(export)
    for trained in ("transformer.", "mm_encoder.metaquery", "mm_encoder.connector.",
                    "mm_encoder.connector_vae_branch."):
        assert changed(before, after, trained), trained
    ema = load_file(export.with_name("vino-ema.safetensors"))
    assert changed(after, ema, "transformer.") and set(ema) == set(after)
    prefill = next(r for r in records(out) if r.get("event") == "prefill")
    referring = [r for r in read_manifest(str(curriculum.manifest)) if r.ref_images or r.ref_video]
    assert prefill["contexts"] == len(referring) and prefill["media"] >= len(referring)
    steps = [r for r in records(out) if "loss" in r]  # the encoder's processing: contexts its memo lacked (the
    # prefill made the referring ones: tests/test_training_data.py), time
    assert all(r["memo_misses"] >= 0 and r["ms_prepare"] > 0 for r in steps)
    samples = sorted(p.name for p in (out / "samples" / "step-00000004").iterdir())
    assert len(samples) == 2 and all(name.endswith(".mp4") for name in samples)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step-00000004"]

    ti2i_ref = next(r for r in read_manifest(str(curriculum.manifest)) if r.task == "ti2i_ref")
    images = [Image.open(p) for p in ti2i_ref.ref_images]
    result = generates(export, curriculum.bundle, "ti2i", ti2i_ref.caption_long, images, have_base=True, image_cfg=2.0)
    assert result.frames.shape == (1, 64, 64, 3)  # the base image's letterboxed size


def test_stage3_clone_batches_train_their_motion_twins_through_the_real_encoder(curriculum, tmp_path):
    """A clone-only stage 3 under short captions: every step's batch pairs its two clones (of two motions) as
    motion twins, through the VLM's memo and the MMDiT, and logs their gap."""
    from training.world import reference_motion

    clones = [r for r in read_manifest(str(curriculum.manifest)) if r.task == "clone"]
    assert len({reference_motion(r.meta) for r in clones}) == len(clones) == 2
    out = tmp_path / "clone"
    changes = {"run.steps": 2, "data.tasks": {"clone": 1.0}, "data.long_caption": 0.0, "data.drop_video": 0.0,
               "data.drop_text": 0.0, "data.drop_images": 0.0, "samples.every": 0, "checkpoint.enabled": False,
               "flow.contrast_samples.motion": 1}  # off in stage 3 from session 47
    train(train_config.load(CONFIGS / "stage3.toml", curriculum.overrides(3, out, **changes)))
    steps = [r for r in records(out) if "loss" in r]
    assert len(steps) == 2 and all(math.isfinite(r["twin_gap_motion"]) for r in steps)
    assert not any(key.startswith("twin_gap_") and key != "twin_gap_motion" for r in steps for key in r)


def test_stage3_reference_batches_train_their_caption_twins_with_their_references(curriculum, tmp_path):
    """A ti2v-only stage 3 under long captions: the two-object sample's "labels" twin (its Image 1 and Image 2
    exchanged) reads the sample's own reference images through the VLM and the MMDiT, its "order" twin the two images
    reversed, and their gaps are logged."""
    twinned = [r for r in read_manifest(str(curriculum.manifest)) if r.task == "ti2v" and r.meta.get("word_swaps")]
    assert [set(r.meta["word_swaps"]) for r in twinned] == [{"labels"}]
    out = tmp_path / "ti2v"
    changes = {"run.steps": 2, "data.tasks": {"ti2v": 1.0}, "data.long_caption": 1.0, "data.drop_text": 0.0,
               "data.drop_images": 0.0, "samples.every": 0, "checkpoint.enabled": False,
               "flow.contrast_samples.labels": 1, "flow.contrast_samples.order": 1}  # STAGE_RUNS' rows: off
    train(train_config.load(CONFIGS / "stage3.toml", curriculum.overrides(3, out, **changes)))
    steps = [r for r in records(out) if "loss" in r]
    assert len(steps) == 2 and all(math.isfinite(r[f"twin_gap_{kind}"]) for r in steps for kind in ("labels", "order"))


def test_resume_after_sigkill_repeats_the_uninterrupted_run(curriculum, tmp_path):
    config = CONFIGS / "stage3.toml"
    changes = {"run.steps": 6, "checkpoint.every": 2, "samples.every": 0}
    straight = tmp_path / "straight"
    train(train_config.load(config, curriculum.overrides(3, straight, **changes)))

    killed = tmp_path / "killed"
    args = curriculum.overrides(3, killed, **changes)
    with open(tmp_path / "killed.log", "w") as output:
        process = subprocess.Popen([sys.executable, "-m", "training.run", str(config), *args], cwd=ROOT,
                                   env=fresh_env(OMP_NUM_THREADS="1"), stdout=output, stderr=output)
        deadline = time.monotonic() + 240
        log = killed / "logs" / "train.jsonl"
        while not (log.is_file() and any(r.get("step", 0) >= 3 and "loss" in r for r in records(killed))):
            assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the CLI run did not reach step 3"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    resumed_from = int((killed / "checkpoints" / "latest").read_text().split("-")[1])
    assert 2 <= resumed_from < 6

    assert run_main([str(config), *args]) == 0
    log = records(killed)
    resume = max(i for i, r in enumerate(log) if r.get("event") == "resume")
    assert log[resume]["step"] == resumed_from
    losses = {r["step"]: r["loss"] for r in records(straight) if "loss" in r}
    after = [r for r in log[resume:] if "loss" in r]
    assert [r["step"] for r in after] == list(range(resumed_from + 1, 7))
    assert all(r["loss"] == losses[r["step"]] for r in after)
    for name in ("vino.safetensors", "vino-ema.safetensors"):
        a, b = load_file(straight / "export" / name), load_file(killed / "export" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_eval_text_gap_is_what_another_caption_costs(monkeypatch):
    """A trainee whose loss is 1 when the caption is its sample's own and 3 otherwise has a gap of 2 over the
    text-only samples; one that ignores the text has 0; samples with references are left out of the gap.
    Each word swap a record lists gets its own gap: 2 for a word the trainee reads, 0 for one it ignores."""

    from training import engine
    from training.data import Context
    from training.loop import evaluate

    monkeypatch.setattr(engine, "mean", lambda values, device: values)  # one rank, no process group

    own = {"a": 0.0, "b": 1.0, "c": 2.0, "a in blue": 0.0}  # each caption's x0 value ("a in blue": colour ignored)
    swaps = {"shape": "a as a square", "color": "a in blue"}
    samples = [SimpleNamespace(record=SimpleNamespace(caption_long=c, meta=meta, task=task), images=i, video=None,
                               refs=[torch.zeros(16, 1, 2, 2) for _ in i]) for c, i, meta, task in
               (("a", [], {"word_swaps": swaps}, "t2i"), ("c", ["ref"], {}, "ti2i"), ("b", [], {}, "t2i"))]
    # the edit is skipped

    class Data:
        def load(self, sample, rng, dropout):
            x0 = torch.full((16, 1, 2, 2), own[sample.record.caption_long])
            return x0, sample.refs, Context(sample.record.caption_long, [], None, None), "t2i"

    forwards = []

    def reads_text(x0, noise, t, references, contexts):
        forwards.append(len(contexts))
        assert len(x0) == len(noise) == len(t) == len(references) == len(contexts)
        return torch.tensor([1.0 if own.get(c.text) == float(x0[j].flatten()[0]) else 3.0
                             for j, c in enumerate(contexts)]), 0

    expected = {"eval_loss": 1.0, "eval_text_gap": 2.0, "eval_word_gap_color": 0.0, "eval_word_gap_shape": 2.0}
    for chunk, batches in ((8, [5, 1, 2]), (2, [2, 2, 1, 1, 2])):  # a sample's captions go through in one batch
        forwards.clear()
        cfg = SimpleNamespace(run=SimpleNamespace(seed=0), data=SimpleNamespace(batch_size=chunk))
        assert evaluate(reads_text, Data(), samples, cfg, 0, 1, "cpu") == expected
        assert forwards == batches
    blind = evaluate(lambda x0, *inputs: (torch.ones(len(x0)), 0), Data(), samples, cfg, 0, 1, "cpu")
    assert blind == {"eval_loss": 1.0, "eval_text_gap": 0.0, "eval_word_gap_color": 0.0, "eval_word_gap_shape": 0.0}


def test_eval_motion_gap_is_what_another_motion_s_video_costs_a_clone(monkeypatch):
    """Each clone of the set is read under its short caption with its own reference video, then with the next
    clone's of another motion (the next of the same motion is passed over), at each of MOTION_GAP_TIMES: a trainee
    that reads the motion from the video has its loss increase as the gap; one that ignores the video has 0."""

    from training import engine
    from training.data import Context
    from training.loop import MOTION_GAP_TIMES, evaluate

    monkeypatch.setattr(engine, "mean", lambda values, device: values)  # one rank, no process group

    def clone(name, direction):
        meta = {"ref_video": {"objects": [{"motion": {"direction": direction, "speed": "slow"}}]}}
        return SimpleNamespace(record=SimpleNamespace(caption_long=f"long {name}", caption_short=f"short {name}",
                                                      meta=meta, task="clone"), images=["ref"], video=f"video {name}")

    samples = [clone("a", "left"), clone("b", "left"), clone("c", "up")]

    class Data:
        def load(self, sample, rng, dropout):
            x0 = torch.zeros(16, 1, 2, 2)
            references = [torch.zeros(16, 1, 2, 2), torch.zeros(16, 2, 2, 2)]
            return x0, references, Context(sample.record.caption_long, ["image"], sample.video, 8.0), "clone"

    seen = []

    def reads(x0, noise, t, references, contexts):
        seen.extend((c.text, c.video, float(t[j])) for j, c in enumerate(contexts))
        own = [c.text.split()[-1] == c.video.split()[-1] for c in contexts]
        return torch.tensor([1.0 if mine else 1.5 for mine in own]), 0

    cfg = SimpleNamespace(run=SimpleNamespace(seed=0), data=SimpleNamespace(batch_size=4))
    result = evaluate(reads, Data(), samples, cfg, 0, 1, "cpu")
    assert result["eval_motion_gap"] == pytest.approx(0.5) and result["eval_loss"] == 1.0
    twins = {(text, video) for text, video, t in seen if text.startswith("short") and not video.endswith(text[-1])}
    assert twins == {("short a", "video c"), ("short b", "video c"), ("short c", "video a")}
    assert sorted({t for *_, t in seen if _[0].startswith("short")}) == pytest.approx(sorted(MOTION_GAP_TIMES))
    blind = evaluate(lambda x0, *inputs: (torch.ones(len(x0)), 0), Data(), samples, cfg, 0, 1, "cpu")
    assert blind["eval_motion_gap"] == 0.0
    assert "eval_motion_gap" not in evaluate(reads, Data(), samples[:2], cfg, 0, 1, "cpu")  # one motion: no pair


@pytest.mark.parametrize("stage", [0, 1])
def test_a_sample_under_several_captions_in_one_batch_loses_what_it_loses_under_each(curriculum, tmp_path, stage):
    """The evaluation runs one sample's captions (its own, another's, word swaps) as one batch: padding the
    shorter captions must not change any loss (stage 0: the native text encoder; stage 1: the VLM's)."""
    from training.data import Batch, Context
    from training.loop import losses_under
    from training.model import build

    cfg = train_config.load(CONFIGS / f"stage{stage}.toml",
                            curriculum.overrides(stage, tmp_path / "s", **{"optim.bf16": False}))
    trainee, _ = build(cfg)
    trainee.eval()
    torch.manual_seed(0)
    for p in trainee.transformer.parameters():  # a fresh MMDiT's zero-initialised outputs ignore the text
        p.data.add_(torch.randn_like(p) * 0.05)
    x0 = torch.randn(1, trainee.transformer.cfg.in_channels, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    batch = Batch(x0, [[]], [Context("a", [], None, None)], ["t2v"])
    captions = ["a", "a big red circle moves left slowly over a grey ground", "two small blue squares", ""]
    contexts = [Context(c, [], None, None) for c in captions]
    noise, t = torch.randn_like(x0), torch.tensor([0.4])
    with torch.no_grad():
        alone = losses_under(trainee, batch, noise, t, contexts, 1, "cpu")
        together = losses_under(trainee, batch, noise, t, contexts, 4, "cpu")
    assert len(set(alone)) == 4  # the captions matter
    assert together == pytest.approx(alone, rel=1e-4, abs=1e-6)


def test_edit_weights_weigh_where_a_target_differs_from_its_source():
    """An edit's positions (its target against its last same-shaped reference) weigh 1 + focus; a sample without
    such a reference, or whose target differs from it nearly everywhere, weighs 1 throughout."""
    from training.model import edit_weights

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 2, 6, 6, generator=g)
    edited = x0[0].clone()
    edited[:, :, 1:3, 2:4] += 2.0  # the edit: a 2 x 2 patch in both frames
    image = torch.randn(3, 1, 6, 6, generator=g)  # another shape: never a source
    references = [
        [x0[0] + 5.0, edited, image],  # the last same-shaped reference is the source, not the first
        [image],  # no source
        [x0[2] + torch.randn(3, 2, 6, 6, generator=g) * 3],  # differs everywhere: a new picture, not an edit
        [],
    ]
    weights = edit_weights(x0, references, 4.0)
    assert weights.shape == (4, 2, 6, 6)
    expected = torch.ones(2, 6, 6)
    expected[:, 1:3, 2:4] = 5.0
    assert torch.equal(weights[0], expected)
    assert torch.equal(weights[1:], torch.ones(3, 2, 6, 6))
    assert torch.equal(edit_weights(x0, references, 0.0), torch.ones(4, 2, 6, 6))


def test_the_edit_focus_reweighs_the_training_loss_only(curriculum, tmp_path):
    """flow.edit_focus: in training an edit sample's loss is its error's mean weighted by edit_weights; in eval mode
    (the evaluation, the probes) it is the plain mean; a sample without a source loses the same either way."""
    from training.data import Context
    from training.model import build, edit_weights

    cfg = train_config.load(CONFIGS / "stage3.toml", curriculum.overrides(
        3, tmp_path / "s", **{"optim.bf16": False, "flow.edit_focus": 4.0}))
    trainee, _ = build(cfg)
    assert trainee.focus == 4.0
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, trainee.transformer.cfg.in_channels, 2, 4, 4, generator=g)
    velocity = torch.randn(x0.shape, generator=g)
    trainee.transformer.forward = lambda *args, **kwargs: velocity  # the error is known: the loss is what is tested
    source = x0[0].clone()
    source[:, :, :2, :2] -= 3.0
    references = [[source], []]
    contexts = [Context("replace the red circle with a blue star", [], None, None), Context("a", [], None, None)]
    noise, t = torch.randn(x0.shape, generator=g), torch.tensor([0.6, 0.6])
    with torch.no_grad():
        focused, _ = trainee.train()(x0, noise, t, references, contexts)
        plain, _ = trainee.eval()(x0, noise, t, references, contexts)
    error = (velocity - (noise - x0)).pow(2).mean(dim=1)
    weights = edit_weights(x0, references, 4.0)
    assert weights[0].max() == 5.0 and torch.equal(weights[1], torch.ones(2, 4, 4))
    assert plain.tolist() == pytest.approx(error.mean(dim=(1, 2, 3)).tolist(), rel=1e-5)
    assert focused[0].item() == pytest.approx(((error[0] * weights[0]).sum() / weights[0].sum()).item(), rel=1e-5)
    assert focused[0].item() != pytest.approx(plain[0].item(), rel=1e-3)
    assert focused[1].item() == pytest.approx(plain[1].item(), rel=1e-6)


def nan_gradient_at(monkeypatch, step: int) -> list:
    """Training's engines from here on give step `step` a NaN gradient; returns the list of backward calls."""
    from training import engine

    build_engine, calls = engine.build_engine, []

    def poisoned(cfg, trainee):
        ds = build_engine(cfg, trainee)
        backward = ds.backward

        def nan_at_the_step(loss, **kwargs):
            calls.append(1)
            return backward(loss * float("nan") if len(calls) == step else loss, **kwargs)

        ds.backward = nan_at_the_step
        return ds

    monkeypatch.setattr(engine, "build_engine", poisoned)
    return calls


def unchecked_run_stops(curriculum, out: Path, match: str, **changes) -> None:
    """A stage-0 run with optim.check_overflow off raises a VinoInputError matching `match`."""
    changes = {"optim.check_overflow": False, "samples.every": 0, **changes}
    with pytest.raises(VinoInputError, match=match):
        train(train_config.load(CONFIGS / "stage0.toml", curriculum.overrides(0, out, **changes)))


def test_without_the_overflow_check_a_non_finite_gradient_stops_the_run_before_it_saves(curriculum, tmp_path,
                                                                                         monkeypatch):
    calls = nan_gradient_at(monkeypatch, 3)
    out = tmp_path / "run"
    unchecked_run_stops(curriculum, out, r"step 3: the gradient norm is (nan|inf).*step-00000002",
                        **{"run.steps": 4, "checkpoint.every": 1, "checkpoint.keep": 5})
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step-00000001", "step-00000002"]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000002"
    assert not (out / "export").exists()

    calls.clear()  # with the check (the default), DeepSpeed skips that step and the run ends with finite weights
    checked = tmp_path / "checked"
    train(train_config.load(CONFIGS / "stage0.toml", curriculum.overrides(
        0, checked, **{"run.steps": 4, "samples.every": 0})))
    assert all(torch.isfinite(t.float()).all() for t in load_file(checked / "export" / "vino.safetensors").values())


def test_a_non_finite_gradient_inside_a_window_stops_the_run_at_its_step_before_any_save(curriculum, tmp_path,
                                                                                           monkeypatch):
    """The steps read their losses and gradient norms back together every log.every steps; a NaN step inside that
    window is still named, and nothing after it is saved."""
    calls = nan_gradient_at(monkeypatch, 2)
    out = tmp_path / "run"
    unchecked_run_stops(curriculum, out, r"step 2: the gradient norm is (nan|inf).*none yet",
                        **{"run.steps": 8, "log.every": 4, "checkpoint.every": 4})
    assert len(calls) == 4  # the window ran to its end
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").glob("step-*"))
    assert not (out / "export").exists()


def test_a_training_step_reads_nothing_back_from_the_device(curriculum, tmp_path):
    """Reading a value back (`.item()`, `int()`, a boolean mask's index) waits for the GPU to finish, and a step
    that waits cannot launch its next ops while the GPU works. A stage-3 forward and backward over text and
    padded prompts reads nothing back: token counts and padding are known on the host."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from training.data import Context
    from training.model import build, image_tokens

    class Reads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.reads = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            masks = [x for a in args if isinstance(a, (list, tuple)) for x in a
                     if isinstance(x, torch.Tensor) and x.dtype == torch.bool]
            if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default) or (
                    masks and func.__name__.startswith("index")):
                self.reads.append(str(func))
            return func(*args, **(kwargs or {}))

    cfg = train_config.load(CONFIGS / "stage3.toml", curriculum.overrides(3, tmp_path / "s"))
    trainee, _ = build(cfg)
    trainee.encoder.memo = {}
    contexts = [Context(text, [], None, None, key=(i,)) for i, text in enumerate(
        ["a big red circle moves left slowly over a grey ground", "two small blue squares", ""])]
    x0 = torch.randn(3, trainee.transformer.cfg.in_channels, 2, 4, 4)
    trainee(x0, torch.randn_like(x0), torch.rand(3), [[], [], []], contexts)  # the processor's memo fills
    with Reads() as reads:
        loss, tokens = trainee(x0, torch.randn_like(x0), torch.rand(3), [[], [], []], contexts)
        loss.mean().backward()
    assert reads.reads == []
    prompts = [len(ids) for ids in trainee.encoder.encode_batch([(c.text, [], None, None) for c in contexts]).input_ids]
    queries = trainee.encoder.mm_encoder.metaquery.shape[0]
    assert len(set(prompts)) == 3  # the prompts are padded
    assert tokens == image_tokens(trainee.transformer.cfg.patch_size, x0, [[], [], []]) + sum(prompts) + 3 * queries


@pytest.mark.parametrize("steps, profiled", [(4, "2-4"), (3, "2-3")])  # 3: the run ends inside the profiled steps
def test_a_profiled_run_writes_the_gpu_share_and_the_costliest_ops(curriculum, tmp_path, steps, profiled):
    out = tmp_path / "run"
    exported = train(train_config.load(CONFIGS / "stage0.toml", curriculum.overrides(
        0, out, **{"run.steps": steps, "log.profile": 2, "log.profile_steps": 2, "samples.every": 0})))
    profile = out / "logs" / "profile.txt"
    assert profile.stat().st_mtime_ns >= exported.stat().st_mtime_ns  # summed once the weights are out
    text = profile.read_text()
    assert text.startswith(f"steps {profiled}: ") and "ms a step" in text
    assert "by self_cpu_time_total:" in text and "aten::" in text


@pytest.mark.parametrize("stage", [0, 1])
def test_a_training_step_runs_about_as_many_tensor_ops_for_a_large_batch_as_for_a_small_one(curriculum, tmp_path,
                                                                                            stage):
    """A small model's step is bound by the host launching its ops, so a batch must cost few ops per sample:
    the text, its mask, the connectors, the alignment term and the image stream each run once for the whole
    batch. What is left per sample is the host's own padding of token ids (and stage 1's search for the
    vision markers in them): small CPU ops, no GPU launches."""
    from training.data import Context
    from training.logs import OpCount
    from training.model import build

    cfg = train_config.load(CONFIGS / f"stage{stage}.toml", curriculum.overrides(stage, tmp_path / "s"))
    trainee, _ = build(cfg)
    trainee.encoder.memo = {}  # as in training: each context's processor output is kept
    captions = ["a big red circle moves left slowly over a grey ground", "two small blue squares", ""]

    def step_ops(batch: int) -> int:
        x0 = torch.randn(batch, trainee.transformer.cfg.in_channels, 2, 4, 4)
        contexts = [Context(captions[b % 3], [], None, None, key=(b % 3,)) for b in range(batch)]
        trainee(x0, torch.randn_like(x0), torch.rand(batch), [[] for _ in range(batch)], contexts)  # warm caches
        with OpCount() as count:
            loss, _ = trainee(x0, torch.randn_like(x0), torch.rand(batch), [[] for _ in range(batch)], contexts)
            loss.mean().backward()
        return count.ops

    small, large = step_ops(2), step_ops(18)
    assert small > 500  # the count sees the model's ops
    assert (large - small) / 16 <= (8 if stage == 0 else 30)  # about 4 and 26 now, all on the CPU (token ids)


def test_native_align_pulls_the_text_connector_to_the_native_states(curriculum, tmp_path):
    """model.native_align compares the connector's output at exactly the caption's tokens with the native
    encoder's states of the caption (0 when they match there, whatever the other tokens; 0 without a caption),
    and its gradient moves the connector towards them."""
    from training.data import Context
    from training.model import build, find_last

    overrides = curriculum.overrides(1, tmp_path / "s1", **{"model.native_align": 1.0, "optim.bf16": False})
    trainee, _ = build(train_config.load(CONFIGS / "stage1.toml", overrides))
    trainee.train()
    contexts = [Context("a big red circle moves left", [], None, None), Context("", [], None, None)]

    def align():
        encoded = trainee.encoder.encode_batch([(c.text, c.images, c.video, c.video_fps) for c in contexts])
        return trainee.alignment(contexts, encoded.input_ids, encoded.text_states), encoded

    before, encoded = align()
    assert before[0] > 0.05 and before[1] == 0
    ids = trainee.teacher.caption_ids(contexts[0].text)
    start = find_last(encoded.input_ids[0].tolist(), ids)
    assert start is not None and start > 0  # the system turn comes first
    states = torch.randn_like(encoded.text_states[:1]) * 10
    states[0, start: start + len(ids)] = trainee.teacher([contexts[0].text])[0][: len(ids)]
    assert trainee.alignment(contexts[:1], encoded.input_ids[:1], states).item() == pytest.approx(0.0, abs=1e-6)

    connector = trainee.encoder.mm_encoder.connector
    optimizer = torch.optim.Adam(connector.parameters(), lr=3e-3)
    for _ in range(30):
        optimizer.zero_grad()
        align()[0].sum().backward()
        optimizer.step()
    assert align()[0][0].item() < 0.5 * before[0].item()


def test_model_reference_area_sets_a_fresh_models_reference_area(curriculum, tmp_path):
    """model.reference_area replaces the preset's for a model made from scratch (0 keeps the preset's); the
    export then carries it to the later stages and to Load VINO."""
    from training.model import build

    def area(**changes):
        cfg = train_config.load(CONFIGS / "stage0.toml", curriculum.overrides(0, tmp_path / "s0", **changes))
        return build(cfg)[1].reference_area

    assert area() == preset("tiny").reference_area
    assert area(**{"model.reference_area": 2048}) == 2048


def test_cache_filled_ahead_is_all_a_stage_needs(curriculum, tmp_path):
    """`python -m training.cache` encodes every medium the stage would (targets and references of every task
    with a share, references at the stage's area), so the stage then encodes nothing."""
    from training.cache import main as cache_main

    overrides = curriculum.overrides(1, tmp_path / "s1", **{"data.cache": str(tmp_path / "cache"),
                                                           "data.tasks": ALL_TASKS, "run.steps": 1})
    latents = tmp_path / "cache" / "latents"
    assert cache_main([str(CONFIGS / "stage1.toml"), *overrides, "--device", "cpu"]) == 0
    filled = sorted(latents.rglob("*.safetensors"))
    records = list(read_manifest(curriculum.manifest))
    assert len(filled) > len(records) and any(r.ref_images or r.ref_video for r in records)  # references too
    before = {f: f.stat().st_mtime_ns for f in filled}
    train(train_config.load(CONFIGS / "stage1.toml", overrides))
    assert {f: f.stat().st_mtime_ns for f in sorted(latents.rglob("*.safetensors"))} == before


def test_cache_shards_split_the_media_and_together_fill_them_all(curriculum, tmp_path):
    """`--shard K/N` processes encode disjoint parts of the stage's media; together they are the whole fill."""
    from training.cache import main as cache_main

    def fill(folder, *shard):
        overrides = curriculum.overrides(1, tmp_path / "s1", **{"data.cache": str(tmp_path / folder),
                                                               "data.tasks": ALL_TASKS})
        assert cache_main([str(CONFIGS / "stage1.toml"), *overrides, "--device", "cpu", *shard]) == 0
        return {f.relative_to(tmp_path / folder) for f in (tmp_path / folder / "latents").rglob("*.safetensors")}

    whole = fill("whole")
    first, second = fill("first", "--shard", "0/2"), fill("second", "--shard", "1/2")
    assert first and second and not first & second
    assert first | second == whole


def test_a_cache_shard_out_of_range_is_refused(capsys):
    from training.cache import main as cache_main

    assert cache_main([str(CONFIGS / "stage1.toml"), "--shard", "2/2"]) == 2
    assert "--shard '2/2': expected K/N with 0 <= K < N" in capsys.readouterr().err


def test_ema_forgets_the_starting_weights():
    """The EMA's decay warms up: after 2,000 updates at decay 0.999 the starting weights keep under 1e-6 of
    the average (a flat decay would keep 0.999^2000 = 13.5%), and the first update already moves 90% of the way."""
    from training import engine

    module = torch.nn.Module()
    module.transformer = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.transformer.weight.fill_(0.0)
    ema = engine.EMA(module, 0.999)
    with torch.no_grad():
        module.transformer.weight.fill_(1.0)
    ema.update(0)
    assert ema.shadow["transformer.weight"].item() == pytest.approx(0.9)
    for n in range(1, 2000):
        ema.update(n)
    assert 1 - ema.shadow["transformer.weight"].item() < 1e-6
    assert ema.decay_after(10**6) == 0.999  # the configured decay, once warm


def test_a_fitted_decay_ends_where_the_time_budget_runs_out():
    """run.fit_decay: after its first steps the loop moves the cosine's last step to where run.seconds runs out at
    the rate measured so far (capped at run.steps), and the optimizer's rate follows it."""

    from torch.optim.lr_scheduler import LambdaLR

    from training import engine

    optim = train_config.OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    factor = engine.lr_factor(optim, 1000)
    scheduler = LambdaLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), factor)
    fit = engine.DecayFit(factor, SimpleNamespace(steps=1000, seconds=100.0, fit_decay=True), 0, skip=10, window=20)
    assert fit.update(5, 3.0) is None and fit.update(10, 5.0) is None  # skipped, then the first point
    assert fit.update(20, 10.0) == 200  # 0.5 s a step, 90 s left: 180 steps more
    assert factor(200) == pytest.approx(0.1) and factor(105) == pytest.approx(0.55)
    assert scheduler.state_dict()["lr_lambdas"] == [None]  # a checkpoint keeps no stale end
    assert fit.update(30, 11.0) == 30 + int(89 / 0.3)  # the rate over the last 20 steps: (11 - 5) / 20
    assert fit.update(40, 12.0) == 40 + int(88 / 0.1)  # the slow first steps forgotten: (12 - 10) / 20
    assert fit.update(100, 13.0) == 1000  # faster steps: capped at run.steps
    for _ in range(40):
        scheduler.optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(factor(40)) and factor(40) > 0.99
    for seconds, enabled in ((0.0, True), (100.0, False)):  # no budget, or not asked for: the steps decide
        still = engine.DecayFit(factor, SimpleNamespace(steps=1000, seconds=seconds, fit_decay=enabled), 0, skip=0)
        assert still.update(10, 5.0) is None and still.update(20, 10.0) is None


def test_wsd_holds_the_rate_until_its_cooldown_then_decays_as_one_minus_sqrt():
    from training import engine

    optim = train_config.OptimConfig(warmup_steps=10, schedule="wsd", cooldown=0.2, min_lr_ratio=0.1)
    factor = engine.lr_factor(optim, 100)
    assert factor(4) == pytest.approx(0.5) and factor(10) == factor(79) == factor(80) == 1.0
    assert engine.cooldown_start(factor, optim) == 80
    assert factor(85) == pytest.approx(0.1 + 0.9 * 0.5) and factor(100) == pytest.approx(0.1)
    assert all(factor(s) >= factor(s + 1) for s in range(10, 120))
    factor.last = 300  # a later estimate of the last step moves the cooldown's start with it...
    assert engine.cooldown_start(factor, optim) == 240 and factor(200) == 1.0
    factor.cooling_from = 80  # ...until the loop fixes it where it wrote the trunk
    assert factor(80) == 1.0 and factor(190) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(0.5)))
    factor.cooling_from, factor.last = None, 10
    assert engine.cooldown_start(factor, optim) == 10  # never inside the warm-up
    with pytest.raises(VinoInputError, match="optim.cooldown"):
        train_config.load(CONFIGS / "stage0.toml", ["optim.schedule=wsd", "optim.cooldown=0"])


def test_a_wsd_run_writes_its_trunk_where_the_cooldown_begins(curriculum, tmp_path):
    """The trunk holds the weights after the steps at the full rate: the same as a constant-rate run of that many
    steps. A run that stops before its cooldown writes its last weights as the trunk."""
    changes = {"optim.warmup_steps": 1, "samples.every": 0, "checkpoint.every": 2, "log.every": 1}
    wsd, constant, stopped = tmp_path / "wsd", tmp_path / "constant", tmp_path / "stopped"
    train(train_config.load(CONFIGS / "stage0.toml", curriculum.overrides(
        0, wsd, **changes, **{"run.steps": 6, "optim.schedule": "wsd", "optim.cooldown": 0.5})))
    train(train_config.load(CONFIGS / "stage0.toml", curriculum.overrides(
        0, constant, **changes, **{"run.steps": 3, "optim.schedule": "constant"})))
    assert [r["step"] for r in records(wsd) if r.get("event") == "trunk"] == [3]
    lrs = {r["step"]: r["lr"] for r in records(wsd) if "lr" in r}
    assert lrs[2] == lrs[3] > lrs[4] > lrs[5] > lrs[6]
    trainer = json.loads((wsd / "checkpoints" / "step-00000004" / "trainer.json").read_text())
    assert trainer["cooling_from"] == 3 and trainer["sampler"]["cooled_from"] == 3  # data.cooldown_tasks from there
    trunk = load_file(wsd / "export" / "trunk.safetensors")
    same_steps = load_file(constant / "export" / "vino.safetensors")
    assert trunk.keys() == same_steps.keys() and all(torch.equal(trunk[k], same_steps[k]) for k in trunk)
    assert changed(trunk, load_file(wsd / "export" / "vino.safetensors"), "transformer.")

    train(train_config.load(CONFIGS / "stage0.toml", curriculum.overrides(
        0, stopped, **changes, **{"run.steps": 50, "run.seconds": 1e-6, "optim.schedule": "wsd"})))
    trunk, last = (load_file(stopped / "export" / name) for name in ("trunk.safetensors", "vino.safetensors"))
    assert all(torch.equal(trunk[k], last[k]) for k in last)


def test_compiled_blocks_train_the_same_steps_and_export_the_same_layout(curriculum, tmp_path):
    runs, cache = {}, tmp_path / "compiled.bin"
    for compiled in (False, True):
        out = tmp_path / f"compiled-{compiled}"
        changes = {"run.steps": 3, "model.compile": compiled, "model.compile_cache": str(cache), "samples.every": 0}
        runs[compiled] = (train(train_config.load(CONFIGS / "stage0.toml", curriculum.overrides(0, out, **changes))),
                          [r["loss"] for r in records(out) if "loss" in r])
    (plain, plain_losses), (compiled, compiled_losses) = runs[False], runs[True]
    assert compiled_losses == pytest.approx(plain_losses, rel=1e-3)
    assert load_file(compiled).keys() == load_file(plain).keys()
    assert cache.stat().st_size > 0 and not list(tmp_path.glob("*partial*"))

    # a new process with its own (empty) inductor cache takes most of its graphs from the file (one of the seven
    # compiles again on this CPU, as it does in a plain script)
    out = tmp_path / "from-cache"
    changes = {"run.steps": 3, "model.compile": True, "model.compile_cache": str(cache), "samples.every": 0}
    run = subprocess.run([sys.executable, "-m", "training.run", str(CONFIGS / "stage0.toml"),
                          *curriculum.overrides(0, out, **changes)], cwd=ROOT, capture_output=True, text=True,
                         env=fresh_env(TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"),
                                       OMP_NUM_THREADS=str(torch.get_num_threads())))  # CPU kernels: per thread count
    assert run.returncode == 0, run.stderr[-3000:]
    event = next(r for r in records(out) if r.get("event") == "compile cache")
    assert event["graphs_from_cache"] > 2 * event["graphs_compiled"], str(event)
    assert [r["loss"] for r in records(out) if "loss" in r] == pytest.approx(compiled_losses, rel=1e-3)


def test_evaluations_beside_compiled_blocks_compile_nothing(curriculum, tmp_path, monkeypatch):
    """The evaluation's one-sample, no-grad forwards run the compiled blocks eagerly: they would each compile
    graphs of their own (63 s of stage 3's first minutes in session 22), for a few seconds of use a run."""
    from torch._dynamo.utils import counters

    from training import loop

    compiled_during, evaluate = [], loop.evaluate

    def watched(*args, **kwargs):
        before = counters["stats"]["unique_graphs"]
        result = evaluate(*args, **kwargs)
        compiled_during.append(counters["stats"]["unique_graphs"] - before)
        return result

    monkeypatch.setattr(loop, "evaluate", watched)
    out = tmp_path / "run"
    changes = {"run.steps": 2, "model.compile": True, "eval.every": 1, "samples.every": 0}
    train(train_config.load(CONFIGS / "stage0.toml", curriculum.overrides(0, out, **changes)))
    assert compiled_during == [0, 0, 0]  # steps 0 and 1, and the end
    assert counters["stats"]["unique_graphs"] > 0  # the steps did compile
    assert len([r for r in records(out) if "eval_loss" in r]) == 3


def test_a_missing_or_damaged_compile_cache_costs_only_the_compiling(tmp_path, caplog):
    from vino_model.speedups import load_compile_cache

    damaged = tmp_path / "stage3.bin"
    damaged.write_bytes(b"not a cache")
    with caplog.at_level("INFO", logger="vino_model.speedups"):
        assert load_compile_cache(tmp_path / "none.bin") is False
        assert load_compile_cache(damaged) is False
    assert "not there yet" in caplog.text and f"{damaged} could not be read" in caplog.text
    assert damaged.read_bytes() == b"not a cache"  # left for the user to look at; the run's end overwrites it


def test_a_gzipped_compile_cache_is_read_where_the_file_itself_is_missing(tmp_path, monkeypatch):
    import gzip

    from vino_model.speedups import load_compile_cache

    given = []
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", lambda data: given.append(data) or "loaded")
    (tmp_path / "stage3.bin.gz").write_bytes(gzip.compress(b"artifacts"))
    assert load_compile_cache(tmp_path / "stage3.bin") is True
    (tmp_path / "stage3.bin").write_bytes(b"newer artifacts")  # the file itself, once a run wrote it, comes first
    assert load_compile_cache(tmp_path / "stage3.bin") is True
    assert given == [b"artifacts", b"newer artifacts"]


def test_a_spent_time_budget_ends_the_run_with_a_checkpoint_and_an_export(curriculum, tmp_path):
    out = tmp_path / "run"
    cfg = train_config.load(CONFIGS / "stage0.toml", curriculum.overrides(
        0, out, **{"run.steps": 50, "run.seconds": 1e-6, "samples.every": 0}))
    train(cfg)
    logged = records(out)
    assert max(r["step"] for r in logged if "loss" in r) == 1  # the first step is past any budget
    assert [r["step"] for r in logged if r.get("event") == "out of time"] == [1]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000001"
    assert (out / "export" / "vino.safetensors").exists()
    with pytest.raises(VinoInputError, match="run.seconds"):
        train_config.load(CONFIGS / "stage0.toml", curriculum.overrides(0, out, **{"run.seconds": -1}))


def test_a_run_with_checkpoints_off_trains_and_writes_no_weights(curriculum, tmp_path):
    out = tmp_path / "throughput"
    cfg = train_config.load(CONFIGS / "stage0.toml", curriculum.overrides(
        0, out, **{"run.steps": 2, "checkpoint.every": 1, "checkpoint.enabled": False, "samples.every": 0}))
    train(cfg)
    assert [r["step"] for r in records(out) if "loss" in r] == [1, 2]
    assert not (out / "checkpoints").exists() and not (out / "export").exists()


def test_the_contrast_term_runs_twins_under_the_same_noise_and_asks_their_loss_to_stand_a_margin_above():
    """flow.contrast: samples whose caption has wrong twins go through again under them, with their own latents,
    noise and t, each kind's rows from the noisiest sample down; the objective adds max(0, margin of the twin's
    kind - (twin's loss - own loss)), and the step reports the plain loss and each twin's gap, which the log's
    window averages by kind."""

    from training.config import FlowConfig
    from training.data import Batch, Context
    from training.loop import Window, train_step, with_twins

    contexts = [Context("a", [], None, None, ("ra", "a", (), False), (("places", "a twin"),)),
                Context("b", [], None, None, ("rb", "b", (), False)),
                Context("c", [], None, None, ("rc", "c", (), False), (("binding", "c twin"), ("places", "c twin 2")))]
    batch = Batch(torch.arange(3.0).view(3, 1, 1, 1, 1).expand(3, 2, 1, 2, 2).clone(), [[], [], []], contexts,
                  ["t2i"] * 3)
    seen, objectives = [], []

    def ds(x0, noise, t, references, given):
        seen.append((x0, noise, t, given))
        return torch.tensor([1.01 if "twin" in c.text else 1.0 for c in given]), 7

    ds.backward, ds.step = objectives.append, lambda: None
    data = SimpleNamespace(next_batch=lambda rng: batch)
    clock = SimpleNamespace(lap=lambda phase: None)
    margins = {"binding": 0.02, "places": 0.05}
    rows = {"binding": 1, "places": 1, "sizes": 1, "count": 1}
    for weight, grown in ((0.0, 3), (2.0, 7)):
        seen.clear(), objectives.clear()
        cfg = SimpleNamespace(optim=SimpleNamespace(accumulation=1), run=SimpleNamespace(seed=0),
                              flow=FlowConfig(contrast=weight, contrast_margin=margins, contrast_samples=rows))
        loss, tokens, gaps = train_step(ds, data, cfg, 1, 0, "cpu", clock)
        (x0, noise, t, given), = seen
        assert len(given) == len(x0) == len(noise) == len(t) == grown
        assert float(loss) == pytest.approx(1.0) and tokens == 7
    twins = {0: [("places", "a twin")], 2: [("binding", "c twin"), ("places", "c twin 2")]}
    order = sorted(twins, key=lambda i: -float(t[i]))
    assert t[order[0]] != t[order[1]]
    # binding's row and places' (its noisiest twin), then the rows sizes and count leave empty: the other places
    # twin, then the first again
    taken = [(2, ("binding", "c twin"))] + [(i, twin) for i in order for twin in twins[i] if twin[0] == "places"]
    taken += taken[:1]
    hinge = sum(margins[kind] - 0.01 for _, (kind, _) in taken) / len(taken)
    assert float(objectives[0]) == pytest.approx(1.0 + 2.0 * hinge)
    (kinds, gap), = gaps
    assert kinds == [kind for _, (kind, _) in taken] and gap.tolist() == pytest.approx([0.01] * 4)
    window = Window()
    window.add(1, loss, tokens, None, gaps)
    window.add(2, loss, tokens, None, [(["sizes", "places"], torch.tensor([0.03, 0.05]))])
    *_, by_kind = window.settle(False, None, None)
    assert by_kind == pytest.approx({"twin_gap_binding": 0.01, "twin_gap_places": 0.07 / 3, "twin_gap_sizes": 0.03})
    assert [(c.text, c.key[1]) for c in given[3:]] == [(text, text) for _, (_, text) in taken]
    for row, (own, _) in zip(range(3, 7), taken):
        assert torch.equal(x0[row], x0[own]) and torch.equal(noise[row], noise[own]) and t[row] == t[own]
    rows = {"binding": 1, "places": 2, "sizes": 1, "count": 1}  # places' two after c's binding, its kind first
    grown, _, _, which = with_twins(batch, torch.zeros(3, 2, 1, 2, 2), torch.tensor([0.2, 0.5, 0.9]), rows)
    assert which == [(2, "binding"), (2, "places"), (0, "places"), (2, "binding"), (2, "places")]
    assert [c.text for c in grown.contexts[3:]] == ["c twin", "c twin 2", "a twin", "c twin", "c twin 2"]
    rows = {"binding": 0, "places": 2, "sizes": 1, "count": 1}  # a kind of 0 rows is off: no binding twin
    grown, _, _, which = with_twins(batch, torch.zeros(3, 2, 1, 2, 2), torch.tensor([0.2, 0.5, 0.9]), rows)
    assert which == [(2, "places"), (0, "places"), (2, "places"), (0, "places")]
    assert [c.text for c in grown.contexts[3:]] == ["c twin 2", "a twin", "c twin 2", "a twin"]


def test_embedded_motion_gap_compares_each_held_out_clone_with_the_next_of_another_motion(curriculum, tmp_path,
                                                                                          capsys):
    """benchmarks/embedded_motion_gap.py on a stage-3 export: one comparison per clone that has a partner of another
    motion, at each of MOTION_GAP_TIMES, a positive loss under the clones' own videos and a finite gap."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from embedded_motion_gap import main as motion_gap_main

    from training.loop import MOTION_GAP_TIMES, motion_partners
    from training.world import reference_motion

    records = write_split(str(tmp_path / "held"), per_task=6, width=32, height=32, frames=5, tasks=("clone",),
                          split="heldout")
    motions = [SimpleNamespace(motion=reference_motion(r.meta)) for r in records]
    assert len({m.motion for m in motions}) > 1
    overrides = [o for o in curriculum.overrides(3, tmp_path / "run") if not o.startswith("model.init=")]
    motion_gap_main(["--init", str(curriculum.export(3)), "--config", str(CONFIGS / "stage3.toml"),
                     "--data", str(tmp_path / "held"), "--samples", "6", "--set", *overrides])
    name, own, gap, count, *first = capsys.readouterr().out.splitlines()[-1].split()
    assert name.endswith("vino.safetensors") and float(own) > 0 and math.isfinite(float(gap))
    assert int(count) == len(motion_partners(motions)) * len(MOTION_GAP_TIMES)
    readings = [[int(n) for n in column.split("/")] for column in first]  # own video / swapped, by reading
    assert len(readings) == 4 and sum(own for own, _ in readings) == len(records)
    assert sum(swapped for _, swapped in readings) == len(motion_partners(motions))


def test_embedded_reference_gap_reads_each_two_object_ti2v_sample_four_ways(curriculum, tmp_path, capsys):
    """benchmarks/embedded_reference_gap.py on a stage-3 export: for each two-object ti2v sample of two motions, the
    own loss and the gaps of its labels twin, its images in the other order and both, at each t; the labels and the
    images' order changes what the model reads (a gap of exactly 0 would be an input left as it was). The labels need
    not: this tiny model's labels twin costs it 0 to 3e-6."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from embedded_reference_gap import READINGS, main as reference_gap_main, reference_gaps
    from embedded_motion_gap import load

    from training.world import swap_labels

    records = write_split(str(tmp_path / "held"), per_task=12, width=32, height=32, frames=5, tasks=("ti2v",),
                          split="heldout")
    twinned = [r for r in records if swap_labels(r.caption_long, r.meta)]
    assert twinned
    overrides = [o for o in curriculum.overrides(3, tmp_path / "run") if not o.startswith("model.init=")]
    trainee, data, samples = load(str(curriculum.export(3)), str(CONFIGS / "stage3.toml"), twinned,
                                  [*overrides, "data.long_caption=1.0"], "cpu", tasks=("ti2v",))
    gaps = reference_gaps(trainee, data, samples, [0.5, 1.0], "cpu")
    assert set(gaps) == {"own", *READINGS} and all(v.shape == (len(twinned), 2) for v in gaps.values())
    assert (gaps["own"] > 0).all() and all(np.isfinite(v).all() for v in gaps.values())
    assert (gaps["order"] != 0).all() and (gaps["both"] != 0).all()  # the images do go in the other order
    reference_gap_main(["--init", str(curriculum.export(3)), "--config", str(CONFIGS / "stage3.toml"),
                        "--data", str(tmp_path / "held"), "--times", "0.5", "1", "--set", *overrides])
    out = capsys.readouterr().out.splitlines()
    assert f"{len(twinned)} two-object ti2v samples; mean loss increase" in "\n".join(out)
    assert all(f"{name} [" in out[-1] for name in READINGS)
    write_split(str(tmp_path / "images"), per_task=1, width=32, height=32, frames=5, tasks=("t2i",))
    with pytest.raises(VinoInputError, match="no ti2v sample of two objects moving apart"):
        reference_gap_main(["--init", str(curriculum.export(3)), "--data", str(tmp_path / "images")])


def test_embedded_shape_gap_reads_each_replacement_under_its_wrong_new_objects(curriculum, tmp_path, capsys):
    """benchmarks/embedded_shape_gap.py on a stage-3 export: for each ti2i and tv2v replacement, the own loss and the
    gaps of the instruction naming the new object with the old one's shape and colour, at each t; a twin changes
    what the model reads (a gap of exactly 0 would be the own instruction again), and a replacement that keeps the
    colour has no colour twin (NaN)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from embedded_motion_gap import load
    from embedded_shape_gap import TASKS, TWINS, main as shape_gap_main, replacements, shape_gaps

    write_split(str(tmp_path / "held"), per_task=16, width=32, height=32, frames=5, tasks=TASKS, split="heldout")
    records = replacements(read_manifest(str(tmp_path / "held" / "manifest.jsonl")), 3)
    assert {r.task for r in records} == set(TASKS)
    overrides = [o for o in curriculum.overrides(3, tmp_path / "run") if not o.startswith("model.init=")]
    trainee, data, samples = load(str(curriculum.export(3)), str(CONFIGS / "stage3.toml"), records,
                                  [*overrides, "data.long_caption=1.0"], "cpu", tasks=TASKS)
    gaps = shape_gaps(trainee, data, samples, [0.5, 1.0], "cpu")
    assert set(gaps) == {"own", *TWINS} and all(v.shape == (len(records), 2) for v in gaps.values())
    assert (gaps["own"] > 0).all() and (gaps["new_shape"] != 0).all()
    same_color = [i for i, s in enumerate(samples) if REFERENCE_SWAPS["new_color"](s.record.caption_long,
                                                                                    s.record.meta) is None]
    assert all(np.isnan(gaps["new_color"][i]).all() for i in same_color)
    assert np.isfinite(np.delete(gaps["new_color"], same_color, axis=0)).all()
    shape_gap_main(["--init", str(curriculum.export(3)), "--config", str(CONFIGS / "stage3.toml"),
                    "--data", str(tmp_path / "held"), "--samples", "3", "--times", "0.5", "1", "--set", *overrides])
    out = capsys.readouterr().out
    assert f"{len(records)} replacements; mean loss increase" in out
    assert all(f" {task} (" in out for task in TASKS) and "new_shape [" in out
    write_split(str(tmp_path / "images"), per_task=1, width=32, height=32, frames=5, tasks=("t2i",))
    with pytest.raises(VinoInputError, match="no ti2i or tv2v replacement"):
        shape_gap_main(["--init", str(curriculum.export(3)), "--data", str(tmp_path / "images")])


def test_embedded_task_pull_is_the_first_order_change_of_the_gap_under_a_step_on_the_task(curriculum, tmp_path,
                                                                                        capsys, monkeypatch):
    """benchmarks/embedded_task_pull.py on a stage-3 export: the count gap is the twin caption's loss minus the own
    one at the same noise (as embedded_motion_gap.same_noise_losses reads them), and a task's pull is how a small
    plain gradient step down its loss moves the quantity set against it, to first order. That is checked on the
    count scenes' own loss: this tiny model's count gap is about 1e-6, within float32's rounding of its changes."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import embedded_task_pull
    from embedded_motion_gap import load, same_noise_losses

    from training.world import count_copies

    write_split(str(tmp_path / "held"), per_task=12, width=32, height=32, frames=5, tasks=("t2i", "ti2i"),
                split="heldout")
    records = list(read_manifest(str(tmp_path / "held" / "manifest.jsonl")))
    overrides = [o for o in curriculum.overrides(3, tmp_path / "run") if not o.startswith("model.init=")]
    trainee, data, samples = load(str(curriculum.export(3)), str(CONFIGS / "stage3.toml"), records,
                                  [*overrides, "data.long_caption=1.0"], "cpu", tasks=("t2i", "ti2i"))
    counted = [i for i, s in enumerate(samples) if s.record.task == "t2i"
               and count_copies(s.record.meta["scene"]["objects"])]
    assert counted
    with torch.no_grad():
        gaps = embedded_task_pull.count_gap(trainee, data, samples, counted, [0.5, 0.9], "cpu")
        for k, i in enumerate(counted):
            x0, references, context, task = data.load(samples[i], np.random.default_rng(i), dropout=False)
            own = dataclasses.replace(context, key=None, twins=())
            twin = dataclasses.replace(own, text=dict(context.twins)["count"])
            losses = same_noise_losses(trainee, x0, [references] * 2, [own, twin], task, [0.5, 0.9], i, "cpu")
            assert [g.item() for g in gaps[2 * k : 2 * k + 2]] == pytest.approx(losses[:, 1] - losses[:, 0], abs=1e-6)

    def own_loss(trainee, data, samples, counted, times, device):
        return [x for i in counted for x in embedded_task_pull.sample_losses(trainee, data, samples[i], i, times,
                                                                             device)]

    monkeypatch.setattr(embedded_task_pull, "count_gap", own_loss)
    pulls = embedded_task_pull.task_pulls(trainee, data, samples, counted, 2, [0.9], "cpu")
    assert set(pulls) == {"gap", "t2i", "ti2i"}
    params = [p for p in trainee.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    for task in ("t2i", "ti2i"):
        loss, pull, cosine = pulls[task]
        assert loss > 0 and -1 <= cosine <= 1 and pull != 0
        chosen = [i for i, s in enumerate(samples) if s.record.task == task][:2]
        losses = [x for i in chosen for x in embedded_task_pull.sample_losses(trainee, data, samples[i], i, [0.9],
                                                                              "cpu")]
        grads = torch.autograd.grad(torch.stack(losses).mean(), params, allow_unused=True)
        step = 1e-3 / abs(pull)  # moves the own loss by 1e-3, far above float32's rounding
        moved = []
        with torch.no_grad():
            for sign in (1, -1):  # down the task's gradient and up it: their difference cancels the second order
                for p, b, g in zip(params, before, grads):
                    if g is not None:
                        p.copy_(b - sign * step * g)
                moved.append(torch.stack(own_loss(trainee, data, samples, counted, [0.9], "cpu")).mean().item())
            for p, b in zip(params, before):
                p.copy_(b)
        assert (moved[0] - moved[1]) / 2 == pytest.approx(step * pull, rel=0.05)
    monkeypatch.undo()
    embedded_task_pull.main(["--init", str(curriculum.export(3)), "--config", str(CONFIGS / "stage3.toml"), "--data",
                             str(tmp_path / "held"), "--samples", "2", "--count-samples", "2", "--times", "0.9",
                             "--set", *overrides])
    out = capsys.readouterr().out
    assert "count gap" in out and "| t2i | 2 |" in out and "| ti2i | 2 |" in out


def test_the_first_step_readout_finds_each_clone_s_motion_for_a_model_that_draws_its_own_target(curriculum,
                                                                                               tmp_path):
    """benchmarks/embedded_motion_gap.py's readout: the targets it draws again under every motion hold each clone's
    own (as the data pipeline encodes it), so a model that predicts each clone's own target whatever the video is
    read as drawing its own video's motion every time, and the swapped video's never."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from embedded_motion_gap import load, readout

    from training.loop import motion_partners, motion_samples

    records = write_split(str(tmp_path / "held"), per_task=6, width=32, height=32, frames=5, tasks=("clone",),
                          split="heldout")
    overrides = [o for o in curriculum.overrides(3, tmp_path / "run") if not o.startswith("model.init=")]
    _, data, samples = load(str(curriculum.export(3)), str(CONFIGS / "stage3.toml"), records, overrides, "cpu")
    loaded = motion_samples(data, samples, long_caption=True)
    targets = {one.context.text: one.x0 for one in loaded}
    assert len(loaded) == len(records) == len(targets)

    def copier(x0, noise, t, references, contexts):  # the loss at t = 1 of a model whose x0 is the clone's own
        assert torch.all(t == 1)
        return ((x0 - torch.stack([targets[c.text] for c in contexts])) ** 2).flatten(1).mean(1), None

    tally = readout(copier, data, samples, "cpu")
    partners = len(motion_partners([one.context for one in loaded]))
    assert tally["own right"] == len(records) and partners > 0
    assert tally["swapped right"] == 0 and sum(v for k, v in tally.items() if k.startswith("swapped")) == partners


def test_a_motion_twin_reads_its_sample_under_the_next_reference_video_of_another_motion():
    """flow.contrast's "motion" twin: a sample with a reference motion goes through again with its own caption,
    images, latents, noise and t, but the video (the VLM's and the MMDiT's: the references' last) of the batch's next
    sample of another motion; a clone batch's rows all go to them, from the noisiest sample down."""
    from training.data import Batch, Context
    from training.loop import motion_partners, with_twins

    contexts = [Context("a", ["ia"], "va", 8.0, ("ra", "a", (0,), True), motion="left slow"),
                Context("b", ["ib"], "vb", 8.0, ("rb", "b", (0,), True), motion="left slow"),
                Context("c", ["ic"], "vc", 8.0, ("rc", "c", (0,), True), motion="up fast"),
                Context("", [], None, None, ("rd", "", (), False))]  # its video dropped: no motion
    assert motion_partners(contexts) == [(0, 2), (1, 2), (2, 0)]
    assert motion_partners(contexts[:2]) == []  # one motion in the batch: no twin
    refs = [[torch.full((1, 1, 1, 1), 10.0 * i), torch.full((1, 2, 1, 1), 10.0 * i + 1)] for i in range(3)]
    refs.append([torch.full((1, 1, 1, 1), 30.0)])
    latents = torch.arange(4.0).view(4, 1, 1, 1, 1)
    t = torch.tensor([0.3, 0.9, 0.5, 0.99])
    rows = {"binding": 2, "places": 0, "motion": 1}
    grown, noise, t_grown, which = with_twins(Batch(latents, refs, contexts, ["clone"] * 4), latents.clone(), t, rows)
    assert which == [(1, "motion"), (2, "motion"), (0, "motion")]  # the noisiest first; the row quota's rest filled
    twins = grown.contexts[4:]
    assert [(c.text, c.images, c.video, c.key) for c in twins] == [
        ("b", ["ib"], "vc", ("rb", "b", (0,), "rc")), ("c", ["ic"], "va", ("rc", "c", (0,), "ra")),
        ("a", ["ia"], "vc", ("ra", "a", (0,), "rc"))]
    for row, (own, other) in zip(range(4, 7), ((1, 2), (2, 0), (0, 2))):
        assert grown.references[row][0] is refs[own][0] and grown.references[row][1] is refs[other][1]
        assert grown.latents[row] == latents[own] and noise[row] == latents[own] and t_grown[row] == t[own]
        assert grown.tasks[row] == "clone"
    # under flow.contrast_min_t only samples at t >= the kind's floor take its twins: here the one at 0.9
    _, _, t_floored, floored = with_twins(Batch(latents, refs, contexts, ["clone"] * 4), latents.clone(), t, rows,
                                          {"motion": 0.85})
    assert floored == [(1, "motion")] * 3 and t_floored[4:].tolist() == pytest.approx([0.9] * 3)
    assert with_twins(Batch(latents, refs, contexts, ["clone"] * 4), latents.clone(), t, rows,
                      {"motion": 0.995})[3] == []  # none that noisy: the batch as it is
    assert with_twins(Batch(latents, refs, contexts, ["clone"] * 4), latents.clone(), t,
                      {**rows, "motion": 0})[3] == []  # motion twins off: binding's rows find no caption twin


def test_an_order_twin_reads_its_sample_with_its_two_images_the_other_way_round():
    """flow.contrast's "order" twin: a two-object ti2v sample goes through again under its own caption, latents,
    noise and t, with its two images reversed for the VLM, in its memo key and among the MMDiT's references."""
    from training.data import Batch, Context
    from training.loop import with_twins

    contexts = [Context("a", ["i1", "i2"], None, None, ("ra", "a", (0, 1), False), twins=(("order", "a"),)),
                Context("b", ["j1"], None, None, ("rb", "b", (0,), False))]
    refs = [[torch.full((1, 1, 1, 1), 1.0), torch.full((1, 1, 1, 1), 2.0)], [torch.full((1, 1, 1, 1), 3.0)]]
    latents = torch.arange(2.0).view(2, 1, 1, 1, 1)
    grown, noise, t_grown, which = with_twins(Batch(latents, refs, contexts, ["ti2v"] * 2), latents.clone(),
                                              torch.tensor([0.9, 0.5]), {"order": 1, "labels": 1})
    assert which == [(0, "order")] * 2  # labels' row finds no labels twin and goes to the order twin
    twin = grown.contexts[2]
    assert (twin.text, twin.images, twin.key) == ("a", ["i2", "i1"], ("ra", "a", (1, 0), False))
    assert grown.references[2][0] is refs[0][1] and grown.references[2][1] is refs[0][0]
    assert grown.latents[2] == latents[0] and noise[2] == latents[0] and t_grown[2] == pytest.approx(0.9)


def test_a_run_waits_for_a_fill_of_its_manifests_before_it_indexes_the_cache(curriculum, tmp_path):
    """`python -m training.cache` beside a run: the run's index waits until the fill of its own manifest is done
    (no medium encoded twice) and logs the wait in its start event."""
    out = tmp_path / "run"
    cfg = train_config.load(CONFIGS / "stage0.toml", curriculum.overrides(
        0, out, **{"run.steps": 1, "samples.every": 0, "eval.every": 0, "data.cache": str(tmp_path / "cache")}))
    filler = LatentCache(cfg.data.cache, None, cfg.model.vae, cfg.data.vae_dtype)
    held, release = threading.Event(), threading.Event()

    def fill():
        with filler.filling(cfg.data.manifest):
            held.set()
            release.wait(30)

    class ReleaseOnceWaiting(logging.Handler):  # the fill ends 1 s after the run begins to wait for it
        def emit(self, record):
            if record.getMessage().startswith("waiting for the processes filling"):
                threading.Timer(1.0, release.set).start()

    thread = threading.Thread(target=fill)
    thread.start()
    assert held.wait(10)
    logger, handler = logging.getLogger("vino.train"), ReleaseOnceWaiting()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        train(cfg)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        release.set()
        thread.join(10)
    start = next(r for r in records(out) if r.get("event") == "start")
    assert start["waited_for_fills"] >= 1.0
