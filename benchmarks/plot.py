"""Bar chart of forward times from a results folder (Pillow only): python benchmarks/plot.py RESULTS_DIR"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw


def bars(rows: list[tuple[str, float]], path: Path, title: str) -> Path:
    width, bar_h, left = 1100, 26, 520
    image = Image.new("RGB", (width, 60 + bar_h * len(rows)), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), title, fill="black")
    longest = max(s for _, s in rows)
    for i, (name, seconds) in enumerate(rows):
        y = 40 + i * bar_h
        draw.text((10, y + 6), name, fill="black")
        length = int((width - left - 90) * seconds / longest)
        draw.rectangle((left, y + 3, left + length, y + bar_h - 3), fill=(70, 110, 200) if "ours" in name else (170, 170, 170))
        draw.text((left + length + 6, y + 6), f"{seconds:.2f} s", fill="black")
    image.save(path)
    return path


def main(folder: str):
    folder = Path(folder)
    rows = []
    for file in sorted(folder.glob("*.json")):
        data = json.loads(file.read_text())
        for row in data.get("rows", []):
            if not any(word in row["name"] for word in ("per step", "VAE", "attention alone", "profile")):
                rows.append((f"{row['name']} [{data['device'].replace('NVIDIA ', '')}]", row["seconds"]))
        if "gpus" in data:
            tag = "compiled" if data["compile"] else "eager"
            rows.append((f"ours 1 reference, {data['gpus']} GPU(s), {tag} [{data['device'].replace('NVIDIA ', '')}]", data["seconds"]))
    print(bars(rows, folder / "forward_times.png", "MMDiT forward at 480x848x85 (13B, bf16 random weights); shorter is faster"))


if __name__ == "__main__":
    main(sys.argv[1])
