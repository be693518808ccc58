"""The whole workflow on a texture file on disk, with the diffusion engine on the tiny test models:
install -> generate (background mode, real backend) -> apply -> revert -> bake -> tile preview ->
unregister. See harness.py for how it is run."""

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402


class _PrefsView:
    """The preferences object with a checking layout in place of the real one (draw() reads self.layout)."""

    def __init__(self, prefs, layout):
        self._prefs, self.layout = prefs, layout

    def __getattr__(self, name):
        return getattr(self._prefs, name)


def scenario(rec):
    zip_path, workdir, texture = h.args()
    h.install(zip_path)
    # Variants packed into the .blend: the project folder then holds only what Bake writes (the
    # default, a variants/ folder next to the .blend, has its own scenario: scenario_files).
    bpy.context.preferences.addons[h.MODULE].preferences.variant_storage = "pack"
    rec["blender_version"] = bpy.app.version_string
    rec["operators"] = sorted(dir(bpy.ops.texture_variants))
    rec["panels"] = sorted(n for n in dir(bpy.types) if n.startswith("TEXTURE_VARIANTS_PT_"))
    rec["panel_spaces"] = sorted(getattr(bpy.types, n).bl_space_type for n in rec["panels"])
    rec["operator_options"] = {
        n: sorted(getattr(bpy.types, f"TEXTURE_VARIANTS_OT_{n}").bl_options) for n in rec["operators"]}
    rec["check_backend"] = h.call(bpy.ops.texture_variants.check_backend)
    rec["backend_status"] = bpy.context.preferences.addons[h.MODULE].preferences.status
    prefs_cls = type(bpy.context.preferences.addons[h.MODULE].preferences)
    rec["preferences_idname"] = prefs_cls.bl_idname

    # A project folder with the texture file and a saved .blend.
    project = os.path.join(workdir, "project")
    os.makedirs(os.path.join(project, "maps"))
    source = shutil.copy(texture, os.path.join(project, "maps", "gravel.png"))
    original_hash = h.sha256(source)
    h.clean_scene()
    image = bpy.data.images.load(source)
    obj, material, node = h.plane_with_image(image)
    blend = os.path.join(project, "scene.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    material = bpy.data.materials[material.name]

    h.set_settings(engine="diffusion", variants=2, steps=2, size_mode="fixed", size=64, seed=7, randomize_seed=False,
                   balance=0.5, tile="both", appearance="kv")
    rec["generate"] = h.call(bpy.ops.texture_variants.generate)
    settings = bpy.context.scene.texture_variants
    rec["results"] = [{"name": r.name, "image": r.image.name, "size": list(r.image.size), "path": r.path,
                       "seed": r.seed, "engine": r.engine, "job_folder_inside_user_dir":
                       r.path.startswith(bpy.utils.extension_path_user(h.MODULE))} for r in settings.results]
    rec["seed_after"] = settings.seed
    jobs_dir = os.path.join(bpy.utils.extension_path_user(h.MODULE), "jobs")
    rec["job_folders"] = [os.path.join(jobs_dir, name) for name in sorted(os.listdir(jobs_dir))]
    rec["base_color_after_generate"] = h.base_color_image(material)

    ui, jobs = h.addon_module("ui.panel"), h.addon_module("connection.job")
    layout = h.CheckingLayout()
    ui.draw_variants_panel(layout, bpy.context)
    rec["panel_with_results"] = layout.calls
    rec["labels_with_results"] = layout.labels

    rec["apply"] = h.call(bpy.ops.texture_variants.apply_variant, index=1)
    layout = h.CheckingLayout()
    ui.draw_variants_panel(layout, bpy.context)
    rec["panel_with_applied_variant"] = layout.calls
    rec["labels_with_applied_variant"] = layout.labels
    session = h.addon_module("connection.session").shared()
    finished_job, session.job = session.job, jobs.JobTracker("drawn", state=jobs.RUNNING, step=3, total=12, eta=5.0)
    layout = h.CheckingLayout()
    ui.draw_variants_panel(layout, bpy.context)
    rec["panel_while_running"] = layout.calls
    session.job = finished_job
    prefs = bpy.context.preferences.addons[h.MODULE].preferences
    prefs_layout = h.CheckingLayout()
    prefs.__class__.draw(_PrefsView(prefs, prefs_layout), bpy.context)
    rec["preferences_panel"] = prefs_layout.calls
    rec["preferences_labels"] = prefs_layout.labels
    rec["base_color_after_apply"] = h.base_color_image(material)
    rec["original_kept"] = image.name in bpy.data.images and image.use_fake_user

    rec["revert"] = h.call(bpy.ops.texture_variants.revert)
    rec["base_color_after_revert"] = h.base_color_image(material)
    rec["original_fake_user_after_revert"] = bpy.data.images[image.name].use_fake_user

    h.call(bpy.ops.texture_variants.apply_variant, index=0)
    rec["bake"] = h.call(bpy.ops.texture_variants.bake)
    variant = material.node_tree.nodes["Texture"].image
    rec["baked_image"] = {"name": variant.name, "filepath": variant.filepath,
                          "abspath": bpy.path.abspath(variant.filepath), "packed": variant.packed_file is not None,
                          "size": list(variant.size)}
    first_bake = rec["baked_image"]["abspath"]
    first_bake_hash = h.sha256(first_bake) if os.path.exists(first_bake) else None
    rec["bake_again"] = h.call(bpy.ops.texture_variants.bake, pack=True)
    again = material.node_tree.nodes["Texture"].image
    rec["baked_again"] = {"abspath": bpy.path.abspath(again.filepath), "packed": again.packed_file is not None}
    rec["first_bake_unchanged"] = first_bake_hash is not None and h.sha256(first_bake) == first_bake_hash
    rec["textures_folder"] = sorted(os.listdir(os.path.join(project, "textures")))
    rec["base_color_after_bake"] = h.base_color_image(material)

    rec["tile_preview"] = h.call(bpy.ops.texture_variants.tile_preview, index=0)
    picked = settings.results[0].image
    tiled = bpy.data.images.get(f"{picked.name} 3x3")
    rec["tiled_size"] = list(tiled.size) if tiled else None
    if tiled:
        w, hgt = picked.size
        src, big = h.image_pixels(picked), h.image_pixels(tiled)
        # every pixel of the 3x3 image equals the variant's pixel at the same place modulo its size
        rec["tiled_matches"] = all(
            big[((y * hgt + yy) * 3 * w + x * w + xx) * 4 + c] == src[(yy * w + xx) * 4 + c]
            for y in range(3) for x in range(3) for yy in (0, hgt // 2, hgt - 1) for xx in (0, w // 3, w - 1)
            for c in range(4))

    # The live preview the modal operator shows while a job runs (timers never fire headless).
    pictures, jobs = h.addon_module("material.pictures"), h.addon_module("connection.job")
    previews = []
    for result in settings.results:
        pictures.update_live_preview(jobs.JobTracker("live", preview=result.path))
        shown = bpy.data.images.get(pictures.PREVIEW_IMAGE)
        previews.append([shown.filepath, list(shown.size), shown.as_pointer()] if shown else None)
    rec["live_previews"] = previews
    rec["preview_images"] = sum(i.name.startswith(pictures.PREVIEW_IMAGE) for i in bpy.data.images)

    rec["original_hash_unchanged"] = h.sha256(source) == original_hash
    rec["project_files"] = sorted(os.path.relpath(os.path.join(d, f), project)
                                  for d, _, fs in os.walk(project) for f in fs)

    # Saved and reopened: the settings, the results and the original image are in the .blend.
    h.call(bpy.ops.texture_variants.apply_variant, index=1)
    names = (material.name, obj.name, image.name)
    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.open_mainfile(filepath=blend)  # every Python reference to the old data is now invalid
    settings = bpy.context.scene.texture_variants
    material = bpy.data.materials[names[0]]
    bpy.context.view_layer.objects.active = bpy.data.objects[names[1]]
    rec["reopened"] = {
        "settings": [settings.engine, settings.variants, settings.steps, settings.size, settings.seed,
                     settings.randomize_seed],
        "results": [r.image.name for r in settings.results],
        "base_color": h.base_color_image(material),
        "revert": h.call(bpy.ops.texture_variants.revert),
        "base_color_after_revert": h.base_color_image(material),
        "original_file": bpy.path.abspath(bpy.data.images[names[2]].filepath) == source,
    }

    # Unregister: no classes, properties or backend process left behind.
    session = h.addon_module("connection.session").shared()
    pid = session._client.pid if session._client else None
    rec["backend_pid"] = pid
    bpy.ops.preferences.addon_disable(module=h.MODULE)
    rec["after_disable"] = {
        "operators": sorted(dir(bpy.ops.texture_variants)),
        "types": sorted(n for n in dir(bpy.types) if n.upper().startswith("TEXTURE_VARIANTS")),
        "scene_property": "texture_variants" in bpy.types.Scene.bl_rna.properties,
        "material_property": "texture_variants" in bpy.types.Material.bl_rna.properties,
        "process_alive": pid is not None and os.path.exists(f"/proc/{pid}"),
    }


h.Recorder().run(scenario)
