"""Wang tile sets in Blender (docs/guide/tile-sets.md): a material with colour, roughness and a 16-bit
normal map -> Make Tile Set through the real backend (patch engine) -> Use Tile Set (the Wang Layout
group in front of every map's node; saved and reopened still on) -> Bake Layout (a result set of
tileable images) -> Stop Tile Set (the tree exactly as before). Refusals: tiles larger than the
texture, Apply while the set is shown. See harness.py for how it is run."""

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402

OPS = bpy.ops.texture_variants
NODES = ("Texture", "Roughness", "Normal")
CELLS, SEED, TILE = (4, 3), 7, 32


def step(rec, case, op, **kwargs):
    before = h.snapshot()
    outcome = h.call(op, **kwargs)
    outcome["unchanged"] = h.snapshot() == before
    rec[case] = outcome


def feeds(material) -> dict:
    """Each map node's image and what feeds its Vector input."""
    nodes = material.node_tree.nodes
    out = {}
    for name in NODES:
        socket = nodes[name].inputs["Vector"]
        source = socket.links[0].from_node if socket.is_linked else None
        out[name] = [nodes[name].image.name, source.bl_idname if source else None,
                     source.node_tree.name if source is not None and source.type == "GROUP" else None]
    return out


def panel(ui):
    layout = h.CheckingLayout()
    ui.draw_variants_panel(layout, bpy.context)
    return [list(call) for call in layout.calls]


def scenario(rec):
    zip_path, workdir, folder = h.args()
    h.install(zip_path)
    ui = h.addon_module("ui.panel")
    project = os.path.join(workdir, "project")
    shutil.copytree(folder, os.path.join(project, "maps"))
    h.clean_scene()
    material = h.material_with_maps(os.path.join(project, "maps"))
    blend = os.path.join(project, "wall.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    h.set_settings(engine="patch", randomize_seed=False, seed=3)
    state = material.texture_variants.tile_set
    state.tile_size = 1024
    step(rec, "too_large", OPS.make_tile_set)
    state.colours, state.tile_size = "2", TILE
    before = h.tree_structure(material)
    step(rec, "make", OPS.make_tile_set)
    state = material.texture_variants.tile_set
    rec["spec"] = h.addon_module("material.tile_set").spec_of(material)
    rec["atlases"] = {e.name: [e.image.name, list(e.image.size), bpy.path.abspath(e.image.filepath),
                               e.image.colorspace_settings.name] for e in state.atlases}
    rec["panel_made"] = panel(ui)
    rec["unchanged_by_make"] = h.tree_structure(material) == before
    state.scale, state.seed = 6.0, SEED
    step(rec, "use", OPS.use_tile_set)
    rec["feeds_on"] = feeds(material)
    group = h.addon_module("material.tile_set").group_node(material)
    rec["group_inputs"] = {s.name: s.default_value for s in group.inputs if s.name != "Vector"}
    rec["panel_on"] = panel(ui)
    step(rec, "apply_while_on", OPS.apply_variant)
    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.open_mainfile(filepath=blend)
    material = bpy.data.materials["Wall Material"]
    bpy.context.view_layer.objects.active = bpy.data.objects["Wall"]
    rec["feeds_reopened"] = feeds(material)
    state = material.texture_variants.tile_set
    state.cells_x, state.cells_y = CELLS
    step(rec, "bake", OPS.bake_tile_layout)
    current = bpy.context.scene.texture_variants.current
    rec["layout"] = [{"image": v.image.name, "engine": v.engine, "size": list(v.image.size),
                      "file": bpy.path.abspath(v.image.filepath),
                      "maps": {m.name: bpy.path.abspath(m.image.filepath) for m in v.maps}} for v in current.variants]
    rec["history"] = [s.label() for s in material.texture_variants.history]
    step(rec, "stop", OPS.use_tile_set)
    rec["restored"] = h.tree_structure(material) == before
    rec["difference"] = [before, h.tree_structure(material)] if not rec["restored"] else None
    rec["panel_off"] = panel(ui)
    step(rec, "apply_layout", OPS.apply_variant)
    rec["applied"] = {n: material.node_tree.nodes[n].image.name for n in NODES}


h.Recorder().run(scenario)
