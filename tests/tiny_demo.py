"""A tiny RANDOM VINO and a task file covering every task kind, with hand-drawn media: the tests' fast
stand-in for the embedded default (outputs are noise; the tests check shapes, files and errors)."""

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vino_model import media
from vino_model.tiny import make_tiny_bundle


def demo_media(folder: Path) -> dict[str, Path]:
    """Two object images, a scene and a 17-frame clip of a moving square (for the demo tasks)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, colour, box in [("red_circle", (220, 40, 40), None), ("blue_square", (40, 70, 220), None),
                              ("scene", (40, 180, 60), (30, 30, 90, 90))]:
        image = Image.new("RGB", (128, 128), (235, 235, 235) if name == "scene" else (255, 255, 255))
        draw = ImageDraw.Draw(image)
        shape = draw.ellipse if "circle" in name else draw.rectangle
        shape(box or (24, 24, 104, 104), fill=colour)
        paths[name] = folder / f"{name}.png"
        image.save(paths[name])
    frames = []
    for t in range(17):
        frame = np.full((64, 96, 3), 230, np.uint8)
        frame[20:44, 4 + 4 * t : 28 + 4 * t] = (200, 160, 30)
        frames.append(frame)
    paths["clip"] = media.write_video(folder / "clip.mp4", np.stack(frames), fps=8)
    return paths


def write_demo(folder: Path) -> tuple[Path, Path]:
    bundle = make_tiny_bundle(folder / "model")
    m = {k: str(v.resolve()) for k, v in demo_media(folder / "media").items()}
    tasks = [
        {"index": 0, "task": "t2i", "caption": "a red circle on a white background"},
        {"index": 1, "task": "t2v", "caption": "a blue square moves to the right"},
        {"index": 2, "task": "i2v", "caption": "the circle bounces", "ref_image_paths": [m["red_circle"]]},
        {"index": 3, "task": "ti2v", "caption": "the object in Image 1 and the object in Image 2 move apart",
         "ref_image_paths": [m["red_circle"], m["blue_square"]]},
        {"index": 4, "task": "ti2i", "caption": "make the square yellow", "ref_image_paths": [m["scene"]]},
        {"index": 5, "task": "ti2i", "caption": "replace the square with the object in Image 1",
         "ref_image_paths": [m["red_circle"], m["scene"]], "ref_image_have_base": True},
        {"index": 6, "task": "tv2v", "caption": "make the moving square green", "ref_video_path": m["clip"]},
        {"index": 7, "task": "tiv2v", "caption": "replace the moving square with the object in Image 1",
         "ref_image_paths": [m["blue_square"]], "ref_video_path": m["clip"]},
        {"index": 8, "task": "clone", "caption": "the object in Image 1 moves like the square in Video 1",
         "ref_image_paths": [m["red_circle"]], "ref_video_path": m["clip"]},
    ]
    task_file = folder / "demo_tasks.json"
    task_file.write_text(json.dumps(tasks, indent=1))
    return bundle, task_file
