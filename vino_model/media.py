"""Reading and writing media: videos through PyAV, images and animated GIF/WebP through Pillow, raw clips
(.npz: the frames and their rate, no codec) through NumPy. PyAV is imported only where a video codec is needed,
so the rest works where it is not installed.

Every writer goes through `atomic_output`: it writes a hidden temporary file beside the target and
renames it into place only when complete, so a crash never leaves a half-written output.
"""

import itertools
import json
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, ImageSequence, PngImagePlugin

from .errors import VinoInputError
from .files import atomic_output
from .preprocess import frames_to_array

VIDEO_ENCODERS = {".mp4": ("libx264", "mpeg4"), ".webm": ("libvpx-vp9", "libvpx")}  # tried in order
# Constant-quality encoders: their worst CRF (0 is best) and fixed options. MPEG-4 part 2 gets a bit rate.
CRF_ENCODERS = {
    "libx264": (51, {}),
    "libvpx-vp9": (63, {"b": "0", "cpu-used": "4", "row-mt": "1"}),
    "libvpx": (63, {"b": "0", "cpu-used": "4"}),
}
MPEG4_BITS_PER_PIXEL = 0.6  # at quality 100; scales linearly with quality
PIL_ANIMATIONS = {".gif": "GIF", ".webp": "WEBP"}
# WebP metadata as ComfyUI's SaveAnimatedWEBP writes it: "prompt:<value>" in EXIF tag Model, every other
# entry as "<key>:<value>" from tag Make down (ImageDescription, DocumentName...).
EXIF_MODEL, EXIF_MAKE = 0x0110, 0x010F
DEFAULT_GIF_FPS = 10.0  # what browsers show for a GIF that gives no frame duration
RAW_CLIP = ".npz"  # uint8 frames [T, H, W, 3] ("frames") and the frame rate ("fps"), compressed losslessly


def read_image(path) -> Image.Image:
    """The image at `path` as displayed (EXIF rotation applied), fully loaded; its mode is kept."""
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except (OSError, Image.DecompressionBombError) as error:
        raise VinoInputError(f"cannot read image {path}: {error}") from error


def read_video(path, max_frames: int | None = None) -> tuple[list[Image.Image], float]:
    """RGB frames of the video at `path` (the first `max_frames` when given), as displayed, and its frame rate."""
    path = Path(path)
    try:
        if path.suffix.lower() in PIL_ANIMATIONS:
            frames, fps = _read_animation(path, max_frames)
        elif path.suffix.lower() == RAW_CLIP:
            frames, fps = _read_raw_clip(path, max_frames)
        else:
            frames, fps = _read_with_av(path, max_frames)
    except (OSError, Image.DecompressionBombError) as error:
        raise VinoInputError(f"cannot read video {path}: {error}") from error
    if not frames:
        raise VinoInputError(f"video {path} has no frames")
    return frames, fps


def _read_raw_clip(path: Path, max_frames: int | None) -> tuple[list[Image.Image], float]:
    try:
        with np.load(path) as clip:
            frames, fps = clip["frames"][:max_frames], float(clip["fps"])
    except (ValueError, KeyError, zipfile.BadZipFile) as error:
        raise VinoInputError(f"cannot read video {path}: expected a .npz of 'frames' and 'fps' ({error})") from error
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise VinoInputError(
            f"video {path} holds frames {frames.dtype} {list(frames.shape)}; expected uint8 [T, H, W, 3]"
        )
    if not fps > 0:
        raise VinoInputError(f"video {path} gives the frame rate {fps}; expected a positive one")
    return [Image.fromarray(frame) for frame in frames], fps


