"""The "Variants" panel, in the sidebar (N) of the Shader Editor and of the 3D Viewport."""

import bpy

from . import material_target, panel_rules, session
from .errors import UserError
from .operators import PREVIEW_IMAGE


class TEXTURE_VARIANTS_UL_results(bpy.types.UIList):
    """The generated variants as thumbnails to pick from."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        icon_id = item.image.preview.icon_id if item.image and item.image.preview else 0
        if self.layout_type == "GRID":
            layout.label(text="", icon_value=icon_id)
        else:
            layout.label(text=f"{item.name}  ({item.engine})", icon_value=icon_id)


def draw_variants_panel(layout, context) -> None:
    settings = context.scene.texture_variants
    material = draw_target(layout.box(), context)
    header, body = layout.panel("texture_variants_settings", default_closed=False)
    header.label(text="Settings")
    if body:
        draw_settings(body.column(align=True), settings, session.shared().hello)
    draw_job(layout, session.shared())
    draw_results(layout, settings, material)


def draw_target(box, context):
    """What the add-on will work on, or why it cannot; returns the material (or None)."""
    try:
        material, _node, image = material_target.resolve(context)
    except UserError as e:
        box.label(text=e.message, icon="ERROR")
        box.label(text=e.hint[:90])
        material = None
    else:
        box.label(text=material.name, icon="MATERIAL")
        box.label(text=f"{image.name}  {image.size[0]}x{image.size[1]}", icon="IMAGE_DATA")
        if material.texture_variants.original_image is not None:
            box.label(text=f"Variant applied (original: {material.texture_variants.original_image.name})",
                      icon="INFO")
    active = context.active_object.active_material if context.active_object else None
    if active is not None and active.node_tree:
        box.prop_search(context.scene.texture_variants, "image_node", active.node_tree, "nodes", text="Node",
                        icon="NODE")
    return material


def draw_settings(col, settings, hello) -> None:
    """The settings, without those the chosen engine ignores; greyed out where another setting makes
    them do nothing (panel_rules)."""
    col.prop(settings, "engine")
    if settings.engine == "auto":
        col.label(text=panel_rules.auto_text(hello), icon="INFO")
    states = panel_rules.setting_states(panel_rules.effective_engine(settings.engine, hello),
                                        settings.appearance, settings.style_only, settings.sketch is not None)
    col.prop(settings, "variants")
    row = col.row(align=True)
    row.prop(settings, "seed")
    row.prop(settings, "randomize_seed", text="", icon="FILE_REFRESH")
    _prop(col, settings, "steps", states)
    col.prop(settings, "size")
    col.prop(settings, "tile")
    _prop(col, settings, "appearance", states)
    _prop(col, settings, "style_only", states)
    _prop(col, settings, "suppress_content", states)
    if states["sketch"] != panel_rules.HIDDEN:
        col.separator()
        row = col.row(align=True)
        row.prop(settings, "sketch")
        row.operator("texture_variants.make_guide", text="", icon="IMAGE_REFERENCE")
        _prop(col, settings, "sketch_mode", states)
        _prop(col, settings, "sketch_strength", states)
    if states["balance"] != panel_rules.HIDDEN:
        col.separator()
        row = col.row(align=True)
        row.active = states["balance"] == panel_rules.SHOWN
        row.label(text="Structure")
        row.prop(settings, "balance", text="", slider=True)
        row.label(text="Appearance")


def _prop(col, settings, name: str, states: dict) -> None:
    if states[name] == panel_rules.HIDDEN:
        return
    row = col.row(align=True)
    row.active = states[name] == panel_rules.SHOWN
    row.prop(settings, name)


def draw_job(layout, current) -> None:
    """Generate, or the running job's progress with Cancel and the live preview."""
    job = current.job
    if current.busy:
        row = layout.row(align=True)
        row.progress(factor=job.fraction, type="BAR", text=job.status_text())
        row.operator("texture_variants.cancel", text="", icon="CANCEL")
        preview = bpy.data.images.get(PREVIEW_IMAGE)
        if preview is not None and job.preview and preview.preview:
            layout.template_icon(icon_value=preview.preview.icon_id, scale=6.0)
        return
    layout.operator("texture_variants.generate", icon="SHADERFX")
    if job is not None and job.finished and job.state != "done":
        layout.label(text=job.status_text(), icon="ERROR" if job.state == "failed" else "INFO")


def draw_results(layout, settings, material) -> None:
    """The variants to pick from, Apply and Tile; Revert and Bake once one is applied."""
    if len(settings.results):
        layout.template_list("TEXTURE_VARIANTS_UL_results", "", settings, "results", settings, "results_index",
                             type="GRID", columns=4, rows=1)
        picked = settings.picked()
        if picked is not None:
            if picked.image.preview:
                layout.template_icon(icon_value=picked.image.preview.icon_id, scale=6.0)
            layout.label(text=f"{picked.image.name} · seed {picked.seed} · {picked.engine}")
        row = layout.row(align=True)
        row.operator("texture_variants.apply_variant", icon="CHECKMARK")
        row.operator("texture_variants.tile_preview", text="Tile 3×3", icon="MESH_GRID")
    if material is not None and material.texture_variants.original_image is not None:
        row = layout.row(align=True)
        row.operator("texture_variants.revert", icon="LOOP_BACK")
        row.operator("texture_variants.bake", icon="FILE_TICK")


class _VariantsPanel:
    bl_label = "Variants"
    bl_region_type = "UI"
    bl_category = "Variants"

    def draw(self, context):
        draw_variants_panel(self.layout, context)


class TEXTURE_VARIANTS_PT_shader_editor(_VariantsPanel, bpy.types.Panel):
    bl_space_type = "NODE_EDITOR"
    bl_idname = "TEXTURE_VARIANTS_PT_shader_editor"

    @classmethod
    def poll(cls, context):
        return getattr(context.space_data, "tree_type", "") == "ShaderNodeTree"


class TEXTURE_VARIANTS_PT_viewport(_VariantsPanel, bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_idname = "TEXTURE_VARIANTS_PT_viewport"


CLASSES = (TEXTURE_VARIANTS_UL_results, TEXTURE_VARIANTS_PT_shader_editor, TEXTURE_VARIANTS_PT_viewport)
