"""A/B compare (material/compare.py):

    texture_variants.compare   show the picked variant (with its maps) on the object, the original, or stop
"""

import bpy
from bpy.props import EnumProperty

from ..errors import UserError, reports_errors
from ..material import compare, results
from ..material import target as material_target
from . import generate
from .apply import targets
from .generate import _redraw


class TEXTURE_VARIANTS_OT_compare(bpy.types.Operator):
    """Compare without Apply: show the picked variant with every map on the object, or the original;
    Stop puts the node tree back exactly as it was"""

    bl_idname = "texture_variants.compare"
    bl_label = "Compare"
    bl_options = {"REGISTER", "UNDO"}

    show: EnumProperty(name="Show", default="VARIANT", items=(
        ("VARIANT", "Variant", "The picked variant with its maps, through temporary nodes"),
        ("ORIGINAL", "Original", "What the material shows without the variant"),
        ("STOP", "Stop", "Remove the temporary nodes: the node tree as it was")))

    @reports_errors()
    def execute(self, context):
        material, node, _source = material_target.resolve(context)
        if self.show == "STOP":
            if not compare.leave(material):
                raise UserError("not_comparing", f"{material.name} is not being compared",
                                "pick a variant and click Compare")
            self.report({"INFO"}, f"{material.name}: compare ended, the node tree as it was")
        else:
            item = generate.picked(context)
            current = context.scene.texture_variants.current
            results.check_binding(current, material, node, False)
            which = compare.VARIANT if self.show == "VARIANT" else compare.ORIGINAL
            compare.show(material, targets(material, node, item, current), which)
            shown = item.image.name if which == compare.VARIANT else "the original"
            self.report({"INFO"}, f"{material.name} shows {shown}; Stop Compare puts it back")
        _redraw(context)
        return {"FINISHED"}


CLASSES = (TEXTURE_VARIANTS_OT_compare,)
