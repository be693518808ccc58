"""Every error case: the operator fails with a message that says what to do, and the material, the
images and the files stay as they were. See harness.py for how it is run."""

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402


def attempt(rec, case, op, material=None, **kwargs):
    before = h.snapshot(material)
    outcome = h.call(op, **kwargs)
    outcome["unchanged"] = h.snapshot(material) == before
    rec[case] = outcome


def scenario(rec):
    zip_path, workdir, texture = h.args()
    h.install(zip_path)
    ops = bpy.ops.texture_variants
    h.clean_scene()
    h.set_settings(engine="patch", variants=1, steps=2, size_mode="fixed", size=64, seed=1, randomize_seed=False)

    bpy.context.view_layer.objects.active = None
    attempt(rec, "no_object", ops.generate)

    bpy.ops.mesh.primitive_plane_add()
    attempt(rec, "no_material", ops.generate)

    material = bpy.data.materials.new("Plain")
    material.use_nodes = True
    bpy.context.active_object.data.materials.append(material)
    attempt(rec, "no_image", ops.generate, material)

    missing_file = shutil.copy(texture, os.path.join(workdir, "soon_gone.png"))
    gone = bpy.data.images.load(missing_file)
    _, material, node = h.plane_with_image(gone, "Missing")
    os.remove(missing_file)
    layout = h.CheckingLayout()
    h.addon_module("ui.panel").draw_variants_panel(layout, bpy.context)
    rec["panel_missing"] = [list(call) for call in layout.calls]
    attempt(rec, "image_missing", ops.generate, material)

    source = shutil.copy(texture, os.path.join(workdir, "gravel.png"))
    source_hash = h.sha256(source)
    _, material, node = h.plane_with_image(bpy.data.images.load(source), "Good")

    attempt(rec, "apply_without_results", ops.apply_variant, material)
    attempt(rec, "revert_without_variant", ops.revert, material)
    attempt(rec, "bake_without_variant", ops.bake, material)

    real_python = os.environ["TEXTURE_VARIANTS_PYTHON"]
    os.environ["TEXTURE_VARIANTS_PYTHON"] = os.path.join(workdir, "no-such-venv", "bin", "python")
    attempt(rec, "not_set_up", ops.generate, material)

    os.environ["TEXTURE_VARIANTS_PYTHON"] = os.environ["CRASHING_PYTHON"]
    attempt(rec, "backend_crashed", ops.generate, material)

    os.environ["TEXTURE_VARIANTS_PYTHON"] = real_python
    os.environ["TEXTURE_VARIANTS_BASE"] = os.path.join(workdir, "no-such-model")
    h.set_settings(engine="diffusion")
    attempt(rec, "models_missing", ops.generate, material)
    os.environ["TEXTURE_VARIANTS_BASE"] = os.environ["TINY_BASE"]

    h.set_settings(engine="diffusion", steps=200, variants=4, randomize_seed=True, seed=1)
    attempt(rec, "cancelled", ops.generate, material, timeout=1.0)
    rec["seed_after_cancel"] = bpy.context.scene.texture_variants.seed
    h.set_settings(randomize_seed=False)

    # Set up backend with Blender's online access off (as in background mode by default).
    rec["online_access"] = bpy.app.online_access
    venv = os.path.join(bpy.utils.extension_path_user(h.MODULE), "backend-venv")
    attempt(rec, "setup_offline", ops.setup_backend)
    attempt(rec, "download_offline", ops.download_model, model="sam")
    rec["setup_offline"]["venv_created"] = os.path.exists(venv)

    # Bake with an unsaved .blend: a variant made outside the backend is enough to get that far.
    h.set_settings(engine="patch", steps=2, variants=1)
    settings = bpy.context.scene.texture_variants
    item = settings.results.add()
    item.image = bpy.data.images.load(shutil.copy(texture, os.path.join(workdir, "variant.png")))
    settings.results_index = 0
    rec["apply_for_bake"] = h.call(ops.apply_variant)
    attempt(rec, "bake_unsaved", ops.bake, material)

    jobs_dir = os.path.join(bpy.utils.extension_path_user(h.MODULE), "jobs")
    rec["job_folders_left"] = sorted(os.listdir(jobs_dir)) if os.path.isdir(jobs_dir) else []
    rec["source_unchanged"] = h.sha256(source) == source_hash
    rec["workdir_files"] = sorted(f for f in os.listdir(workdir) if not f.endswith(".json"))


h.Recorder().run(scenario)
