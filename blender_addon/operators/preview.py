"""The live tiling preview (material/tiling_preview.py):

    texture_variants.tiling_preview   repeat the material's textures N times on the object, or stop
"""

import bpy
from bpy.props import IntProperty

from ..errors import reports_errors
from ..material import target, tiling_preview
from .generate import _redraw


class TEXTURE_VARIANTS_OT_tiling_preview(bpy.types.Operator):
    """Show the material's textures repeated on the object (every map), to see the repetition in the
    viewport; click again to put the node tree back exactly as it was"""

    bl_idname = "texture_variants.tiling_preview"
    bl_label = "Tiling Preview"
    bl_options = {"REGISTER", "UNDO"}

    repeat: IntProperty(name="Repeat", default=3, min=2, max=16,
                        description="How many times each texture repeats across the object, per axis")

    @reports_errors()
    def execute(self, context):
        material = target.active_material(context)
        if tiling_preview.is_on(material):
            tiling_preview.turn_off(material)
            self.report({"INFO"}, f"{material.name}: tiling preview off, the node tree as it was")
        else:
            count = tiling_preview.turn_on(material, self.repeat)
            self.report({"INFO"}, f"{material.name}: {count} texture{'s' if count != 1 else ''} repeated "
                        f"{self.repeat}×{self.repeat}; click Tiling Preview again to stop")
        _redraw(context)
        return {"FINISHED"}


CLASSES = (TEXTURE_VARIANTS_OT_tiling_preview,)
