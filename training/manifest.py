"""The training manifest: one JSON object per line, one line per training sample.

A record (field order as written):

    id                   str   unique within the manifest
    task                 str   t2i | t2v | i2v | ti2v | ti2i | ti2i_ref | tv2v | tiv2v | clone
    target               path  what the model should produce: .png when frames == 1, else .mp4 (or .npz)
    caption_long         str   descriptive prompt; for edit tasks the instruction, spelled out
    caption_short        str   terse prompt; for edit tasks the instruction, terse
    ref_images           [path] "Image 1", "Image 2", ... in prompt order (empty list when none)
    ref_video            path | null  "Video 1" (at most one, as in the release)
    ref_image_have_base  bool  the last reference image is the base being edited (ti2i_ref only;
                               the release keeps that image in the image-free guidance branch)
    width, height        int   target size, multiples of 16
    frames               int   target frame count, 4k+1 (1 for the image tasks t2i, ti2i, ti2i_ref)
    fps                  float target frame rate
    meta                 dict  ground truth for scoring (free form; `training.world` documents its own)

Paths are written relative to the manifest's folder and read back as absolute paths. Videos are
mp4 files encoded losslessly (H.264 4:4:4 RGB, qp 0), or raw .npz clips where PyAV is missing, so a
target decodes to exactly the pixels that were rendered (`save_media`); `load_media` also reads other
tools' outputs (PNG/JPEG stills, any video PyAV decodes).
"""

import json
import os
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from vino_model import media
from vino_model.errors import VinoInputError
from vino_model.preprocess import frames_to_array
from vino_model.tasks import TASKS as RELEASE_TASKS

# The release's tasks, with its ti2i split in two: ti2i edits its one image; ti2i_ref edits the
# last image (the base, ref_image_have_base) guided by the images before it.
TASKS = ("t2i", "t2v", "i2v", "ti2v", "ti2i", "ti2i_ref", "tv2v", "tiv2v", "clone")
IMAGE_TASKS = ("t2i", "ti2i", "ti2i_ref")


def release_task(task):
    """The release's task entry for a manifest task (ti2i_ref is its ti2i with ref_image_have_base)."""
    return RELEASE_TASKS["ti2i" if task == "ti2i_ref" else task]


def _references(task):
    """(fewest reference images, most, whether a reference video is required) of a manifest task."""
    if task == "ti2i":
        return 1, 1, False
    spec = release_task(task)
    return (2 if task == "ti2i_ref" else spec.min_images), spec.max_images, spec.needs_video


@dataclass(kw_only=True)
class Record:
    id: str
    task: str
    target: str
    caption_long: str
    caption_short: str
    ref_images: list[str] = field(default_factory=list)
    ref_video: str | None = None
    ref_image_have_base: bool = False
    width: int
    height: int
    frames: int
    fps: float
    meta: dict = field(default_factory=dict)


_FIELDS = [f.name for f in fields(Record)]
_TEXT, _NUMBER = (str, "a string"), ((int, float), "a number")
_TYPES = {
    "id": _TEXT, "task": _TEXT, "target": _TEXT, "caption_long": _TEXT, "caption_short": _TEXT,
    "ref_images": (list, "a list of paths"), "ref_video": ((str, type(None)), "a path or null"),
    "ref_image_have_base": (bool, "true or false"), "width": (int, "an integer"), "height": (int, "an integer"),
    "frames": (int, "an integer"), "fps": _NUMBER, "meta": (dict, "an object"),
}


