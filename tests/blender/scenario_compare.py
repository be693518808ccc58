"""A/B compare in Blender: patch variants of a material with a roughness map; compare shows the
variant (base colour and map) through temporary nodes, the original, the variant again (another
pick), stops with the tree exactly as before; Apply while comparing leaves compare first; save and
reopen keeps compare. See harness.py for how it is run."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402

OPS = bpy.ops.texture_variants


def shown(material) -> dict:
    """The image that reaches each Principled BSDF input that is linked from an Image Texture node."""
    bsdf = material.node_tree.nodes["Principled BSDF"]
    return {name: bsdf.inputs[name].links[0].from_node.image.name for name in ("Base Color", "Roughness")}


def scenario(rec):
    zip_path, workdir, texture = h.args()
    h.install(zip_path)
    h.clean_scene()
    _obj, material, _base = h.plane_with_image(bpy.data.images.load(texture), "Wall")
    tree = material.node_tree
    rough = tree.nodes.new("ShaderNodeTexImage")
    rough.name, rough.image = "Roughness", bpy.data.images.load(texture)
    rough.image.colorspace_settings.name = "Non-Color"
    tree.links.new(rough.outputs["Color"], tree.nodes["Principled BSDF"].inputs["Roughness"])
    h.set_settings(engine="patch", variants=2, size=64, seed=3, randomize_seed=False)
    rec["generate"] = h.call(OPS.generate)
    current = bpy.context.scene.texture_variants.current
    rec["variants"] = [{"image": v.image.name, "maps": {m.name: m.image.name for m in v.maps}}
                       for v in current.variants]
    rec["cards"] = [json.loads(v.card) for v in current.variants]
    layout = h.CheckingLayout()
    h.addon_module("ui.panel").draw_variants_panel(layout, bpy.context)
    rec["panel_labels"] = [call[1] for call in layout.calls if call[0] == "label"]
    rec["panel_operators"] = [call[1] for call in layout.calls if call[0] == "operator"]
    order = []
    for by in ("novelty", "look", "seam"):
        rec[f"sort_{by}"] = h.call(OPS.sort_results, by=by)
        order.append([v.image.name for v in current.variants])
    rec["sort_orders"] = order
    rec["sorted_cards"] = [json.loads(v.card) for v in current.variants]
    h.call(OPS.sort_results, by="novelty")
    if [v.image.name for v in current.variants] != [v["image"] for v in rec["variants"]]:
        h.call(OPS.sort_results, by="look")  # back to the generated order for what follows, if it differs
    rec["variants"] = [{"image": v.image.name, "maps": {m.name: m.image.name for m in v.maps}}
                       for v in current.variants]
    current.index = 0
    before = h.tree_structure(material)
    rec["shown_before"] = shown(material)
    rec["stop_unstarted"] = h.call(OPS.compare, show="STOP")
    rec["variant"] = h.call(OPS.compare, show="VARIANT")
    rec["shown_variant"] = shown(material)
    rec["node_images_while_comparing"] = {n: tree.nodes[n].image.name for n in ("Texture", "Roughness")}
    rec["original"] = h.call(OPS.compare, show="ORIGINAL")
    rec["shown_original"] = shown(material)
    current.index = 1
    rec["variant_2"] = h.call(OPS.compare, show="VARIANT")
    rec["shown_variant_2"] = shown(material)
    path = os.path.join(workdir, "wall.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)
    material = bpy.data.materials["Wall Material"]
    rec["shown_reopened"] = shown(material)
    rec["stop"] = h.call(OPS.compare, show="STOP")
    rec["restored"] = h.tree_structure(material) == before
    rec["shown_stopped"] = shown(material)
    rec["variant_again"] = h.call(OPS.compare, show="VARIANT")
    rec["apply"] = h.call(OPS.apply_variant)
    rec["compare_after_apply"] = "texture_variants_compare" in material
    rec["shown_applied"] = shown(material)
    rec["nodes_after_apply"] = sorted(n.name for n in material.node_tree.nodes)
    rec["invariant"] = h.recorded_matches_tree()


h.Recorder().run(scenario)
