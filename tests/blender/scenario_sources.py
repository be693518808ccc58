"""A packed image and a generated (never saved) image work as sources like a file on disk, with the
weight-free patch engine. See harness.py for how it is run."""

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402


def job_folder(variant_path: str) -> str:
    """The job folder a variant was written into: the folder right below the add-on's jobs folder."""
    jobs = os.path.join(bpy.utils.extension_path_user(h.MODULE), "jobs")
    folder = os.path.dirname(variant_path)
    while os.path.dirname(folder) not in (jobs, folder):  # (stops at the root if it is not in there)
        folder = os.path.dirname(folder)
    return folder


def generate_and_apply(rec, case, image):
    _, material, node = h.plane_with_image(image, case)
    pixels_before = list(h.image_pixels(image)[:64])
    outcome = h.call(bpy.ops.texture_variants.generate)
    settings = bpy.context.scene.texture_variants
    outcome["results"] = [{"size": list(r.image.size), "engine": r.engine, "path": r.path,
                           "colorspace": r.image.colorspace_settings.name} for r in settings.results]
    variants = {os.path.basename(r.path) for r in settings.results}  # named after the reference's stem
    outcome["reference_files"] = sorted(
        entry.name for entry in os.scandir(job_folder(settings.results[0].path))
        if entry.is_file() and entry.name.startswith("reference") and entry.name not in variants
    ) if len(settings.results) else []
    outcome["apply"] = h.call(bpy.ops.texture_variants.apply_variant)
    outcome["base_color"] = h.base_color_image(material)
    outcome["variant_names"] = [r.image.name for r in settings.results]
    outcome["source_pixels_unchanged"] = list(h.image_pixels(bpy.data.images[image.name])[:64]) == pixels_before
    outcome["source_state"] = [image.source, image.packed_file is not None, image.filepath]
    rec[case] = outcome


def scenario(rec):
    zip_path, workdir, texture = h.args()
    h.install(zip_path)
    h.clean_scene()
    h.set_settings(engine="patch", variants=2, size_mode="fixed", size=64, seed=3, randomize_seed=False)

    # Packed: the file is deleted after packing, so only the packed bytes can be the source.
    temp = shutil.copy(texture, os.path.join(workdir, "packed_source.png"))
    packed = bpy.data.images.load(temp)
    packed.pack()
    packed.colorspace_settings.name = "Non-Color"  # e.g. a roughness map: variants keep this
    os.remove(temp)
    generate_and_apply(rec, "packed", packed)

    # Generated and painted in Blender, never saved to a file.
    generated = bpy.data.images.new("Painted", 96, 96)
    generated.generated_type = "COLOR_GRID"
    pixels = h.image_pixels(generated)
    pixels[0:4] = type(pixels)("f", [1.0, 0.0, 0.0, 1.0])
    generated.pixels.foreach_set(pixels)
    generate_and_apply(rec, "generated", generated)
    rec["generated_still_generated"] = [generated.source, generated.is_dirty]

    # Randomise: a new seed per run, stored in the settings so the result can be made again.
    settings = h.set_settings(randomize_seed=True, seed=3, variants=1)
    seeds = []
    for _ in range(2):
        h.call(bpy.ops.texture_variants.generate)
        seeds.append([settings.seed, settings.results[0].seed])
    rec["randomised_seeds"] = seeds
    h.set_settings(randomize_seed=False)
    h.call(bpy.ops.texture_variants.apply_variant)

    # A variant painted in Blender after Apply: Bake writes the painted pixels, not the backend's file.
    os.makedirs(os.path.join(workdir, "project"))
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(workdir, "project", "painted.blend"))
    material = bpy.context.active_object.active_material
    variant = material.node_tree.nodes["Texture"].image
    job_file = bpy.path.abspath(variant.filepath)
    job_file_hash = h.sha256(job_file)
    pixels = h.image_pixels(variant)
    pixels[0:4] = type(pixels)("f", [0.0, 1.0, 0.0, 1.0])  # bottom-left pixel in Blender's convention
    variant.pixels.foreach_set(pixels)
    rec["painted_dirty"] = variant.is_dirty
    rec["painted_bake"] = h.call(bpy.ops.texture_variants.bake)
    rec["painted_baked_file"] = bpy.path.abspath(material.node_tree.nodes["Texture"].image.filepath)
    rec["painted_job_file_unchanged"] = h.sha256(job_file) == job_file_hash
    rec["painted_project_files"] = sorted(os.listdir(os.path.join(workdir, "project", "textures")))


h.Recorder().run(scenario)
