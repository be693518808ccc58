"""Add Missing Maps (docs/guide/materials.md, "Whole materials", In Blender):

    texture_variants.add_missing_maps(height="bump", timeout=0)

The backend derives the material's missing height, normal and roughness maps from its base colour
(a generate request with `derive` and `maps_only`: the texture's own maps, no variant), through the
same job path as Generate (progress and Cancel in the UI; scripts and background mode wait for it);
material.wiring then adds them as Non-Color Image Texture nodes, wired without disturbing the rest of
the tree, in one undo step.
"""

import shutil

import bpy
from bpy.props import EnumProperty

from .. import paths
from ..errors import UserError
from ..material import map_io, storage, target, wiring
from .generate import JobOperator, timeout_property

HEIGHT_ITEMS = [
    ("bump", "Bump", "Height through a Bump node into the Principled BSDF's Normal (the Normal Map chained into "
     "the Bump's Normal)"),
    ("displacement", "Displacement", "Height through a Displacement node into the Material Output's Displacement"),
]


class TEXTURE_VARIANTS_OT_add_missing_maps(JobOperator, bpy.types.Operator):
    """Derive the material's missing height, normal and roughness maps from its base colour and wire them in"""

    bl_idname = "texture_variants.add_missing_maps"
    bl_label = "Add Missing Maps"
    bl_options = {"REGISTER", "UNDO"}

    height: EnumProperty(name="Height", items=HEIGHT_ITEMS, default="bump")
    timeout: timeout_property()

    _wiring = None  # what to derive and wire (material.wiring.Plan); not JobOperator._size_plan

    def _target(self, context):
        material, node, image = target.resolve(context)
        target.check_editable(material)
        self._wiring = wiring.plan(material, node, self.height)
        return material, node, image

    def _request_params(self, context, settings, image, job_dir, seed: int, plan) -> dict:
        return {"engine": "patch", "derive": list(self._wiring.maps), "maps_only": True, "preview_every": 0}

    def _use_results(self, context, job, made_for: dict) -> set:
        material = made_for["material"]
        node = material.node_tree.nodes.get(made_for["node_name"]) if material.node_tree else None
        try:
            if node is None or node.type != "TEX_IMAGE" or made_for["source"] is None:
                raise UserError("no_image", "The base colour's Image Texture node or its image was deleted while "
                                "the maps were made", "click Add Missing Maps again")
            wanted = wiring.plan(material, node, self.height).maps  # the tree may have changed meanwhile
        except UserError as e:
            shutil.rmtree(self._job_dir, ignore_errors=True)
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        folder, pack = storage.variant_destination(job.folder)
        files = job.files[0].get("maps", {}) if job.files else {}
        images = {}
        for name in wanted:
            if name in files:
                images[name] = map_io.import_map(files[name], f"{made_for['source'].name} {name}",
                                                 tuple(made_for["source"].size), folder)
                storage.settle(images[name], pack)
        paths.mark_finished(job.folder)
        if not images:
            self.report({"ERROR"}, str(UserError("nothing_missing", "The backend made none of the maps still missing",
                                                 "click Add Missing Maps again")))
            return {"CANCELLED"}
        made = wiring.wire(material, node, images, self.height)
        left_out = "".join(f"; {name} left out: {why}" for name, why in self._wiring.skipped.items())
        self.report({"INFO"}, f"Added {', '.join(sorted(images))} to '{material.name}' ({len(made)} new nodes)"
                    f"{left_out}")
        return {"FINISHED"}


CLASSES = (TEXTURE_VARIANTS_OT_add_missing_maps,)
