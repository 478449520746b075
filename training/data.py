"""Training data: manifest records -> cached latents in shape buckets -> batches drawn by task share.

Each target is fitted the way inference sizes that task's output:
  t2i, t2v, ti2v         resized to cover the bucket of the nearest aspect ratio at data.area, centre-cropped
  i2v, ti2i, ti2i_ref    letterboxed like the base image (the model's reference_area)
  tv2v, tiv2v, clone     cut like the reference video (reference_area, from frame 0)
A video target takes the largest count in data.frames (4k+1) that it has; its reference video is cut to
the same count. References are prepared as at inference (`vino_model.preprocess`). A bucket is one
target latent shape: every batch holds one bucket, while reference counts and sizes vary per sample.

Latent cache: CACHE/latents/<key[:2]>/<key>.safetensors, key = sha256 of (the file's content hash, how
it was fitted, the VAE's content hash and dtype). The VAE runs once per file and fitting, a renamed
file keeps its latents, a changed file or VAE gets new ones; files appear atomically. Latents are the
posterior mode, so a cache is reproducible. CACHE/stat/ remembers content hashes by (path, size, mtime).

Media that cannot be read or fitted are skipped and counted, at indexing and again at loading.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import logging
import math
import os
import re
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from vino_model.encoder import check_labels
from vino_model.errors import VinoInputError
from vino_model.media import atomic_output, read_image, read_video
from vino_model.preprocess import canvas_size, frames_to_array, letterbox, prepare_reference_video
from vino_model.tasks import kept_without_references

from .manifest import TASKS, Record, release_task
from .world import CAPTION_TWINS, MOTION_TWIN_TASKS, moving_apart, reference_motion

log = logging.getLogger("vino.train")

CACHE_VERSION = 1  # bump when fitting changes in a way the fit spec does not name
MEDIA_ERRORS = (VinoInputError, OSError, ValueError, EOFError)  # what unreadable or corrupt media raise
LABEL = re.compile(r"\b(Image|Video)\s+\d+\b")
LOGGED_SKIPS = 10  # reasons logged one by one; the rest only counted
MAX_FAILED_BATCHES = 100  # in a row: the media are gone, not merely a few bad files


# ---------------------------------------------------------------- fitting media


def bucket_size(width: int, height: int, area: int, ratios) -> tuple[int, int]:
    """(w, h) of the bucket for a width x height target: the nearest aspect ratio at `area`, sides of 16."""
    nearest = min(ratios, key=lambda r: abs(math.log(r * height / width)))
    return canvas_size(round(nearest * 4096), 4096, area)


def cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """Resize to cover width x height and crop the centre."""
    image = image.convert("RGB")
    scale = max(width / image.width, height / image.height)
    w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    left, top = (w - width) // 2, (h - height) // 2
    return image.resize((w, h), Image.LANCZOS).crop((left, top, left + width, top + height))


def target_spec(record: Record, cfg, reference_area: int) -> dict:
    """How the target of `record` is fitted: a JSON-able spec (part of its cache key)."""
    if record.frames == 1:
        frames = 1
    else:
        fitting = [f for f in cfg.frames if 1 < f <= record.frames]
        if not fitting:
            raise VinoInputError(
                f"target has {record.frames} frames, fewer than every video count in data.frames {cfg.frames}"
            )
        frames = max(fitting)
    size_from = release_task(record.task).size_from
    if size_from == "user":
        width, height = bucket_size(record.width, record.height, cfg.area, cfg.aspect_ratios)
        return {"fit": "cover", "width": width, "height": height, "frames": frames}
    return {"fit": "letterbox" if size_from == "base" else "video", "area": reference_area, "frames": frames}


def read_fitted(path: str, spec: dict) -> tuple[list[Image.Image], float | None]:
    """The frames of `path` fitted by `spec` (PIL images), and the video's frame rate (None for an image)."""
    frames = spec["frames"]
    if frames == 1:
        images, fps = [read_image(path)], None
    else:
        images, fps = read_video(path, max_frames=frames)
    return fit_frames(images, spec, path), fps


