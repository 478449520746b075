"""The reference preprocessing VINO fixes: letterboxed reference images, cropped reference videos, 4k+1 frames.

Reference images go onto a white canvas whose sides are multiples of 16 and whose area is closest to
480 x 848 pixels, whatever the output size; a reference video is resized by area to about the same
size, cropped to multiples of 16 and cut to 4k+1 frames. Pixels enter the VAE as [3, T, H, W] in [-1, 1].
"""

import functools
import math

import numpy as np
import torch
from PIL import Image

from .errors import VinoInputError

REFERENCE_AREA = 480 * 848  # 407,040 pixels: the release's canvas area for every reference
TEMPORAL_STEP = 4  # the VAE packs 4 frames per latent frame after the first: frame counts are 4k+1
SEARCH_STEPS = 256  # canvas heights tried on each side of the ideal one, as the release does
WHITE = (255, 255, 255)


def valid_frame_count(n) -> bool:
    """True when `n` is a frame count the VAE can take: 1, 5, 9, ... (4k+1)."""
    return isinstance(n, int) and n >= 1 and (n - 1) % TEMPORAL_STEP == 0


def round_down_frames(n: int) -> int:
    """The largest 4k+1 frame count not above `n` (0 when `n` < 1)."""
    return (n - 1) // TEMPORAL_STEP * TEMPORAL_STEP + 1 if n >= 1 else 0


def check_output_size(width: int, height: int, frames: int) -> None:
    """Raise VinoInputError unless width/height are multiples of 16 (>= 16) and frames is 4k+1 (>= 1)."""
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or value < 16:
            raise VinoInputError(f"{name}={value} is too small; use a multiple of 16, at least 16")
        if value % 16:
            lower = value // 16 * 16
            raise VinoInputError(f"{name}={value} is not a multiple of 16; use {lower} or {lower + 16}")
    if not isinstance(frames, int) or frames < 1:
        raise VinoInputError(f"frames={frames} is too small; use 1 for an image or 4k+1 (5, 9, ...) for a video")
    if not valid_frame_count(frames):
        lower = round_down_frames(frames)
        raise VinoInputError(f"frames={frames} is not 4k+1; use {lower} or {lower + TEMPORAL_STEP}")


@functools.lru_cache(maxsize=4096)  # a training index asks for the same few sizes once per record
def canvas_size(width: int, height: int, area: int = REFERENCE_AREA, multiple: int = 16) -> tuple[int, int]:
    """(w, h), multiples of `multiple`, at the aspect ratio of a width x height image, area closest to `area`.

    Heights are tried within SEARCH_STEPS multiples of the ideal one; each takes the width just below
    and just above the exact aspect width. The pair with the smallest area error wins, then the one with
    the smallest aspect error. Square -> 640x640, 848x480 -> 848x480.
    """
    if width < 1 or height < 1:
        raise VinoInputError(f"image size {width}x{height} is empty; expected a positive width and height")
    ratio = width / height
    ideal = max(1, round(math.sqrt(area / ratio) / multiple))
    best = None
    for k in range(max(1, ideal - SEARCH_STEPS), ideal + SEARCH_STEPS + 1):
        h = k * multiple
        steps = ratio * h / multiple
        for w in {max(multiple, math.floor(steps) * multiple), max(multiple, math.ceil(steps) * multiple)}:
            score = (abs(w * h - area), abs(w / h - ratio))
            if best is None or score < best[0]:
                best = (score, w, h)
    return best[1], best[2]


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """RGB version of any PIL image; transparent pixels become white, the letterbox colour."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE + (255,)), rgba).convert("RGB")
    return image.convert("RGB")


def letterbox(image: Image.Image, area: int = REFERENCE_AREA, multiple: int = 16) -> Image.Image:
    """The reference image LANCZOS-resized to fit a white canvas of canvas_size, centred."""
    width, height = image.size
    if width < 16 or height < 16:
        raise VinoInputError(f"reference image is {width}x{height} pixels; each side must be at least 16 pixels")
    canvas_w, canvas_h = canvas_size(width, height, area, multiple)
    scale = min(canvas_w / width, canvas_h / height)
    fit_w, fit_h = round(width * scale), round(height * scale)
    fitted = _flatten_alpha(image).resize((fit_w, fit_h), Image.LANCZOS)
    canvas = Image.new("RGB", (canvas_w, canvas_h), WHITE)
    canvas.paste(fitted, ((canvas_w - fit_w) // 2, (canvas_h - fit_h) // 2))
    return canvas


def frames_to_array(frames) -> np.ndarray:
    """A list of PIL images or a uint8 array [T, H, W, 3] (T >= 1) -> uint8 array [T, H, W, 3]."""
    if not isinstance(frames, np.ndarray):
        frames = list(frames)
        if not frames:
            raise VinoInputError("no frames given; expected at least one frame")
        sizes = {frame.size for frame in frames}
        if len(sizes) > 1:
            raise VinoInputError(f"frames have different sizes {sorted(sizes)}; expected one size for all frames")
        frames = np.stack([np.asarray(frame.convert("RGB")) for frame in frames])
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise VinoInputError(
            f"frames are {frames.dtype} {tuple(frames.shape)}; expected PIL images or uint8 [T, H, W, 3], T >= 1"
        )
    return frames


def prepare_reference_video(
    frames, max_frames: int, area: int = REFERENCE_AREA, multiple: int = 16
) -> list[Image.Image]:
    """The release's reference-video preparation.

    Frames = min(max_frames, available) rounded down to 4k+1, from frame 0 at stride 1; each frame is
    resized (bicubic) to the size of area `area` at the video's aspect ratio, then cropped from the top-left
    corner to multiples of `multiple`.
    """
    count = round_down_frames(min(max_frames, len(frames)))
    if count < 1:
        raise VinoInputError(
            f"reference video has {len(frames)} frames and max_frames={max_frames}; need at least 1 frame"
        )
    array = frames_to_array(frames[:count])
    height, width = array.shape[1:3]
    ratio = width / height
    resized_h = round(math.sqrt(area / ratio))
    resized_w = round(math.sqrt(area / ratio) * ratio)
    crop_w, crop_h = resized_w // multiple * multiple, resized_h // multiple * multiple
    if crop_w < multiple or crop_h < multiple:
        raise VinoInputError(
            f"reference video is {width}x{height}; at area {area} a side would be under {multiple} pixels"
        )
    return [
        Image.fromarray(frame).resize((resized_w, resized_h), Image.BICUBIC).crop((0, 0, crop_w, crop_h))
        for frame in array
    ]


def frames_to_tensor(frames) -> torch.Tensor:
    """A list of PIL images or uint8 [T, H, W, 3] -> float [3, T, H, W] in [-1, 1]."""
    array = frames_to_array(frames)
    return torch.from_numpy(array).permute(3, 0, 1, 2).float() / 127.5 - 1.0


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """[3, T, H, W] (or [1, 3, T, H, W]) in [-1, 1] -> uint8 [T, H, W, 3], rounded to the nearest level."""
    if x.ndim == 5:
        x = x[0]
    if x.ndim != 4 or x.shape[0] != 3:
        raise VinoInputError(f"video tensor has shape {tuple(x.shape)}; expected [3, T, H, W] or [B, 3, T, H, W]")
    levels = ((x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return levels.to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()
