"""Restyle in Blender on the tiny test models: variants, then a restyle of the applied variant
(whole texture), a painted mask in edit-inside mode, Segment Anything points placed by script,
the errors, and Apply / Bake / Revert on a restyled result. See harness.py for how it is run."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402


def _results(settings):
    return [{"image": r.image.name, "engine": r.engine, "path": r.path, "size": list(r.image.size)}
            for r in settings.results]


def _panel(ui, state: str) -> list:
    layout = h.CheckingLayout()
    ui.draw_variants_panel(layout, bpy.context)
    return [list(call) for call in layout.calls] + [["greyed", state, [list(c) for c in layout.greyed]]]


def scenario(rec):
    zip_path, workdir, texture = h.args()
    h.install(zip_path)
    h.clean_scene()
    image = bpy.data.images.load(texture)
    _obj, material, _node = h.plane_with_image(image)
    rough = material.node_tree.nodes.new("ShaderNodeTexImage")  # a PBR set: the restyle must carry its map
    rough.name, rough.image = "Roughness", bpy.data.images.load(texture, check_existing=False)
    rough.image.colorspace_settings.name = "Non-Color"
    material.node_tree.links.new(rough.outputs["Color"], material.node_tree.nodes["Principled BSDF"].inputs["Roughness"])
    settings = bpy.context.scene.texture_variants
    ui = h.addon_module("ui.panel")
    h.set_settings(engine="diffusion", variants=2, steps=2, size=64, seed=7, randomize_seed=False)
    rec["generate"] = h.call(bpy.ops.texture_variants.generate)
    rec["apply_variant"] = h.call(bpy.ops.texture_variants.apply_variant, index=1)
    rec["restyle_input"] = h.base_color_image(material)

    rec["no_prompt"] = h.call(bpy.ops.texture_variants.restyle)
    h.set_settings(restyle_prompt="mossy stones", restyle_strength=0.5, mask_source="none", variants=1)
    rec["restyle_whole"] = h.call(bpy.ops.texture_variants.restyle)
    rec["results_after_whole"] = _results(settings)
    rec["restyle_whole_maps"] = {m.name: m.image.name for m in settings.results[-1].maps}
    rec["picked_after_whole"] = settings.results_index

    rec["new_mask"] = h.call(bpy.ops.texture_variants.new_mask)
    mask = settings.mask_image
    width, height = mask.size
    rec["mask"] = {"name": mask.name, "size": [width, height], "source": settings.mask_source}
    pixels = [0.0, 0.0, 0.0, 1.0] * (width * height)
    for y in range(height // 2, height):  # "paint" the top half white (Blender's rows go bottom-up)
        for x in range(width):
            pixels[(y * width + x) * 4: (y * width + x) * 4 + 3] = [1.0, 1.0, 1.0]
    mask.pixels.foreach_set(pixels)
    h.set_settings(mask_mode="edit-inside", restyle_start="noise")
    rec["panel_image_mask"] = _panel(ui, "image")
    rec["restyle_masked"] = h.call(bpy.ops.texture_variants.restyle)
    rec["results_after_masked"] = _results(settings)

    rec["point_without_editor"] = h.call(bpy.ops.texture_variants.add_mask_point)
    rec["add_point"] = h.call(bpy.ops.texture_variants.add_mask_point, location=(0.25, 0.75))
    rec["add_negative_point"] = h.call(bpy.ops.texture_variants.add_mask_point, location=(0.8, 0.2), negative=True)
    rec["points"] = [[p.u, p.v, p.negative] for p in settings.mask_points]
    rec["panel_points"] = _panel(ui, "points")
    h.set_settings(mask_mode="keep-structure")
    rec["restyle_points"] = h.call(bpy.ops.texture_variants.restyle)
    rec["results_after_points"] = _results(settings)
    rec["clear_points"] = h.call(bpy.ops.texture_variants.clear_mask_points)
    rec["points_after_clear"] = len(settings.mask_points)
    h.set_settings(mask_source="points")
    rec["no_points"] = h.call(bpy.ops.texture_variants.restyle)

    rec["revert_variant"] = h.call(bpy.ops.texture_variants.revert)
    last = len(settings.results) - 1
    rec["apply_restyled"] = h.call(bpy.ops.texture_variants.apply_variant, index=last)
    rec["base_color_after_apply"] = h.base_color_image(material)
    rec["roughness_after_apply"] = material.node_tree.nodes["Roughness"].image.name
    rec["restyled_maps"] = {m.name: m.image.name for m in settings.results[last].maps}
    project = os.path.join(workdir, "project")
    os.makedirs(project)
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(project, "scene.blend"))
    rec["bake"] = h.call(bpy.ops.texture_variants.bake)
    rec["textures_folder"] = sorted(os.listdir(os.path.join(project, "textures")))
    rec["revert"] = h.call(bpy.ops.texture_variants.revert)
    rec["base_color_after_revert"] = h.base_color_image(bpy.data.materials[material.name])
    rec["operators"] = sorted(dir(bpy.ops.texture_variants))


h.Recorder().run(scenario)