def fit_frames(images: list[Image.Image], spec: dict, source: str) -> list[Image.Image]:
    """As many of `images` (read or made) as `spec` takes, fitted by it; `source` names them in an error."""
    frames = spec["frames"]
    images = images[:frames]
    if len(images) < frames and spec["fit"] != "video":
        raise VinoInputError(f"{source} has {len(images)} frames; its bucket needs {frames}")
    if spec["fit"] == "cover":
        return [cover(image, spec["width"], spec["height"]) for image in images]
    if spec["fit"] == "letterbox":
        return [letterbox(image, spec["area"]) for image in images]
    return prepare_reference_video(images, frames, spec["area"])


# ---------------------------------------------------------------- latent cache


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LatentCache:
    def __init__(self, folder, vae, vae_path, vae_dtype: str, keep_in_memory: bool = False):
        self.folder = Path(folder)
        self.vae = vae
        self.vae_id = f"{self.fingerprint(vae_path)}:{vae_dtype}"
        self.keep_in_memory = keep_in_memory  # loaded latents stay in RAM (small models, many steps)
        self.memory = {}

    def content_hash(self, path) -> str:
        """sha256 of the file's bytes, remembered by (absolute path, size, mtime)."""
        stat = os.stat(path)
        memo_key = hashlib.sha256(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
        memo = self.folder / "stat" / memo_key[:2] / memo_key
        if memo.is_file():
            return memo.read_text()
        digest = sha256_file(path)
        with atomic_output(memo) as partial:
            partial.write_text(digest)
        return digest

    def fingerprint(self, path) -> str:
        """Content hash of a VAE file, or of the weight and config files of a folder."""
        path = Path(path)
        if path.is_file():
            return self.content_hash(path)
        files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".safetensors"))
        if not files:
            raise VinoInputError(f"VAE folder {path} holds no .json or .safetensors files")
        return hashlib.sha256("".join(self.content_hash(p) for p in files).encode()).hexdigest()

    def key(self, path, spec: dict) -> str:
        identity = {"version": CACHE_VERSION, "content": self.content_hash(path), "fit": spec, "vae": self.vae_id}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def file(self, key: str) -> Path:
        return self.folder / "latents" / key[:2] / f"{key}.safetensors"

    def ensure(self, path, spec: dict) -> tuple[str, tuple[int, ...]]:
        """(key, latent shape [C, T, H, W]) of `path` fitted by `spec`; runs the VAE on a miss."""
        key = self.key(path, spec)
        file = self.file(key)
        if file.is_file():
            with safe_open(file, framework="pt") as handle:
                return key, tuple(handle.get_slice("latent").get_shape())
        latent = self._encode([frames_to_array(read_fitted(path, spec)[0])])[0]  # [C, T', H', W']
        self._store(key, latent, path, spec)
        return key, tuple(latent.shape)

    def encode_frames(self, images: list[Image.Image], spec: dict, source: str) -> torch.Tensor:
        """The latent [C, T', H', W'] of frames made rather than read (`source`: a target drawn again), fitted by
        `spec` as a file's are (`ensure`); not stored."""
        return self._encode([frames_to_array(fit_frames(images, spec, source))])[0]

    def _encode(self, arrays: list[np.ndarray]) -> torch.Tensor:
        """uint8 [T, H, W, 3] frames of one shape -> their latents [B, C, T', H', W'] on the CPU. The pixels go to
        the VAE's device as bytes and become floats in [-1, 1] there: on the host that conversion of a 17-frame clip
        took 3.7 times as long as reading it, in the threads that should be reading."""
        frames = torch.from_numpy(np.stack(arrays)).to(self.vae.device)
        pixels = frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # as frames_to_tensor does
        return self.vae.encode(pixels, sample=False).float().cpu()

    def _store(self, key: str, latent: torch.Tensor, path, spec: dict) -> None:
        with atomic_output(self.file(key)) as partial:
            metadata = {"source": str(path), "fit": json.dumps(spec)}
            save_file({"latent": latent.contiguous()}, str(partial), metadata=metadata)

    @contextlib.contextmanager
    def filling(self, manifests: list[str]):
        """Held while a process fills this cache with the media of `manifests` beside a run (`python -m
        training.cache`): shared, so that many fill it together, and waited for by `wait_for_fillers`."""
        with contextlib.ExitStack() as locks:
            for manifest in manifests:
                locks.enter_context(self._lock(manifest, fcntl.LOCK_SH))
            yield

    def wait_for_fillers(self, manifests: list[str]) -> float:
        """Return once no other process fills this cache with the media of `manifests` (`filling`): what they are
        encoding is not encoded twice. Fills of other manifests (stage 3's beside stage 0) are not waited for.
        Returns the seconds it waited."""
        started = time.monotonic()
        for manifest in manifests:
            try:
                with self._lock(manifest, fcntl.LOCK_EX | fcntl.LOCK_NB):
                    continue
            except BlockingIOError:
                log.info("waiting for the processes filling %s with the media of %s", self.folder, manifest)
            with self._lock(manifest, fcntl.LOCK_EX):
                log.info("the processes filling %s with the media of %s are done", self.folder, manifest)
        return time.monotonic() - started

    @contextlib.contextmanager
    def _lock(self, manifest: str, mode: int):
        name = hashlib.sha256(os.path.abspath(manifest).encode()).hexdigest()[:16]
        folder = self.folder / "filling"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{name}.lock", "a") as handle:
            fcntl.flock(handle, mode)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def fill(self, items, batch_size: int = 32, workers: int = 8) -> int:
        """Encode the misses among (path, spec) items in batches of one pixel shape (media read by
        `workers` threads, latents written by one more); returns how many were encoded. Unreadable media are left
        for `ensure` to report."""
        misses = {}
        for path, spec in items:
            try:
                key = self.key(path, spec)
            except OSError:
                continue
            if key not in misses and not self.file(key).is_file():
                misses[key] = (path, spec)

        def read(job):
            key, (path, spec) = job
            try:
                return key, path, spec, frames_to_array(read_fitted(path, spec)[0])
            except MEDIA_ERRORS:
                return None

        def store(group, latents):
            for (key, path, spec), latent in zip(group, latents):
                self._store(key, latent, path, spec)

        groups, writes, done = {}, deque(), 0
        with ThreadPoolExecutor(workers) as pool, ThreadPoolExecutor(1) as writer:

            def encode(group) -> int:  # the writer stores a group's latents while the next group is read and encoded
                latents = self._encode([pixels for *_, pixels in group])
                writes.append(writer.submit(store, [item[:3] for item in group], latents))
                while len(writes) > 2:
                    writes.popleft().result()
                return len(group)

            for item in tqdm(read_ahead(pool, read, misses.items(), 2 * max(batch_size, workers)), total=len(misses),
                             desc="latent cache", leave=False, disable=not misses):
                if item is None:
                    continue
                group = groups.setdefault(item[3].shape, [])
                group.append(item)
                if len(group) == batch_size:
                    done += encode(groups.pop(item[3].shape))
            for group in groups.values():
                done += encode(group)
            for write in writes:
                write.result()
        return done

    def load(self, key: str) -> torch.Tensor:
        if key in self.memory:
            return self.memory[key]
        try:
            latent = load_file(self.file(key))["latent"]
            if self.keep_in_memory:
                self.memory[key] = latent
            return latent
        except Exception as err:  # a cache file damaged on disk reads like corrupt media
            raise VinoInputError(f"latent cache file {self.file(key)} is unreadable ({err})") from err


