"""Make Tileable in Blender: a material with base colour, roughness and a 16-bit normal map (through
a Normal Map) -> Make Tileable through the real backend (patch repair) -> Apply -> Bake -> Revert,
and Tile None refused. See harness.py for how it is run; the set's files are made by the pytest side."""

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402

OPS = bpy.ops.texture_variants
NODES = ("Texture", "Roughness", "Normal")


def shown(material) -> dict:
    nodes = material.node_tree.nodes
    return {name: [nodes[name].image.name, bpy.path.abspath(nodes[name].image.filepath)] for name in NODES}


def step(rec, case, op, **kwargs):
    before = h.snapshot()
    outcome = h.call(op, **kwargs)
    outcome["unchanged"] = h.snapshot() == before
    outcome["invariant"] = h.recorded_matches_tree()
    rec[case] = outcome


def scenario(rec):
    zip_path, workdir, folder = h.args()
    h.install(zip_path)
    project = os.path.join(workdir, "project")
    shutil.copytree(folder, os.path.join(project, "maps"))
    h.clean_scene()
    material = h.material_with_maps(os.path.join(project, "maps"))
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(project, "wall.blend"))
    rec["shown_before"] = shown(material)
    h.set_settings(engine="patch", tile="none")
    step(rec, "no_axes", OPS.make_tileable)
    h.set_settings(tile="both")
    step(rec, "make_tileable", OPS.make_tileable)
    current = bpy.context.scene.texture_variants.current
    rec["results"] = [{"image": v.image.name, "engine": v.engine, "size": list(v.image.size), "path": v.path,
                       "maps": {m.name: bpy.path.abspath(m.image.filepath) for m in v.maps}}
                      for v in current.variants]
    rec["expectation"] = current.expectation
    variant = current.variants[0]
    if variant.overlay is not None:  # the re-made band tinted over the result, for the panel's thumbnail
        over, plain = h.image_pixels(variant.overlay), h.image_pixels(variant.image)
        count = len(over) // 4
        tinted = sum(1 for i in range(count) if any(abs(over[4 * i + c] - plain[4 * i + c]) > 1e-3 for c in range(3)))
        rec["overlay"] = {"packed": variant.overlay.packed_file is not None, "size": list(variant.overlay.size),
                          "tinted": tinted / count}
    layout = h.CheckingLayout()
    h.addon_module("ui.panel").draw_variants_panel(layout, bpy.context)
    rec["panel_labels"] = [text for kind, text in layout.calls if kind == "label"]
    rec["history"] = [s.engine for s in material.texture_variants.history]
    step(rec, "apply", OPS.apply_variant)
    rec["shown_applied"] = shown(material)
    step(rec, "bake", OPS.bake)
    rec["shown_baked"] = shown(material)
    step(rec, "revert", OPS.revert)
    rec["shown_reverted"] = shown(material)


h.Recorder().run(scenario)
