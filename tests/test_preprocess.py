import numpy as np
import pytest
import torch
from PIL import Image

from vino_model.errors import VinoInputError
from vino_model.preprocess import (
    REFERENCE_AREA,
    canvas_size,
    check_output_size,
    frames_to_tensor,
    letterbox,
    prepare_reference_video,
    tensor_to_frames,
    valid_frame_count,
)

RED = (255, 0, 0)
WHITE = (255, 255, 255)


@pytest.mark.parametrize(
    ("size", "canvas"),
    [
        ((1000, 1000), (640, 640)),  # the release's image default
        ((848, 480), (848, 480)),  # exactly the reference area
        ((1920, 1080), (848, 480)),
        ((1024, 768), (736, 560)),
        ((768, 1024), (560, 736)),
        ((1200, 800), (784, 528)),
        ((100, 1000), (208, 1952)),
    ],
)
def test_canvas_size_keeps_aspect_at_the_reference_area(size, canvas):
    assert canvas_size(*size) == canvas
    width, height = canvas
    assert width % 16 == 0 and height % 16 == 0
    assert abs(width * height - REFERENCE_AREA) / REFERENCE_AREA < 0.02
    assert abs(width / height - size[0] / size[1]) < 16 / min(width, height)


def test_letterbox_centres_a_wide_image_between_white_bars():
    canvas = np.asarray(letterbox(Image.new("RGB", (64, 48), RED)))  # 4:3 on a 736x560 canvas: fitted 736x552
    assert canvas.shape == (560, 736, 3)
    assert (canvas[:4] == WHITE).all() and (canvas[556:] == WHITE).all()
    assert (canvas[8:548] == RED).all()


def test_letterbox_puts_bars_left_and_right_of_a_tall_image():
    canvas = np.asarray(letterbox(Image.new("RGB", (48, 64), RED)))
    assert canvas.shape == (736, 560, 3)
    assert (canvas[:, :4] == WHITE).all() and (canvas[:, 556:] == WHITE).all()
    assert (canvas[:, 8:548] == RED).all()


def test_letterbox_turns_transparency_white_and_grey_to_rgb():
    transparent = letterbox(Image.new("RGBA", (64, 64), (0, 0, 0, 0)))
    assert transparent.mode == "RGB" and transparent.size == (640, 640)
    assert (np.asarray(transparent) == WHITE).all()
    grey = np.asarray(letterbox(Image.new("L", (64, 64), 100)))
    assert (grey == 100).all()


def test_letterbox_refuses_a_tiny_image():
    with pytest.raises(VinoInputError, match="8x8"):
        letterbox(Image.new("RGB", (8, 8)))


def _numbered_frames(count, size=(64, 36)):
    return [Image.new("RGB", size, (index * 8, 0, 0)) for index in range(count)]


@pytest.mark.parametrize(("max_frames", "expected"), [(85, 29), (20, 17), (1, 1), (29, 29)])
def test_reference_video_takes_4k_plus_1_frames_from_the_start(max_frames, expected):
    frames = prepare_reference_video(_numbered_frames(30), max_frames)
    assert len(frames) == expected
    assert [np.asarray(frame)[0, 0, 0] for frame in frames] == [index * 8 for index in range(expected)]


def test_reference_video_is_resized_by_area_and_cropped_to_16():
    frames = prepare_reference_video(_numbered_frames(5), 5)  # 16:9 -> 851x478 -> 848x464
    assert {frame.size for frame in frames} == {(848, 464)}


def test_reference_video_without_frames_is_an_error():
    with pytest.raises(VinoInputError, match="0 frames"):
        prepare_reference_video([], 85)


def test_valid_frame_counts():
    assert [n for n in range(0, 90) if valid_frame_count(n)] == list(range(1, 90, 4))


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((640, 640, 20), "frames=20 is not 4k\\+1; use 17 or 21"),
        ((100, 640, 1), "width=100 is not a multiple of 16; use 96 or 112"),
        ((640, 8, 1), "height=8 is too small"),
        ((640, 640, 0), "frames=0 is too small"),
    ],
)
def test_output_size_errors_say_what_to_use(size, message):
    with pytest.raises(VinoInputError, match=message):
        check_output_size(*size)


def test_valid_output_sizes_pass():
    check_output_size(640, 640, 1)
    check_output_size(848, 480, 85)


def test_frames_tensor_round_trip_is_exact():
    frames = np.random.default_rng(0).integers(0, 256, (3, 8, 16, 3), dtype=np.uint8)
    frames[0, 0, 0] = (0, 128, 255)
    x = frames_to_tensor(frames)
    assert x.shape == (3, 3, 8, 16) and x.dtype == torch.float32
    assert x[:, 0, 0, 0].tolist() == pytest.approx([-1.0, 128 / 127.5 - 1.0, 1.0], abs=1e-6)
    assert np.array_equal(tensor_to_frames(x), frames)
    assert np.array_equal(tensor_to_frames(x[None]), frames)
    assert np.array_equal(frames_to_tensor([Image.fromarray(frame) for frame in frames]), x)


def test_tensor_to_frames_clamps():
    assert tensor_to_frames(torch.tensor([-3.0, 0.0, 3.0]).view(3, 1, 1, 1)).tolist() == [[[[0, 128, 255]]]]
