"""Upscale (docs/guide/production-size.md, "Upscale"; docs/guide/blender.md):

    texture_variants.upscale(factor="2", of="PICKED", index=-1, timeout=0)

The picked variant of the current set (`of="PICKED"`) or the variant applied to the material
(`of="APPLIED"`) made 2× or 4× larger with all its maps, still tiling, by the backend's `upscale`
request. It runs like Generate Variant (job folder, progress, Cancel; scripts wait for it); the
result joins the material's History as a result set of its own, labelled "upscale", made for the
same material and node as the variant, so Apply, Bake and Revert work on it as on any variant.
"""

import bpy
from bpy.props import EnumProperty

from ..errors import UserError
from ..material import target, texture_io
from ..pixels import sizing
from .generate import JobOperator, picked, timeout_property, variant_index

FACTOR_ITEMS = [("2", "×2", "Twice the width and height"), ("4", "×4", "Four times the width and height")]
OF_ITEMS = [
    ("PICKED", "Picked Variant", "The picked variant of the current result set, with its maps"),
    ("APPLIED", "Applied Variant", "The variant applied to the active material, with its applied maps"),
]


def applied_images(material, node) -> tuple:
    """(the image applied to `node`, {map name: the image applied to that map's node}); UserError when
    no variant is applied to it."""
    state = material.texture_variants
    record = state.applied.get(node.name)
    if record is None or record.applied_image is None:
        raise UserError("no_variant", f"No variant is applied to '{material.name}'",
                        "pick a variant and click Apply, or upscale the picked variant")
    maps = {r.map_name: r.applied_image for r in state.applied if r.map_name and r.applied_image is not None}
    return record.applied_image, maps


class TEXTURE_VARIANTS_OT_upscale(JobOperator, bpy.types.Operator):
    """Make the picked (or applied) variant 2× or 4× larger with all its maps, still tiling"""

    bl_idname = "texture_variants.upscale"
    bl_label = "Upscale"
    bl_options = {"REGISTER", "UNDO"}

    factor: EnumProperty(name="Factor", items=FACTOR_ITEMS, default="2")
    of: EnumProperty(name="Of", items=OF_ITEMS, default="PICKED")
    index: variant_index()
    timeout: timeout_property()

    request = "upscale"
    _input_maps = None  # {map name: image} sent with the variant
    _map_nodes = None  # {map name: the node it was applied to / made from}

    def _target(self, context):
        """(material, node, the variant to enlarge): the set's own material and node for a picked variant."""
        if self.of == "APPLIED":
            material, node, _image = target.resolve(context)
            image, self._input_maps = applied_images(material, node)
            self._map_nodes = {r.map_name: r.name for r in material.texture_variants.applied if r.map_name}
            return material, node, image
        item = picked(context, self.index)
        current = context.scene.texture_variants.current
        material = current.material or target.active_material(context)
        node = material.node_tree.nodes.get(current.node_name) if material.node_tree else None
        if node is None:
            raise UserError("no_image", f"The node '{current.node_name}' these variants were made for is gone",
                            "generate the variants again")
        self._input_maps = {m.name: m.image for m in item.maps if m.image is not None}
        self._map_nodes = {entry.name: entry.node_name for entry in current.map_nodes}
        return material, node, item.image

    def _size_plan(self, settings, image):
        factor, (width, height) = int(self.factor), image.size
        if max(width, height) * factor > sizing.MAX_SIZE:
            raise UserError("too_large", f"×{factor} of {width}×{height} is over the backend's {sizing.MAX_SIZE} px "
                            "a side", "upscale ×2, or a smaller variant")
        return sizing.SizePlan(width * factor, height * factor, (f"Upscaled ×{factor} from {width}×{height}",))

    def _request_params(self, context, settings, image, job_dir, seed: int, plan) -> dict:
        return {"factor": int(self.factor), "engine": settings.engine, "seed": seed, "steps": settings.steps,
                "tile": settings.tile, "preview_every": 0 if bpy.app.background else 2}

    def _maps(self, material, node, job_dir) -> dict:
        return {name: (self._map_nodes.get(name, ""), texture_io.export_map(image, job_dir, name))
                for name, image in sorted(self._input_maps.items())}

    def _use_results(self, context, job, made_for: dict) -> set:
        # The set is made for the material's original texture, as the variant's own set is.
        material = made_for["material"]
        node = material.node_tree.nodes.get(made_for["node_name"]) if material.node_tree else None
        original = target.source_image(material, node) if node is not None else None
        return super()._use_results(context, job, dict(made_for, source=original))


CLASSES = (TEXTURE_VARIANTS_OT_upscale,)
