"""The panel's Tile Set section (docs/guide/tile-sets.md): make a Wang tile set of the texture, show
it on the material with its scale and layout seed, bake a layout."""

from ..material import tile_set


def draw_tile_set(layout, view) -> None:
    if view.material is None or view.node is None or view.problem is not None:
        return
    header, body = layout.panel("texture_variants_tile_set", default_closed=True)
    header.label(text="Tile Set (No Repetition)")
    if not body:
        return
    state, col = view.material.texture_variants.tile_set, body.column(align=True)
    spec = tile_set.spec_of(view.material)
    row = col.row(align=True)
    row.prop(state, "colours", text="")
    row.prop(state, "tile_size")
    if not view.session.busy:
        col.operator("texture_variants.make_tile_set", text="Remake Tile Set" if spec else "Make Tile Set",
                     icon="MESH_GRID")
    if not spec:
        return
    col.label(text=f"{tile_set.summary(spec)} · made {state.created}", icon="CHECKMARK")
    if view.linked:
        return
    on = tile_set.is_on(view.material)
    col.separator()
    group = tile_set.group_node(view.material)
    if group is not None:  # the node's own inputs: what the viewport shows changes as they are dragged
        row = col.row(align=True)
        row.prop(group.inputs["Scale"], "default_value", text="Cells per UV")
        row.prop(group.inputs["Seed"], "default_value", text="Layout Seed")
    else:
        row = col.row(align=True)
        row.prop(state, "scale")
        row.prop(state, "seed")
    col.operator("texture_variants.use_tile_set", text="Stop Tile Set" if on else "Use Tile Set",
                 icon="VIEW_ORTHO", depress=on)
    col.separator()
    row = col.row(align=True)
    row.prop(state, "cells_x")
    row.prop(state, "cells_y")
    row.operator("texture_variants.bake_tile_layout", icon="RENDER_STILL")
