"""The README's production-size pictures, made by the weight-free engine (no model weights needed):

- docs/images/patch-4096x2048-tiled2x2.jpg: a 4096 x 2048 patch variant of scikit-image's CC0 brick
  texture, tiled 2 x 2 (8192 x 4096), shown at a quarter of its size;
- docs/images/upscale-x4-tiled2x2.jpg: a 256 px patch variant of a tinted CC0 gravel, upscaled x4
  (1024 px; the weight-free fallback: wrap-aware Lanczos plus the quilted detail), tiled 2 x 2, with
  a full-resolution crop across the tile corner where the four copies meet.

    .venv/bin/python scripts/render_production_size.py [OUT_DIR]   (default docs/images)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend import generate_variants, upscale  # noqa: E402
from backend.framing import tiled  # noqa: E402


def _labelled(image: Image.Image, text: str) -> Image.Image:
    out = Image.new("RGB", (image.width, image.height + 24), "white")
    out.paste(image.convert("RGB"), (0, 24))
    ImageDraw.Draw(out).text((4, 6), text, fill="black")
    return out


def big_patch_variant(out: Path) -> None:
    brick = Image.fromarray(skimage.data.brick()).convert("RGB")
    start = time.perf_counter()
    (variant,) = generate_variants(brick, engine="patch", size=(4096, 2048), seed=3)
    seconds = time.perf_counter() - start
    sheet = tiled(variant, 2).resize((2048, 1024), Image.Resampling.LANCZOS)
    _labelled(sheet, f"patch variant 4096 x 2048 ({seconds:.0f} s), tiled 2 x 2, shown at 1/4").save(out, quality=85)


def upscaled_variant(out: Path) -> None:
    gray = np.asarray(Image.fromarray(skimage.data.gravel()).resize((256, 256), Image.Resampling.LANCZOS), np.float32)
    colour = Image.fromarray(np.clip(gray[..., None] * [0.95, 0.78, 0.6] + 12, 0, 255).astype(np.uint8))
    (variant,) = generate_variants(colour, engine="patch", size=256, seed=5)
    big = upscale(variant, 4, engine="patch", seed=5)
    sheet = tiled(big, 2)  # 2048 px
    corner = sheet.crop((1024 - 256, 1024 - 256, 1024 + 256, 1024 + 256))  # where the four copies meet
    shown = Image.new("RGB", (1024 + 512 + 8, 1024), "white")
    shown.paste(sheet.resize((1024, 1024), Image.Resampling.LANCZOS).convert("RGB"), (0, 0))
    shown.paste(corner.convert("RGB"), (1024 + 8, 256))
    _labelled(shown, "256 px variant upscaled x4 (weight-free) to 1024 px, tiled 2 x 2 at 1/2; right: the tile "
              "corner at full size").save(out, quality=85)


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    big_patch_variant(folder / "patch-4096x2048-tiled2x2.jpg")
    upscaled_variant(folder / "upscale-x4-tiled2x2.jpg")
    for name in ("patch-4096x2048-tiled2x2.jpg", "upscale-x4-tiled2x2.jpg"):
        print(folder / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "images")