# ---------------------------------------------------------------- the index


@dataclass
class Sample:
    """One usable record: its latents in the cache and its bucket."""

    position: int  # line of the record among the manifests' records
    record: Record
    target: str  # latent key of the fitted target
    shape: tuple  # target latent shape [C, T, H, W]: the bucket
    images: list  # latent keys of the reference images, prompt order
    video: str | None  # latent key of the reference video
    video_spec: dict | None


def media_specs(record: Record, cfg, reference_area: int) -> list[tuple[str, dict]]:
    """(path, fit spec) of every medium of a record that goes through the VAE: the target, each reference
    image, then the reference video (cut to the target's frame count). Raises when the target cannot be fitted."""
    spec = target_spec(record, cfg, reference_area)
    items = [(record.target, spec)] + [(p, {"fit": "letterbox", "area": reference_area, "frames": 1})
                                       for p in record.ref_images]
    if record.ref_video:
        items.append((record.ref_video, {"fit": "video", "area": reference_area, "frames": spec["frames"]}))
    return items


def read_ahead(pool: ThreadPoolExecutor, function, jobs, window: int):
    """pool.map(function, jobs), in order, with at most `window` results read ahead of the consumer: decoded media
    wait in memory only that far, however slowly the VAE encodes them."""
    jobs, pending = iter(jobs), deque()
    for job in itertools.islice(jobs, window):
        pending.append(pool.submit(function, job))
    while pending:
        result = pending.popleft().result()
        for job in itertools.islice(jobs, 1):
            pending.append(pool.submit(function, job))
        yield result


