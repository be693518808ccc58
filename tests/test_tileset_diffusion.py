"""The diffusion tile set (backend/tileset/diffusion.py) on the tiny random-weight models: the patch
engine's edges kept exactly, the interiors re-made, maps exact wherever the patch pixels stay."""

from __future__ import annotations

import numpy as np
import skimage.data
from PIL import Image
from scipy import ndimage

from backend import make_tileset
from backend.diffusion.controls.inpaint import FEATHER
from backend.tileset import atlas
from backend.tileset.diffusion import interior_mask
from tests.test_tileset import assert_shared_edges_identical

TILE = 64


def test_the_diffusion_engine_remakes_the_interiors_and_keeps_the_edges(tiny_models, tmp_path):
    gravel = skimage.data.gravel()[:192, :192]
    colour = Image.fromarray(np.stack([gravel, gravel // 2 + 60, 255 - gravel], axis=2))
    rough = tmp_path / "rough.png"
    Image.fromarray(255 - gravel).save(rough)
    steps = []
    models = {"base": str(tiny_models["base"]), "ip_adapter": str(tiny_models["ip_adapter"])}
    made = make_tileset(colour, size=TILE, engine="diffusion", steps=2, seed=4, maps={"roughness": str(rough)},
                        on_step=lambda step, total: steps.append((step, total)), **models)
    patch = make_tileset(colour, size=TILE, engine="patch", seed=4)
    assert made.engine == "diffusion" and made.details["steps"] == 2
    assert steps[-1][0] == steps[-1][1] and len({total for _, total in steps}) == 1
    tiles, before = (atlas.tiles_of(np.asarray(s.atlas, dtype=np.int16), s.geometry) for s in (made, patch))
    assert_shared_edges_identical(tiles)
    inside = interior_mask(TILE) > 0
    reach = int(np.ceil(TILE * FEATHER))  # the blend of new and kept pixels reaches this far out
    near = ndimage.binary_dilation(inside, iterations=reach)
    for index in range(16):
        changed = (tiles[index] != before[index]).any(axis=2)
        assert changed[inside].mean() > 0.5  # the interior is new
        assert not changed[~near].any()  # the edge bands are the patch set's, exactly
    # the padding is the patch set's: it continues the unchanged edges
    g = made.geometry
    for index in range(16):
        y0, x0 = g.origin(index)
        ring = np.ones((TILE + 2 * g.padding,) * 2, bool)
        ring[g.padding:-g.padding, g.padding:-g.padding] = False
        cell = (slice(y0 - g.padding, y0 + TILE + g.padding), slice(x0 - g.padding, x0 + TILE + g.padding))
        assert np.array_equal(np.asarray(made.atlas)[cell][ring], np.asarray(patch.atlas)[cell][ring])
    # maps: exact wherever the pixels are the patch set's, and an atlas of the colour's size
    out, roughness = np.asarray(made.atlas), made.maps["roughness"].pixels[..., 0]
    same = (np.asarray(made.atlas) == np.asarray(patch.atlas)).all(axis=2)
    assert roughness.shape == out.shape[:2]
    assert np.array_equal(roughness[same], 255 - out[..., 0][same])
