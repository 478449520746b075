"""The VLM's first reading of every sample's references, made before a run's first step (`data.prefill_workers`).

With `data.keep_in_memory` the encoder keeps the processor's output for each reference and the vision tower's
reading of it, but a run makes them as its batches first meet the references, on the main process between its
steps: session 24's stage 3 ran steps 10-500 at 0.89 s a step and steps 1,310-1,710 at 0.31 s. Here worker
processes fit each sample's references and run the processor over them (the CPU's work: 0.1-0.2 s a reference
video on a busy 2-core CPU); the main process keeps their outputs in the encoder's `MemoisedMedia` and in
`TrainData.fitted`, and the vision tower reads them a chunk at a time, so their pixels (6.3 MB a reference video)
are let go as they come in. A batch then runs the processor only for its prompts' text and for the references
that dropout left a sample fewer of.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import time
from concurrent.futures import ProcessPoolExecutor

import torch
from transformers import AutoProcessor

from vino_model.encoder import MEDIA_PROCESSORS, InterleavedEncoder, memoising, process_context

from .data import Sample, TrainData, fit_reference, fitted_key, read_ahead

TOWER_CHUNK = 64  # processor outputs the vision tower reads in one pass
PIXELS = (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw"))

_worker = {}  # a worker process's memoising processor and reference area


def _start_worker(qwen_folder: str, dtype: str, reference_area: int) -> None:
    torch.set_num_threads(1)  # as many workers as cores
    _worker["processor"] = memoising(AutoProcessor.from_pretrained(qwen_folder), getattr(torch, dtype))
    _worker["reference_area"] = reference_area


def full_context(sample: Sample) -> tuple[str, list, tuple | None]:
    """A sample's context with every reference kept, as the workers take it: its long caption, (path, None) of each
    reference image and (path, fit spec) of its reference video (or None)."""
    record = sample.record
    video = (record.ref_video, sample.video_spec) if sample.video is not None else None
    return record.caption_long, [(path, None) for path in record.ref_images], video


def _read(context) -> bytes:
    """In a worker: one context's fitted references (`TrainData.fitted`'s entries) and what the processor made of
    them (`MemoisedMedia.outputs` by processor name), pickled by value. The pool's own pickler would move each
    tensor into shared memory, whose file the main process keeps open as long as it keeps the tensor: a stage's
    thousands of kept outputs ran past the open-file limit, and the pool broke (session 25, on the GPU machine)."""
    text, images, video = context
    references = images + ([video] if video else [])
    area = _worker["reference_area"]
    fitted = {fitted_key(path, spec): fit_reference(path, spec, area) for path, spec in references}
    frames, fps = fitted[fitted_key(*video)] if video else (None, None)
    processor = _worker["processor"]
    process_context(processor, text, [fitted[fitted_key(*image)] for image in images], frames, fps)
    made = {}
    for name in MEDIA_PROCESSORS:
        media = getattr(processor, name)
        made[name], media.outputs = media.outputs, {}
    return pickle.dumps((fitted, made), protocol=pickle.HIGHEST_PROTOCOL)


def read_by_tower(encoder: InterleavedEncoder, outputs: list) -> int:
    """The vision tower reads the pixels of processor outputs (and lets them go); returns how many tensors."""
    pixels = [(output[name], output[grid]) for output in outputs for name, grid in PIXELS
              if isinstance(output.get(name), torch.Tensor)]
    if pixels:
        with torch.no_grad():
            encoder.media_features([p for p, _ in pixels], [g for _, g in pixels])
    return len(pixels)


def prefill(data: TrainData, encoder: InterleavedEncoder, qwen_folder, workers: int) -> dict:
    """Fill `data.fitted`, the encoder's memoised media and the tower's readings for every sample with references,
    in `workers` processes (at most one fewer than the cores); returns what it did (contexts, media read by the
    tower, seconds) for the log."""
    if data.fitted is None or encoder.memo is None or not data.read_media:
        raise RuntimeError("prefill fills what data.keep_in_memory keeps (data.fitted, encoder.memo) in a stage whose "
                           "VLM reads the references")
    started = time.monotonic()
    workers = max(1, min(workers, (os.cpu_count() or 2) - 1))
    contexts = [full_context(s) for s in data.samples if s.record.ref_images or s.video is not None]
    kept = {name: getattr(encoder.processor, name).outputs for name in MEDIA_PROCESSORS}
    dtype = str(encoder.vlm.model.visual.dtype).removeprefix("torch.")
    pending, read = [], 0
    spawn = multiprocessing.get_context("spawn")  # this process may hold CUDA, which a fork must not inherit
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_start_worker,
                             initargs=(str(qwen_folder), dtype, data.reference_area)) as pool:
        for fitted, made in map(pickle.loads, read_ahead(pool, _read, contexts, 4 * workers)):
            data.fitted.update(fitted)
            for name, outputs in made.items():
                fresh = {key: output for key, output in outputs.items() if key not in kept[name]}
                kept[name].update(fresh)  # equal media of two samples: the first one's output is kept
                pending += fresh.values()
            if len(pending) >= TOWER_CHUNK:
                read, pending = read + read_by_tower(encoder, pending), []
    read += read_by_tower(encoder, pending)
    return {"contexts": len(contexts), "media": read, "seconds": round(time.monotonic() - started, 1)}
