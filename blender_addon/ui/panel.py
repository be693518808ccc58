"""The "Variants" panel, in the sidebar (N) of the Shader Editor and of the 3D Viewport.

The panel is a list of sections (`SECTIONS`), each a function `(layout, view)` drawing one part from
a `PanelView` computed once per draw; a new feature adds its section to the list.
"""

import json
import textwrap
from dataclasses import dataclass

import bpy

from .. import panel_rules
from ..connection import session
from ..errors import UserError
from ..material import compare as material_compare
from ..material import maps as material_maps
from ..material import pictures, storage, texture_io, tiling_preview
from ..material import target as material_target
from ..pixels import sizing
from .batch import draw_batch
from .history import draw_history
from .size import draw_size, draw_upscale
from .tile_set import draw_tile_set


@dataclass
class PanelView:
    """What the sections draw from: the settings, the target (or why there is none), the backend session."""

    context: object
    settings: object
    session: object
    material: object = None
    node: object = None
    image: object = None
    problem: UserError | None = None

    @classmethod
    def of(cls, context) -> "PanelView":
        view = cls(context, context.scene.texture_variants, session.shared())
        try:
            view.material, view.node, view.image = material_target.resolve(context)
        except UserError as e:
            view.problem = e
            obj = context.active_object
            view.material = obj.active_material if obj is not None else None
        return view

    @property
    def linked(self) -> str:
        return material_target.not_editable_reason(self.material) if self.material is not None else ""


