"""The task kinds one VINO model serves, their defaults, and the release's task-file format."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import VinoInputError


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    output: str  # "image" or "video"
    min_images: int
    max_images: int
    needs_video: bool
    size_from: str  # "user", "base" (the last letterboxed image) or "video" (size and frame count)


MAX_IMAGES = 8
TASKS = {
    t.name: t
    for t in [
        Task("t2i", "text to image", "image", 0, 0, False, "user"),
        Task("t2v", "text to video", "video", 0, 0, False, "user"),
        Task("i2v", "animate an image (it becomes the first frame)", "video", 1, 1, False, "base"),
        Task("ti2v", "video from several reference images", "video", 1, MAX_IMAGES, False, "user"),
        Task("ti2i", "instruction image edit; with ref_image_have_base the last image is edited, guided by the others",
             "image", 1, MAX_IMAGES, False, "base"),
        Task("tv2v", "instruction video edit", "video", 0, 0, True, "video"),
        Task("tiv2v", "video edit guided by reference images", "video", 1, MAX_IMAGES, True, "video"),
        # The release writes motion/camera clones as tiv2v task files; "clone" names the same thing.
        Task("clone", "carry the motion or camera of the reference video onto the image", "video", 1, 1, True, "video"),
    ]
}

EDIT_FRAMES = 81  # video edits default to 81 frames
MAX_FRAMES = 89

NEGATIVE_PROMPTS = {
    "image": (
        "low quality, worst quality, blurry, out of focus, distorted, deformed, disfigured, bad anatomy, "
        "extra limbs, watermark, text, signature, jpeg artifacts, noise, oversaturated, overexposed, underexposed"
    ),
    "video": (
        "low quality, worst quality, blurry, out of focus, distorted, deformed, disfigured, bad anatomy, "
        "extra limbs, watermark, text, signature, jpeg artifacts, noise, oversaturated, overexposed, underexposed, "
        "flicker, flickering, temporal inconsistency, jittery motion, stuttering, frame skipping, static frames"
    ),
}

DEFAULTS = {  # the release's defaults
    "image": {"width": 640, "height": 640, "frames": 1, "steps": 50, "shift": 5.0, "text_cfg": 5.0,
              "negative": NEGATIVE_PROMPTS["image"]},
    "video": {"width": 848, "height": 480, "frames": 85, "steps": 50, "shift": 7.0, "text_cfg": 7.0,
              "negative": NEGATIVE_PROMPTS["video"]},
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise VinoInputError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return TASKS[name]


def check_inputs(task: Task, num_images: int, has_video: bool, have_base: bool) -> None:
    if not task.min_images <= num_images <= task.max_images:
        wanted = (f"exactly {task.min_images}" if task.min_images == task.max_images
                  else f"{task.min_images} to {task.max_images}")
        raise VinoInputError(f"task {task.name} takes {wanted} reference images, got {num_images}")
    if has_video != task.needs_video:
        need = "needs a reference video" if task.needs_video else "takes no reference video"
        raise VinoInputError(f"task {task.name} {need}")
    if have_base and (task.name != "ti2i" or num_images < 2):
        raise VinoInputError(
            f"ref_image_have_base needs task ti2i with reference images plus the base image last "
            f"(got task {task.name} with {num_images} images)"
        )


def kept_without_references(num_images: int, have_base: bool) -> list[int]:
    """Reference images the image-free CFG branch still shows: only a declared base image (the last).

    As in the release, a single-image instruction edit drops its image there too; a reference
    video is always kept.
    """
    return [num_images - 1] if have_base and num_images > 1 else []


# ---------------------------------------------------------------- task files


@dataclass
class TaskEntry:
    index: int | str
    task: str
    caption: str
    ref_image_paths: list[Path]
    ref_video_path: Path | None
    ref_image_have_base: bool


def read_task_file(path: str | Path) -> list[TaskEntry]:
    """The release's JSON: a list of {index, task, caption, ref_image_paths?, ref_video_path?,
    ref_image_have_base?}. Parsed as JSON (never evaluated); relative paths resolve from the file's folder.
    `ref_image_paths` may also be a string holding a JSON list, as the release writes it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise VinoInputError(f"task file {path} does not exist") from err
    except json.JSONDecodeError as err:
        raise VinoInputError(f"task file {path} is not valid JSON: {err}") from err
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise VinoInputError(f"task file {path} must hold a list of tasks")
    entries = []
    for n, item in enumerate(data):
        where = f"task file {path.name}, entry {n}"
        if not isinstance(item, dict):
            raise VinoInputError(f"{where}: expected an object")
        for key in ("task", "caption"):
            if not isinstance(item.get(key), str):
                raise VinoInputError(f"{where}: field {key!r} must be a string")
        get_task(item["task"])
        images = item.get("ref_image_paths") or []
        if isinstance(images, str):
            try:
                images = json.loads(images)
            except json.JSONDecodeError as err:
                raise VinoInputError(f"{where}: ref_image_paths is a string that is not a JSON list") from err
        if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
            raise VinoInputError(f"{where}: ref_image_paths must be a list of paths")
        video = item.get("ref_video_path") or None
        if video is not None and not isinstance(video, str):
            raise VinoInputError(f"{where}: ref_video_path must be a path")
        resolve = lambda p: p if Path(p).is_absolute() else path.parent / p  # noqa: E731
        entries.append(TaskEntry(
            index=item.get("index", n),
            task=item["task"],
            caption=item["caption"],
            ref_image_paths=[Path(resolve(p)) for p in images],
            ref_video_path=Path(resolve(video)) if video else None,
            ref_image_have_base=bool(item.get("ref_image_have_base", False)),
        ))
    return entries
