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
}


def scenario(rec):
    zip_path, workdir, texture = h.args()
    h.install(zip_path)
    h.clean_scene()
    h.plane_with_image(bpy.data.images.load(texture))
    ui, session = h.addon_module("ui"), h.addon_module("session").shared()
    drawn = {}
    for case, (settings, hello) in CASES.items():
        h.set_settings(**({"style_only": False, "size_mode": "fixed"} | settings))
        session.hello = HELLOS[hello]
        layout = h.CheckingLayout()
        ui.draw_variants_panel(layout, bpy.context)
        drawn[case] = {"props": [text for kind, text in layout.calls if kind == "prop"],
                       "greyed": [text for kind, text in layout.greyed if kind == "prop"],
                       "labels": [text for kind, text in layout.calls if kind == "label"]}
    session.hello = None
    rec["drawn"] = drawn


h.Recorder().run(scenario)
