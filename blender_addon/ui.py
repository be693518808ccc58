"""The "Variants" panel, in the sidebar (N) of the Shader Editor and of the 3D Viewport."""

import bpy

from . import material_target, session
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

    # What the add-on will work on, or why it cannot.
    box = layout.box()
    try:
        material, node, image = material_target.resolve(context)
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
    if context.active_object and context.active_object.active_material \
            and context.active_object.active_material.node_tree:
        box.prop_search(settings, "image_node", context.active_object.active_material.node_tree, "nodes",
                        text="Node", icon="NODE")

    # Settings.
    header, body = layout.panel("texture_variants_settings", default_closed=False)
    header.label(text="Settings")
    if body:
        col = body.column(align=True)
        col.prop(settings, "engine")
        col.prop(settings, "variants")
        row = col.row(align=True)
        row.prop(settings, "seed")
        row.prop(settings, "randomize_seed", text="", icon="FILE_REFRESH")
        col.prop(settings, "steps")
        col.prop(settings, "size")
        col.prop(settings, "tile")
        col.prop(settings, "appearance")
        col.prop(settings, "style_only")
        row = col.row(align=True)
        row.active = settings.style_only  # the content text only matters with Style Only
        row.prop(settings, "suppress_content")
        col.separator()
        row = col.row(align=True)
        row.label(text="Structure")
        row.prop(settings, "balance", text="", slider=True)
        row.label(text="Appearance")

    # Generate, or the running job's progress.
    current = session.shared()
    job = current.job
    if current.busy:
        row = layout.row(align=True)
        row.progress(factor=job.fraction, type="BAR", text=job.status_text())
        row.operator("texture_variants.cancel", text="", icon="CANCEL")
        preview = bpy.data.images.get(PREVIEW_IMAGE)
        if preview is not None and job.preview and preview.preview:
            layout.template_icon(icon_value=preview.preview.icon_id, scale=6.0)
    else:
        layout.operator("texture_variants.generate", icon="SHADERFX")
        if job is not None and job.finished and job.state != "done":
            layout.label(text=job.status_text(), icon="ERROR" if job.state == "failed" else "INFO")

    # Results.
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
