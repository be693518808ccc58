"""The structure guide in real Blender: make a guide from the texture's edges, paint on it, generate with
it (diffusion engine on the tiny test models through the real backend). See harness.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402


def scenario(rec):
    zip_path, workdir, texture = h.args()
    h.install(zip_path)
    h.clean_scene()
    image = bpy.data.images.load(texture)
    h.plane_with_image(image)
    settings = h.set_settings(engine="diffusion", variants=1, steps=2, size_mode="fixed", size=64, seed=5, randomize_seed=False,
                              appearance="kv", sketch_mode="lgp", sketch_strength=1.5)

    ui = h.addon_module("ui.panel")
    layout = h.CheckingLayout()
    ui.draw_variants_panel(layout, bpy.context)
    rec["panel_without_guide"] = layout.calls
    rec["panel_without_guide_greyed"] = layout.greyed

    rec["make_guide"] = h.call(bpy.ops.texture_variants.make_guide)
    guide = settings.sketch
    pixels = h.image_pixels(guide)
    rgb = [v for i, v in enumerate(pixels) if i % 4 != 3]
    rec["guide"] = {"name": guide.name, "size": list(guide.size), "packed": guide.packed_file is not None,
                    "values": sorted(set(round(v, 3) for v in rgb)),
                    "white_fraction": sum(1 for v in pixels[0::4] if v > 0.5) / (len(pixels) // 4)}
    # The artist paints a line across the middle.
    width = guide.size[0]
    row = width // 2
    for x in range(width):
        for c in range(3):
            pixels[4 * (row * width + x) + c] = 1.0
    guide.pixels.foreach_set(pixels)
    guide.update()
    rec["guide_dirty"] = guide.is_dirty

    layout = h.CheckingLayout()
    ui.draw_variants_panel(layout, bpy.context)
    rec["panel_with_guide"] = layout.calls
    rec["panel_with_guide_greyed"] = layout.greyed

    # The LGP is nowhere (no preference, no environment variable, not in the empty cache): the error
    # names the preference; set there, the guide works.
    rec["generate_without_lgp"] = h.call(bpy.ops.texture_variants.generate)
    bpy.context.preferences.addons[h.MODULE].preferences.lgp = os.environ["TINY_LGP"]
    rec["generate"] = h.call(bpy.ops.texture_variants.generate)
    rec["results"] = [{"path": r.path, "size": list(r.image.size), "engine": r.engine} for r in settings.results]
    # Quality: Fast with the guide still set: the LoRA from the preference, every control kept.
    bpy.context.preferences.addons[h.MODULE].preferences.fast_lora = os.environ["TINY_FAST_LORA"]
    settings.sampler = "fast"
    rec["generate_fast"] = h.call(bpy.ops.texture_variants.generate)
    rec["results_fast"] = [{"path": r.path, "size": list(r.image.size), "engine": r.engine} for r in settings.results]
    rec["guide_name_after"] = settings.sketch.name if settings.sketch else None


h.Recorder().run(scenario)
