"""Score generated images and videos of the procedural world by measuring their pixels.

Nothing here trusts the prompt: every check segments the output and compares what it finds with
the sample's ground truth (`meta`, see `training.world`). Pixels are labelled with the nearest
colour of the world's palette (the six object colours, their stripe shades, the five greys); the
non-grey pixels form objects (8-connected), each object takes the colour most of its pixels have,
and its shape is the nearest template by the angular signature of its outline (how its squared
distance from the centroid spreads over directions), which survives blur, noise and 4:2:0 chroma loss.

An object's size and outline are not its nearest-palette pixels: on a soft edge the pixels halfway
between the colour and a darker grey are nearest the stripe shade (0.55 x the colour) and join the
object, so a blur of 1-2 px could make a small star medium (and a decoder's wider halo filled a
cross's inner corners until it read as a circle). Instead every pixel of the object and of the grey
ring _RING px around it counts the fraction of the colour it holds (its projection on the colour's
hue, which greys lack, clipped to [0, 1]): a sum that blur, resampling and chroma subsampling keep,
while an object drawn bigger, or grown by a decoder, still measures bigger. The diameter is that of
the object's shape holding as much, plain or striped (striped: much of its core in the stripe
shade), as measured on large clean renders; the size class is the nearest of SIZES in log. The
outline is the pixels at least half covered (a stripe's against its shade), where a blur leaves the edge.

Checks, each in [0, 1] (per object, then the worst object counts: every object the prompt names
must be right):
    color       an object of the prompted colour (videos: fraction of frames)
    shape       an object of that colour has the prompted shape
    size        ... and the prompted size class (see above); position: its centre lies in the prompted 3x3 cell
    count       exactly as many objects of that colour and shape as prompted
    subject     (videos) fraction of frames showing the object with its colour and shape, as in
                subject consistency: for ti2v/tiv2v this is the referenced object's identity
    direction   the straight-line fit of its centroid track points the prompted way
    speed       the fitted displacement along that way matches the prompted speed class
    steadiness  fraction of frame steps that follow the fitted motion within `jitter` (VBench-like
                smoothness; a step with the object missing fails)
    first_frame (i2v, clone) the first frame reproduces Image 1
    edited      (edits) the changed object is found, with its new colour, shape and size, where it belongs
    removed     (edits) what the edit replaces, removes or moves is gone from its old place
    background  the background greys match (per quadrant and tone)
    preservation (edits) outside the edited area the output keeps the input's pixels
A sample's score is the geometric mean of its checks, so one failed claim (wrong colour, wrong
way, no edit, a ruined rest) sinks it, as GenEval's all-or-nothing and GEdit's sqrt(SC x PQ) do;
the per-check means in the table show what fails.

CLI: python -m training.bench --tasks DIR/tasks_video.json DIR/tasks_image.json --results OUT
reads the manifest beside the task files (entry `index` = manifest line, from 0) and the outputs
OUT/{index}.png|.mp4|.npz (the release's names) or OUT/{index}_{task}.png|.mp4|.npz (vino_model.generate's).
"""

import argparse
import functools
import json
import math
import os
from dataclasses import dataclass, fields

import numpy as np
from PIL import Image

from training.manifest import TASKS, load_media, read_manifest
from training.world import (COLORS, DIRECTIONS, GREYS, REGIONS, SHAPES, SIZES, SPEEDS, STRIPE_SHADE, TEXTURES,
                            count_copies, render)
from vino_model.errors import VinoInputError, run_cli
from vino_model.media import RAW_CLIP, write_png
from vino_model.tasks import read_task_file

RESULT_SUFFIXES = (".png", ".mp4", RAW_CLIP)  # an output's formats, looked for in this order

CHECKS = ("color", "shape", "size", "position", "count", "subject", "direction", "speed", "steadiness",
          "first_frame", "edited", "removed", "background", "preservation")