class TEXTURE_VARIANTS_UL_results(bpy.types.UIList):
    """The generated variants as thumbnails to pick from."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        icon_id = item.image.preview.icon_id if item.image and item.image.preview else 0
        marks = panel_rules.card_marks(json.loads(item.card or "{}"))  # tiles / new / same look
        if self.layout_type == "GRID":
            layout.label(text=marks, icon_value=icon_id)
        else:
            layout.label(text=f"{item.name}  ({item.engine})  {marks}", icon_value=icon_id)


def _depth_text(image) -> str:
    return {texture_io.BYTE: "8-bit", texture_io.DEEP: "16-bit",
            texture_io.LINEAR: "HDR, linear"}[texture_io.source_kind(image)]


def draw_target(layout, view) -> None:
    """What the add-on will work on, or why it cannot."""
    box = layout.box()
    if view.material is None or view.material.node_tree is None:
        box.label(text=view.problem.message, icon="ERROR")
        box.label(text=view.problem.hint[:90])
        return
    box.label(text=view.material.name, icon="MATERIAL")
    chosen = view.material.texture_variants.image_node
    label = chosen or (f"Auto: {view.node.name}" if view.node is not None else "Auto")
    box.operator_menu_enum("texture_variants.pick_node", "node", text=label, icon="NODE")
    if view.problem is not None:
        box.label(text=view.problem.message, icon="ERROR")
        box.label(text=view.problem.hint[:90])
    elif texture_io.missing_file(view.image):  # said before Generate, not after an export fails
        box.label(text=f"{view.image.name}: its file is missing", icon="ERROR")
        _wrapped(box, f"{texture_io.missing_file(view.image)}: {texture_io.MISSING_HINT}", "BLANK1")
    else:
        width, height = view.image.size
        box.label(text=f"{view.image.name}  {width}×{height} · {_depth_text(view.image)}", icon="IMAGE_DATA")
    if view.linked:
        box.label(text=view.linked, icon="LIBRARY_DATA_DIRECT")
        box.label(text="Make it local to apply here, or Apply to a Local Copy")
    applied = view.material.texture_variants.applied
    if len(applied):
        originals = ", ".join(r.original_image.name for r in applied if r.original_image is not None)
        box.label(text=f"Variant applied (original: {originals})", icon="INFO")


def _prop(col, settings, name: str, states: dict) -> None:
    if states.get(name, panel_rules.SHOWN) == panel_rules.HIDDEN:
        return
    row = col.row(align=True)
    row.active = states.get(name, panel_rules.SHOWN) == panel_rules.SHOWN
    row.prop(settings, name)


def _states(view) -> dict:
    s = view.settings
    engine = panel_rules.effective_engine(s.engine, view.session.hello)
    return panel_rules.setting_states(engine, s.appearance, s.style_only, sketch=s.sketch is not None,
                                      size_mode=s.size_mode, sampler=s.sampler)


def draw_settings(layout, view) -> None:
    """The everyday settings; those the chosen engine ignores are hidden, greyed out where another
    setting makes them do nothing (panel_rules)."""
    header, body = layout.panel("texture_variants_settings", default_closed=False)
    header.label(text="Settings")
    if not body:
        return
    col, settings, states = body.column(align=True), view.settings, _states(view)
    col.prop(settings, "engine")
    if settings.engine == "auto":
        col.label(text=panel_rules.auto_text(view.session.hello), icon="INFO")
    if panel_rules.effective_engine(settings.engine, view.session.hello) in ("patch", None):
        _wrapped(col, panel_rules.PATCH_HINT, "INFO")
    col.prop(settings, "variants")
    _prop(col, settings, "sampler", states)
    draw_size(col, view, states)
    _prop(col, settings, "prompt", states)
    if states["sketch"] != panel_rules.HIDDEN:
        col.separator()
        row = col.row(align=True)
        row.prop(settings, "sketch")
        row.operator("texture_variants.make_guide", text="", icon="IMAGE_REFERENCE")
        _prop(col, settings, "sketch_mode", states)
        _prop(col, settings, "sketch_strength", states)
    if states["balance"] != panel_rules.HIDDEN:
        col.separator()
        engine = panel_rules.effective_engine(settings.engine, view.session.hello)
        col.label(text="Structure ⟷ Appearance")
        row = col.row(align=True)
        row.active = states["balance"] == panel_rules.SHOWN
        row.prop(settings, "balance", text="Balance", slider=True)
        _wrapped(col, panel_rules.balance_words(settings.balance, engine), "INFO")


def draw_advanced(layout, view) -> None:
    """The settings an artist rarely changes, folded away."""
    header, body = layout.panel("texture_variants_advanced", default_closed=True)
    header.label(text="Advanced")
    if not body:
        return
    col, settings, states = body.column(align=True), view.settings, _states(view)
    row = col.row(align=True)
    row.prop(settings, "seed")
    row.prop(settings, "randomize_seed", toggle=True, icon="FILE_REFRESH")
    _prop(col, settings, "steps", states)
    col.prop(settings, "tile")
    for name in ("appearance", "style_only", "suppress_content", "negative_prompt"):
        _prop(col, settings, name, states)


def draw_job(layout, view) -> None:
    """Generate, or the running job's progress with Cancel and the live preview."""
    current = view.session
    job = current.job
    if current.busy:
        row = layout.row(align=True)
        row.progress(factor=job.fraction, type="BAR", text=job.status_text())
        row.operator("texture_variants.cancel", text="", icon="CANCEL")
        preview = bpy.data.images.get(pictures.PREVIEW_IMAGE)
        if preview is not None and job.preview and preview.preview:
            layout.template_icon(icon_value=preview.preview.icon_id, scale=6.0)
        return
    row = layout.row(align=True)
    row.operator("texture_variants.generate", icon="SHADERFX")
    row.operator("texture_variants.make_tileable", icon="MOD_ARRAY")
    if job is not None and job.finished and job.state != "done":
        layout.label(text=job.status_text(), icon="ERROR" if job.state == "failed" else "INFO")


