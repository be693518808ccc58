"""Make Tileable (docs/guide/make-tileable.md):

    texture_variants.make_tileable   the material's texture itself made seamless, at its own size

It runs like Generate Variant (job folder, progress, Cancel, the ticked maps sent with it); its
result becomes the current result set, labelled "tileable" in the History, and Apply / Bake /
Revert work on it as on a variant. The panel says the seam scores before and after.
"""

import bpy

from ..errors import UserError
from ..material import map_io
from ..pixels import sizing
from .generate import JobOperator, timeout_property


class TEXTURE_VARIANTS_OT_make_tileable(JobOperator, bpy.types.Operator):
    """Make the material's texture itself tile: level its lighting and re-make a band along its seams,
    keeping every other pixel (with the ticked maps)"""

    bl_idname = "texture_variants.make_tileable"
    bl_label = "Make Tileable"
    bl_options = {"REGISTER", "UNDO"}

    timeout: timeout_property()

    request = "make_tileable"

    def _size_plan(self, settings, image):
        return sizing.own_size(*image.size)  # its own size: resampled only when the backend could not read it

    def _request_params(self, context, settings, image, job_dir, seed: int, plan) -> dict:
        if settings.tile == "none":
            raise UserError("no_tile_axes", "Tile is None: there is no seam to make",
                            "set Tile (Advanced) to Both, X or Y, then click Make Tileable")
        params = {"tile": settings.tile, "flatten": "auto"}
        if settings.engine == "diffusion":  # the band generated anew in the texture's look (Auto: the patch repair)
            params |= {"engine": "diffusion", "seed": seed, "steps": settings.steps}
        return params

    def _maps(self, material, node, job_dir) -> dict:
        return map_io.export_chosen(material, node, job_dir)


CLASSES = (TEXTURE_VARIANTS_OT_make_tileable,)