@dataclass(frozen=True)
class Tolerances:
    min_area: float = 0.008    # smallest object kept, as a fraction of the frame's area
    position: float = 0.08     # how far a centre may stray from its place or cell, fraction of the shorter side
    pixel: int = 40            # largest channel difference of a pixel that counts as unchanged
    keep_low: float = 0.6      # fraction of unchanged pixels scoring 0 (preservation, first_frame) ...
    keep_high: float = 0.9     # ... and scoring 1, linear in between
    edit_margin: float = 0.06  # the edited area grows by this (fraction of the shorter side) before preservation
    min_move: float = 0.1      # displacement over a clip below which nothing moved, fraction of the side
    jitter: float = 0.03       # a frame step's tolerated error around the fitted motion, fraction of the side


# ---- seeing ----

_COLOR_NAMES = tuple(COLORS)
_GREY_NAMES = tuple(GREYS)
_REFERENCES = np.array([c for c in COLORS.values()] + [[STRIPE_SHADE * v for v in c] for c in COLORS.values()]
                       + [[g] * 3 for g in GREYS.values()], dtype=np.float32)
_REFERENCE_LABELS = np.array(list(range(len(COLORS))) * 2 + [-1 - i for i in range(len(GREYS))])


@dataclass
class Blob:
    color: str
    shape: str
    area: float  # pixels' worth of its colour that it and its edge hold (see _coverage)
    center: tuple  # (x, y) of the bounding box's centre, pixel edges counted as in the world's tracks
    centroid: tuple  # (x, y) mean of the pixel centres
    diameter: float  # of the shape with this area


def palette_labels(frames):
    """Nearest palette entry per pixel: colour index >= 0, or -1 - grey index. [T, H, W]"""
    # |x - r|^2 = |x|^2 - 2 x.r + |r|^2, and |x|^2 is the same for every r
    distance = (_REFERENCES ** 2).sum(-1) - 2 * frames.astype(np.float32) @ _REFERENCES.T  # [T, H, W, refs]
    return _REFERENCE_LABELS[distance.argmin(-1)]


def _run_max(ids, mask, axis):
    """Give every pixel of a run of `mask` along `axis` the largest id of its run."""
    big = int(ids.max()) + 1
    for _ in range(2):  # a running maximum forwards, then backwards
        runs = np.cumsum(~mask, axis)  # which run along the axis a pixel belongs to
        ids = np.maximum.accumulate(runs * big + ids, axis) - runs * big
        ids, mask = np.flip(ids, axis), np.flip(mask, axis)
    return np.where(mask, ids, 0)


def _components(mask):
    """8-connected components of a [T, H, W] mask: an id per pixel, 0 outside (max-id propagation)."""
    ids = np.where(mask, np.arange(1, mask.size + 1).reshape(mask.shape), 0)
    height, width = mask.shape[1:]
    while True:
        grown = _run_max(_run_max(ids, mask, 1), mask, 2)
        padded = np.pad(grown, ((0, 0), (1, 1), (1, 1)))
        for dy, dx in ((0, 0), (0, 2), (2, 0), (2, 2)):  # diagonal neighbours
            np.maximum(grown, padded[:, dy:dy + height, dx:dx + width], out=grown)
        grown = np.where(mask, grown, 0)
        if np.array_equal(grown, ids):
            return ids
        ids = grown


def _grow(mask, radius):
    """Dilate a [T, H, W] mask by a square of half-side `radius` pixels."""
    height, width = mask.shape[1:]
    padded = np.pad(mask, ((0, 0), (radius, radius), (0, 0)))
    rows = np.zeros_like(mask)
    for d in range(2 * radius + 1):
        rows |= padded[:, d:d + height]
    padded = np.pad(rows, ((0, 0), (0, 0), (radius, radius)))
    grown = np.zeros_like(mask)
    for d in range(2 * radius + 1):
        grown |= padded[:, :, d:d + width]
    return grown


_BINS = 24


