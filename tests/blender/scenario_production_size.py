"""Production size in Blender (docs/guide/production-size.md): a 1024x384 texture made natively at
1024x384 (the request's size, the reference as it is), a 16384x16384 packed image downsampled on
export (timed) with the panel's note before Generate, and Upscale x2 of a picked patch variant and of
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
    for _ in range(2):  # cold: Blender decodes the packed PNG on the first pixel read; warm: it is loaded
        folder = tempfile.mkdtemp(dir=os.path.dirname(path))
        start = time.perf_counter()
        written, encoding = texture_io.export_reference(image, folder)
        times.append(time.perf_counter() - start)
    rec["huge_export"] = {"path": str(written), "encoding": encoding, "seconds": times}
    # The warm export's parts: Blender handing the pixels over, the block mean, the 8-bit TIFF
    resample, float_tiff = h.addon_module("pixels.resample"), h.addon_module("pixels.float_tiff")
    start = time.perf_counter()
    pixels = texture_io.rgba_pixels(image)
    read = time.perf_counter()
    small, width, height = resample.block_mean(pixels, 16384, 16384, 2, to_bytes=True, channels=3)
    del pixels
    mean = time.perf_counter()
    float_tiff.write(os.path.join(folder, "parts.tif"), small, width, height, 3, bits=8)
    rec["huge_parts_seconds"] = {"pixel read": read - start, "block mean": mean - read,
                                 "tiff": time.perf_counter() - mean}


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


h.Recorder().run(scenario)