def _read_with_av(path: Path, max_frames: int | None) -> tuple[list[Image.Image], float]:
    import av  # here and in the writer only: the rest of this module works without PyAV
    from av.video.reformatter import VideoReformatter

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VinoInputError(f"{path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            # One conversion context for every frame: frame.to_image() makes a new one each time, which made
            # reading a small 17-frame clip 16x slower.
            reformatter = VideoReformatter()
            frames = []
            for frame in container.decode(stream):
                if max_frames is not None and len(frames) >= max_frames:
                    break
                image = Image.fromarray(reformatter.reformat(frame, format="rgb24").to_ndarray())
                frames.append(image.rotate(frame.rotation, expand=True) if frame.rotation else image)  # as displayed
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    except av.FFmpegError as error:
        raise VinoInputError(f"cannot read video {path}: {error}") from error
    if not rate:
        raise VinoInputError(f"video {path} does not give its frame rate")
    return frames, float(rate)


def _read_animation(path: Path, max_frames: int | None) -> tuple[list[Image.Image], float]:
    with Image.open(path) as image:
        frames, durations = [], []
        for frame in ImageSequence.Iterator(image):
            if max_frames is not None and len(frames) >= max_frames:
                break
            frames.append(frame.convert("RGB"))
            durations.append(frame.info.get("duration", 0))
    mean_ms = sum(durations) / len(durations) if durations else 0
    return frames, 1000.0 / mean_ms if mean_ms > 0 else DEFAULT_GIF_FPS


def write_png(path, frame, metadata: dict[str, str] | None = None) -> Path:
    """One PNG from a PIL image or uint8 [H, W, 3]; `metadata` entries become text chunks (workflow metadata)."""
    if not isinstance(frame, Image.Image):
        frame = Image.fromarray(frames_to_array(np.asarray(frame)[None])[0])  # checks for uint8 [H, W, 3]
    info = PngImagePlugin.PngInfo()
    for key, value in _checked_metadata(metadata).items():
        info.add_text(key, value)
    with atomic_output(path) as partial:
        frame.save(partial, format="PNG", pnginfo=info)
    return Path(path)


def write_video(
    path, frames, fps: float, loop: int = 0, quality: int = 80, metadata: dict[str, str] | None = None
) -> Path:
    """Write frames (uint8 [T, H, W, 3] or PIL images) in the format of the suffix of `path`.

    .mp4: H.264 (libx264, or MPEG-4 part 2 where it is missing), yuv420p; .webm: VP9 (or VP8);
    both get even sizes (an odd last row/column is repeated) and carry `metadata` as container tags.
    .npz: the frames as they are and the rate (`metadata` as JSON under "metadata"), no codec and no PyAV.
    .gif / .webp: animated, repeating `loop` times (0 = forever); the encoders merge identical consecutive
    frames into one longer frame. GIF carries `metadata` as a JSON object in its comment; WebP in EXIF
    the way ComfyUI's own Save Animated WEBP does, so its frontend loads the workflow from a dropped file.
    No suffix: a new folder of PNGs frame_00000.png, ... each carrying `metadata`.
    quality: 0..100, higher is better: the CRF of x264/VP9/VP8 (x264 CRF 10 at 80), a bit rate for
    MPEG-4, the WebP quality; GIF ignores it.
    """
    path = Path(path)
    array = frames_to_array(frames)
    if not fps > 0:
        raise VinoInputError(f"fps={fps} for {path}; expected a positive frame rate")
    if not 0 <= quality <= 100:
        raise VinoInputError(f"quality={quality}; expected 0 to 100")
    metadata = _checked_metadata(metadata)
    suffix = path.suffix.lower()
    if suffix in VIDEO_ENCODERS:
        with atomic_output(path) as partial:
            _write_with_av(partial, suffix, array, fps, quality, metadata)
    elif suffix == RAW_CLIP:
        with atomic_output(path) as partial, open(partial, "wb") as file:  # a file: NumPy would add a suffix
            np.savez_compressed(file, frames=array, fps=np.float64(fps), metadata=np.array(json.dumps(metadata)))
    elif suffix in PIL_ANIMATIONS:
        images = [Image.fromarray(frame) for frame in array]
        with atomic_output(path) as partial:
            images[0].save(
                partial,
                format=PIL_ANIMATIONS[suffix],
                save_all=True,
                append_images=images[1:],
                duration=1000.0 / fps,
                loop=loop,
                quality=quality,
                **_animation_metadata(suffix, metadata),
            )
    elif suffix == "":
        if path.is_dir() and any(path.iterdir()):
            raise VinoInputError(f"output folder {path} already has files; expected a new or empty folder")
        with atomic_output(path) as partial:
            partial.mkdir()
            for index, frame in enumerate(array):
                write_png(partial / f"frame_{index:05d}.png", frame, metadata)
    else:
        raise VinoInputError(
            f"cannot write video {path}: expected a .mp4, .webm, .gif, .webp or .npz suffix, or none for a PNG folder"
        )
    return path


def _write_with_av(
    path: Path, suffix: str, array: np.ndarray, fps: float, quality: int, metadata: dict[str, str]
) -> None:
    import av

    codec = _available_encoder(av, VIDEO_ENCODERS[suffix])
    pad = ((0, 0), (0, array.shape[1] % 2), (0, array.shape[2] % 2), (0, 0))
    array = np.pad(array, pad, mode="edge")  # yuv420p halves the chroma planes: sizes must be even
    options = {"movflags": "use_metadata_tags"} if suffix == ".mp4" else {}  # keep tags the MP4 spec does not name
    with av.open(str(path), "w", format=suffix[1:], options=options) as container:
        container.metadata.update(metadata)
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = array.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if codec in CRF_ENCODERS:
            worst, fixed = CRF_ENCODERS[codec]
            stream.options = {"crf": str(round(worst * (100 - quality) / 100)), **fixed}
        else:
            stream.bit_rate = round(array[0].size / 3 * fps * MPEG4_BITS_PER_PIXEL * max(quality, 1) / 100)
        for frame in array:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _available_encoder(av, names: tuple[str, ...]) -> str:
    for name in names:
        try:
            av.Codec(name, "w")
        except av.codec.codec.UnknownCodecError:
            continue
        return name
    raise VinoInputError(f"this PyAV build has none of the encoders {', '.join(names)}; install a PyAV that has them")


def _animation_metadata(suffix: str, metadata: dict[str, str]) -> dict:
    """The Pillow save option that embeds `metadata` in an animated GIF (comment) or WebP (exif)."""
    if not metadata:
        return {}
    if suffix == ".gif":
        return {"comment": json.dumps(metadata)}
    exif, tags = Image.Exif(), itertools.count(EXIF_MAKE, -1)
    for key, value in metadata.items():
        # bytes: Pillow writes a str as ASCII, non-ASCII characters as '?'; ComfyUI's frontend reads UTF-8
        exif[EXIF_MODEL if key == "prompt" else next(tags)] = f"{key}:{value}".encode()
    return {"exif": exif}


def _checked_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    metadata = dict(metadata or {})
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise VinoInputError(f"metadata entry {key!r} is {type(value).__name__}; expected str keys and str values")
    return metadata