def _signature(ys, xs):
    """How the squared distance from the centroid spreads over 24 directions (sums to 1)."""
    dy, dx = ys - ys.mean(), xs - xs.mean()
    weight = dx * dx + dy * dy
    position = (np.arctan2(dy, dx) / (2 * math.pi) * _BINS) % _BINS
    low = np.floor(position).astype(int)
    high_share = position - low
    hist = np.bincount(low % _BINS, weight * (1 - high_share), _BINS) + \
        np.bincount((low + 1) % _BINS, weight * high_share, _BINS)
    return hist / max(hist.sum(), 1e-9)


_RING = 2  # pixels around a blob that its soft edge spreads over (a blur of 1-2 px puts nearly all of it there)
_STRIPED = 0.2  # share of a blob's core in the stripe shade above which it is striped (plain ~0, striped ~0.5)


def _coverage(frame, labels, inside, color):
    """How many pixels' worth of `color` one blob and the grey pixels within _RING of it hold, its texture
    and its outline.

    frame [H, W, 3] and labels [H, W] around the blob, inside [H, W] its pixels. A pixel p mixing the
    colour c with a grey holds alpha = p.h / c.h of it (clipped to [0, 1]), h = c - mean(c): a grey has
    nothing along h, so neither the background's tone nor its split matters, and blur, which only mixes
    neighbouring pixels, keeps the sum. The blob is striped when much of its core (its pixels _RING
    from its edge, where a soft edge has faded out) is nearer the stripe shade than the colour. The
    outline [H, W]: the pixels at least half covered (a stripe's against its shade), or the blob's own
    where none is."""
    rgb = np.asarray(COLORS[color], dtype=np.float32)
    hue = rgb - rgb.mean()
    pixels = frame.astype(np.float32)
    alpha = np.clip(pixels @ hue / (rgb @ hue), 0, 1)  # [H, W]
    around = _grow(inside[None], _RING)[0] & (inside | (labels < 0))
    shaded = pixels @ rgb < (1 + STRIPE_SHADE) / 2 * (rgb @ rgb)
    core = inside & ~_grow(~inside[None], _RING)[0]
    if core.sum() < inside.sum() / 8:  # too thin for that (a small object at 32 px): 1 px from its edge
        core = inside & ~_grow(~inside[None], 1)[0]
    texture = "striped" if core.any() and shaded[core].mean() > _STRIPED else "plain"
    cover = np.where(shaded & (texture == "striped"), alpha / STRIPE_SHADE, alpha)
    outline = around & (cover >= 0.5)
    return float(alpha[around].sum()), texture, outline if outline.any() else inside


_TEMPLATE_DIAMETER = 56.0


@functools.cache
def _templates():
    """Each shape's signature, and its fill per texture (the colour it holds, as in _coverage, over its
    diameter squared), from large clean renders."""
    templates = {}
    for shape in SHAPES:
        fill = {}
        for texture in TEXTURES:
            obj = {"id": 0, "shape": shape, "color": "red", "rgb": list(COLORS["red"]), "size": "large",
                   "diameter": _TEMPLATE_DIAMETER, "texture": texture, "region": None, "motion": None,
                   "track": [[32, 32]]}
            scene = {"width": 64, "height": 64, "frames": 1, "objects": [obj],
                     "background": {"colors": ["white"], "rgb": [[GREYS["white"]] * 3], "split": None}}
            frame = render(scene)[0]
            labels = palette_labels(frame[None])[0]
            inside = labels >= 0
            area, _, outline = _coverage(frame, labels, inside, "red")
            fill[texture] = area / _TEMPLATE_DIAMETER ** 2
            if texture == "plain":
                signature = _signature(*np.nonzero(outline))
        templates[shape] = (signature, fill)
    return templates


def _shape(ys, xs):
    signature = _signature(ys, xs)
    return min(SHAPES, key=lambda s: np.abs(signature - _templates()[s][0]).sum())