def draw_restyle(layout, view) -> None:
    """Restyle, folded away: prompt, strength, the mask (painted, or Segment Anything points), its
    mode, and the Restyle button."""
    header, body = layout.panel("texture_variants_restyle", default_closed=True)
    header.label(text="Restyle")
    if not body:
        return
    col, settings = body.column(align=True), view.settings
    states = panel_rules.restyle_states(view.session.hello, settings.mask_source)
    col.prop(settings, "restyle_prompt")
    col.prop(settings, "restyle_strength", slider=True)
    col.prop(settings, "restyle_start")
    col.prop(settings, "mask_source")
    if states["mask_image"] == panel_rules.SHOWN:
        row = col.row(align=True)
        row.prop(settings, "mask_image", text="")
        row.operator("texture_variants.new_mask", text="New Mask", icon="ADD")
    if states["mask_points"] == panel_rules.SHOWN:
        row = col.row(align=True)
        row.operator("texture_variants.add_mask_point", text="Add Point", icon="ADD").negative = False
        row.operator("texture_variants.add_mask_point", text="Add Negative Point", icon="REMOVE").negative = True
        row.operator("texture_variants.clear_mask_points", text="", icon="X")
        selecting = sum(not p.negative for p in settings.mask_points)
        col.label(text=f"{selecting} selecting, {len(settings.mask_points) - selecting} excluding "
                  "(2D cursor: Shift + right-click in the Image Editor)")
    _prop(col, settings, "mask_mode", states)
    note = panel_rules.restyle_note(view.session.hello)
    if note:
        col.label(text=note, icon="INFO")
    if not view.session.busy:
        row = col.row()
        row.active = states["restyle"] == panel_rules.SHOWN
        row.operator("texture_variants.restyle", icon="BRUSH_DATA")


def _binding_problem(view, current) -> str:
    if current.material is None or view.material is None:
        return ""
    if current.material != view.material or (view.node is not None and current.node_name != view.node.name):
        return f"Made for '{current.material.name}' (node '{current.node_name}'), not for this material"
    return ""


def _size_notes(view, current, picked) -> list[str]:
    notes = [n for n in current.notes.split("; ") if n]
    if current.source is not None and picked is not None:
        notes += sizing.result_notes(tuple(current.source.size), tuple(picked.image.size))
    return list(dict.fromkeys(notes))


def _apply_buttons(layout, view, binding: str) -> None:
    row = layout.row(align=True)
    if binding:
        row.operator("texture_variants.apply_variant", text="Apply to This Material",
                     icon="ERROR").to_this_material = True
    elif view.linked:
        row.operator("texture_variants.apply_variant", text="Apply to a Local Copy", icon="DUPLICATE").local_copy = True
    else:
        row.operator("texture_variants.apply_variant", icon="CHECKMARK")
        row.operator("texture_variants.apply_variant", text="This Object Only", icon="OBJECT_DATA").object_only = True
    row.operator("texture_variants.tile_preview", text="Tile 3×3", icon="MESH_GRID")
    if not binding and not view.linked:  # A/B without Apply: the variant or the original on the object
        showing = material_compare.showing(view.material)
        row = layout.row(align=True)
        row.operator("texture_variants.compare", text="A: Variant", icon="IMAGE_DATA",
                     depress=showing == material_compare.VARIANT).show = "VARIANT"
        row.operator("texture_variants.compare", text="B: Original", icon="IMAGE_REFERENCE",
                     depress=showing == material_compare.ORIGINAL).show = "ORIGINAL"
        if showing:
            row.operator("texture_variants.compare", text="", icon="X").show = "STOP"


def _tiling_preview_button(layout, view) -> None:
    """The live tiling preview's toggle: pressed while the material's textures are repeated."""
    if view.material is None or view.linked:
        return
    on = tiling_preview.is_on(view.material)
    text = f"Tiling Preview {tiling_preview.repeat_of(view.material)}×" if on else "Tiling Preview"
    layout.operator("texture_variants.tiling_preview", text=text, icon="VIEW_ORTHO", depress=on)


def _wrapped(layout, text: str, icon: str, width: int = 64) -> None:
    """A long message as several labels (a label is one line), the icon on the first."""
    for i, line in enumerate(textwrap.wrap(text, width)):
        layout.label(text=line, icon=icon if i == 0 else "BLANK1")


