"""Judging the results by their report cards (the backend's: tiles? new? same look?):

    texture_variants.sort_results   order the current set's variants by novelty, look or seam, best first
"""

import json

import bpy
from bpy.props import EnumProperty

from .. import panel_rules
from ..errors import UserError, reports_errors
from .generate import _redraw


class TEXTURE_VARIANTS_OT_sort_results(bpy.types.Operator):
    """Order the variants by their report card, best first (the picked one stays picked)"""

    bl_idname = "texture_variants.sort_results"
    bl_label = "Sort Results"
    bl_options = {"REGISTER", "UNDO"}

    by: EnumProperty(name="By", default="novelty", items=(
        ("novelty", "Newest", "Most new structure first (furthest from any shifted copy)"),
        ("look", "Closest Look", "Closest to the source's look first"),
        ("seam", "Best Seams", "Smoothest wrap-around seams first")))

    @reports_errors()
    def execute(self, context):
        current = context.scene.texture_variants.current
        if not len(current.variants):
            raise UserError("no_variant", "There are no results to sort", "click Generate Variant first")
        key = panel_rules.SORT_KEYS[self.by]
        cards = [json.loads(v.card or "{}") for v in current.variants]
        picked = current.variants[current.index].name if 0 <= current.index < len(current.variants) else None
        order = sorted(range(len(cards)), key=lambda i: (key(cards[i]), i))
        names = [current.variants[i].name for i in order]
        for target, name in enumerate(names):  # move each into place, front to back
            current.variants.move(next(i for i, v in enumerate(current.variants) if v.name == name), target)
        if picked is not None:
            current.index = next(i for i, v in enumerate(current.variants) if v.name == picked)
        _redraw(context)
        return {"FINISHED"}


CLASSES = (TEXTURE_VARIANTS_OT_sort_results,)
