"""The Variants panel under each engine and appearance mode: which settings it draws, which greyed
out, and what it says Auto will use. No backend runs: the hello a Check Backend would have kept is
set by hand. See harness.py for how it is run."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402

HELLOS = {
    "no_hello": None,
    "models_found": {"engines": {"diffusion": {"available": True}, "patch": {"available": True}}},
    "no_models": {"engines": {"diffusion": {"available": False, "why": "no models"},
                              "patch": {"available": True}}},
}
CASES = {  # name -> (settings, hello)
    "patch": ({"engine": "patch"}, "models_found"),
    "diffusion_kv": ({"engine": "diffusion", "appearance": "kv"}, "no_hello"),
    "diffusion_ad": ({"engine": "diffusion", "appearance": "ad"}, "no_hello"),
    "diffusion_none": ({"engine": "diffusion", "appearance": "none"}, "no_hello"),
    "diffusion_style_only": ({"engine": "diffusion", "appearance": "kv", "style_only": True}, "no_hello"),
    "auto_unknown": ({"engine": "auto", "appearance": "none"}, "no_hello"),
    "auto_models_found": ({"engine": "auto", "appearance": "kv"}, "models_found"),
    "auto_no_models": ({"engine": "auto", "appearance": "kv"}, "no_models"),
    "match_source": ({"engine": "patch", "size_mode": "match"}, "no_hello"),
    "restyle_painted_mask": ({"engine": "diffusion", "mask_source": "image"}, "no_hello"),
    "restyle_points": ({"engine": "diffusion", "mask_source": "points"}, "no_models"),
}


def draw():
    layout = h.CheckingLayout()
    h.addon_module("ui.panel").draw_variants_panel(layout, bpy.context)
    return {"props": [text for kind, text in layout.calls if kind == "prop"],
            "greyed": [text for kind, text in layout.greyed if kind == "prop"],
            "labels": [text for kind, text in layout.calls if kind == "label"],
            "operators": [text for kind, text in layout.calls if kind in ("operator", "operator_property")]}


def results_cases(rec, material, image):
    """The results section: made for this material, for another one, on a linked one; the history."""
    settings = bpy.context.scene.texture_variants
    current = settings.current
    item = current.variants.add()
    item.image, item.seed, item.engine = image, 3, "patch"
    current.material, current.node_name, current.source = material, "Texture", image
    current.width, current.height = 64, 64
    entry = material.texture_variants.history.add()
    entry.created, entry.engine, entry.seed, entry.width, entry.height = "2025-01-01 10:00", "patch", 3, 64, 64
    entry.variants.add().image = image
    drawn = {"own": draw()}
    other = bpy.data.materials.new("Elsewhere")
    current.material = other
    drawn["other_material"] = draw()
    current.material = material
    record = material.texture_variants.applied.add()
    record.name, record.original_image, record.applied_image = "Texture", image, image
    drawn["applied"] = draw()
    rec["results_drawn"] = drawn


def scenario(rec):
    zip_path, workdir, texture = h.args()
    h.install(zip_path)
    h.clean_scene()
    image = bpy.data.images.load(texture)
    _, material, _ = h.plane_with_image(image)
    session = h.addon_module("connection.session").shared()
    drawn = {}
    for case, (settings, hello) in CASES.items():
        h.set_settings(**({"style_only": False, "size_mode": "fixed"} | settings))
        session.hello = HELLOS[hello]
        drawn[case] = draw()
    h.set_settings(engine="diffusion", style_only=False, size_mode="fixed", sketch=image)
    drawn["diffusion_guided"] = draw()  # guide mode and strength appear with a guide
    h.set_settings(sketch=None)
    session.hello = None
    rec["drawn"] = drawn
    settings_group = bpy.context.scene.texture_variants.bl_rna.properties
    # collections (restyle's mask points) are edited through operators and shown as a count, not as a prop
    rec["settings_properties"] = sorted(p.identifier for p in settings_group
                                        if p.identifier not in ("rna_type", "name") and p.type != "COLLECTION")
    h.set_settings(engine="patch", size_mode="fixed")
    results_cases(rec, material, image)


h.Recorder().run(scenario)