def find_blobs(frames, labels, tol=Tolerances()):
    """The objects in each frame, a list of Blob per frame, from the frames [T, H, W, 3] and their palette labels."""
    ids = _components(labels >= 0)
    smallest = tol.min_area * labels.shape[1] * labels.shape[2]
    flat = ids.ravel()
    order = np.argsort(flat, kind="stable")
    starts = np.searchsorted(flat[order], np.unique(flat[flat > 0]))
    blobs = [[] for _ in range(len(labels))]
    for pixels in np.split(order, starts)[1:]:
        if len(pixels) < smallest:
            continue
        t, ys, xs = np.unravel_index(pixels, ids.shape)
        color = _COLOR_NAMES[np.bincount(labels.ravel()[pixels], minlength=len(COLORS)).argmax()]
        box = (t[0], slice(max(ys.min() - _RING, 0), ys.max() + _RING + 1),
               slice(max(xs.min() - _RING, 0), xs.max() + _RING + 1))
        area, texture, outline = _coverage(frames[box], labels[box], ids[box] == flat[pixels[0]], color)
        shape = _shape(*np.nonzero(outline))
        center = ((xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2)
        diameter = math.sqrt(area / _templates()[shape][1][texture])
        blobs[t[0]].append(Blob(color, shape, area, center, (xs.mean() + 0.5, ys.mean() + 0.5), diameter))
    return blobs


def _size_class(diameter, side):
    return min(SIZES, key=lambda s: abs(math.log(diameter / (SIZES[s] * side))))


def _matching(blobs, obj):
    return [b for b in blobs if b.color == obj["color"] and b.shape == obj["shape"]]


def object_track(blobs, obj):
    """In each frame's blobs, the largest of `obj`'s colour and shape, or None where there is none."""
    return [max(matched, key=lambda b: b.area) if (matched := _matching(found, obj)) else None for found in blobs]


def _near(point, target, slack):
    return max(abs(point[0] - target[0]), abs(point[1] - target[1])) <= slack


def _in_cell(point, region, width, height, slack):
    col, row = REGIONS[region]
    dx = max(col * width / 3 - point[0], point[0] - (col + 1) * width / 3, 0)
    dy = max(row * height / 3 - point[1], point[1] - (row + 1) * height / 3, 0)
    return max(dx, dy) <= slack


def _ramp(x, low, high):
    return float(np.clip((x - low) / (high - low), 0, 1))


# ---- checks ----

def _background(labels, scene):
    """Fraction of frames whose background greys match the scene's, quadrant by quadrant and tone by tone."""
    height, width = labels.shape[1:]
    bg = scene["background"]
    tones = np.full((height, width), _GREY_NAMES.index(bg["colors"][0]))
    if bg["split"] == "horizontal":
        tones[height // 2:] = _GREY_NAMES.index(bg["colors"][1])
    elif bg["split"] == "vertical":
        tones[:, width // 2:] = _GREY_NAMES.index(bg["colors"][1])
    quadrant = (np.arange(height)[:, None] >= height // 2) * 2 + (np.arange(width)[None, :] >= width // 2)
    good = []
    for frame in labels:
        grey = -1 - frame
        ok = True
        for q in range(4):
            for tone in np.unique(tones[quadrant == q]):
                seen = grey[(quadrant == q) & (tones == tone) & (frame < 0)]
                if len(seen) and np.bincount(seen, minlength=len(GREYS)).argmax() != tone:
                    ok = False
        good.append(ok)
    return float(np.mean(good))


def _kept(frames, reference, keep, tol):
    """How much of `keep` (a [T, H, W] mask) still shows `reference`'s pixels, ramped to [0, 1]."""
    if not keep.any():
        return None
    unchanged = np.abs(frames.astype(np.int16) - reference.astype(np.int16)).max(-1) <= tol.pixel
    return _ramp(unchanged[keep].mean(), tol.keep_low, tol.keep_high)


def _still(meta, frames, blobs, labels, tol):
    """t2i: colour, shape, size, position, count of every prompted object; the background."""
    scene = meta["scene"]
    found, side = blobs[0], min(scene["width"], scene["height"])
    objects = scene["objects"]
    checks = {
        "color": min(any(b.color == o["color"] for b in found) for o in objects),
        "shape": min(bool(_matching(found, o)) for o in objects),
        "size": min(any(_size_class(b.diameter, side) == o["size"] for b in _matching(found, o)) for o in objects),
        "count": min(len(_matching(found, o)) == sum((p["color"], p["shape"]) == (o["color"], o["shape"])
                                                     for p in objects) for o in objects),
    }
    placed = [o for o in objects if o["region"]]
    if placed:
        checks["position"] = min(any(_in_cell(b.center, o["region"], scene["width"], scene["height"],
                                              tol.position * side) for b in _matching(found, o)) for o in placed)
    checks["background"] = _background(labels, scene)
    return {name: float(value) for name, value in checks.items()}


def _motion(obj, blobs, scene, tol):
    """color, subject, size, direction, speed, steadiness of one moving object."""
    frames = len(blobs)
    side = min(scene["width"], scene["height"])
    track = object_track(blobs, obj)
    seen = [t for t, b in enumerate(track) if b]
    sizes = [_size_class(np.median([track[t].diameter for t in seen]), side)] if seen else []
    checks = {
        "color": np.mean([any(b.color == obj["color"] for b in found) for found in blobs]),
        "subject": len(seen) / frames,
        "size": float(sizes == [obj["size"]]),
        "direction": 0.0, "speed": 0.0, "steadiness": 0.0,
    }
    if len(seen) < 2:
        return checks
    points = np.array([track[t].centroid for t in seen])
    velocity = np.polyfit(seen, points, 1)[0]  # [vx, vy] pixels per frame
    step = np.array(DIRECTIONS[obj["motion"]["direction"]])
    span = scene["width"] if step[0] else scene["height"]
    along = velocity @ step * (frames - 1) / span
    across = abs(velocity @ step[::-1]) * (frames - 1) / span
    checks["direction"] = float(along >= tol.min_move and along >= across)
    if along >= tol.min_move:
        measured = "fast" if along >= (SPEEDS["slow"] + SPEEDS["fast"]) / 2 else "slow"
        checks["speed"] = float(measured == obj["motion"]["speed"])
    steady = 0
    for now, then in zip(track, track[1:]):
        if now and then:
            error = np.subtract(then.centroid, now.centroid) - velocity
            steady += np.abs(error).max() <= tol.jitter * side
    checks["steadiness"] = steady / (frames - 1)
    return checks


def _moving(meta, frames, blobs, labels, tol):
    """t2v, ti2v, i2v, clone: every object moves as prompted; i2v and clone start from Image 1."""
    scene = meta["scene"]
    per_object = [_motion(o, blobs, scene, tol) for o in scene["objects"]]
    checks = {name: min(c[name] for c in per_object) for name in per_object[0]}
    checks["background"] = _background(labels, scene)
    if meta["task"] in ("i2v", "clone"):
        first = render(meta["ref_images"][0])
        checks["first_frame"] = _kept(frames[:1], first, np.ones(first.shape[:3], dtype=bool), tol)
    return {name: float(value) for name, value in checks.items()}


def _same(a, b):
    """Whether an object is unchanged between the input and the output scene."""
    return all(a[k] == b[k] for k in ("color", "shape", "texture", "diameter")) and np.allclose(a["track"], b["track"], atol=0.5)


def _edit(meta, frames, blobs, labels, tol):
    """ti2i, ti2i_ref, tv2v, tiv2v: the edit happened, what it replaced is gone, the rest is kept."""
    scene, edit = meta["scene"], meta["edit"]
    source = meta["ref_video"] or meta["ref_images"][-1]
    width, height = scene["width"], scene["height"]
    side = min(width, height)
    before = {o["id"]: o for o in source["objects"]}
    after = {o["id"]: o for o in scene["objects"]}
    changed = [o for o in scene["objects"] if o["id"] not in before or not _same(o, before[o["id"]])]
    gone = [o for o in source["objects"] if o["id"] not in after or
            (o["color"], o["shape"]) != (after[o["id"]]["color"], after[o["id"]]["shape"]) or
            not np.allclose(o["track"], after[o["id"]]["track"], atol=0.5)]
    slack = tol.position * side
    checks = {}
    if changed:
        def placed(blob, obj, t):  # where it belongs, at its size
            if _size_class(blob.diameter, side) != obj["size"]:
                return False
            if edit.get("region"):  # the prompt names a cell of the 3x3 grid, not a spot
                return _in_cell(blob.center, edit["region"], width, height, slack)
            return _near(blob.center, obj["track"][t], slack)
        checks["edited"] = min(np.mean([any(placed(b, o, t) for b in _matching(found, o))
                                        for t, found in enumerate(blobs)]) for o in changed)
    if gone:
        checks["removed"] = min(np.mean([not any(_near(b.center, o["track"][t], slack) for b in _matching(found, o))
                                         for t, found in enumerate(blobs)]) for o in gone)
    if scene["background"] != source["background"]:
        checks["background"] = _background(labels, scene)
    base, expected = render(source), render(scene)
    edited_area = (base != expected).any(-1)
    if edit.get("region"):  # the object may sit anywhere in its cell
        col, row = REGIONS[edit["region"]]
        reach = after[edit["object"]]["diameter"] / 2
        ys, xs = np.mgrid[:height, :width] + 0.5
        edited_area |= ((xs > col * width / 3 - reach) & (xs < (col + 1) * width / 3 + reach) &
                        (ys > row * height / 3 - reach) & (ys < (row + 1) * height / 3 + reach))[None]
    keep = ~_grow(edited_area, math.ceil(tol.edit_margin * side))
    preservation = _kept(frames, base, keep, tol)
    if preservation is not None:
        checks["preservation"] = preservation
    return {name: float(value) for name, value in checks.items()}


_TASK_CHECKS = {"t2i": _still, "t2v": _moving, "ti2v": _moving, "i2v": _moving, "clone": _moving,
                "ti2i": _edit, "ti2i_ref": _edit, "tv2v": _edit, "tiv2v": _edit}


def _conform(frames, scene):
    """Bring an output to the scene's size and frame count (bilinear resize, nearest frames)."""
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.shape[1:3] != (scene["height"], scene["width"]):
        size = (scene["width"], scene["height"])
        frames = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR)) for f in frames])
    if len(frames) != scene["frames"]:
        frames = frames[np.round(np.linspace(0, len(frames) - 1, scene["frames"])).astype(int)]
    return frames


