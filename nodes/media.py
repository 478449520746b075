"""ComfyUI's IMAGE and VIDEO values <-> the PIL frames vino_model takes, and the reference inputs the
encoder nodes share (Image 1..n, Video 1)."""

import numpy as np
import torch
from PIL import Image

from ..vino_model.errors import VinoInputError
from ..vino_model.preprocess import frames_to_array
from ..vino_model.tasks import MAX_IMAGES

IMAGE_INPUTS = 4  # image_1..image_4; a batch on one input counts as several images
DEFAULT_VIDEO_FPS = 24.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """IMAGE [B, H, W, C] in 0..1 -> uint8 [B, H, W, 3] (an alpha channel is dropped)."""
    return (images[..., :3].clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """IMAGE [B, H, W, C] in 0..1 -> B RGB PIL images."""
    return [Image.fromarray(frame) for frame in to_uint8(images)]


def to_image(frames) -> torch.Tensor:
    """PIL frames or uint8 [T, H, W, 3] -> IMAGE [T, H, W, 3] float in 0..1."""
    return torch.from_numpy(frames_to_array(frames).astype(np.float32) / 255.0)


def reference_inputs() -> dict:
    """Optional inputs: the images (prompt labels Image 1, Image 2, ...) and one video (Video 1)."""
    inputs = {
        f"image_{k}": ("IMAGE", {
            "tooltip": f"Reference image(s). Images are labelled in input order, Image 1 first; a batch of n "
                       f"counts as n images. Connect from image_1 on (at most {MAX_IMAGES} images in all).",
        })
        for k in range(1, IMAGE_INPUTS + 1)
    }
    inputs["video"] = ("VIDEO", {"tooltip": "The reference video (Video 1), e.g. from core Load Video."})
    inputs["video_frames"] = ("IMAGE", {
        "tooltip": "The reference video (Video 1) as frames, instead of `video`; its frame rate is video_fps.",
    })
    inputs["video_fps"] = ("FLOAT", {
        "default": DEFAULT_VIDEO_FPS, "min": 0.1, "max": 240.0, "step": 0.1,
        "tooltip": "Frame rate of video_frames (the VLM reads the video at 2 fps); a VIDEO brings its own.",
    })
    return inputs


def gather_images(inputs: dict) -> list[Image.Image]:
    """The connected image_k inputs, in order, as PIL images; gaps are an error."""
    connected = [k for k in range(1, IMAGE_INPUTS + 1) if inputs.get(f"image_{k}") is not None]
    if connected and connected[-1] != len(connected):
        gap = next(k for k in range(1, IMAGE_INPUTS + 1) if k not in connected)
        raise VinoInputError(
            f"image_{connected[-1]} is connected but image_{gap} is not; connect images from image_1 on"
        )
    images = [image for k in connected for image in to_pil(inputs[f"image_{k}"])]
    if len(images) > MAX_IMAGES:
        raise VinoInputError(f"{len(images)} images are connected; VINO takes at most {MAX_IMAGES}")
    return images


def gather_video(inputs: dict) -> tuple[list[Image.Image] | None, float | None]:
    """Video 1 as PIL frames and its frame rate, from `video` (VIDEO) or `video_frames` (IMAGE)."""
    video, frames = inputs.get("video"), inputs.get("video_frames")
    if video is not None and frames is not None:
        raise VinoInputError("both video and video_frames are connected; VINO takes one video (Video 1)")
    if video is not None:
        components = video.get_components()
        return to_pil(components.images), float(components.frame_rate)
    if frames is not None:
        return to_pil(frames), float(inputs.get("video_fps", DEFAULT_VIDEO_FPS))
    return None, None
