"""Training data and config: buckets, the content-keyed latent cache, skipped media, the sampler, dropout."""

import dataclasses
import json
import os
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from training import config as train_config
from training import data as data_module
from training import prefill as prefill_module
from training.config import DataConfig
from training.data import Batch, LatentCache, Sampler, TrainData, bucket_size, build_index, fillable, target_spec
from training.engine import deepspeed_config
from training.loop import model_inputs, motion_twin
from training.manifest import read_manifest
from training.prefill import prefill, record_contexts
from training.world import DIRECTIONS, SPEEDS, reference_motion, write_split
from vino_model.encoder import MEDIA_PROCESSORS, InterleavedEncoder, MMEncoder
from vino_model.errors import VinoInputError
from vino_model.tiny_qwen import make_tiny_qwen3vl
from vino_model.vae import make_tiny_vae

REFERENCE_AREA = 64 * 64
ROOT = Path(__file__).resolve().parents[1]


class CountingVAE:
    """The tiny VAE, counting the media it encodes (a batch counts each of its items)."""

    def __init__(self):
        self.vae, self.calls, self.batches = make_tiny_vae(), 0, 0
        self.device = self.vae.device

    def encode(self, pixels, *args, **kwargs):
        self.calls += pixels.shape[0]
        self.batches += 1
        return self.vae.encode(pixels, *args, **kwargs)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One sample of every task, a VAE file, and the latent cache of it all (built once)."""
    folder = tmp_path_factory.mktemp("world")
    write_split(str(folder), per_task=1, width=32, height=32, frames=5)
    vae_file = folder / "vae.safetensors"
    make_tiny_vae().save(vae_file)
    records = list(read_manifest(str(folder / "manifest.jsonl")))
    cache = LatentCache(folder / "cache", CountingVAE(), vae_file, "float32")
    samples, skipped = index(records, cache)
    return records, vae_file, cache, samples, skipped


def data_config(**changes) -> DataConfig:
    tasks = dict.fromkeys(["t2i", "t2v", "i2v", "ti2v", "ti2i", "ti2i_ref", "tv2v", "tiv2v", "clone"], 1.0)
    return dataclasses.replace(DataConfig(area=1024, frames=[1, 5], batch_size=2, tasks=tasks), **changes)


def index(records, cache, cfg=None):
    return build_index(records, cfg or data_config(), cache, REFERENCE_AREA, 0, 1, lambda obj: [obj])


def test_buckets_keep_the_aspect_ratio_and_area():
    assert bucket_size(1920, 1080, 480 * 848, DataConfig().aspect_ratios) == (848, 480)
    for width, height in [(1000, 750), (600, 1000), (1024, 1024), (2100, 900)]:
        w, h = bucket_size(width, height, 480 * 848, DataConfig().aspect_ratios)
        assert w % 16 == 0 and h % 16 == 0
        assert abs(w * h / (480 * 848) - 1) < 0.05
        assert abs(np.log((w / h) / (width / height))) < 0.1


def test_video_targets_take_the_longest_4k_plus_1_count_they_have(world):
    records = world[0]
    t2v = next(r for r in records if r.task == "t2v")
    cfg = data_config(frames=[1, 5, 9])
    assert target_spec(dataclasses.replace(t2v, frames=13), cfg, REFERENCE_AREA)["frames"] == 9
    assert target_spec(dataclasses.replace(t2v, frames=5), cfg, REFERENCE_AREA) == {
        "fit": "cover", "width": 32, "height": 32, "frames": 5}
    with pytest.raises(VinoInputError, match="fewer than every video count"):
        target_spec(dataclasses.replace(t2v, frames=5), data_config(frames=[1, 9]), REFERENCE_AREA)
    tv2v = next(r for r in records if r.task == "tv2v")
    assert target_spec(tv2v, cfg, REFERENCE_AREA)["fit"] == "video"


def test_cache_runs_the_vae_once_per_file_and_is_keyed_by_content(world, tmp_path):
    records, vae_file, cache, samples, skipped = world
    vae = cache.vae
    assert len(samples) == len(records) and not skipped
    files = sum(1 + len(r.ref_images) + (r.ref_video is not None) for r in records)
    assert vae.calls == files
    # buckets: one target latent shape per batch; a 5-frame 32x32 video is [16, 2, 4, 4]
    assert {s.shape for s in samples if s.record.task == "t2v"} == {(16, 2, 4, 4)}

    again = LatentCache(cache.folder, vae, vae_file, "float32")
    assert [s.target for s in index(records, again)[0]] == [s.target for s in samples]
    assert vae.calls == files  # every latent came from the cache

    t2i = next(r for r in records if r.task == "t2i")
    moved = tmp_path / "renamed.png"
    shutil.copy(t2i.target, moved)
    spec = target_spec(t2i, data_config(), REFERENCE_AREA)
    assert cache.ensure(moved, spec)[0] == samples[records.index(t2i)].target and vae.calls == files
    with open(moved, "ab") as f:
        f.write(b"changed")  # new content, new key
    assert cache.key(moved, spec) != samples[records.index(t2i)].target
    other_dtype = LatentCache(cache.folder, vae, vae_file, "bfloat16")
    assert other_dtype.key(t2i.target, spec) != cache.key(t2i.target, spec)
    latent = cache.load(samples[0].target)
    assert latent.dtype == torch.float32 and tuple(latent.shape) == samples[0].shape


def test_cache_fill_batches_media_of_one_shape_and_matches_one_at_a_time(world, tmp_path):
    records, vae_file, cache, samples, _ = world
    assert cache.vae.batches < cache.vae.calls  # the fixture's index encoded several media per VAE call
    single = LatentCache(tmp_path / "single", make_tiny_vae(), vae_file, "float32")
    for sample in samples[:6]:
        spec = target_spec(sample.record, data_config(), REFERENCE_AREA)
        key, _ = single.ensure(sample.record.target, spec)
        assert key == sample.target
        torch.testing.assert_close(single.load(key), cache.load(key), atol=1e-5, rtol=1e-4)
    memory = LatentCache(cache.folder, cache.vae, vae_file, "float32", keep_in_memory=True)
    first = memory.load(samples[0].target)
    memory.file(samples[0].target).rename(tmp_path / "moved")  # a loaded latent no longer needs its file
    try:
        assert memory.load(samples[0].target) is first
    finally:
        (tmp_path / "moved").rename(memory.file(samples[0].target))


def test_cache_fill_reports_a_failed_write(world, tmp_path, monkeypatch):
    """The fill's latents are written on their own thread: a write that fails stops the fill with its error."""
    records, vae_file, _, _, _ = world
    cache = LatentCache(tmp_path / "cache", make_tiny_vae(), vae_file, "float32")
    stored = cache._store

    def store(key, *args):
        if len(list(cache.folder.glob("latents/*/*.safetensors"))) == 3:
            raise OSError("disk full")
        stored(key, *args)

    monkeypatch.setattr(cache, "_store", store)
    items = [item for record in records for item in fillable(record, data_config(), REFERENCE_AREA)]
    with pytest.raises(OSError, match="disk full"):
        cache.fill(items, batch_size=2)
    assert len(list(cache.folder.glob("latents/*/*.safetensors"))) == 3
    assert not list(cache.folder.glob("latents/*/*.partial*"))


