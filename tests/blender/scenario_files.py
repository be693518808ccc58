"""Depth, colour and where the files live: EXR and 16-bit PNG sources give variants at their depth,
tagged with their colour space, an EXR's brightness kept; variants next to the saved .blend or packed
in an unsaved one; saving with a file in a job folder warns; clean-up deletes only finished job
folders past the limit. Patch engine. See harness.py for how it is run."""

import array
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402

OPS = bpy.ops.texture_variants


def write_source(texture, path, kind):
    """The gravel texture as an HDR EXR (linear, values up to 3) or a 16-bit sRGB PNG."""
    gravel = bpy.data.images.load(texture, check_existing=False)
    pixels = h.image_pixels(gravel)
    w, hgt = gravel.size
    image = bpy.data.images.new("scratch", w, hgt, alpha=True, float_buffer=True)
    if kind == "exr":  # bright gravel: linear values times 3, some well above 1
        pixels = array.array("f", (v * 3.0 if i % 4 != 3 else 1.0 for i, v in enumerate(pixels)))
    image.pixels.foreach_set(pixels)
    scene = bpy.data.scenes.new("writer")
    scene.view_settings.view_transform = "Standard"
    settings = scene.render.image_settings
    settings.file_format, settings.color_depth = ("OPEN_EXR", "32") if kind == "exr" else ("PNG", "16")
    settings.color_mode = "RGB"
    image.save_render(path, scene=scene)
    bpy.data.scenes.remove(scene)
    bpy.data.images.remove(image)
    return path


def mean_rgb(image):
    px = h.image_pixels(image)
    values = [v for i, v in enumerate(px) if i % 4 != 3]
    return sum(values) / len(values), max(values)


def png_bit_depth(path):
    with open(path, "rb") as f:
        return f.read(25)[24]


def depth_case(rec, case, path):
    source = bpy.data.images.load(path)
    _, material, _ = h.plane_with_image(source, case)
    outcome = h.call(OPS.generate)
    variant = bpy.context.scene.texture_variants.results[0].image
    file = bpy.path.abspath(variant.filepath)
    outcome.update({"source": [source.colorspace_settings.name, source.is_float, *mean_rgb(source)],
                    "variant": [variant.colorspace_settings.name, variant.is_float, *mean_rgb(variant)],
                    "file": file, "format": variant.file_format,
                    "png_depth": png_bit_depth(file) if file.endswith(".png") else None,
                    "packed": variant.packed_file is not None,
                    "expectation": bpy.context.scene.texture_variants.current.expectation})
    rec[case] = outcome


def storage_cases(rec, workdir, texture):
    project = os.path.join(workdir, "project")
    os.makedirs(project)
    shutil.copy(texture, os.path.join(project, "gravel.png"))
    h.clean_scene()
    h.plane_with_image(bpy.data.images.load(os.path.join(project, "gravel.png")), "Stored")
    rec["unsaved_generate"] = h.call(OPS.generate)
    rec["unsaved_packed"] = [r.image.packed_file is not None for r in bpy.context.scene.texture_variants.results]
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(project, "scene.blend"))
    rec["saved_generate"] = h.call(OPS.generate)
    rec["saved_files"] = [[r.image.filepath, r.image.packed_file is None,
                           os.path.isfile(bpy.path.abspath(r.image.filepath))]
                          for r in bpy.context.scene.texture_variants.results]
    storage = h.addon_module("material.storage")
    rec["save_warnings_clean"] = list(storage.save_warnings)
    bpy.ops.wm.save_mainfile()
    rec["save_warnings_clean"] = list(storage.save_warnings)
    # A script loads a variant straight from a job folder: saving now warns.
    job_file = bpy.context.scene.texture_variants.results[0].path
    bpy.data.images.load(job_file, check_existing=False).use_fake_user = True
    bpy.ops.wm.save_mainfile()
    rec["save_warnings_job_file"] = list(storage.save_warnings)
    rec["project_files"] = sorted(os.path.relpath(os.path.join(d, f), project)
                                  for d, _, fs in os.walk(project) for f in fs)
    return job_file


def clean_up_cases(rec, job_file):
    jobs = os.path.join(bpy.utils.extension_path_user(h.MODULE), "jobs")
    old = time.time() - 30 * 86400
    made = {}
    for name, finished, age in (("old-finished", True, old), ("new-finished", True, None),
                                ("old-running", False, old)):
        folder = os.path.join(jobs, name)
        os.makedirs(folder)
        with open(os.path.join(folder, "variant.png"), "wb") as f:
            f.write(b"x" * 1000)
        if finished:
            open(os.path.join(folder, ".finished"), "w").close()
        if age:
            for entry in os.listdir(folder):
                os.utime(os.path.join(folder, entry), (age, age))
        made[name] = folder
    in_use = os.path.join(jobs, os.path.relpath(job_file, jobs).split(os.sep)[0])  # the fake-user image reads it
    mark = os.path.join(in_use, ".finished")
    os.utime(mark, (old, old))
    before = sorted(os.listdir(jobs))
    rec["clean_up"] = h.call(OPS.clean_up_jobs)
    after = sorted(os.listdir(jobs))
    rec["clean_up_removed"] = sorted(set(before) - set(after))
    rec["clean_up_kept"] = {name: os.path.isdir(path) for name, path in made.items()} | {
        "in_use": os.path.isdir(in_use)}


def scenario(rec):
    zip_path, workdir, texture = h.args()
    h.install(zip_path)
    original_hash = h.sha256(texture)
    h.clean_scene()
    h.set_settings(engine="patch", variants=1, size_mode="match", seed=11, randomize_seed=False)
    exr = write_source(texture, os.path.join(workdir, "bright.exr"), "exr")
    png16 = write_source(texture, os.path.join(workdir, "deep.png"), "png16")
    sources = {p: h.sha256(p) for p in (exr, png16)}
    depth_case(rec, "exr", exr)
    depth_case(rec, "png16", png16)
    job_file = storage_cases(rec, workdir, texture)
    clean_up_cases(rec, job_file)
    rec["originals_unchanged"] = h.sha256(texture) == original_hash and all(
        h.sha256(p) == d for p, d in sources.items())


h.Recorder().run(scenario)
