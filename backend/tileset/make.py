"""Making a tile set from a texture, and rendering a layout of one (docs/guide/tile-sets.md).

`make_tileset` reads the texture and its maps, picks the engine, and returns an atlas.TileSet;
`render_layout` reads a saved set and lays out N x M cells with the layout rule (layout.py), so a
baked image equals what Blender's node group shows; with the period (N, M) it tiles.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import numpy as np
from PIL import Image

from backend.errors import InputError
from backend.images import MAX_SIDE, load_reference
from backend.materials.maps import MaterialMap, fit_same_area, gather_map, read_map
from backend.tileset import atlas, layout
from backend.tileset.atlas import Geometry, TileSet

log = logging.getLogger(__name__)

ENGINES = ("auto", "patch", "diffusion")
DEFAULT_PADDING = 8
MAX_TILE = 1024


def default_size(source_size: tuple[int, int], padding: int = DEFAULT_PADDING) -> int:
    """Half the texture's shorter side (a multiple of 8, at most MAX_TILE): edge samples and interiors
    then come from different places of it."""
    side = min(min(source_size) // 2, min(source_size) - 2 * padding - 1, MAX_TILE)
    return max(16, side // 8 * 8)


def resolve_engine(engine: str, base: str | None = None, ip_adapter: str | None = None) -> tuple[str, str]:
    """(the engine to use, why): auto is the diffusion engine when its models are on this machine."""
    from backend import engines

    if engine not in ENGINES:
        raise InputError(f"a tile set has no {engine!r} engine", hint=f"use one of {', '.join(ENGINES)}")
    return engines.resolve(engine, base, ip_adapter)


def make_tileset(texture, *, colours: int = 2, size: int | None = None, padding: int = DEFAULT_PADDING,
                 engine: str = "auto", maps: dict[str, str] | None = None, seed: int = 0,
                 steps: int | None = None, base: str | None = None, ip_adapter: str | None = None,
                 cancel: threading.Event | None = None, on_step=None) -> TileSet:
    """A Wang tile set of `texture` (path or PIL image): c**4 tiles whose edges match by code, in one
    atlas per map (atlas.py). `maps` {name: path}: the material's maps, the texture's aspect, made
    into atlases exactly like the colour. `steps`: the diffusion engine's denoising steps (None: its
    default); `base`, `ip_adapter`: its models."""
    from backend.tileset import patch

    colours = atlas.check_colours(colours)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"the seed must be a whole number >= 0, not {seed!r}", hint="e.g. --seed 0")
    ref = load_reference(texture)
    w, h = ref.size
    size = default_size(ref.size, padding) if size is None else size
    patch.check(ref.size, size, padding)
    given = {}
    for name, path in (maps or {}).items():
        try:
            given[name] = fit_same_area(read_map(path, name), w, h)
        except InputError as e:
            raise InputError(f"map {name!r}: {e.message}", hint=e.hint) from e
    engine_name, why = resolve_engine(engine, base, ip_adapter)
    log.info("tile set: %s", why)
    geometry = Geometry(colours, size, padding)
    if geometry.size[0] > MAX_SIDE:
        raise InputError(f"an atlas of {colours**4} tiles of {size} px is {geometry.size[0]} px a side, more than "
                         f"{MAX_SIDE}", hint="give a smaller --size or fewer --colours")
    mode = "L" if ref.grayscale else "RGB"
    bands = [np.asarray(ref.rgb.convert(mode))]
    if ref.alpha is not None:
        mode = "LA" if mode == "L" else "RGBA"
        bands.append(np.asarray(ref.alpha))
    pixels = np.concatenate([b[..., None] if b.ndim == 2 else b for b in bands], axis=2)
    start = time.perf_counter()
    if engine_name == "diffusion":
        from backend.tileset import diffusion

        colour, atlas_maps, details = diffusion.make(ref, pixels, given, geometry, seed, steps=steps, base=base,
                                                     ip_adapter=ip_adapter, cancel=cancel, on_step=on_step)
    else:
        cells, details = patch.make(pixels, 1 if ref.grayscale else 3, geometry, seed, cancel, on_tile=on_step)
        coords = atlas.assemble(cells, geometry)
        colour = pixels[coords[..., 0], coords[..., 1]]
        atlas_maps = {name: gather_map(m, coords) for name, m in given.items()}
    details["seconds"] = round(time.perf_counter() - start, 3)
    image = atlas.to_image(np.ascontiguousarray(colour), mode)
    return TileSet(image, geometry, engine_name, seed, atlas_maps, details | {"source": ref.source})


def parse_cells(text) -> tuple[int, int]:
    """"NxM" (or (N, M)) as (columns, rows), each 1..4096."""
    try:
        n, m = (text if isinstance(text, (tuple, list)) else str(text).lower().split("x"))
        n, m = int(n), int(m)
    except (TypeError, ValueError):
        raise InputError(f"cells must be NxM (columns x rows), not {text!r}", hint="e.g. --cells 8x8") from None
    if not (1 <= n <= 4096 and 1 <= m <= 4096):
        raise InputError(f"cells {n}x{m}: each count must be 1 to 4096", hint="e.g. --cells 8x8")
    return n, m


def render_layout(record_path: str | os.PathLike, cells, seed: int = 0) -> Image.Image:
    """N x M cells of the saved tile set laid out with the layout rule, period (N, M): an ordinary
    tileable image (the colour; `info["maps"]` the maps laid out alike), row 0 at the top."""
    columns, rows = parse_cells(cells)
    seed = layout.check_seed(seed)
    loaded = atlas.load(record_path)
    geometry = loaded.geometry
    if max(columns, rows) * geometry.tile > MAX_SIDE:
        raise InputError(f"{columns}x{rows} cells of {geometry.tile} px exceed {MAX_SIDE} px a side",
                         hint="lay out fewer cells, or bake each map in parts")
    indices = layout.cell_tiles(columns, rows, geometry.colours, seed, period=(columns, rows))
    image = atlas.to_image(layout.render(atlas.tiles_of(loaded.color, geometry), indices), loaded.mode)
    image.info["maps"] = {name: MaterialMap(name, layout.render(atlas.tiles_of(m.pixels, geometry), indices),
                                            m.kind, m.source) for name, m in loaded.maps.items()}
    image.info["parameters"] = json.dumps({"kind": "wang_layout", "tileset": str(loaded.path), "cells": [columns, rows],
                                           "seed": seed, "colours": geometry.colours, "tile_size": geometry.tile},
                                          sort_keys=True)
    image.info["stem"] = f"{loaded.stem}-wang-layout-{columns}x{rows}"
    return image