def test_read_ahead_keeps_order_and_holds_at_most_its_window():
    """The cache fill reads media on threads while the VAE encodes: however slow the encoding, no more than
    the window of decoded media waits in memory (pool.map would read everything ahead)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from training.data import read_ahead

    read, lock = [], threading.Lock()

    def decode(job):
        with lock:
            read.append(job)
        return job * 10

    with ThreadPoolExecutor(4) as pool:
        results = []
        for result in read_ahead(pool, decode, range(40), 6):
            time.sleep(0.01)  # a slow encoder
            with lock:
                assert len(read) <= len(results) + 1 + 6
            results.append(result)
    assert results == [j * 10 for j in range(40)]


def test_unreadable_media_are_skipped_and_counted(world, tmp_path, caplog):
    records, _, cache, samples, _ = world
    broken = []
    for task, name in (("t2i", "garbage.png"), ("t2v", "truncated.mp4")):
        record = next(r for r in records if r.task == task)
        path = tmp_path / name
        path.write_bytes(open(record.target, "rb").read()[:40] if task == "t2v" else b"not an image")
        broken.append(dataclasses.replace(record, id=f"broken-{task}", target=str(path)))
    kept, skipped = index(records + broken, cache)
    assert len(kept) == len(records) and skipped == {"t2i": 1, "t2v": 1}
    assert "skipped 2 of" in caplog.text and "broken-t2v" in caplog.text

    # a reference that turns unreadable after indexing is skipped when a batch loads it
    ti2i = next(s for s in samples if s.record.task == "ti2i")
    copy = tmp_path / "image.png"
    shutil.copy(ti2i.record.ref_images[0], copy)
    broken_later = dataclasses.replace(ti2i, record=dataclasses.replace(ti2i.record, ref_images=[str(copy)]))
    copy.write_bytes(b"broken later")
    data = TrainData([broken_later, ti2i], cache, data_config(tasks={"ti2i": 1.0}), REFERENCE_AREA, 0, 0, 1, True)
    batch = data.next_batch(np.random.default_rng(0))
    assert data.skipped == 1 and len(batch.tasks) == 1
    data = TrainData([broken_later], cache, data_config(tasks={"ti2i": 1.0}), REFERENCE_AREA, 0, 0, 1, True)
    with pytest.raises(VinoInputError, match="in a row had no readable sample"):
        data.next_batch(np.random.default_rng(0))


def test_sampler_is_deterministic_resumable_and_split_over_ranks(world):
    samples = world[3]
    shares = {"t2i": 1.0, "t2v": 2.0, "ti2v": 1.0}
    draws = lambda sampler, n: [[s.position for s in sampler.next()] for _ in range(n)]  # noqa: E731

    first = Sampler(samples, shares, 1, 0, 0, 1)
    run = draws(first, 12)
    assert {samples[b[0]].record.task for b in run} <= set(shares)
    replay = Sampler(samples, shares, 1, 0, 0, 1)
    draws(replay, 5)
    resumed = Sampler(samples, shares, 1, 0, 0, 1)
    resumed.state = json.loads(json.dumps(replay.state))
    assert draws(resumed, 7) == run[5:]

    twice = samples + [dataclasses.replace(s, position=len(samples) + s.position) for s in samples]
    ranks = [Sampler(twice, shares, 1, 0, rank, 2) for rank in (0, 1)]
    for _ in range(6):  # the same task on both ranks, never the same sample
        first, second = (r.next()[0] for r in ranks)
        assert first.record.task == second.record.task and first.position != second.position




def test_image_buckets_take_their_own_batch_size():
    samples = [SimpleNamespace(record=SimpleNamespace(task=task), shape=(16, frames, 8, 8))
               for task, frames in [("t2i", 1)] * 10 + [("t2v", 5)] * 10]
    sampler = Sampler(samples, {"t2i": 1.0, "t2v": 1.0}, 2, 0, 0, 1, image_batch_size=4)
    sizes = {"t2i": set(), "t2v": set()}
    for _ in range(30):
        batch = sampler.next()
        sizes[batch[0].record.task].add(len(batch))
    assert sizes == {"t2i": {4, 2}, "t2v": {2}}  # 10 images: 4, 4 and the last 2
    plain = Sampler(samples, {"t2i": 1.0}, 2, 0, 0, 1)  # 0: the same as batch_size
    assert {len(plain.next()) for _ in range(10)} == {2}
    with pytest.raises(VinoInputError, match="image_batch_size"):
        train_config.check(train_config.build({"model": {"qwen": "q", "vae": "v"},
                                               "data": {"manifest": ["m"], "image_batch_size": -1}}))


def test_the_cooldown_draws_by_its_own_shares_and_resumes_there():
    samples = [SimpleNamespace(record=SimpleNamespace(task=task), shape=(16, 1, 8, 8))
               for task in ["t2i", "t2v", "ti2i"] * 4]
    shares = {"t2i": 1.0, "t2v": 1.0, "ti2i": 1.0}
    tasks = lambda sampler, n: [sampler.next()[0].record.task for _ in range(n)]  # noqa: E731
    sampler = Sampler(samples, shares, 1, 0, 0, 1, cooldown_shares={"t2v": 0.0, "ti2i": 0.0})
    before = tasks(sampler, 30)
    assert set(before) == set(shares)  # until the cooldown, the mixture
    sampler.cool()
    assert tasks(sampler, 30) == ["t2i"] * 30
    resumed = Sampler(samples, shares, 1, 0, 0, 1, cooldown_shares={"t2v": 0.0, "ti2i": 0.0})
    resumed.state = json.loads(json.dumps(sampler.state))
    resumed.cool()  # a second call moves nothing: the cooldown began at draw 30
    assert resumed.state["cooled_from"] == 30 and tasks(resumed, 5) == ["t2i"] * 5
    plain = Sampler(samples, shares, 1, 0, 0, 1)  # no cooldown shares: cooling draws as before
    plain.cool()
    assert tasks(plain, 30) == before

    def check(data, schedule="wsd"):
        train_config.check(train_config.build({"model": {"qwen": "q", "vae": "v"}, "optim": {"schedule": schedule},
                                               "data": {"manifest": ["m"], **data}}))

    check({"tasks": {"t2i": 1.0, "t2v": 1.0}, "cooldown_tasks": {"t2v": 0.0}})
    with pytest.raises(VinoInputError, match=r"cooldown_tasks.t2v=1.0; .* positive share in data.tasks .*: t2i"):
        check({"tasks": {"t2i": 1.0, "t2v": 0.0}, "cooldown_tasks": {"t2v": 1.0}})
    with pytest.raises(VinoInputError, match="no task a positive share in the cooldown"):
        check({"tasks": {"t2i": 1.0}, "cooldown_tasks": {"t2i": 0.0}})
    with pytest.raises(VinoInputError, match="only a \"wsd\" run"):
        check({"tasks": {"t2i": 1.0}, "cooldown_tasks": {"t2i": 2.0}}, schedule="cosine")


def test_a_runs_log_gives_each_tasks_step_time(tmp_path):
    """benchmarks/task_step_times.py: a log written with known step times per task gives them back."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("task_step_times", ROOT / "benchmarks" / "task_step_times.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (tmp_path / "run.toml").write_text('[model]\nqwen = "q"\nvae = "v"\n[data]\nmanifest = ["m.jsonl"]\n'
                                       'tasks = { t2i = 3.0, t2v = 1.0 }\n[run]\nseed = 7\n')
    config = train_config.load(tmp_path / "run.toml")
    stand_ins = [SimpleNamespace(record=SimpleNamespace(task=t), shape=()) for t in ("t2i", "t2v")]
    sampler = Sampler(stand_ins, config.data.tasks, 1, 7, 0, 1)
    cost = {"t2i": 0.1, "t2v": 0.35}
    rng = np.random.default_rng(0)
    lines, clock = [{"step": 0, "event": "start", "time": 0.0}], 0.0
    for end in range(20, 1201, 20):  # a window's time: its draws' costs, plus noise; the first 200 steps slower
        seconds = sum(cost[sampler.task_of_draw(d)] for d in range(end - 20, end)) + rng.normal(0, 0.05)
        seconds += 3.0 * rng.random() if end <= 200 else 0.0
        clock += seconds
        lines.append({"step": end, "time": clock, "loss": 0.1, "steps_per_s": 20 / seconds})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    tasks, per_step, rms, _ = bench.fit(tmp_path / "train.jsonl", config, from_step=200)
    assert tasks == ["t2i", "t2v"]
    np.testing.assert_allclose(per_step, [cost["t2i"], cost["t2v"]], atol=0.01)
    assert rms < 0.1
    assert bench.fit(tmp_path / "train.jsonl", config)[2] > 0.3  # with the slow start in, the fit is loose
    other_seed = train_config.load(tmp_path / "run.toml", ["run.seed=8"])  # the draws are the run's own
    assert abs(bench.fit(tmp_path / "train.jsonl", other_seed, from_step=200)[1][0] - cost["t2i"]) > 0.01

