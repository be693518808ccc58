"""The diffusion tile set: the patch engine's tiles with their interiors re-made by the diffusion engine.

1. The patch engine makes the set (patch.py): edge samples, corners and a first interior per tile.
   Its edge bands and padding are kept as they are, so shared edges stay identical pixel for pixel.
2. Each tile goes to the diffusion engine as the reference, with an edit-inside mask over its
   interior (controls/inpaint.py: KeepOutside): the interior is denoised anew from the tile's own
   seeded noise while the edge bands follow the reference branch's trajectory, so the new content
   continues them; the whole texture is IP-Adapter's image prompt and kv replacement (appearance
   "kv") gives the tile the texture's look. Outside the feathered mask the tile's pixels are kept.
3. Maps: where a pixel is still the patch tile's, through its source coordinates (exactly); inside,
   through the correspondence from the new pixels back to the texture (materials/correspondence.py).
   Alpha, when the texture has it, is the patch tile's.
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from backend.materials.maps import MaterialMap
from backend.tileset import patch
from backend.tileset.atlas import Geometry, assemble

DIFFUSION_MIN_TILE = 64  # the diffusion engine's smallest output side


def interior_mask(tile: int) -> np.ndarray:
    """(T, T) float32: 1 over the interior the diffusion engine re-makes, 0 on the edge bands (the
    patch engine's kept band plus half its cut band, so the feathered border stays inside the tile's
    own band)."""
    kept, overlap = patch.bands(tile)
    border = kept + overlap // 2
    mask = np.zeros((tile, tile), np.float32)
    mask[border:tile - border, border:tile - border] = 1.0
    return mask


def make(ref, pixels: np.ndarray, given: dict[str, MaterialMap], geometry: Geometry, seed: int, *, steps=None,
         base=None, ip_adapter=None, cancel=None, on_step=None) -> tuple[np.ndarray, dict[str, MaterialMap], dict]:
    """(colour atlas (H, W, C) uint8 like `pixels`, the maps' atlases, what the record gains)."""
    from backend.diffusion import engine
    from backend.diffusion.controls.inpaint import KeepOutside
    from backend.errors import InputError
    from backend.images import Reference
    from backend.materials import correspondence
    from backend.params import GenerationParams

    t, p = geometry.tile, geometry.padding
    if t < DIFFUSION_MIN_TILE:
        raise InputError(f"the diffusion engine makes tiles of at least {DIFFUSION_MIN_TILE} px, not {t}",
                         hint=f"give --size {DIFFUSION_MIN_TILE} or more, or --engine patch")
    cells, record = patch.make(pixels, 1 if ref.grayscale else 3, geometry, seed, cancel)
    mask = interior_mask(t)
    rgb = np.asarray(ref.rgb)
    params = GenerationParams.build({}, engine="diffusion", size=(t, t), tile="none", variants=1,
                                    **({} if steps is None else {"steps": steps}))
    out = pixels[cells[..., 0], cells[..., 1]].copy()  # (count, T+2P, T+2P, C)
    inside = np.zeros(cells.shape[:3], bool)  # the pixels the diffusion engine changed
    coords = cells.copy()
    started = time.perf_counter()
    for index in range(geometry.count):
        body = cells[index, p:p + t, p:p + t]
        tile = Reference(rgb=Image.fromarray(rgb[body[..., 0], body[..., 1]]), alpha=None, grayscale=False,
                         source=f"{ref.source} tile {index}")
        done = index

        def progress(step, total, preview, done=done):
            if on_step is not None:
                on_step(done * total + step, geometry.count * total)

        (image,) = engine.generate(tile, params.replace(seed=seed + index), base=base, ip_adapter=ip_adapter,
                                   on_step=progress, cancel=cancel, extra_controls=[KeepOutside(mask)],
                                   ip_image=ref.rgb)
        new = np.asarray(image.convert("RGB"))
        changed = (new != np.asarray(tile.rgb)).any(axis=2)
        region = out[index, p:p + t, p:p + t]
        if ref.grayscale:
            region[..., 0] = np.asarray(image.convert("L"))
        else:
            region[..., :3] = new
        inside[index, p:p + t, p:p + t] = changed
        if given and changed.any():
            found = correspondence.correspond(new, rgb, seed=seed + index)
            coords[index, p:p + t, p:p + t][changed] = found.coords[changed]
    colour = assemble(out, geometry)
    flat = assemble(coords, geometry)
    maps = {name: MaterialMap(name, np.ascontiguousarray(m.pixels[flat[..., 0], flat[..., 1]]), m.kind, m.source)
            for name, m in given.items()}
    details = record | {"diffusion_seconds": round(time.perf_counter() - started, 3),
               "changed": round(float(assemble(inside, geometry).mean()), 4), "steps": params.steps}
    return colour, maps, details