def prompted_count(meta):
    """The copies a count scene prompts (copies of one object: "three small blue squares"); None for any other
    sample."""
    return count_copies(meta["scene"]["objects"]) if meta["task"] == "t2i" else None


def count_found(meta, frames, tol=Tolerances()):
    """How many objects of a count scene's colour and shape an output (uint8 [H, W, 3]) shows, as the count check
    finds them."""
    frames = _conform(frames, meta["scene"])
    return len(_matching(find_blobs(frames, palette_labels(frames), tol)[0], meta["scene"]["objects"][0]))


def score(meta, frames, tol=Tolerances()):
    """Score one output (uint8 [T, H, W, 3] or [H, W, 3]) against its sample's ground truth.

    Returns {"task", "score": geometric mean of the checks, "checks": {name: value in [0, 1]}}."""
    frames = _conform(frames, meta["scene"])
    labels = palette_labels(frames)
    checks = _TASK_CHECKS[meta["task"]](meta, frames, find_blobs(frames, labels, tol), labels, tol)
    values = list(checks.values())
    value = 0.0 if min(values) <= 0 else math.exp(np.mean(np.log(values)))
    return {"task": meta["task"], "score": value, "checks": checks}


# ---- running over a task file and reporting ----

def output_file(results_dir, index, task):
    """The output of entry `index` in results_dir, by the release's name or vino_model.generate's; None if none."""
    names = [f"{index}{ext}" for ext in RESULT_SUFFIXES] + [f"{index}_{task}{ext}" for ext in RESULT_SUFFIXES]
    return next((p for p in (os.path.join(results_dir, n) for n in names) if os.path.isfile(p)), None)


