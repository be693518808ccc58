"""The README's make-tileable picture: a CC0 photo lit from one side, tiled 2 x 2 before (its seams
and the light fall-off show as a cross) and after `python -m backend make-tileable`.

    .venv/bin/python scripts/render_make_tileable.py [OUT.jpg]   (default docs/images/make-tileable.jpg)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend import make_tileable  # noqa: E402
from backend.framing import tiled  # noqa: E402


def photo() -> Image.Image:
    """scikit-image's CC0 grass crop, off its period, with light falling off to the left."""
    arr = skimage.data.grass()[20:20 + 240, 10:10 + 320].astype(np.float64)
    light = np.linspace(0.65, 1.2, arr.shape[1])[None, :] * np.linspace(0.9, 1.1, arr.shape[0])[:, None]
    return Image.fromarray(np.clip(arr * light + 0.5, 0, 255).astype(np.uint8)).convert("RGB")


def main(out: Path) -> None:
    before = photo()
    after = make_tileable(before).convert("RGB")
    w, h = before.size
    label = 24
    sheet = Image.new("RGB", (4 * w + 16, 2 * h + label), "white")
    for i, (image, text) in enumerate([(before, "photo, tiled 2 x 2"), (after, "make-tileable, tiled 2 x 2")]):
        sheet.paste(tiled(image, 2), (i * (2 * w + 16), label))
        ImageDraw.Draw(sheet).text((i * (2 * w + 16) + 4, 6), text, fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=88)
    print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "images" / "make-tileable.jpg")
