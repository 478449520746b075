import json
import sys

import av
import numpy as np
import pytest
from PIL import Image

from vino_model import media
from vino_model.errors import VinoInputError
from vino_model.media import read_image, read_video, write_png, write_video

WORKFLOW = {"workflow": '{"nodes": [1, 2]}', "prompt": "a cat"}


def _frames(count=5, height=22, width=34):
    """Flat-coloured frames, each different, so that lossy codecs keep them close and none are merged."""
    colours = [(40 * index, 200 - 30 * index, 100) for index in range(count)]
    return np.stack([np.full((height, width, 3), colour, np.uint8) for colour in colours])  # [T, H, W, 3]


def _mean_error(frames, expected):
    return np.abs(np.stack([np.asarray(frame, np.float32) for frame in frames]) - expected).mean()


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".gif", ".webp"])
def test_video_round_trip(tmp_path, suffix):
    frames = _frames()
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=10)
    read, fps = read_video(path)
    assert len(read) == 5 and read[0].size == (34, 22) and read[0].mode == "RGB"
    assert fps == pytest.approx(10)
    assert _mean_error(read, frames) < 6
    assert len(read_video(path, max_frames=2)[0]) == 2


def test_raw_clips_keep_every_pixel_and_need_no_pyav(tmp_path, monkeypatch):
    frames = _frames()
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now fails: a machine without PyAV
    path = write_video(tmp_path / "clip.npz", frames, fps=12.5, metadata={"prompt": "a cat"})
    read, fps = read_video(path)
    assert fps == 12.5 and np.array_equal(np.stack([np.asarray(frame) for frame in read]), frames)
    assert len(read_video(path, max_frames=2)[0]) == 2
    with pytest.raises(ImportError):
        write_video(tmp_path / "clip.mp4", frames, fps=12.5)
    (tmp_path / "noise.npz").write_bytes(b"PK not really")
    np.savez(tmp_path / "no-rate.npz", frames=frames)
    np.savez(tmp_path / "floats.npz", frames=frames.astype(np.float32), fps=12.5)
    for name, message in [("noise.npz", "noise.npz"), ("no-rate.npz", "'fps'"), ("floats.npz", "float32")]:
        with pytest.raises(VinoInputError, match=message):
            read_video(tmp_path / name)


def test_odd_sizes_become_even_in_mp4(tmp_path):
    frames = _frames(height=21, width=33)
    read, _ = read_video(write_video(tmp_path / "odd.mp4", list(map(Image.fromarray, frames)), fps=24))
    assert len(read) == 5 and read[0].size == (34, 22)
    assert _mean_error([np.asarray(frame)[:21, :33] for frame in read], frames) < 6


