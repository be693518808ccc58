"""Section 3: the weight-free engine, seconds and metrics per texture."""

from __future__ import annotations

from scripts.benchmarks.common import PATCH_TEXTURES, Setup, interleaved, median, texture


def bench_patch(setup: Setup, log=print) -> dict:
    """Section 4: the patch engine at `patch_size`², textures interleaved, seconds and metrics."""
    import time

    from backend import generate_variants, report_card
    from backend.metrics import texture_metrics

    references = {name: texture(name, setup.patch_size) for name in PATCH_TEXTURES}
    metrics: dict[str, list[dict]] = {name: [] for name in PATCH_TEXTURES}
    cards: dict[str, list[tuple]] = {name: [] for name in PATCH_TEXTURES}  # (first card, next card, variant) s
    seeds = {name: iter(range(setup.seed, setup.seed + setup.patch_reps)) for name in PATCH_TEXTURES}
    images = {}

    def case(name):
        (images[name],) = generate_variants(references[name], engine="patch", size=setup.patch_size,
                                            seed=next(seeds[name]))

    def measure(name, rep, seconds):  # metrics outside the timed call
        reference = references[name]
        exemplar = reference.convert("L") if images[name].mode == "L" else reference
        metrics[name].append(texture_metrics(images[name], exemplar))
        start = time.perf_counter()  # the report card alone, as the call made it (it is part of `seconds`)
        judge = report_card.Judge(reference)
        judge.card(images[name])
        first = time.perf_counter() - start
        start = time.perf_counter()  # a further variant of the same call: the reference work is done
        judge.card(images[name])
        cards[name].append((first, time.perf_counter() - start, seconds - first))
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
                     "copy_max": round(max(x["copy"] for x in m), 3),
                     "card_ms_first": round(1000 * median(c[0] for c in cards[name]), 1),
                     "card_ms_next": round(1000 * median(c[1] for c in cards[name]), 1),
                     # the cards of a default call of 4 variants (the reference work once) over the
                     # 4 variants' own time (the call's time without its card)
                     "card_share": round(median((c[0] + 3 * c[1]) / (4 * c[2]) for c in cards[name]), 4)})
    return {"size": setup.patch_size, "reps": setup.patch_reps, "rows": rows,
            "card_cost_ratio": round(median(r["card_share"] for r in rows), 4)}