def evaluate(task_files, results_dir, manifest=None, tol=Tolerances()):
    """Score the outputs in `results_dir` of the entries of release-format task files.

    An entry's output is `{index}.png|.mp4|.npz` (the release's names) or `{index}_{task}.png|.mp4|.npz`
    (`vino_model.generate`'s); a missing one scores 0 and is flagged. results_dir None scores the
    manifest's own targets (the ground truth). Returns one dict per entry:
    {"index", "task", "caption", "score", "checks", "missing"} (the caption: which prompt it was, in any world)."""
    manifest = manifest or os.path.join(os.path.dirname(os.path.abspath(task_files[0])), "manifest.jsonl")
    if not os.path.isfile(manifest):
        raise VinoInputError(f"manifest {manifest} is missing; expected the manifest.jsonl that training.world wrote "
                             "with the task files (beside them, or named by --manifest)")
    records = list(read_manifest(manifest))
    results = []
    for task_file in task_files:
        for entry in read_task_file(task_file):
            if not 0 <= int(entry.index) < len(records):
                raise VinoInputError(f"{task_file}: entry {entry.index} has no record in {manifest} "
                                     f"({len(records)} records); expected the manifest written with this task file")
            record = records[int(entry.index)]
            found = record.target if results_dir is None else output_file(results_dir, entry.index, entry.task)
            if found:
                result = {**score(record.meta, load_media(found), tol), "missing": False}
            else:
                result = {"task": record.task, "score": 0.0, "checks": {}, "missing": True}
            results.append({"index": int(entry.index), "caption": entry.caption, **result})
    return results