def _check(raw: dict, where: str) -> None:
    """Raise VinoInputError naming `where` and the field when `raw` is not a valid record."""
    for name in raw:
        if name not in _FIELDS:
            raise VinoInputError(f"{where}: unknown field '{name}'; a record has {', '.join(_FIELDS)}")
    for name in _FIELDS:
        if name not in raw:
            raise VinoInputError(f"{where}: missing field '{name}'")
        value, (types, expected) = raw[name], _TYPES[name]
        if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
            raise VinoInputError(f"{where}: field '{name}' is {value!r}; expected {expected}")
    task, frames = raw["task"], raw["frames"]
    if task not in TASKS:
        raise VinoInputError(f"{where}: field 'task' is {task!r}; expected one of {', '.join(TASKS)}")
    if frames < 1 or (frames - 1) % 4:
        raise VinoInputError(f"{where}: field 'frames' is {frames}; expected 4k+1 (1, 5, 9, ...)")
    if (frames == 1) != (task in IMAGE_TASKS):
        expected = "1 (an image task)" if task in IMAGE_TASKS else "more than 1 (a video task)"
        raise VinoInputError(f"{where}: field 'frames' is {frames}; task {task} expects {expected}")
    for name in ("width", "height"):
        if raw[name] <= 0 or raw[name] % 16:
            raise VinoInputError(f"{where}: field '{name}' is {raw[name]}; expected a positive multiple of 16")
    if raw["fps"] <= 0:
        raise VinoInputError(f"{where}: field 'fps' is {raw['fps']}; expected a positive rate")
    suffixes = (".png",) if frames == 1 else (".mp4", media.RAW_CLIP)
    if not raw["target"].endswith(suffixes):
        raise VinoInputError(
            f"{where}: field 'target' is {raw['target']!r}; {frames} frame(s) are stored as {' or '.join(suffixes)}"
        )
    fewest, most, needs_video = _references(task)
    count = len(raw["ref_images"])
    if not fewest <= count <= most:
        expected = f"{fewest}" if most == fewest else f"{fewest} to {most}"
        raise VinoInputError(f"{where}: field 'ref_images' has {count} image(s); task {task} takes {expected}")
    if not all(isinstance(p, str) for p in raw["ref_images"]):
        raise VinoInputError(f"{where}: field 'ref_images' must list paths as strings")
    if (raw["ref_video"] is not None) != needs_video:
        expected = "a video path" if needs_video else "null"
        raise VinoInputError(f"{where}: field 'ref_video' is {raw['ref_video']!r}; task {task} expects {expected}")
    if raw["ref_image_have_base"] != (task == "ti2i_ref"):
        raise VinoInputError(f"{where}: field 'ref_image_have_base' is {raw['ref_image_have_base']}; "
                             f"only ti2i_ref (base image last, after the guiding images) sets it")


def write_manifest(path: str, records: Iterable[Record]) -> None:
    """Write `records` as JSON lines; their paths (absolute or relative to the current
    directory) are stored relative to the manifest's folder."""
    root = os.path.dirname(os.path.abspath(path))

    def rel(p: str) -> str:
        return os.path.relpath(os.path.abspath(p), root).replace(os.sep, "/")

    lines = []
    for number, record in enumerate(records, start=1):
        raw = asdict(record)
        _check(raw, f"{path}: record {number}")
        raw["target"] = rel(raw["target"])
        raw["ref_images"] = [rel(p) for p in raw["ref_images"]]
        raw["ref_video"] = raw["ref_video"] and rel(raw["ref_video"])
        lines.append(json.dumps(raw, ensure_ascii=False))
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def read_manifest(path: str) -> Iterator[Record]:
    """Yield the records of a manifest with absolute paths, checking each line as it is read."""
    root = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise VinoInputError(f"{where}: not a JSON object ({e.msg})") from None
            if not isinstance(raw, dict):
                raise VinoInputError(f"{where}: not a JSON object")
            _check(raw, where)
            raw["target"] = os.path.join(root, raw["target"])
            raw["ref_images"] = [os.path.join(root, p) for p in raw["ref_images"]]
            raw["ref_video"] = raw["ref_video"] and os.path.join(root, raw["ref_video"])
            for name, paths in (("target", [raw["target"]]), ("ref_images", raw["ref_images"]),
                                ("ref_video", [raw["ref_video"]] if raw["ref_video"] else [])):
                for p in paths:
                    if not os.path.isfile(p):
                        raise VinoInputError(f"{where}: field '{name}' names {p}, which does not exist")
            yield Record(**raw)


def save_media(path: str, frames: np.ndarray, fps: float) -> None:
    """Write uint8 frames [T, H, W, 3]: one frame to .png, several to a lossless .mp4 or a raw .npz clip."""
    frames = frames_to_array(frames)
    if path.endswith(".png"):
        if len(frames) != 1:
            raise VinoInputError(f"{path}: a .png holds one frame, got {len(frames)}")
        media.write_png(path, frames[0])
        return
    if path.endswith(media.RAW_CLIP):
        media.write_video(path, frames, fps)
        return
    import av  # only for .mp4: worlds of .npz clips need no PyAV

    with media.atomic_output(path) as partial, av.open(str(partial), "w", format="mp4") as container:
        stream = container.add_stream("libx264rgb", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "rgb24"
        stream.options = {"qp": "0", "threads": "1"}  # lossless; one thread keeps the bytes reproducible
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def load_media(path: str) -> np.ndarray:
    """Read a still image (.png, .jpg, ...) or a video as uint8 frames [T, H, W, 3]."""
    if Path(path).suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"):
        return frames_to_array([media.read_image(path).convert("RGB")])
    return frames_to_array(media.read_video(path)[0])
