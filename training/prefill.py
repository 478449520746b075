"""The VLM's first reading of every sample's references, made before a run's first step (`data.prefill_workers`).

With `data.keep_in_memory` the encoder keeps the processor's output for each reference and the vision tower's
reading of it, but a run makes them as its batches first meet the references, on the main process between its
steps: session 24's stage 3 ran steps 10-500 at 0.89 s a step and steps 1,310-1,710 at 0.31 s. Here worker
processes fit each sample's references and run the processor over them (the CPU's work: 0.1-0.2 s a reference
video on a busy 2-core CPU); the main process keeps their outputs in the encoder's `MemoisedMedia` and in
`TrainData.fitted`. The workers also make each sample's prompts with every reference kept (its long, short and
no caption) and their mRoPE positions, which go into the encoder's memo: a batch runs the processor only for
text-only prompts (tokenized together) and for the samples that dropout left fewer references (session 34: the
prompts new to the memo took half the host's forward time 200-320 steps in).

The main process bounded it, not the workers (benchmarks/prefill_rate.py, H200 machine, 15 workers: their own work
115x faster than the pool's; 21,000 contexts in 226-243 s). Their outputs come through the pool's one result pipe,
3.3 MB a context, mostly pixels; with the pixels left out the pool ran 1.6x faster. So a small vision tower (the
embedded default's: depth 2, width 32) reads the pixels in the workers, which send its reading instead (about 20x
smaller than a video's pixels); a large one (Qwen3-VL-4B's) reads them on the main process's GPU, a chunk at a
time, and the pixels are let go as they come in. With the tower in the workers, session 28's stage 3 prefilled its
21,000 contexts in 93.6 s.

It reads the manifests' records, not the index: a run prefills before it indexes its latent cache, while the
processes that fill that cache (`python -m training.cache`) still run on the GPU (session 28: 116 s of filling,
then 94 s of prefill, one after the other).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import time
from concurrent.futures import ProcessPoolExecutor

import torch
from transformers import AutoConfig, AutoProcessor, Qwen3VLForConditionalGeneration
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

from vino_model.encoder import (MEDIA_PROCESSORS, InterleavedEncoder, memoising, process_context, rope_positions,
                                tower_readings)
from vino_model.errors import VinoInputError

from .data import MEDIA_ERRORS, fit_reference, fitted_key, media_specs, memo_key, read_ahead
from .manifest import Record

TOWER_CHUNK = 64  # processor outputs the vision tower reads in one pass
WORKER_TOWER = 20_000_000  # parameters of the largest vision tower the workers run themselves, on their CPU
PIXELS = (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw"))


def pixel_names(output: dict) -> list[tuple[str, str]]:
    """(pixels, grid) names of the pixel tensors a processor output holds."""
    return [(pixels, grid) for pixels, grid in PIXELS if isinstance(output.get(pixels), torch.Tensor)]

_worker = {}  # a worker process's memoising processor and reference area


def _start_worker(qwen_folder: str, dtype: str, reference_area: int, tower: bool) -> None:
    """`tower`: this worker also runs the (frozen) vision tower, in float32, and sends its reading in `dtype`."""
    torch.set_num_threads(1)  # as many workers as cores
    _worker["processor"] = memoising(AutoProcessor.from_pretrained(qwen_folder), getattr(torch, dtype))
    _worker["reference_area"] = reference_area
    _worker["dtype"] = getattr(torch, dtype)
    if tower:
        vlm = Qwen3VLForConditionalGeneration.from_pretrained(qwen_folder, dtype=torch.float32)
        _worker["tower"] = vlm.model.visual.eval()
        _worker["rope"] = vlm.model
    else:  # the prompts' positions read the config alone: a model with no weights
        with torch.device("meta"):
            _worker["rope"] = Qwen3VLModel(AutoConfig.from_pretrained(qwen_folder))


def record_contexts(records: list[Record], cfg, reference_area: int) -> list[tuple[str, tuple, list, tuple | None]]:
    """The context of each record with references (and a share in cfg.tasks) with every reference kept, as the
    workers take it: the record's target (which names it in the memo), its captions as a batch may read them
    (long, short, none), (path, None) of each reference image and (path, fit spec) of its reference video (or
    None). A record whose target cannot be fitted is left to the index to report."""
    contexts = []
    for record in records:
        if not cfg.draws(record.task) or not (record.ref_images or record.ref_video):
            continue
        try:
            video = (record.ref_video, media_specs(record, cfg, reference_area)[-1][1]) if record.ref_video else None
        except VinoInputError:
            continue
        captions = tuple(dict.fromkeys((record.caption_long, record.caption_short, "")))
        contexts.append((record.target, captions, [(path, None) for path in record.ref_images], video))
    return contexts


def _read(context) -> bytes:
    """In a worker: one context's fitted references (`TrainData.fitted`'s entries), what the processor made of
    them (`MemoisedMedia.outputs` by processor name) and each caption's prompt (`_prompt`), pickled by value; None
    for a context with an unreadable reference (the index leaves its sample out and says why). The pool's own
    pickler would move each tensor into shared memory, whose file the main process keeps open as long as it keeps
    the tensor: a stage's thousands of kept outputs ran past the open-file limit, and the pool broke (session 25,
    on the GPU machine)."""
    target, captions, images, video = context
    references = images + ([video] if video else [])
    area = _worker["reference_area"]
    try:
        fitted = {fitted_key(path, spec): fit_reference(path, spec, area) for path, spec in references}
    except MEDIA_ERRORS:
        return pickle.dumps(None)
    frames, fps = fitted[fitted_key(*video)] if video else (None, None)
    processor = _worker["processor"]
    pictures = [fitted[fitted_key(*image)] for image in images]
    prompts = [(memo_key(target, caption, range(len(images)), video is not None),
                *_prompt(process_context(processor, caption, pictures, frames, fps), processor))
               for caption in captions]  # the media are processed for the first, and memoised for the others
    made = {}
    for name in MEDIA_PROCESSORS:
        media = getattr(processor, name)
        made[name], media.outputs = media.outputs, {}
    return pickle.dumps((fitted, made, _read_in_worker(made), prompts), protocol=pickle.HIGHEST_PROTOCOL)


def _prompt(inputs, processor) -> tuple[dict, dict, torch.Tensor]:
    """In a worker: a processed prompt as the encoder's memo keeps it, split into what goes by value (token ids,
    masks) and what the main process already keeps (the media outputs' tensors, as (processor name, output key,
    name in it)), and its mRoPE positions. A batch then prepares none of a prefilled sample's prompts: 87 a step
    were new to the memo 200-320 steps into session 34's run, half the host's forward time."""
    kept = {id(value): (name, key, field) for name in MEDIA_PROCESSORS
            for key, output in getattr(processor, name).outputs.items() for field, value in output.items()
            if isinstance(value, torch.Tensor)}
    by_value = {field: value for field, value in inputs.items() if id(value) not in kept}
    shared = {field: kept[id(value)] for field, value in inputs.items() if id(value) in kept}
    return by_value, shared, rope_positions(_worker["rope"], inputs)


def _read_in_worker(made: dict) -> dict:
    """With this worker's tower: its reading of each output's pixels ((processor name, output key, pixel name) ->
    reading, in the main tower's dtype), their tensors in `made` emptied."""
    tower = _worker.get("tower")
    if tower is None:
        return {}
    places = [(name, key, pixels, grid) for name, outputs in made.items() for key, output in outputs.items()
              for pixels, grid in pixel_names(output)]
    if not places:
        return {}
    with torch.no_grad():
        readings = tower_readings(tower, [made[n][k][p] for n, k, p, _ in places],
                                  [made[n][k][g] for n, k, _, g in places], "cpu")
    dtype = _worker["dtype"]
    for name, key, pixels, _ in places:
        made[name][key][pixels] = made[name][key][pixels][:0].clone()
    return {place[:3]: (merged.to(dtype), [layer.to(dtype) for layer in deep])
            for place, (merged, deep) in zip(places, readings)}


def read_by_tower(encoder: InterleavedEncoder, outputs: list) -> int:
    """The vision tower reads the pixels of processor outputs (and lets them go); returns how many tensors."""
    pixels = [(output[name], output[grid]) for output in outputs for name, grid in pixel_names(output)]
    if pixels:
        with torch.no_grad():
            encoder.media_features([p for p, _ in pixels], [g for _, g in pixels])
    return len(pixels)


def keep_readings(encoder: InterleavedEncoder, output: dict, readings: dict, place: tuple) -> int:
    """File a worker tower's readings of a processor output's pixels in the encoder (on its device); returns how
    many tensors."""
    device = encoder.vlm.device
    names = pixel_names(output)
    for pixels, _ in names:
        merged, deep = readings[(*place, pixels)]
        encoder.keep_reading(output[pixels], (merged.to(device), [layer.to(device) for layer in deep]))
    return len(names)


def prefill(contexts: list, fitted: dict, encoder: InterleavedEncoder, qwen_folder, reference_area: int,
            workers: int) -> dict:
    """Fill `fitted` (`TrainData.fitted`), the encoder's memoised media and the tower's readings for `contexts`
    (record_contexts'), in `workers` processes (at most one fewer than the cores); returns what it did (contexts,
    media read by the tower, where, seconds) for the log. It needs no latent: a run makes it while other processes
    fill the latent cache."""
    if encoder.memo is None:
        raise RuntimeError("prefill fills the memo of an encoder that keeps its readings (data.keep_in_memory)")
    started = time.monotonic()
    workers = max(1, min(workers, (os.cpu_count() or 2) - 1))
    kept = {name: getattr(encoder.processor, name).outputs for name in MEDIA_PROCESSORS}
    tower = encoder.vlm.model.visual
    in_workers = sum(p.numel() for p in tower.parameters()) <= WORKER_TOWER
    dtype = str(tower.dtype).removeprefix("torch.")
    pending, read = [], 0
    spawn = multiprocessing.get_context("spawn")  # this process may hold CUDA, which a fork must not inherit
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_start_worker,
                             initargs=(str(qwen_folder), dtype, reference_area, in_workers)) as pool:
        for result in map(pickle.loads, read_ahead(pool, _read, contexts, 4 * workers)):
            if result is None:
                continue
            made_fitted, made, readings, prompts = result
            fitted.update(made_fitted)
            for name, outputs in made.items():
                fresh = {key: output for key, output in outputs.items() if key not in kept[name]}
                kept[name].update(fresh)  # equal media of two samples: the first one's output is kept
                if in_workers:
                    read += sum(keep_readings(encoder, output, readings, (name, key)) for key, output in fresh.items())
                else:
                    pending += fresh.values()
            for key, by_value, shared, positions in prompts:  # the kept outputs' own tensors, which the tower read
                inputs = {**by_value, **{field: kept[name][output][name_in] for field, (name, output, name_in)
                                         in shared.items()}}
                encoder.memo[key] = inputs, positions
            if len(pending) >= TOWER_CHUNK:
                read, pending = read + read_by_tower(encoder, pending), []
    read += read_by_tower(encoder, pending)
    return {"contexts": len(contexts), "media": read, "tower": "workers" if in_workers else "main",
            "seconds": round(time.monotonic() - started, 1)}