def t2i_table(data_dir, out_dir, draw) -> str:
    """Draw each t2i entry of a world split's image task file (draw(entry) -> uint8 [H, W, 3]) into out_dir as
    vino_model.generate names it, and score them: the t2i table. For probes that sample outside the pipeline."""
    task_file = os.path.join(data_dir, "tasks_image.json")
    for entry in read_task_file(task_file):
        if entry.task == "t2i":
            write_png(os.path.join(out_dir, f"{entry.index}_t2i.png"), draw(entry))
    return format_table([r for r in evaluate([task_file], out_dir) if r["task"] == "t2i"])


def format_table(results):
    """Per-task rows: samples, missing outputs, mean score and the mean of each check ('-': not checked)."""
    tasks = [t for t in TASKS if any(r["task"] == t for r in results)]
    used = [c for c in CHECKS if any(c in r["checks"] for r in results)]
    header = ["task", "n", "missing", "score"] + used
    rows = []
    for task in tasks:
        mine = [r for r in results if r["task"] == task]
        row = [task, str(len(mine)), str(sum(r.get("missing", False) for r in mine)),
               f"{np.mean([r['score'] for r in mine]):.3f}"]
        for check in used:
            values = [r["checks"][check] for r in mine if check in r["checks"]]
            row.append(f"{np.mean(values):.3f}" if values else "-")
        rows.append(row)
    means = [np.mean([r["score"] for r in results if r["task"] == t]) for t in tasks]
    rows.append(["all tasks", str(len(results)), str(sum(r.get("missing", False) for r in results)),
                 f"{np.mean(means):.3f}"] + [""] * len(used))
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header] + rows]
    return "\n".join(lines[:1] + ["-" * len(lines[0])] + lines[1:])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", required=True, help="release-format task files (training.world writes them)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--results",
                        help="folder of outputs named {index}.png|.mp4|.npz or {index}_{task}.png|.mp4|.npz")
    source.add_argument("--ground-truth", action="store_true", help="score the manifest's own target renders")
    parser.add_argument("--manifest", help="ground truth (default: manifest.jsonl beside the first task file)")
    parser.add_argument("--json", help="also write the per-sample scores here")
    for f in fields(Tolerances):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                            help=f"tolerance (default {f.default})")
    args = parser.parse_args(argv)
    tol = Tolerances(**{f.name: getattr(args, f.name) for f in fields(Tolerances)})

    def command():
        results = evaluate(args.tasks, args.results, args.manifest, tol)
        print(format_table(results))
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)

    return run_cli(command)


if __name__ == "__main__":
    raise SystemExit(main())