def fillable(record: Record, cfg, reference_area: int) -> list[tuple[str, dict]]:
    """media_specs, or nothing for a record `index_record` will reject and report."""
    try:
        return media_specs(record, cfg, reference_area)
    except VinoInputError:
        return []


def index_record(position: int, record: Record, cfg, cache: LatentCache, reference_area: int) -> Sample:
    """Check what the VLM would refuse mid-run, then cache the record's latents."""
    for caption in (record.caption_long, record.caption_short):
        if "<|" in caption:
            raise VinoInputError(f"caption {caption[:60]!r} holds a chat control token (<|...|>)")
        check_labels(caption, len(record.ref_images), record.ref_video is not None)
    (target_path, spec), *image_items = media_specs(record, cfg, reference_area)
    video_item = image_items.pop() if record.ref_video else None  # only video targets have one
    target, shape = cache.ensure(target_path, spec)
    images = [cache.ensure(path, image_spec)[0] for path, image_spec in image_items]
    video_spec = video = None
    if video_item:
        video_spec = video_item[1]
        video, video_shape = cache.ensure(*video_item)
        if video_shape[1] < 2:
            raise VinoInputError(f"reference video {record.ref_video} has fewer than 5 frames")
    return Sample(position, record, target, shape, images, video, video_spec)


def build_index(records: list[Record], cfg, cache: LatentCache, reference_area: int, rank: int, world: int,
                gather) -> tuple[list[Sample], Counter]:
    """Cache every record of a task with a share (rank r takes records r, r+world, ...); gather the index.

    gather(obj) -> the list of every rank's obj. Returns the samples in manifest order and the count of
    records skipped for each task.
    """
    wanted = [(i, r) for i, r in enumerate(records) if cfg.draws(r.task)]
    mine = wanted[rank::world]
    cache.fill([item for _, record in mine for item in fillable(record, cfg, reference_area)], cfg.cache_batch)
    samples, skipped = [], Counter()
    for position, record in tqdm(mine, desc="latent cache", disable=rank != 0, leave=False):
        try:
            samples.append(index_record(position, record, cfg, cache, reference_area))
        except MEDIA_ERRORS as err:
            skipped[record.task] += 1
            if sum(skipped.values()) <= LOGGED_SKIPS:
                log.warning("skipping %s (%s): %s", record.id, record.task, err)
    parts = gather((samples, skipped))
    samples = sorted((s for part, _ in parts for s in part), key=lambda s: s.position)
    skipped = sum((count for _, count in parts), Counter())
    if skipped:
        log.warning("skipped %d of %d samples whose media could not be read: %s", sum(skipped.values()),
                    len(wanted), dict(skipped))
    return samples, skipped


# ---------------------------------------------------------------- batches


@dataclass
class Context:
    """What the VLM reads for one sample (the native text encoder reads `text` only)."""

    text: str
    images: list  # letterboxed PIL images, prompt order
    video: list | None  # prepared PIL frames
    video_fps: float | None
    key: tuple | None = None  # names this exact context (sample, caption, kept inputs) when reads are memoised
    twins: tuple = ()  # (kind, caption): wrong captions of the same words (world.CAPTION_TWINS), and ("order", its
                       # own caption) where its two images in the other order make one, for the contrast term
    motion: str | None = None  # the reference video's motion where another's makes a "motion" twin (`TrainData.load`)


@dataclass
class Batch:
    latents: torch.Tensor  # [B, C, T, H, W] clean target latents x0
    references: list  # per sample: reference latents [C, T_r, H_r, W_r], images then video
    contexts: list  # per sample: Context
    tasks: list  # per sample: task name


