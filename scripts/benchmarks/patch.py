"""Section 3: the weight-free engine, seconds and metrics per texture."""

from __future__ import annotations

from scripts.benchmarks.common import PATCH_TEXTURES, Setup, interleaved, median, texture


def bench_patch(setup: Setup, log=print) -> dict:
    """Section 4: the patch engine at `patch_size`², textures interleaved, seconds and metrics."""
    from backend import generate_variants
    from backend.metrics import texture_metrics

    references = {name: texture(name, setup.patch_size) for name in PATCH_TEXTURES}
    metrics: dict[str, list[dict]] = {name: [] for name in PATCH_TEXTURES}
    seeds = {name: iter(range(setup.seed, setup.seed + setup.patch_reps)) for name in PATCH_TEXTURES}
    images = {}

    def case(name):
        (images[name],) = generate_variants(references[name], engine="patch", size=setup.patch_size,
                                            seed=next(seeds[name]))

    def measure(name, rep, seconds):  # metrics outside the timed call
        reference = references[name]
        exemplar = reference.convert("L") if images[name].mode == "L" else reference
        metrics[name].append(texture_metrics(images[name], exemplar))
        log(f"[bench] patch {name:<22} rep {rep + 1}/{setup.patch_reps}: {seconds:6.2f} s")

    times = interleaved({name: (lambda n=name: case(n)) for name in PATCH_TEXTURES}, setup.patch_reps, measure)
    rows = []
    for name in PATCH_TEXTURES:
        m = metrics[name]
        rows.append({"texture": name, "mode": references[name].mode, "seconds": [round(t, 3) for t in times[name]],
                     "median_s": round(median(times[name]), 3),
                     "seam_max": round(max(max(x["seam_x"], x["seam_y"]) for x in m), 3),
                     "appearance_median": round(median(x["appearance"] for x in m), 3),
                     "appearance_max": round(max(x["appearance"] for x in m), 3),
                     "copy_max": round(max(x["copy"] for x in m), 3)})
    return {"size": setup.patch_size, "reps": setup.patch_reps, "rows": rows}
