"""Production size in Blender (docs/guide/production-size.md): a 1024x384 texture made natively at
1024x384 (the request's size, the reference as it is), a 16384x16384 packed image handed over as its own
file (timed; the backend reads it reduced) with the panel's note before Generate, a generated image
over the limit downsampled on export, and Upscale x2 of a picked patch variant and of
the applied one with a roughness map. Patch engine. See harness.py for how it is run."""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402

OPS = bpy.ops.texture_variants


def record_requests():
    """Every job the add-on submits, as (request, reference path, params)."""
    shared = h.addon_module("connection.session").shared()
    sent, submit = [], shared.submit

    def recording(config, root, input_path, job_folder, params, **kwargs):
        sent.append({"request": kwargs.get("request", "generate"), "input": input_path, "params": dict(params)})
        return submit(config, root, input_path, job_folder, params, **kwargs)

    shared.submit = recording
    return sent


def panel_labels() -> list:
    layout = h.CheckingLayout()
    h.addon_module("ui.panel").draw_variants_panel(layout, bpy.context)
    return [text for kind, text in layout.calls if kind == "label"]


def panel_operators() -> list:
    layout = h.CheckingLayout()
    h.addon_module("ui.panel").draw_variants_panel(layout, bpy.context)
    return [text for kind, text in layout.calls if kind == "operator_property"]


def wide(rec, sent, path):
    h.clean_scene()
    h.plane_with_image(bpy.data.images.load(path), "Wide")
    h.set_settings(engine="patch", variants=1, size_mode="match", seed=4, randomize_seed=False)
    rec["wide_labels"] = panel_labels()
    rec["wide_generate"] = h.call(OPS.generate)
    rec["wide_request"] = sent[-1]
    rec["wide_results"] = [list(v.image.size) for v in bpy.context.scene.texture_variants.current.variants]


def huge(rec, path):
    h.clean_scene()
    image = bpy.data.images.load(path)
    image.pack()
    h.plane_with_image(image, "Scan")
    h.set_settings(engine="patch", size_mode="match")
    rec["huge_packed"] = image.packed_file is not None and tuple(image.size) == (16384, 16384)
    rec["huge_labels"] = panel_labels()  # before any Generate
    texture_io = h.addon_module("material.texture_io")
    times = []
    for _ in range(2):
        folder = tempfile.mkdtemp(dir=os.path.dirname(path))
        start = time.perf_counter()
        written, encoding = texture_io.export_reference(image, folder)
        times.append(time.perf_counter() - start)
    rec["huge_export"] = {"path": str(written), "encoding": encoding, "seconds": times}


def huge_generated(rec, folder):
    """A source over the limit with no file (a generated image): downsampled on export with numpy."""
    import numpy as np

    width, height = 9000, 160
    image = bpy.data.images.new("Generated wide", width, height)
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    rgba = np.stack([(x % 256) / 255, (y % 256) / 255, (x + y) % 2, np.ones_like(x)], axis=-1)
    image.pixels.foreach_set(rgba.astype(np.float32).ravel())
    h.plane_with_image(image, "Generated")
    rec["generated_labels"] = panel_labels()
    written, encoding = h.addon_module("material.texture_io").export_reference(image, tempfile.mkdtemp(dir=folder))
    rec["generated_export"] = {"path": str(written), "encoding": encoding}
    # An HDR (float, scene-linear) one over the limit: the same block mean, exposure-encoded on export
    hdr = bpy.data.images.new("HDR wide", width, height, float_buffer=True)
    hdr.colorspace_settings.name = "Linear Rec.709" if "Linear Rec.709" in colourspaces() else "Linear"
    values = np.stack([x % 5 + 0.0, np.full(x.shape, 0.25), (x + y) % 2 * 3.0, np.ones_like(x)], axis=-1)
    hdr.pixels.foreach_set(values.astype(np.float32).ravel())
    h.plane_with_image(hdr, "HDR")
    written, encoding = h.addon_module("material.texture_io").export_reference(hdr, tempfile.mkdtemp(dir=folder))
    rec["hdr_export"] = {"path": str(written), "encoding": encoding}


def colourspaces() -> set:
    return {item.identifier for item in bpy.types.ColorManagedInputColorspaceSettings.bl_rna.properties["name"].enum_items}


def upscale(rec, sent, folder):
    h.clean_scene()
    material = h.material_with_maps(folder)
    h.set_settings(engine="patch", variants=2, size_mode="match", seed=9, randomize_seed=False, tile="both")
    rec["up_generate"] = h.call(OPS.generate)
    settings = bpy.context.scene.texture_variants
    settings.current.index = 1
    picked = settings.current.variants[1]
    rec["up_picked"] = {"size": list(picked.image.size), "maps": sorted(m.name for m in picked.maps)}
    rec["up_buttons"] = panel_operators()
    rec["up_picked_call"] = h.call(OPS.upscale, factor="2", of="PICKED")
    rec["up_request"] = sent[-1]
    current = settings.current

    def described(result_set):
        return {"label": result_set.label(), "engine": result_set.engine, "source": result_set.source.name,
                "variants": [{"path": v.path, "size": list(v.image.size), "file": bpy.path.abspath(v.image.filepath),
                              "maps": {m.name: {"size": list(m.image.size), "path": m.path} for m in v.maps}}
                             for v in result_set.variants]}

    rec["up_result"] = described(current)
    rec["up_history"] = [s.label() for s in material.texture_variants.history]
    settings.current.index = 0
    rec["up_apply"] = h.call(OPS.apply_variant)
    rec["up_applied_call"] = h.call(OPS.upscale, factor="2", of="APPLIED")
    rec["up_applied_request"] = sent[-1]
    rec["up_applied_result"] = described(settings.current)
    rec["invariant"] = h.recorded_matches_tree()


def scenario(rec):
    zip_path, _workdir, wide_path = h.args()
    huge_path, maps_folder = sys.argv[5:7]
    h.install(zip_path)
    sent = record_requests()
    wide(rec, sent, wide_path)
    upscale(rec, sent, maps_folder)
    huge(rec, huge_path)
    huge_generated(rec, os.path.dirname(huge_path))


h.Recorder().run(scenario)