class Sampler:
    """Deterministic batches: a task by its share, then the next batch of that task's epoch.

    An epoch of a task is its samples shuffled, grouped by bucket into batches, the batches shuffled;
    rank r takes batches r, r+world, ... Every rank draws the same task at the same draw, so the state
    (draws, each task's epoch and cursor, and the draw where the cooldown's shares took over) is the same on all
    ranks and is the data position.
    """

    def __init__(self, samples: list[Sample], shares: dict, batch_size: int, seed: int, rank: int, world: int,
                 image_batch_size: int = 0, cooldown_shares: dict | None = None):
        self.samples, self.batch_size, self.seed, self.rank, self.world = samples, batch_size, seed, rank, world
        self.image_batch_size = image_batch_size or batch_size  # for buckets of one frame
        self.by_task = {}
        for i, sample in enumerate(samples):
            self.by_task.setdefault(sample.record.task, []).append(i)
        empty = [t for t, share in shares.items() if share > 0 and t not in self.by_task]
        if empty:
            log.warning("data.tasks gives a share to %s but the manifests hold no usable sample of it", empty)
        self.tasks = [t for t in TASKS if shares.get(t, 0) > 0 and t in self.by_task]
        if not self.tasks:
            raise VinoInputError("no usable sample of any task with a share in data.tasks")
        self.probabilities = self.weigh(shares)
        self.cooling_probabilities = self.weigh({**shares, **(cooldown_shares or {})})
        self.state = {"draws": 0, "epoch": dict.fromkeys(self.tasks, 0), "cursor": dict.fromkeys(self.tasks, 0),
                      "cooled_from": None}
        self._epochs = {}  # task -> (epoch, its batches)

    def epoch_batches(self, task: str) -> list[list[int]]:
        epoch = self.state["epoch"][task]
        if self._epochs.get(task, (None,))[0] != epoch:
            rng = np.random.default_rng([self.seed, TASKS.index(task), epoch])
            buckets = {}
            for i in rng.permutation(self.by_task[task]):
                buckets.setdefault(self.samples[i].shape, []).append(int(i))
            batches = []
            for shape, ids in buckets.items():  # shape: [C, T, H, W]
                size = self.image_batch_size if shape[1] == 1 else self.batch_size
                batches += [ids[k : k + size] for k in range(0, len(ids), size)]
            batches = [batches[i] for i in rng.permutation(len(batches))]
            batches = batches * math.ceil(self.world / len(batches))
            self._epochs[task] = (epoch, batches)
        return self._epochs[task][1]

    def weigh(self, shares: dict) -> np.ndarray:
        weights = np.array([shares[t] for t in self.tasks], dtype=np.float64)
        if not weights.sum():
            raise VinoInputError(f"the task shares {shares} give no drawable task ({', '.join(self.tasks)}) a share")
        return weights / weights.sum()

    def cool(self) -> None:
        """From the next draw on, tasks come by the cooldown's shares (data.cooldown_tasks); once only."""
        if self.state.get("cooled_from") is None:
            self.state["cooled_from"] = self.state["draws"]

    def task_of_draw(self, draw: int) -> str:
        """The task of the draw-th batch (a function of the seed, the shares and where the cooldown began only)."""
        rng = np.random.default_rng([self.seed, len(TASKS), draw])
        cooled_from = self.state.get("cooled_from")  # absent from the state of a run saved before it existed
        cooling = cooled_from is not None and draw >= cooled_from
        return self.tasks[rng.choice(len(self.tasks), p=self.cooling_probabilities if cooling else self.probabilities)]

    def next(self) -> list[Sample]:
        state = self.state
        task = self.task_of_draw(state["draws"])
        state["draws"] += 1
        if (state["cursor"][task] + 1) * self.world > len(self.epoch_batches(task)):
            state["epoch"][task] += 1
            state["cursor"][task] = 0
        batch = self.epoch_batches(task)[state["cursor"][task] * self.world + self.rank]
        state["cursor"][task] += 1
        return [self.samples[i] for i in batch]


