"""End to end: from a fresh Blender user folder, Set up Backend (the operator, background mode) makes
the backend's environment from the configured indexes, Check Backend runs by itself, and Generate
works on the patch engine with that environment; then set-up again (nothing to do), Remove Backend.
The extra argument is the installer ("uv" or "pip"). See harness.py for how it is run."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402


def panel(prefs) -> list:
    layout = h.CheckingLayout()
    h.addon_module("ui.setup").draw_setup(layout, prefs, bpy.context)
    return layout.calls


def scenario(rec):
    zip_path, workdir, texture = h.args()
    installer = sys.argv[5]
    h.install(zip_path)
    bpy.context.preferences.system.use_online_access = True  # off by default in background mode
    prefs = bpy.context.preferences.addons[h.MODULE].preferences
    prefs.installer = installer
    venv = os.path.join(bpy.utils.extension_path_user(h.MODULE), "backend-venv")
    rec["venv_before"] = os.path.exists(venv)
    rec["panel_before"] = panel(prefs)

    started = time.monotonic()
    rec["setup"] = h.call(bpy.ops.texture_variants.setup_backend)
    rec["setup_seconds"] = round(time.monotonic() - started, 1)
    env = h.addon_module("prefs").setup_environment()
    rec["state"] = env.state()
    rec["venv_python"] = str(env.python)
    rec["user_folder"] = sorted(os.listdir(os.path.dirname(venv)))
    rec["status_after_setup"] = prefs.status
    rec["log"] = env.log.read_text(encoding="utf-8")[-20000:]
    rec["panel_after"] = panel(prefs)
    session = h.addon_module("connection.session").shared()
    rec["backend_python"] = session._client.config.python if session._client else None

    image = bpy.data.images.load(texture)
    h.plane_with_image(image)
    h.set_settings(engine="patch", variants=1, size=64, seed=3, randomize_seed=False, tile="both")
    rec["generate"] = h.call(bpy.ops.texture_variants.generate)
    rec["results"] = [{"engine": r.engine, "size": list(r.image.size), "path": r.path}
                      for r in bpy.context.scene.texture_variants.results]

    started = time.monotonic()
    rec["setup_again"] = h.call(bpy.ops.texture_variants.setup_backend)
    rec["setup_again_seconds"] = round(time.monotonic() - started, 1)
    rec["remove"] = h.call(bpy.ops.texture_variants.remove_backend)
    rec["after_remove"] = sorted(os.listdir(os.path.dirname(venv)))
    rec["status_after_remove"] = prefs.status


h.Recorder().run(scenario)