def test_dropout_keeps_a_declared_base_and_drops_captions_naming_dropped_inputs(world):
    _, _, cache, samples, _ = world
    data = TrainData(samples, cache, data_config(drop_images=1.0, drop_video=1.0, drop_text=0.0), REFERENCE_AREA,
                     0, 0, 1, True)
    by_task = {s.record.task: s for s in samples}
    rng = np.random.default_rng(0)

    _, refs, context, _ = data.load(by_task["ti2i_ref"], rng, dropout=True)
    assert len(refs) == 1 and len(context.images) == 1  # the base image stays
    _, refs, context, _ = data.load(by_task["tiv2v"], rng, dropout=True)
    assert refs == [] and context.video is None and context.text == ""  # its caption names Image 1 / Video 1
    _, refs, context, _ = data.load(by_task["tiv2v"], rng, dropout=False)
    assert len(refs) == 2 and len(context.video) == 5 and context.text


def test_config_files_extend_and_take_overrides(tmp_path):
    (tmp_path / "base.toml").write_text(
        '[model]\nqwen = "q"\nvae = "v"\n[data]\nmanifest = ["m.jsonl"]\nbatch_size = 4\n'
    )
    (tmp_path / "stage.toml").write_text('extends = "base.toml"\n[run]\nstage = 0\n[data]\nbatch_size = 2\n')
    cfg = train_config.load(tmp_path / "stage.toml", ["optim.lr=3e-5", "data.frames=[1, 9]", "run.out=runs/x"])
    assert (cfg.data.batch_size, cfg.data.manifest, cfg.model.qwen) == (2, ["m.jsonl"], "q")
    assert (cfg.optim.lr, cfg.data.frames, cfg.run.out) == (3e-5, [1, 9], "runs/x")
    with pytest.raises(VinoInputError, match=r"optim.lrr is unknown"):
        train_config.load(tmp_path / "stage.toml", ["optim.lrr=1"])
    with pytest.raises(VinoInputError, match=r"data.batch_size is 'two'; expected a int"):
        train_config.load(tmp_path / "stage.toml", ["data.batch_size=two"])
    with pytest.raises(VinoInputError, match="4k\\+1"):
        train_config.load(tmp_path / "stage.toml", ["data.frames=[1, 8]"])
    with pytest.raises(VinoInputError, match="set model.init"):
        train_config.load(tmp_path / "stage.toml", ["run.stage=1"])
    offloaded = deepspeed_config(train_config.load(tmp_path / "stage.toml", ["optim.offload_optimizer=true"]))
    assert offloaded["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert "offload_optimizer" not in deepspeed_config(cfg)["zero_optimization"]
    with pytest.raises(VinoInputError, match="offload_optimizer needs optim.zero_stage 1 or 2"):
        train_config.load(tmp_path / "stage.toml", ["optim.offload_optimizer=true", "optim.zero_stage=0"])
    with pytest.raises(VinoInputError, match="data.prefill_workers=4; expected 0, or processes that fill what "
                                             "data.keep_in_memory = true keeps"):
        train_config.load(tmp_path / "stage.toml", ["data.prefill_workers=4"])
    margins = {"binding": 0.01, "places": 0.05, "sizes": 0.02, "count": 0.03, "single": 0.04, "backdrop": 0.06,
               "motion": 0.1}
    given = train_config.load(tmp_path / "stage.toml", [f"flow.contrast_margin={json.dumps(margins)}"])
    off = {"new_shape": 0, "new_color": 0, "labels": 0, "order": 0}  # kinds a config leaves out (written before)
    assert given.flow.contrast_margin == margins | dict.fromkeys(off, 0.005)
    with pytest.raises(VinoInputError, match="expected a margin for twin kinds among: binding, places, sizes, count"):
        train_config.load(tmp_path / "stage.toml", ["flow.contrast_margin.colour=0.05"])
    rows = {"binding": 4, "places": 4, "sizes": 12, "count": 12, "single": 6, "backdrop": 8, "motion": 1}
    given = train_config.load(tmp_path / "stage.toml", [f"flow.contrast_samples={json.dumps(rows)}"])
    assert given.flow.contrast_samples == rows | off
    with pytest.raises(VinoInputError, match="expected a count of rows >= 0 for twin kinds among: binding, places"):
        train_config.load(tmp_path / "stage.toml", ['flow.contrast_samples={"binding": 4, "places": -1}'])
    floors = dict.fromkeys(rows, 0.0) | {"motion": 0.95}
    given = train_config.load(tmp_path / "stage.toml", [f"flow.contrast_min_t={json.dumps(floors)}"])
    assert given.flow.contrast_min_t == floors | dict.fromkeys(off, 0.0)
    with pytest.raises(VinoInputError, match="contrast_min_t=.*expected a t in \\[0, 1\\] for twin kinds among"):
        train_config.load(tmp_path / "stage.toml", [f"flow.contrast_min_t={json.dumps(floors | {'motion': 1.5})}"])


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("training/configs/*/stage*.toml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_stage_config_loads(path):
    cfg = train_config.load(path)
    assert f"stage{cfg.run.stage}" == path.stem and cfg.run.out.endswith(f"{path.parent.name}/{path.stem}")


@pytest.mark.parametrize("recipe", sorted(p.parent for p in Path(__file__).parents[1].glob("training/configs/*/stage0.toml")),
                         ids=lambda p: p.name)
def test_stage1_aligns_to_the_text_states_stage0_trained_on(recipe):
    base, aligned = train_config.load(recipe / "stage0.toml").model, train_config.load(recipe / "stage1.toml").model
    if aligned.native_align:
        read = ("native_layer", "native_max_tokens", "native_embeddings")
        assert [getattr(aligned, k) for k in read] == [getattr(base, k) for k in read]


def test_kept_in_memory_references_are_what_the_files_give(world):
    records, vae_file, cache, samples, _ = world
    plain = TrainData(samples, cache, data_config(), REFERENCE_AREA, 0, 0, 1, read_media=True)
    memo = TrainData(samples, cache, data_config(keep_in_memory=True), REFERENCE_AREA, 0, 0, 1, read_media=True)
    for sample in samples:
        for _ in range(2):  # the second read comes from memory
            a = plain.load(sample, np.random.default_rng(1), dropout=False)[2]
            b = memo.load(sample, np.random.default_rng(1), dropout=False)[2]
            assert [np.asarray(i).tolist() for i in a.images] == [np.asarray(i).tolist() for i in b.images]
            assert (a.video is None) == (b.video is None) and a.video_fps == b.video_fps
            if a.video is not None:
                assert all((np.asarray(x) == np.asarray(y)).all() for x, y in zip(a.video, b.video))
        assert a.key is None and b.key[0] == sample.record.target  # two worlds' records share ids, not files
    assert len(memo.fitted) == sum(len(s.images) + (s.video is not None) for s in samples)


def test_a_batchs_references_go_to_the_device_in_one_copy_a_shape_and_keep_their_places():
    image, wide, clip = (1, 4, 4, 4), (1, 4, 4, 8), (1, 3, 4, 4)  # [C, T, H, W]
    shapes = [[image, wide], [], [clip, image], [image]]
    references = [[torch.randn(*shape) for shape in sample] for sample in shapes]
    batch = Batch(torch.randn(4, 1, 1, 4, 4), references, [None] * 4, ["ti2i_ref"] * 4)
    _, _, _, moved, _ = model_inputs(batch, torch.randn(4, 1, 1, 4, 4), torch.rand(4), "cpu")

    assert [[tuple(r.shape) for r in refs] for refs in moved] == shapes
    for got, want in zip(moved, references):
        for g, w in zip(got, want):
            assert torch.equal(g, w)
    storage = lambda r: r.untyped_storage().data_ptr()  # noqa: E731
    images = [moved[0][0], moved[2][1], moved[3][0]]
    assert len({storage(r) for r in images}) == 1  # the three images: one stacked copy
    assert len({storage(r) for r in (images[0], moved[0][1], moved[2][0])}) == 3


def test_a_run_waits_for_the_processes_filling_its_manifests_cache_and_for_no_others(tmp_path):
    """`python -m training.cache` holds its manifests' fill while it encodes; a run's index waits for it (its media
    are not encoded twice) and not for a fill of other manifests."""
    (tmp_path / "vae.safetensors").write_bytes(b"weights")
    cache = LatentCache(tmp_path / "cache", None, tmp_path / "vae.safetensors", "float32")
    entered, release = threading.Event(), threading.Event()

    def filler():
        with cache.filling(["tasks/manifest.jsonl"]):
            entered.set()
            release.wait(10)

    waited = {}

    def waiter(manifests):
        thread = threading.Thread(target=lambda: waited.update({len(manifests): cache.wait_for_fillers(manifests)}))
        thread.start()
        return thread

    fill = threading.Thread(target=filler)
    fill.start()
    assert entered.wait(10)
    other = waiter(["base/manifest.jsonl"])
    other.join(10)
    assert not other.is_alive()  # a fill of other media: no wait
    same = waiter(["base/manifest.jsonl", "tasks/manifest.jsonl"])
    same.join(0.5)
    assert same.is_alive()  # the fill of its media still runs
    release.set()
    same.join(10)
    fill.join(10)
    assert not same.is_alive()
    assert waited[1] < 0.5 <= waited[2]  # the seconds each waited: for the start event of the run's log


@pytest.mark.parametrize("tower", ["workers", "main"])
def test_prefilled_references_are_read_as_a_batch_would_read_them_with_no_processing_or_file_left(world, tmp_path,
                                                                                                 monkeypatch, tower):
    """Two worker processes fit and process every sample's references and the tower reads them (in the workers
    when it is small, else on the main process), holding no file open for what they sent; a batch then reads them
    (with the long or the short caption) exactly as an encoder without a memo reads the same files, while no media
    is processed again and no file read."""
    if tower == "main":
        monkeypatch.setattr(prefill_module, "WORKER_TOWER", 0)
    records, vae_file, cache, samples, _ = world
    qwen = make_tiny_qwen3vl(tmp_path / "qwen", seed=0)
    torch.manual_seed(0)
    encoder = InterleavedEncoder.from_folder(qwen, MMEncoder(vlm_hidden=64, num_queries=4, text_dim=48,
                                                             boundary_dim=40))
    cfg = data_config(keep_in_memory=True)
    data = TrainData(samples, cache, cfg, REFERENCE_AREA, 0, 0, 1, read_media=True)
    encoder.memo = {}
    open_files = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
    before = open_files()
    contexts = record_contexts(records, cfg, REFERENCE_AREA)
    # an unreadable reference: left to the index to report
    unreadable = (str(tmp_path / "gone"), ("Image 1 in red",), [(str(tmp_path / "gone.png"), None)], None)
    filled = prefill(contexts + [unreadable], data.fitted, encoder, qwen, REFERENCE_AREA, workers=2)
    opened = open_files() - before

    referring = [s for s in samples if s.record.ref_images or s.video is not None]
    assert {s.record.task for s in referring} == {"i2v", "ti2v", "ti2i", "ti2i_ref", "tv2v", "tiv2v", "clone"}
    assert len(contexts) == len(referring) and filled["contexts"] == len(referring) + 1
    assert not any(key[0].endswith("gone.png") for key in data.fitted)
    assert filled["tower"] == tower
    assert filled["media"] == sum(bool(s.record.ref_images) + (s.video is not None) for s in referring)
    kept = [output for name in MEDIA_PROCESSORS for output in getattr(encoder.processor, name).outputs.values()]
    assert len(kept) == filled["media"]
    assert all(value.numel() == 0 for output in kept for key, value in output.items() if key.startswith("pixel"))
    # the outputs came by value: no shared-memory file is held open per kept tensor (session 25's broken pool)
    tensors = [value for output in kept for value in output.values() if isinstance(value, torch.Tensor)]
    assert opened < sum(value.numel() > 0 for value in tensors) // 2

    refused = lambda *args, **kwargs: pytest.fail("a prefilled reference was read from its file again")  # noqa: E731
    monkeypatch.setattr(data_module, "read_image", refused)
    monkeypatch.setattr(data_module, "read_video", refused)
    loaded = [data.load(s, np.random.default_rng(0), dropout=False)[2] for s in referring]
    contexts = [(c.text, c.images, c.video, c.video_fps) for c in loaded]
    contexts += [(s.record.caption_short, *context[1:]) for s, context in zip(referring, contexts)]
    keys = [c.key for c in loaded]
    keys += [(key[0], s.record.caption_short, *key[2:]) for s, key in zip(referring, keys)]
    assert {key[1] for key in keys} == {s.record.caption_long for s in referring} | {s.record.caption_short for s in
                                                                                      referring}
    assert set(keys) | {(key[0], "", *key[2:]) for key in keys} == set(encoder.memo)  # every caption, and none
    encoder.prepared_count["misses"] = 0
    got = encoder.encode_batch(contexts, keys=keys)
    assert encoder.prepared_count["misses"] == 0  # the prompts were prepared in the workers
    # a media processor's call that was not prefilled keeps a new output
    assert len(kept) == sum(len(getattr(encoder.processor, name).outputs) for name in MEDIA_PROCESSORS)
    # a motion twin (the clone under another sample's video): a context the prefill did not make, prepared once,
    # with both media as the prefill processed them
    clone, other = (next(c for s, c in zip(referring, loaded) if s.record.task == task) for task in ("clone", "tv2v"))
    twin, _ = motion_twin(dataclasses.replace(clone, motion="left slow"), [], other, [])
    twin_context = (twin.text, twin.images, twin.video, twin.video_fps)
    encoder.prepared_count["misses"] = 0
    outputs = lambda: sum(len(getattr(encoder.processor, name).outputs) for name in MEDIA_PROCESSORS)  # noqa: E731
    processed = outputs()
    twin_got = [encoder.encode_batch([twin_context], keys=[twin.key]) for _ in range(2)]
    assert encoder.prepared_count["misses"] == 1 and twin.key in encoder.memo and outputs() == processed
    monkeypatch.undo()

    plain = TrainData(samples, cache, data_config(), REFERENCE_AREA, 0, 0, 1, read_media=True)
    from_files = [plain.load(s, np.random.default_rng(0), dropout=False)[2] for s in referring]
    fresh = [(c.text, c.images, c.video, c.video_fps) for c in from_files]
    fresh += [(s.record.caption_short, *context[1:]) for s, context in zip(referring, fresh)]
    encoder.memo = None
    expected = encoder.encode_batch(fresh)
    assert torch.equal(got.mask, expected.mask)
    torch.testing.assert_close(got.text_states[got.mask], expected.text_states[expected.mask], atol=1e-5, rtol=1e-4)
    for have, want in zip(got.boundary_tokens, expected.boundary_tokens, strict=True):
        torch.testing.assert_close(have, want, atol=1e-5, rtol=1e-4)
    twin_expected = encoder.encode_batch([twin_context])
    for read in twin_got:
        torch.testing.assert_close(read.text_states, twin_expected.text_states, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(read.boundary_tokens[0], twin_expected.boundary_tokens[0], atol=1e-5, rtol=1e-4)


def test_a_long_caption_carries_its_wrong_twins_and_a_short_or_dropped_one_none(world):
    """The contrast term's twins: the long caption's TWIN_SWAPS (its own words), not its one-word swaps."""
    _, _, cache, samples, _ = world
    t2i = next(s for s in samples if s.record.task == "t2i")
    swaps = {"color": "one word", "sizes": "sizes exchanged", "binding": "colours exchanged",
             "places": "places exchanged"}
    record = dataclasses.replace(t2i.record, meta={**t2i.record.meta, "word_swaps": swaps})
    t2i = dataclasses.replace(t2i, record=record)
    exchanged = (("binding", "colours exchanged"), ("places", "places exchanged"), ("sizes", "sizes exchanged"))
    for long, drop, twins in ((1.0, 0.0, exchanged), (0.0, 0.0, ()), (1.0, 1.0, ())):
        data = TrainData([t2i], cache, data_config(long_caption=long, drop_text=drop), REFERENCE_AREA, 0, 0, 1, True)
        assert data.load(t2i, np.random.default_rng(0), dropout=True)[2].twins == twins


def test_a_two_object_ti2v_sample_carries_an_order_twin_under_any_caption_with_both_images(world):
    """The "order" twin: a ti2v sample whose two objects move apart (world.moving_apart), under its long or short
    caption (each names every image's motion) with both images kept; none without its caption or its images, and
    none where the two objects move alike."""
    _, _, cache, samples, _ = world
    ti2v = next(s for s in samples if s.record.task == "ti2v")
    scene = {**ti2v.record.meta["scene"], "objects": [
        {"motion": {"direction": "left", "speed": "slow"}}, {"motion": {"direction": "up", "speed": "fast"}}]}
    record = dataclasses.replace(ti2v.record, meta={**ti2v.record.meta, "scene": scene},
                                 ref_images=[ti2v.record.ref_images[0]] * 2)
    apart = dataclasses.replace(ti2v, record=record, images=[ti2v.images[0]] * 2)
    alike = {**scene, "objects": [scene["objects"][0]] * 2}
    together = dataclasses.replace(apart, record=dataclasses.replace(apart.record, meta={**apart.record.meta,
                                                                                        "scene": alike}))
    for sample, long, drop_text, drop_images, expected in (
            (apart, 1.0, 0.0, 0.0, True), (apart, 0.0, 0.0, 0.0, True), (apart, 1.0, 1.0, 0.0, False),
            (apart, 1.0, 0.0, 1.0, False), (together, 1.0, 0.0, 0.0, False)):
        config = data_config(long_caption=long, drop_text=drop_text, drop_images=drop_images)
        data = TrainData([sample], cache, config, REFERENCE_AREA, 0, 0, 1, True)
        context = data.load(sample, np.random.default_rng(0), dropout=True)[2]
        assert (("order", context.text) in context.twins) == expected, (long, drop_text, drop_images)


def test_a_clone_sample_names_its_reference_motion_under_a_caption_that_does_not_name_the_video_object(world):
    """A motion twin's sample (`Context.motion`): a clone whose reference video is kept, under its short caption or
    none; its long caption names the video's object ("the motion of the red square in Video 1"), which would tell a
    twin by the mismatch. An edit's reference video (tv2v) is not one whose motion the target copies."""
    _, _, cache, samples, _ = world
    clone = next(s for s in samples if s.record.task == "clone")
    motion = reference_motion(clone.record.meta)
    assert motion in {f"{d} {v}" for d in DIRECTIONS for v in SPEEDS}
    for long, drop_text, drop_video, expected in ((0.0, 0.0, 0.0, motion), (0.0, 1.0, 0.0, motion),
                                                  (1.0, 0.0, 0.0, None), (0.0, 0.0, 1.0, None)):
        cfg = data_config(long_caption=long, drop_text=drop_text, drop_video=drop_video, drop_images=0.0)
        data = TrainData([clone], cache, cfg, REFERENCE_AREA, 0, 0, 1, True)
        assert data.load(clone, np.random.default_rng(0), dropout=True)[2].motion == expected
    tv2v = next(s for s in samples if s.record.task == "tv2v")
    data = TrainData([tv2v], cache, data_config(long_caption=0.0), REFERENCE_AREA, 0, 0, 1, True)
    assert reference_motion(tv2v.record.meta) and data.load(tv2v, np.random.default_rng(0), dropout=False)[2].motion \
        is None
