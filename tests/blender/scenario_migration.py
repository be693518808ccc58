"""Upgrading (docs/guide/blender.md, "Upgrading"): .blend files saved by the add-on before whole materials (made by
scenario_migration_old.py, the old add-on itself) opened with this one. The first file is open when the
add-on is enabled (migrated on register); then each file is opened (migrated on load), saved, opened
again (nothing left to do), and its applied variants reverted. Records what each step printed and
every material's records, old keys and node image. See harness.py for how it is run."""

import contextlib
import io
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402

OLD_KEYS = ("original_image", "applied_image", "node_name", "original_had_fake_user")


def _name(image):
    return image.name if image is not None else None


def _old_keys(group) -> list:
    return sorted(key for key in group.keys() if key in OLD_KEYS) if hasattr(group, "keys") else []


def state() -> dict:
    """Each material's per-node records, the old keys left (the add-on's group and the material's custom
    property of that name), what its Texture node shows; each original image's fake user."""
    out = {"fake_user": {i.name: i.use_fake_user for i in bpy.data.images if i.name.endswith(" original")}}
    for m in bpy.data.materials:
        node = m.node_tree.nodes.get("Texture") if m.node_tree else None
        out[m.name] = {
            "records": sorted([r.name, r.map_name, _name(r.original_image), _name(r.applied_image),
                               r.original_had_fake_user] for r in m.texture_variants.applied),
            "old_keys": _old_keys(m.texture_variants), "custom_old_keys": _old_keys(m.get("texture_variants")),
            "shows": _name(node.image) if node is not None else None,
        }
    return out


def printed(action, *args, **kwargs) -> list[str]:
    """What the add-on printed while `action` ran."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        action(*args, **kwargs)
    return [line for line in out.getvalue().splitlines() if line.startswith("Texture Variants")]


def revert(name: str) -> dict:
    bpy.context.view_layer.objects.active = bpy.data.objects[name]
    return h.call(bpy.ops.texture_variants.revert)


def upgrade(rec, key: str, path: str, workdir: str) -> None:
    out = {"printed_load": printed(bpy.ops.wm.open_mainfile, filepath=path), "loaded": state()}
    saved = os.path.join(workdir, f"{key}-upgraded.blend")
    bpy.ops.wm.save_as_mainfile(filepath=saved)
    out["printed_reload"] = printed(bpy.ops.wm.open_mainfile, filepath=saved)
    out["reloaded"] = state()
    out["revert"] = {name: revert(name) for name in ("Applied", "Kept", "Deleted", "Replaced", "Put Back")}
    out["reverted"], out["invariant"] = state(), h.recorded_matches_tree()
    rec[key] = out


def handlers() -> list[str]:
    return [f.__module__ for f in bpy.app.handlers.load_post if f.__module__.startswith(h.MODULE)]


def scenario(rec):
    zip_path, workdir, _ = h.args()
    files = sys.argv[4:]
    rec["printed_open"] = printed(bpy.ops.wm.open_mainfile, filepath=files[0])  # the add-on is not enabled yet
    rec["custom_before_enable"] = {m.name: _old_keys(m.get("texture_variants")) for m in bpy.data.materials}
    rec["printed_enable"] = printed(h.install, zip_path)
    rec["enabled"] = state()
    for k, path in enumerate(files):
        upgrade(rec, f"file{k}", path, workdir)
    bpy.ops.preferences.addon_disable(module=h.MODULE)
    rec["handlers_left"] = handlers()
    import addon_utils  # Blender's own modules: importable once bpy is
    try:
        import _bpy_restrict_state as restrict  # Blender 5.0
    except ImportError:
        import bpy_restrict_state as restrict
    restrict._bpy = bpy  # Blender restricts the bpy add-ons import; in the wheel that is this module
    with restrict.RestrictBlend():  # as when Blender starts with the add-on enabled: no bpy.data yet
        rec["startup_enable"] = addon_utils.enable(h.MODULE, default_set=True) is not None
    rec["startup_handlers"] = handlers()


h.Recorder().run(scenario)
