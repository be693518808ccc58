"""A Wang tile set on disk: the atlas geometry, the JSON record, and reading and writing the files.

With c edge colours the set has c**4 tiles; the tile with codes (n, e, s, w) has index
((n * c + e) * c + s) * c + w (layout.tile_index) and sits in column index % c**2, row index // c**2
of a c**2 x c**2 grid, rows counted from the TOP of the PNG. Each cell is T + 2P px (T the tile,
P the padding); the tile's pixels start at x0 = column * (T + 2P) + P, y0 = row * (T + 2P) + P.
The padding continues each edge's source sample outwards, so Linear sampling at a tile's border
reads what the neighbour across that edge shows, never another tile of the atlas.

Files (in one folder, never overwriting): `<stem>-wang-atlas.png` (colour), `<stem>-wang-atlas-<map>.png`
per map (`.tif` for float and 16-bit colour maps, as every map output), `<stem>-wang.json`:
{"version": 1, "colours", "tile_size", "padding", "columns", "rows", "atlas": {"color": file, map: file},
"engine", "seed", "tiles": [{"index", "column", "row", "edges": {"n", "e", "s", "w"}}]}, file names
relative to the JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from backend.errors import InputError
from backend.images import save_png_atomic, write_atomic
from backend.materials.maps import MaterialMap, companions, map_path, read_map, save_map
from backend.tileset.layout import codes_of

VERSION = 1
COLOURS = (2, 3)
ATLAS = "-wang-atlas"
RECORD = "-wang.json"


@dataclass(frozen=True)
class Geometry:
    colours: int
    tile: int  # T: a tile's side in px
    padding: int  # P: px of padding around each tile

    @property
    def cell(self) -> int:
        return self.tile + 2 * self.padding

    @property
    def grid(self) -> int:
        """Columns = rows = c**2."""
        return self.colours**2

    @property
    def count(self) -> int:
        return self.colours**4

    @property
    def size(self) -> tuple[int, int]:
        """The atlas's (width, height) in px."""
        return self.grid * self.cell, self.grid * self.cell

    def place(self, index: int) -> tuple[int, int]:
        """(column, row) of the tile in the atlas, row 0 at the top."""
        return index % self.grid, index // self.grid

    def origin(self, index: int) -> tuple[int, int]:
        """(y0, x0): the tile's top-left pixel in the atlas (inside its padding)."""
        column, row = self.place(index)
        return row * self.cell + self.padding, column * self.cell + self.padding


def check_colours(colours) -> int:
    if colours not in COLOURS or isinstance(colours, bool):
        raise InputError(f"a tile set has 2 or 3 edge colours, not {colours!r} ({colours!r}**4 tiles would be "
                         "too many to make or to tell apart)" if isinstance(colours, int) else
                         f"a tile set has 2 or 3 edge colours, not {colours!r}",
                         hint="--colours 2 (16 tiles) or --colours 3 (81 tiles)")
    return colours