class TrainData:
    """The sampler plus loading: latents from the cache, the VLM's view of the references, dropout."""

    def __init__(self, samples: list[Sample], cache: LatentCache, cfg, reference_area: int, seed: int, rank: int,
                 world: int, read_media: bool):
        self.samples, self.cache, self.cfg, self.reference_area = samples, cache, cfg, reference_area
        self.sampler = Sampler(samples, cfg.tasks, cfg.batch_size, seed, rank, world, cfg.image_batch_size,
                               cfg.cooldown_tasks)
        self.read_media = read_media  # the VLM sees the references (stages 1-3)
        self.fitted = {} if cfg.keep_in_memory else None  # fitted reference media, kept with the latents
        self.skipped = 0  # samples left out at loading

    def next_batch(self, rng: np.random.Generator) -> Batch:
        """The next batch; samples whose media fail to load are counted and left out."""
        for _ in range(MAX_FAILED_BATCHES):
            loaded = []
            for sample in self.sampler.next():
                try:
                    loaded.append(self.load(sample, rng, dropout=True))
                except MEDIA_ERRORS as err:
                    self.skipped += 1
                    if self.skipped <= LOGGED_SKIPS:
                        log.warning("skipping %s at load: %s", sample.record.id, err)
            if loaded:
                return collate(loaded)
        raise VinoInputError(f"{MAX_FAILED_BATCHES} batches in a row had no readable sample; see the warnings above")

    def eval_samples(self, count: int, samples: list[Sample] | None = None) -> list[Sample]:
        """The first `count` samples (of this index, or of `samples`: another world's) taking this index's tasks in
        turn: a fixed evaluation set."""
        samples = self.samples if samples is None else samples
        queues = [[s for s in samples if s.record.task == t] for t in self.sampler.tasks]
        chosen = []
        for k in range(max(map(len, queues), default=0)):
            chosen += [q[k] for q in queues if k < len(q)]
        return chosen[:count]

    def load(self, sample: Sample, rng: np.random.Generator, dropout: bool):
        """(x0, references, context, task) of one sample. Dropout removes the caption, the reference
        images (all but a declared base image, as the image-free CFG branch shows them) and the reference
        video, each on its own; a caption that names an input that was dropped goes too."""
        cfg, record = self.cfg, sample.record
        draws = rng.random(4)
        caption = record.caption_long if draws[0] < cfg.long_caption else record.caption_short
        images = list(range(len(sample.images)))
        keep_video = sample.video is not None
        if dropout:
            if draws[1] < cfg.drop_images:
                images = kept_without_references(len(images), record.ref_image_have_base)
            keep_video = keep_video and draws[2] >= cfg.drop_video
            dropped = len(images) < len(sample.images) or (sample.video is not None and not keep_video)
            if draws[3] < cfg.drop_text or (dropped and LABEL.search(caption)):
                caption = ""
        references = [self.cache.load(sample.images[i]) for i in images]
        if keep_video:
            references.append(self.cache.load(sample.video))
        key = memo_key(record.target, caption, images, keep_video) if self.fitted is not None else None
        swaps = record.meta.get("word_swaps", {}) if caption and caption == record.caption_long else {}
        twins = tuple((kind, swaps[kind]) for kind in CAPTION_TWINS if kind in swaps)
        if caption and len(images) == 2 and moving_apart(record.meta):
            twins += (("order", caption),)
        # A motion twin takes another sample's video under this caption, which must not name the video's object: a
        # long clone caption does ("the motion of the red square in Video 1"), and the model could tell the twin by
        # that mismatch instead of by the motion
        motion = None
        if keep_video and record.task in MOTION_TWIN_TASKS and caption != record.caption_long:
            motion = reference_motion(record.meta)
        context = Context(caption, [], None, None, key, twins, motion)
        if self.read_media:
            context.images = [self.media(record.ref_images[i], None) for i in images]
            if keep_video:
                context.video, context.video_fps = self.media(record.ref_video, sample.video_spec)
        return self.cache.load(sample.target), references, context, record.task

    def media(self, path: str, video_spec: dict | None):
        """A reference as the VLM reads it: a letterboxed image, or (video frames, fps); memoised with the latents."""
        memo_key = fitted_key(path, video_spec)
        if self.fitted is not None and memo_key in self.fitted:
            return self.fitted[memo_key]
        fitted = fit_reference(path, video_spec, self.reference_area)
        if self.fitted is not None:
            self.fitted[memo_key] = fitted
        return fitted


def memo_key(target: str, caption: str, images, keep_video: bool) -> tuple:
    """Names a sample's context in the encoder's memo: its target's path (two worlds' records share ids, not
    files), its caption (long, short or none), the indices of the reference images it keeps and whether it keeps
    its reference video."""
    return target, caption, tuple(images), keep_video


def fitted_key(path: str, video_spec: dict | None) -> tuple[str, str]:
    """Names a reference as the VLM reads it (`TrainData.fitted`)."""
    return path, json.dumps(video_spec, sort_keys=True)


def fit_reference(path: str, video_spec: dict | None, reference_area: int):
    """A reference as the VLM reads it: a letterboxed image (`video_spec` None), or (video frames, fps)."""
    return letterbox(read_image(path), reference_area) if video_spec is None else read_fitted(path, video_spec)


def collate(loaded) -> Batch:
    x0, references, contexts, tasks = zip(*loaded)
    return Batch(torch.stack(x0), list(references), list(contexts), list(tasks))
