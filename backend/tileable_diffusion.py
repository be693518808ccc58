"""Make-tileable's diffusion repair (docs/guide/make-tileable.md): the band the weight-free repair
re-made is generated again by the diffusion loop, so it is new texture in the photo's look rather
than quilted pieces of it.

The weight-free repair (backend/tileable.py) runs first: its result already tiles and equals the
(flattened) input outside the band. That result is the reference: it is DDIM-inverted, and an
edit-inside control (controls/inpaint.py) keeps the generated latents outside the band on the
reference's trajectory at every step, with circular padding on the tiled axes; the input is the
IP-Adapter prompt and kv replacement reads the reference's own attention, so the band gets the
input's look. At the end the reference's pixels are restored outside the band, feathered across
its border (wrapping): pixels where the feathered mask is 0 are the input's exactly. Maps follow
the re-made pixels through the variant-to-reference correspondence (backend/materials).
"""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from backend.errors import InputError

MULTIPLE = 8  # the latent grid: the diffusion engine's sides are multiples of 8


def regenerate_band(repaired: np.ndarray, original: Image.Image, band: np.ndarray, tile: str, *, seed: int = 0,
                    steps: int | None = None, base=None, ip_adapter=None, cancel: threading.Event | None = None,
                    on_step=None) -> tuple[np.ndarray, np.ndarray]:
    """(the image (H, W, 3) uint8 with the band generated anew, the (H, W) bool of pixels that changed).

    `repaired`: the weight-free repair's RGB result, uint8; `original`: the input as the image
    prompt; `band`: (H, W) in [0, 1], 1 where the band was re-made."""
    from backend.diffusion import engine
    from backend.diffusion.controls.inpaint import KeepOutside
    from backend.images import Reference
    from backend.params import GenerationParams

    height, width = repaired.shape[:2]
    if width % MULTIPLE or height % MULTIPLE or min(width, height) < 64:
        raise InputError(f"the diffusion repair needs sides that are multiples of 8 from 64 px, not {width}x{height}",
                         hint="crop or scale the image to such a size, or use --engine patch")
    params = GenerationParams.build({}, engine="diffusion", size=(width, height), tile=tile, variants=1, seed=seed,
                                    **({} if steps is None else {"steps": steps}))
    reference = Reference(rgb=Image.fromarray(repaired, "RGB"), alpha=None, grayscale=False, source="repaired")
    (image,) = engine.generate(reference, params, base=base, ip_adapter=ip_adapter, on_step=on_step, cancel=cancel,
                               extra_controls=[KeepOutside(band.astype(np.float32), tile)],
                               ip_image=original.convert("RGB"))
    made = np.asarray(image.convert("RGB"))
    return made, (made != repaired).any(axis=2)
