"""Video Combine (frames -> MP4, WebM, GIF, animated WebP or PNG sequence) and Load Video (VINO)."""

import json
import os
import re
from fractions import Fraction
from pathlib import Path

import folder_paths
from comfy.cli_args import args
from comfy_api.input_impl import VideoFromComponents
from comfy_api.util import VideoComponents

from ..vino_model import media
from ..vino_model.tasks import EDIT_FRAMES

from .media import DEFAULT_VIDEO_FPS, to_image, to_uint8

FORMATS = {  # widget choice -> file suffix ("" = a folder of PNG frames)
    "mp4 (H.264)": ".mp4",
    "webm (VP9)": ".webm",
    "gif": ".gif",
    "webp (animated)": ".webp",
    "png sequence": "",
}
DEFAULT_PREFIX = "VINO/video"
_UNSAFE = re.compile(r'[<>:"|?*\x00-\x1f]')


def safe_prefix(prefix: str) -> str:
    """The prefix as a path inside the output folder: no root, drive, '..' or characters file systems reject."""
    parts = [_UNSAFE.sub("_", part).strip() for part in re.split(r"[\\/]+", prefix)]
    return "/".join(part for part in parts if part not in ("", ".", "..")) or DEFAULT_PREFIX


def as_video(images, fps: float) -> VideoFromComponents:
    """IMAGE frames as ComfyUI's VIDEO type; the frame rate as a small exact ratio (30000/1001 for NTSC)."""
    return VideoFromComponents(VideoComponents(images=images, frame_rate=Fraction(fps).limit_denominator(1001)))


def workflow_metadata(prompt, extra_pnginfo) -> dict[str, str]:
    """The graph (API format) and the UI workflow, as ComfyUI's savers embed them, unless --disable-metadata."""
    if args.disable_metadata:
        return {}
    metadata = {key: json.dumps(value) for key, value in (extra_pnginfo or {}).items()}
    if prompt is not None:
        metadata["prompt"] = json.dumps(prompt)
    return metadata


class VideoCombine:
    CATEGORY = "VINO"
    DESCRIPTION = (
        "Writes frames to the output folder as MP4 (H.264, yuv420p), WebM (VP9), GIF, animated WebP or a folder "
        "of PNG frames, with the workflow embedded (MP4/WebM tags, PNG text, GIF comment, WebP EXIF as ComfyUI's "
        "Save Animated WEBP does), shows it, and passes it on as a VIDEO."
    )
    RETURN_TYPES = ("VIDEO",)
    OUTPUT_TOOLTIPS = ("The frames and frame rate as ComfyUI's VIDEO (for Save Video and other video nodes).",)
    FUNCTION = "combine"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames, e.g. from VAE Decode."}),
                "frame_rate": ("FLOAT", {"default": DEFAULT_VIDEO_FPS, "min": 0.1, "max": 240.0, "step": 0.1,
                                         "tooltip": "Frames per second."}),
                "loop": ("INT", {"default": 0, "min": 0, "max": 1000,
                                 "tooltip": "GIF and WebP: how many times the animation repeats; 0 = forever."}),
                "filename_prefix": ("STRING", {
                    "default": DEFAULT_PREFIX,
                    "tooltip": "Path and name inside the output folder (a counter is appended); '..' and "
                               "absolute parts are dropped, so nothing lands outside it.",
                }),
                "format": (list(FORMATS), {"tooltip": "MP4 and WebM get even sizes (the last row/column repeats)."}),
                "quality": ("INT", {"default": 80, "min": 0, "max": 100,
                                    "tooltip": "Higher is better and larger (the CRF of H.264/VP9, WebP quality); "
                                               "GIF and PNG ignore it."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def combine(self, images, frame_rate, loop, filename_prefix, format, quality, prompt=None, extra_pnginfo=None):
        frames = to_uint8(images)  # [T, H, W, 3]
        output_dir = folder_paths.get_output_directory()
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            safe_prefix(filename_prefix), output_dir, frames.shape[2], frames.shape[1]
        )
        path = Path(folder) / f"{name}_{counter:05}_{FORMATS[format]}"
        media.write_video(path, frames, frame_rate, loop, quality, workflow_metadata(prompt, extra_pnginfo))
        if path.is_dir():
            shown = [{"filename": frame, "subfolder": os.path.join(subfolder, path.name), "type": "output"}
                     for frame in sorted(os.listdir(path))]
        else:
            shown = [{"filename": path.name, "subfolder": subfolder, "type": "output"}]
        return {"ui": {"images": shown, "animated": (len(frames) > 1,)}, "result": (as_video(images, frame_rate),)}


class LoadVideo:
    CATEGORY = "VINO"
    DESCRIPTION = (
        "Loads a video (MP4, WebM, MOV, MKV, GIF, animated WebP...) from the input folder, decoding only the "
        "frames asked for: a reference video for VINO as frames, frame rate and VIDEO."
    )
    RETURN_TYPES = ("VIDEO", "IMAGE", "FLOAT")
    RETURN_NAMES = ("video", "frames", "fps")
    OUTPUT_TOOLTIPS = ("The loaded frames as ComfyUI's VIDEO.", "The frames.", "The video's frame rate.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        folder = folder_paths.get_input_directory()
        files = [f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))]
        return {"required": {
            "video": (sorted(folder_paths.filter_files_content_types(files, ["video", "image"])),
                      {"video_upload": True, "tooltip": "A video in ComfyUI's input folder (upload one here)."}),
            "max_frames": ("INT", {"default": EDIT_FRAMES, "min": 0, "max": 100000,
                                   "tooltip": f"Frames read from the start; 0 = all (VINO's video edits: "
                                              f"{EDIT_FRAMES})."}),
        }}

    def load(self, video, max_frames):
        frames, fps = media.read_video(folder_paths.get_annotated_filepath(video), max_frames or None)
        images = to_image(frames)
        return (as_video(images, fps), images, fps)

    @classmethod
    def IS_CHANGED(cls, video, max_frames):
        return os.path.getmtime(folder_paths.get_annotated_filepath(video))

    @classmethod
    def VALIDATE_INPUTS(cls, video):  # replaces the list check for `video` only: uploads may be newer than the list
        if not folder_paths.exists_annotated_filepath(video):
            return f"video file {video} is not in the input folder"
        return True
