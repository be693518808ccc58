"""The live tiling preview in Blender: on, the textures repeated N times (every Image Texture node
fed by a Mapping of scale N); saved and reopened still on; off, the node tree structurally as before;
the panel's toggle. See harness.py for how it is run."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402

OPS = bpy.ops.texture_variants


def feeds(material) -> dict:
    """What feeds each Image Texture node's Vector: (node type, its Scale input) or None."""
    out = {}
    for node in material.node_tree.nodes:
        if node.type == "TEX_IMAGE":
            socket = node.inputs["Vector"]
            if socket.is_linked:
                source = socket.links[0].from_node
                scale = list(source.inputs["Scale"].default_value) if source.type == "MAPPING" else None
                out[node.name] = [source.type, scale]
            else:
                out[node.name] = None
    return out


def panel(ui):
    layout = h.CheckingLayout()
    ui.draw_variants_panel(layout, bpy.context)
    return [list(call) for call in layout.calls]


def scenario(rec):
    zip_path, workdir, texture = h.args()
    h.install(zip_path)
    h.clean_scene()
    _obj, material, base = h.plane_with_image(bpy.data.images.load(texture), "Floor")
    tree = material.node_tree
    coords, mapping = tree.nodes.new("ShaderNodeTexCoord"), tree.nodes.new("ShaderNodeMapping")
    mapping.inputs["Scale"].default_value = (2.0, 2.0, 1.0)
    tree.links.new(coords.outputs["Object"], mapping.inputs["Vector"])
    tree.links.new(mapping.outputs["Vector"], base.inputs["Vector"])
    rough = tree.nodes.new("ShaderNodeTexImage")  # its Vector unlinked: the default UV
    rough.name, rough.image = "Roughness", bpy.data.images.load(texture)
    tree.links.new(rough.outputs["Color"], tree.nodes["Principled BSDF"].inputs["Roughness"])
    ui = h.addon_module("ui.panel")
    before = h.tree_structure(material)
    rec["feeds_before"] = feeds(material)
    rec["panel_off"] = panel(ui)
    rec["on"] = h.call(OPS.tiling_preview, repeat=4)
    rec["feeds_on"] = feeds(material)
    rec["panel_on"] = panel(ui)
    path = os.path.join(workdir, "floor.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)
    material = bpy.data.materials["Floor Material"]
    rec["feeds_reopened"] = feeds(material)
    rec["off"] = h.call(OPS.tiling_preview)
    after = h.tree_structure(material)
    rec["restored"] = after == before
    rec["difference"] = {"nodes": sorted(set(before["nodes"]) ^ set(after["nodes"])),
                         "links": [link for link in before["links"] + after["links"]
                                   if (link in before["links"]) != (link in after["links"])]}
    rec["record_left"] = "texture_variants_tiling_preview" in material


h.Recorder().run(scenario)