def draw_results(layout, view) -> None:
    """The current set's variants to pick from, what they were made for, Apply and Tile; Revert and
    Bake once one is applied."""
    current = view.settings.current
    if len(current.variants):
        binding = _binding_problem(view, current)
        if binding:
            layout.label(text=binding, icon="ERROR")
        layout.template_list("TEXTURE_VARIANTS_UL_results", "", current, "variants", current, "index",
                             type="GRID", columns=4, rows=1)
        picked = current.picked()
        if picked is not None:
            shown = picked.overlay or picked.image  # Make Tileable: its re-made band tinted orange
            if shown.preview:
                layout.template_icon(icon_value=shown.preview.icon_id, scale=6.0)
            if picked.overlay:
                layout.label(text="Orange: the band Make Tileable re-made", icon="INFO")
            maps = "".join(f" + {m.name}" for m in picked.maps)
            layout.label(text=f"{picked.image.name}{maps} · seed {picked.seed} · {picked.engine}")
            details = panel_rules.card_details(json.loads(picked.card or "{}"))
            if details:
                _wrapped(layout, details, "CHECKMARK")
        if len(current.variants) > 1:
            row = layout.row(align=True)
            row.label(text="Sort:")
            for key, text in (("novelty", "Newest"), ("look", "Closest Look"), ("seam", "Best Seams")):
                row.operator("texture_variants.sort_results", text=text).by = key
        fast_warning = panel_rules.fast_look_warning([json.loads(v.card or "{}") for v in current.variants])
        if fast_warning:
            _wrapped(layout, fast_warning, "ERROR")
        for note in _size_notes(view, current, picked):
            layout.label(text=note, icon="ERROR")
        if current.expectation:
            _wrapped(layout, current.expectation, "INFO")
        _apply_buttons(layout, view, binding)
    applied = view.material is not None and len(view.material.texture_variants.applied) and not view.linked
    draw_upscale(layout, view, current.picked() if len(current.variants) else None, bool(applied))
    if applied:
        row = layout.row(align=True)
        row.operator("texture_variants.revert", icon="LOOP_BACK")
        row.operator("texture_variants.bake", icon="FILE_TICK")
    _tiling_preview_button(layout, view)
    for line in storage.save_warnings:
        layout.label(text=line, icon="ERROR")


def draw_maps(layout, view) -> None:
    """The material's maps: a checkbox each (ticked ones travel with Generate), the shared and the
    missing ones, and Add Missing Maps (docs/guide/materials.md, "Whole materials")."""
    if view.material is None or view.node is None or view.problem is not None:
        return
    maps = material_maps.find_maps(view.material, view.node)
    if maps.bsdf is None:
        return
    header, body = layout.panel("texture_variants_maps", default_closed=False)
    header.label(text=f"Maps ({len(maps.found)} found)")
    if not body:
        return
    state, col = view.material.texture_variants, body.column(align=True)
    for name in material_maps.MAPS:
        if name in maps.found:
            icon = "CHECKBOX_HLT" if name in state.send_maps else "CHECKBOX_DEHLT"
            col.prop_enum(state, "send_maps", name, text=f"{name.title()}: {maps.found[name].node.image.name}",
                          icon=icon)
        elif name in maps.shared:
            col.label(text=f"{name.title()}: the {maps.shared[name]}'s node (varies with it)", icon="LINKED")
        else:
            col.label(text=f"{name.title()}: missing", icon="DOT")
    if set(maps.missing) & set(material_maps.DERIVABLE) and not view.linked and not view.session.busy:
        row = body.row(align=True)
        row.operator("texture_variants.add_missing_maps", icon="ADD").height = "bump"
        row.operator("texture_variants.add_missing_maps", text="As Displacement", icon="MOD_DISPLACE").height = \
            "displacement"


SECTIONS = [draw_target, draw_maps, draw_settings, draw_advanced, draw_job, draw_batch, draw_restyle, draw_tile_set,
            draw_results, draw_history]


def draw_variants_panel(layout, context) -> None:
    view = PanelView.of(context)
    for section in SECTIONS:
        section(layout, view)


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
