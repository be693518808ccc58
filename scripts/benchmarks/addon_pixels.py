"""The add-on's pixel work in real headless Blender (the bpy wheel): a 4096² float image out to a job
folder and a variant back, median of a few repeats. Stored under "addon_pixels" in
docs/benchmarks.json (one entry per --label, e.g. before / after a change) and shown in
docs/BENCHMARKS.md.

    .venv-blender/bin/python -m scripts.benchmarks.addon_pixels --label after [--size 4096] [--repeats 3]

Cases (the functions the operators call, on the add-on as it is in this checkout):
    export float map      texture_io.export_map of a float data image (a float TIFF for the backend)
    export HDR reference  texture_io.export_reference of a scene-linear image (exposure-encoded PNG)
    import HDR variant    texture_io.import_variant of an 8-bit variant back to a half-float OpenEXR
    structure guide       texture_io.guide_from_edges (the Sobel edge picture, 256² from the image)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import bpy
import numpy as np

from blender_addon.material import texture_io
from scripts.benchmarks.report import load_results, render, write_atomic

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _float_image(name: str, size: int, colorspace: str, high: float):
    rng = np.random.default_rng(0)
    image = bpy.data.images.new(name, size, size, alpha=True, float_buffer=True)
    image.colorspace_settings.name = colorspace
    pixels = rng.uniform(0.0, high, (size * size, 4)).astype(np.float32)
    pixels[:, 3] = 1.0
    image.pixels.foreach_set(pixels.ravel())
    return image


def _median(case, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            case(Path(folder))
            times.append(round(time.perf_counter() - started, 3))
    return statistics.median(times), times


def measure(size: int, repeats: int) -> dict:
    height = _float_image("bench height", size, "Non-Color", 4.0)
    hdr = _float_image("bench hdr", size, "Linear Rec.709", 12.0)
    work = Path(tempfile.mkdtemp(prefix="bench-addon-pixels-"))
    try:
        variant, encoding = texture_io.export_reference(hdr, work)  # an 8-bit PNG, as the backend returns
        cases = {
            "export float map": lambda folder: texture_io.export_map(height, folder, "height"),
            "export HDR reference": lambda folder: texture_io.export_reference(hdr, folder),
            "import HDR variant": lambda folder: texture_io.import_variant(
                str(variant), "variant", hdr, encoding, (size, size), folder),
            "structure guide": lambda folder: bpy.data.images.remove(texture_io.guide_from_edges(height, "guide")),
        }
        rows = {}
        for name, case in cases.items():
            median, times = _median(case, repeats)
            rows[name] = {"median_s": median, "times_s": times}
            print(f"{name}: {median:.3f} s (median of {times})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True, help="the entry's name, e.g. before or after")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--note", default="", help="what the measured code is, for the table's legend")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = measure(args.size, args.repeats)
    entry = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "size": args.size,
             "repeats": args.repeats, "blender": bpy.app.version_string, "numpy": np.__version__,
             "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
             "load_average": [round(load, 2), round(os.getloadavg()[0], 2)], "rows": rows, "note": args.note}
    path = DOCS / "benchmarks.json"
    results = load_results(path)
    results.setdefault("addon_pixels", {})[args.label] = entry
    write_atomic(path, json.dumps(results, indent=1, sort_keys=True) + "\n")
    write_atomic(DOCS / "BENCHMARKS.md", render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