def assemble(cells: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The atlas from per-tile padded cells (count, T+2P, T+2P, ...) in index order."""
    g = geometry.grid
    cell = geometry.cell
    rest = cells.shape[3:]
    grid = cells.reshape(g, g, cell, cell, *rest)  # (row, column, y, x, ...)
    return np.ascontiguousarray(np.swapaxes(grid, 1, 2).reshape(g * cell, g * cell, *rest))


def tiles_of(atlas: np.ndarray, geometry: Geometry) -> np.ndarray:
    """(count, T, T, ...): every tile's own pixels (no padding), in index order."""
    t = geometry.tile
    return np.stack([atlas[y0:y0 + t, x0:x0 + t] for y0, x0 in map(geometry.origin, range(geometry.count))])


def record(geometry: Geometry, engine: str, seed: int, files: dict[str, str] | None = None, **extra) -> dict:
    """The JSON record (module docstring); `files` {"color": name, map: name}."""
    tiles = []
    for index in range(geometry.count):
        column, row = geometry.place(index)
        tiles.append({"index": index, "column": column, "row": row, "edges": codes_of(index, geometry.colours)})
    return {"version": VERSION, "colours": geometry.colours, "tile_size": geometry.tile, "padding": geometry.padding,
            "columns": geometry.grid, "rows": geometry.grid, "atlas": dict(files or {}), "engine": engine,
            "seed": seed, **extra, "tiles": tiles}


@dataclass
class TileSet:
    """A made tile set: the colour atlas (a PIL image: L, RGB or RGBA), the maps' atlases, the record."""

    atlas: Image.Image
    geometry: Geometry
    engine: str
    seed: int
    maps: dict[str, MaterialMap] = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # what the engine reports (times, choices), into the record

    def save(self, folder: str | os.PathLike, stem: str) -> dict:
        """Write the set into `folder` under the first free `<stem>` (then `<stem>-2`, ...), each file
        atomically; {"json": path, "color": path, map: path}. On failure what was written is removed."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            name = stem if n == 1 else f"{stem}-{n}"
            try:
                return self._write(folder, name)
            except FileExistsError:
                continue
        raise FileExistsError(f"no free file name for the tile set {stem} in {folder}")

    def file_names(self, name: str) -> dict[str, str]:
        atlas = f"{name}{ATLAS}.png"
        names = {"color": atlas}
        names.update({m.name: map_path(atlas, m).name for m in self.maps.values()})
        return names

    def _write(self, folder: Path, name: str) -> dict:
        names = self.file_names(name)
        if any((folder / n).exists() for n in (*names.values(), f"{name}{RECORD}")):
            raise FileExistsError(name)
        content = record(self.geometry, self.engine, self.seed, names, **self.details)
        text = json.dumps({k: v for k, v in content.items() if k != "tiles"}, sort_keys=True)
        written: dict[str, str] = {}
        try:
            written["color"] = str(save_png_atomic(self.atlas, folder / names["color"], parameters=text))
            for m in self.maps.values():
                written[m.name] = str(save_map(m, folder / names["color"], text))
            path = folder / f"{name}{RECORD}"
            data = (json.dumps(content, indent=1) + "\n").encode()
            written["json"] = str(write_atomic(path, lambda f: f.write(data)))
        except BaseException:
            for path in written.values():
                Path(path).unlink(missing_ok=True)
            raise
        return {"json": written.pop("json"), **written}


def endings(maps) -> tuple[str, ...]:
    return (RECORD, f"{ATLAS}.png", *(f"{ATLAS}{e}" for e in companions(maps)))


@dataclass
class Loaded:
    """A tile set read back from its JSON: the record, the colour atlas and each map's atlas."""

    path: Path
    record: dict
    geometry: Geometry
    color: np.ndarray  # (H, W, C) uint8
    mode: str  # the colour atlas's PIL mode
    maps: dict[str, MaterialMap]

    @property
    def stem(self) -> str:
        name = self.path.name
        return name[: -len(RECORD)] if name.endswith(RECORD) else self.path.stem


def load(path: str | os.PathLike) -> Loaded:
    """Read `<stem>-wang.json` and the atlases it names (relative to it); InputError when unusable."""
    from backend.images import open_image

    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"tile set not found: {path}", hint="pass the <stem>-wang.json that `tileset` wrote") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path} is not a tile set record: {e}", hint="pass the <stem>-wang.json that `tileset` "
                         "wrote") from None
    try:
        if content["version"] != VERSION:
            raise InputError(f"{path} is a tile set of version {content['version']}, this backend reads {VERSION}",
                             hint="make the tile set again with this backend")
        geometry = Geometry(check_colours(content["colours"]), int(content["tile_size"]), int(content["padding"]))
        files = dict(content["atlas"])
        color_name = files.pop("color")
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path} lacks a tile set field ({e})", hint="pass the <stem>-wang.json that `tileset` "
                         "wrote") from None
    for name in (color_name, *files.values()):
        if Path(name).name != name:
            raise InputError(f"{path} names an atlas outside its folder: {name!r}",
                             hint="atlas names are file names beside the JSON")
    image = open_image(path.parent / color_name)
    mode = image.mode if image.mode in ("L", "LA", "RGB", "RGBA") else "RGB"
    color = np.asarray(image.convert(mode))
    color = color[..., None] if color.ndim == 2 else color
    maps = {name: read_map(path.parent / file, name) for name, file in files.items()}
    for what, size in [("color", (color.shape[1], color.shape[0]))] + [(n, m.size) for n, m in maps.items()]:
        if size != geometry.size:
            raise InputError(f"the {what} atlas of {path} is {size[0]}x{size[1]} px, its record says "
                             f"{geometry.size[0]}x{geometry.size[1]}", hint="make the tile set again")
    return Loaded(path, content, geometry, color, mode, maps)


def to_image(pixels: np.ndarray, mode: str) -> Image.Image:
    """(H, W, C) uint8 as a PIL image of `mode` (L, LA, RGB or RGBA)."""
    return Image.fromarray(np.ascontiguousarray(pixels[..., 0] if mode == "L" else pixels)).convert(mode)