def test_rotated_video_is_read_as_displayed(tmp_path):
    frame = np.zeros((16, 32, 3), np.uint8)
    frame[:8, :8] = 255  # white top-left corner
    with av.open(str(tmp_path / "phone.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 32, 16, "yuv420p"
        stream.set_display_rotation(90)  # a quarter turn counter-clockwise, as phones record portrait video
        container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    (image,), _ = read_video(tmp_path / "phone.mp4")
    assert image.size == (16, 32)
    assert np.asarray(image)[28, 4].min() > 200 and np.asarray(image)[4, 4].max() < 50  # now bottom-left


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_containers_carry_metadata(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", _frames(), fps=24, metadata=WORKFLOW)
    with av.open(str(path)) as container:
        tags = {key.lower(): value for key, value in container.metadata.items()}
    assert tags["workflow"] == WORKFLOW["workflow"] and tags["prompt"] == "a cat"


def test_animations_carry_metadata(tmp_path):
    metadata = {**WORKFLOW, "note": "un chat au café"}
    gif = write_video(tmp_path / "clip.gif", _frames(), fps=10, metadata=metadata)
    with Image.open(gif) as image:
        assert image.n_frames == 5 and json.loads(image.info["comment"]) == metadata
    webp = write_video(tmp_path / "clip.webp", _frames(), fps=10, metadata=metadata)
    with Image.open(webp) as image:
        assert image.n_frames == 5
        exif = {tag: text.encode("latin-1").decode() for tag, text in image.getexif().items()}  # UTF-8 bytes
    # ComfyUI's Save Animated WEBP layout: the prompt in tag Model (0x0110), the others from Make (0x010F) down
    assert exif == {0x0110: "prompt:a cat", 0x010F: 'workflow:{"nodes": [1, 2]}', 0x010E: "note:un chat au café"}
    for suffix in (".gif", ".webp"):
        with Image.open(write_video(tmp_path / f"plain{suffix}", _frames(), fps=10)) as image:
            assert "comment" not in image.info and not image.getexif()


def test_mp4_falls_back_to_mpeg4(tmp_path, monkeypatch):
    monkeypatch.setitem(media.VIDEO_ENCODERS, ".mp4", ("no-such-encoder", "mpeg4"))
    path = write_video(tmp_path / "clip.mp4", _frames(), fps=24)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
    assert _mean_error(read_video(path)[0], _frames()) < 6


def test_png_folder_and_png_metadata(tmp_path):
    folder = write_video(tmp_path / "frames", _frames(3), fps=24, metadata=WORKFLOW)
    names = sorted(path.name for path in folder.iterdir())
    assert names == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    with Image.open(folder / "frame_00002.png") as image:
        assert image.text == WORKFLOW and np.array_equal(np.asarray(image), _frames(3)[2])
    png = write_png(tmp_path / "still.png", _frames(1)[0], metadata=WORKFLOW)
    assert read_image(png).size == (34, 22)
    with Image.open(png) as image:
        assert image.text == WORKFLOW


def test_png_folder_refuses_a_folder_with_files(tmp_path):
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "old.png").write_bytes(b"")
    with pytest.raises(VinoInputError, match="already has files"):
        write_video(tmp_path / "frames", _frames(), fps=24)


def test_corrupt_and_missing_files_are_input_errors(tmp_path):
    good = write_video(tmp_path / "good.mp4", _frames(), fps=24)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:300])
    (tmp_path / "noise.webm").write_bytes(np.random.default_rng(0).bytes(2000))
    (tmp_path / "noise.gif").write_bytes(b"GIF89a" + bytes(50))
    (tmp_path / "noise.png").write_bytes(b"\x89PNG not really")
    for name in ["truncated.mp4", "noise.webm", "noise.gif", "missing.mp4"]:
        with pytest.raises(VinoInputError, match=name):
            read_video(tmp_path / name)
    with pytest.raises(VinoInputError, match="noise.png"):
        read_image(tmp_path / "noise.png")


class _AvFailingOnThirdFrame:
    """PyAV, except that converting the third frame raises, as a full disk would midway through a file."""

    def __init__(self):
        self.frames = 0
        self.VideoFrame = self

    def __getattr__(self, name):
        return getattr(av, name)

    def from_ndarray(self, array, format):
        self.frames += 1
        if self.frames == 3:
            raise OSError("disk full")
        return av.VideoFrame.from_ndarray(array, format=format)


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = write_video(tmp_path / "clip.mp4", _frames(), fps=24)
    original = path.read_bytes()
    for name in ["clip.mp4", "new.mp4"]:
        monkeypatch.setitem(sys.modules, "av", _AvFailingOnThirdFrame())  # what the writer imports
        with pytest.raises(OSError, match="disk full"):
            write_video(tmp_path / name, _frames(), fps=24)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    assert path.read_bytes() == original


def test_write_errors_name_the_input(tmp_path):
    with pytest.raises(VinoInputError, match="clip.avi"):
        write_video(tmp_path / "clip.avi", _frames(), fps=24)
    with pytest.raises(VinoInputError, match="fps=0"):
        write_video(tmp_path / "clip.mp4", _frames(), fps=0)
    with pytest.raises(VinoInputError, match="float32"):
        write_video(tmp_path / "clip.mp4", _frames().astype(np.float32), fps=24)
    with pytest.raises(VinoInputError, match="metadata entry 'seed'"):
        write_png(tmp_path / "still.png", _frames(1)[0], metadata={"seed": 3})
    assert list(tmp_path.iterdir()) == []
