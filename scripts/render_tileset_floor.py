"""The README's tile-set picture: a floor of 8 x 8 cells, a plain repeat of one tileable tile beside
the Wang layout of the tile set (`python -m backend tileset`, then the layout rule Blender's node
group computes), with each surface's repetition score (autocorrelation at the tile period).

    .venv/bin/python scripts/render_tileset_floor.py [OUT.jpg] [--texture gravel|brick|grass]
    (default docs/images/tileset-floor.jpg, gravel)
    .venv/bin/python scripts/render_tileset_floor.py --measure [--size 256]
    (the numbers of docs/guide/tile-sets.md: time, repetition, join steps, shared pixels)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend import make_tileset, tileset_layout  # noqa: E402
from backend.metrics import repetition  # noqa: E402
from backend.tileset import atlas, layout  # noqa: E402

CELLS = 8
TILE = 128


def main(out: Path, texture: str) -> None:
    source = Image.fromarray(getattr(skimage.data, texture)()).convert("RGB")
    tileset = make_tileset(source, size=TILE, engine="patch", seed=0)
    with tempfile.TemporaryDirectory() as folder:
        record = tileset.save(folder, texture)["json"]
        wang = tileset_layout(record, (CELLS, CELLS), seed=0).convert("RGB")
    tiles = atlas.tiles_of(np.asarray(tileset.atlas), tileset.geometry)
    single = layout.tile_index(0, 1, 0, 1, 2)  # n == s, e == w: a tile that tiles with itself
    repeat = Image.fromarray(layout.render(tiles, np.full((CELLS, CELLS), single)))
    side = CELLS * TILE // 2
    label = 24
    sheet = Image.new("RGB", (2 * side + 16, side + label), "white")
    for i, (image, text) in enumerate([(repeat, "one tileable tile, repeated"), (wang, "Wang tile set, 16 tiles")]):
        score = repetition(image, TILE)
        sheet.paste(image.resize((side, side), Image.Resampling.LANCZOS), (i * (side + 16), label))
        ImageDraw.Draw(sheet).text((i * (side + 16) + 4, 6), f"{text} (repetition {score:.2f})", fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=85)
    print(out, f"{out.stat().st_size // 1024} KB")


def measure(texture: str, size: int, repeats: int = 3) -> None:
    """Time to make the 16-tile set (median of `repeats`), repetition of a 16 x 16 layout and of 16 x 16
    repeats of one tile, the step across joins against the steps inside the tiles, shared pixels."""
    import time

    source = Image.fromarray(getattr(skimage.data, texture)()).convert("RGB")
    seconds = []
    for seed in range(repeats):
        start = time.perf_counter()
        tileset = make_tileset(source, size=size, engine="patch", seed=seed)
        seconds.append(time.perf_counter() - start)
    tiles = atlas.tiles_of(np.asarray(tileset.atlas, dtype=np.float64), tileset.geometry)
    wang = repetition(layout.render(tiles, layout.cell_tiles(16, 16, 2, seed=0)), size)
    single = layout.tile_index(0, 1, 0, 1, 2)
    repeat = repetition(layout.render(tiles, np.full((16, 16), single)), size)
    inside = np.concatenate([np.abs(np.diff(t, axis=1)).mean(axis=(0, 2)) for t in tiles]
                            + [np.abs(np.diff(t, axis=0)).mean(axis=(1, 2)) for t in tiles])
    joins = [np.abs(tiles[a][:, -1] - tiles[b][:, 0]).mean() for a in range(16) for b in range(16)
             if layout.codes_of(a, 2)["e"] == layout.codes_of(b, 2)["w"]]
    joins += [np.abs(tiles[a][-1] - tiles[b][0]).mean() for a in range(16) for b in range(16)
              if layout.codes_of(a, 2)["s"] == layout.codes_of(b, 2)["n"]]
    shared = max(float((tiles[a] == tiles[b]).all(axis=2).mean()) for a in range(16) for b in range(a + 1, 16))
    print(f"{texture}, 16 tiles of {size} px, patch engine: {np.median(seconds):.2f} s (median of {repeats}: "
          f"{', '.join(f'{s:.2f}' for s in seconds)})")
    print(f"repetition at the tile period: 16x16 Wang layout {wang:.3f}, 16x16 repeats of one tile {repeat:.3f}")
    print(f"step across joins / inside the tiles: median {np.median(joins) / np.median(inside):.3f}; joins "
          f"{min(joins):.1f}-{max(joins):.1f} (8-bit levels), inside 2-98 % {np.quantile(inside, 0.02):.1f}-"
          f"{np.quantile(inside, 0.98):.1f}")
    print(f"most pixels two tiles share: {100 * shared:.1f} %")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "docs" / "images" / "tileset-floor.jpg"))
    parser.add_argument("--texture", default="gravel", choices=("gravel", "brick", "grass"))
    parser.add_argument("--measure", action="store_true", help="print the numbers instead of drawing")
    parser.add_argument("--size", type=int, default=256, help="--measure: the tile size (default 256)")
    args = parser.parse_args()
    if args.measure:
        measure(args.texture, args.size)
    else:
        main(Path(args.out), args.texture)
