"""docs/BENCHMARKS.md and docs/benchmarks.json from the stored results of every mode."""

from __future__ import annotations

import json
import os
from pathlib import Path

from scripts.benchmarks.common import PROJECT_STEPS, TARGETS
from scripts.benchmarks.findings import render_findings
from scripts.benchmarks.first_call import render_first_call
from scripts.benchmarks.speed import render_speed


def load_results(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _fmt(value, digits=2, suffix="") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


ADDON_PIXELS = "addon_pixels"  # scripts/benchmarks/addon_pixels.py: entries by label, not a scripts/bench mode


def _machine_line(entry: dict) -> str:
    m = entry["machine"]
    load = entry.get("load_average") or {}
    text = (f"{m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), {m['ram_gb']} GB RAM, "
            f"torch {m['torch']}, diffusers {m['diffusers']}, Python {m['python']}")
    if m.get("gpu"):
        text += f", GPU {m['gpu']} ({m.get('gpu_memory_gb')} GB)"
    if load:
        text += f"; load average (1 min) {load.get('start', ['?'])[0]} at start, {load.get('end', ['?'])[0]} at end"
    return text


METHOD_TEXT = {
    "plain": "plain IP-Adapter (`appearance=\"none\"`)",
    "naive": "kv, reference recomputed per variant (naive dual branch)",
    "first": "kv, first call on the texture (reference work once per call)",
    "first_inversion": "kv, first call, recordings taken in the inversion (`reference_passes=\"inversion\"`)",
    "lgp": "kv cached + LGP sketch guidance",
    "cached": "**kv, reference work cached (the product)**",
    "ad": "attention distillation (AD), reference work cached",
    "diffusers": "diffusers' own `StableDiffusionPipeline` + `load_ip_adapter` (the peer: DDIM, no tiling)",
    "fast": "**kv cached, `sampler=\"fast\"`: 8 steps, LCM-LoRA fused (TCD, guidance 1)**",
    "first_before": "kv first call as before #12 (full reference replay, two pads per conv, image encoded)",
    "cached_before": "kv cached as before #12 (two pads per wrapped conv, image encoded every call)",
}
RATIO_TEXT = {"variant_cost_ratio": "cached kv over plain", "first_call_ratio": "first call over plain",
              "peer_ratio": "cached kv over diffusers' pipeline",
              "peer_ratio_without_card": "the same, less the report card the pipeline does not make"}


def render_variant_cost(entry: dict) -> list[str]:
    vc = entry["variant_cost"]
    lines = [f"Texture `{vc['texture']}`, {vc['size']}², {vc['steps']} steps (kv window: the last "
             f"{vc['window_steps']}), guidance {vc['guidance_scale']}, {vc['device']} {vc['dtype']}, "
             f"{vc['reps']} interleaved repetitions, medians.", "",
             "| method | N | seconds (median) | s / variant | × plain | UNet s | UNet × plain | UNet images "
             f"| projected to {PROJECT_STEPS} steps: s / variant | × plain | minor page faults | kernel CPU s "
             "| all repetitions (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in vc["rows"]:
        lines.append(f"| {METHOD_TEXT.get(r['method'], r['method'])} | {r['variants']} | {r['median_s']:.2f} | "
                     f"{r['per_variant_s']:.2f} | {r['ratio_to_plain']:.2f} | {r['unet_median_s']:.2f} | "
                     f"{r['unet_ratio_to_plain']:.2f} | {r['unet_images']} | "
                     f"{r['projected_s'] / r['variants']:.1f} | {r['projected_ratio_to_plain']:.2f} | "
                     f"{r.get('minor_faults_median', '–')} | {r.get('system_s_median', '–')} | "
                     f"{', '.join(f'{s:.2f}' for s in r['seconds'])} |")
    if not vc["ad"].startswith("measured"):
        lines.append(f"| attention distillation (AD) | – | {vc['ad']} | | | | | | | | |")
    lines += ["", "Where the time of the cached kv call goes (medians, seconds): "
              + ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in
                          next(r for r in vc["rows"] if r["method"] == "cached" and r["variants"] == max(
                              x["variants"] for x in vc["rows"]))["phases_median_s"].items()) + "."]
    return lines


def _ad_text(vc: dict) -> str:
    if not vc["ad"].startswith("measured"):
        return vc["ad"].capitalize() + "."
    rows = [r for r in vc["rows"] if r["method"] == "ad"]
    return (f"Attention distillation, {vc['ad'].removeprefix('measured: ')}, reference work cached: "
            + "; ".join(f"N = {r['variants']}: {r['per_variant_s']:.2f} s per variant, {r['ratio_to_plain']:.2f} × "
                        f"plain ({r['projected_ratio_to_plain']:.2f} × projected to {PROJECT_STEPS} steps)"
                        for r in rows)
            + ". Its UNet images count the loss passes (forward to the last distilled layer); their backward "
              "passes are outside the UNet hooks, in the call's other time, which the projection does not "
              "scale: for AD the projected ratio is a lower bound.")


def _control_costs_text(entry: dict) -> list[str]:
    costs, guided = entry.get("control_costs") or {}, entry["variant_cost"].get("guided_steps", {})
    parts = []
    if "ad_step_s" in costs:
        parts.append(f"AD {costs['ad_step_s']:.2f} s per window step ({guided['ad']} of them, "
                     f"{costs.get('ad_iteration_s', 0):.2f} s per Adam iteration)")
    if "lgp_step_s" in costs:
        parts.append(f"LGP sketch guidance {costs['lgp_step_s']:.2f} s per guided step ({guided['lgp']} of them; kv + "
                     f"LGP costs {costs['lgp_ratio']:.2f} × kv)")
    if "first_call_ratio_inversion" in costs:
        parts.append(f"the first call with the recordings taken in the inversion (`reference_passes=\"inversion\"`) "
                     f"{costs['first_call_ratio_inversion']:.2f} × plain")
    return ["", "Per guided step, over the cached kv call (N = 4): " + "; ".join(parts) + "."] if parts else []


def _ratios_text(entry: dict) -> str:
    ratios = entry.get("ratios") or {"variant_cost_ratio": entry["variant_cost_ratio"]}
    return "; ".join(f"`{name}={ratios[name]:.3f}` ({RATIO_TEXT[name]}, target ≤ {TARGETS[name]})"
                     for name in RATIO_TEXT if name in ratios)


def render_service(entry: dict) -> list[str]:
    s = entry.get("service")
    if not s:
        return ["Not measured in this mode."]
    if "error" in s:
        return [f"Not measured: the service run failed ({s['error']})."]
    lines = [f"One variant, {s['size']}², {s['steps']} steps, kv with the reference cached on both sides, models "
             f"loaded on both sides; {s['reps']} interleaved repetitions, medians.", "",
             "| | in-process `generate_variants` | job through `python -m backend serve` | overhead |", "|---|---|---|---|"]
    for key, label in (("first_progress_s", "time to the first progress event"), ("total_s", "total")):
        v = s[key]
        lines.append(f"| {label} | {v['in_process']:.3f} s | {v['service']:.3f} s | {v['overhead'] * 100:+.1f} % |")
    lines += ["", f"The service's first job (starting it and loading the models included) took "
              f"{s['service_first_job_incl_load_s']:.1f} s; its own job time is {s['job_elapsed_s']:.3f} s (median)."]
    return lines


def render_patch(entry: dict) -> list[str]:
    p = entry.get("patch")
    if not p:
        return ["Not measured in this mode."]
    lines = [f"{p['size']}², one variant per call, {p['reps']} seeds per texture, textures interleaved; metrics "
             "as defined in DESIGN.md (targets: seam ≤ 1.2, appearance ≤ 1.3, copy ≤ 0.7).", "",
             "| texture | mode | s / variant (median) | seam (max) | appearance (median / max) | copy (max) | "
             "report card (first + next ms, share) |",
             "|---|---|---|---|---|---|---|"]
    for r in p["rows"]:
        card = (f"{r['card_ms_first']:.0f} + {r['card_ms_next']:.0f} ms, {100 * r['card_share']:.1f} %"
                if "card_share" in r else "—")
        lines.append(f"| {r['texture']} | {r['mode']} | {r['median_s']:.2f} | {r['seam_max']:.2f} | "
                     f"{r['appearance_median']:.2f} / {r['appearance_max']:.2f} | {r['copy_max']:.2f} | {card} |")
    if "card_cost_ratio" in p:
        lines += ["", f"`card_cost_ratio={p['card_cost_ratio']:.3f}`: the report cards of a call of 4 variants (the "
                  "first card does the reference's share once, each next one only its own) over the 4 variants' own "
                  "time, median over the textures (target ≤ 0.05)."]
    return lines


def render_correspondence(entry: dict | None) -> list[str]:
    if not entry or "correspondence" not in entry:
        return ["Not measured yet: run `scripts/bench --correspondence`."]
    c = entry["correspondence"]
    lines = [f"- **command**: `{entry['command']}`", f"- **date**: {entry['date']}",
             f"- **machine**: {_machine_line(entry)}; load average {c['load_average']['start']} → "
             f"{c['load_average']['end']}", "",
             f"{c['size']}², a variant that is a random permutation of the reference's 16-px blocks, {c['reps']} "
             "permutations per texture; *exact inside* is the share of pixels at least 3 px inside a block "
             "matched to their exact source (the worst of the runs). Target: ≤ 2 s per variant.", "",
             "| texture | s / variant (median) | CPU s (median) | exact inside (min) | RMSE (median) |",
             "|---|---|---|---|---|"]
    for r in c["rows"]:
        lines.append(f"| {r['texture']} | {r['median_s']:.2f} | {r['median_cpu_s']:.2f} | "
                     f"{r['exact_inside_min']:.3f} | {r['rmse_median']:.4f} |")
    return lines


def render_production_size(entry: dict | None) -> list[str]:
    """Peak memory and time per megapixel of one variant per size, before and after (production_size.py)."""
    if not entry or not entry.get("rows"):
        return ["Not measured yet: run `python -m scripts.benchmarks.production_size --store`."]
    out = [f"- **command**: `{entry['command']}`", f"- **date**: {entry['date']}", f"- **note**: {entry['note']}", "",
           "| engine | side | checkout | seconds | s per megapixel | peak MB | kv recordings MB |",
           "|---|---|---|---|---|---|---|"]
    for row in sorted(entry["rows"], key=lambda r: (r["engine"], r.get("appearance", ""), r["side"],
                                                   r["checkout"] != "before")):
        engine = row["engine"] + ("" if row.get("appearance", "none") == "none" else f" ({row['appearance']})")
        if "error" in row:
            out.append(f"| {engine} | {row['side']}² | {row['checkout']} | {row['error']} | | | |")
            continue
        seconds = row["seconds"] if "load_s" not in row else f"{row['seconds']} (+ {row['load_s']} load)"
        out.append(f"| {engine} | {row['side']}² | {row['checkout']} | {seconds} | "
                   f"{row['seconds_per_mpx']} | {row['peak_mb']} | {row.get('recorded_mb', '')} |")
    if "window_pass" in entry:
        w = entry["window_pass"]
        p = w["projection"]
        out += ["", f"One full-size SD1.5 UNet window pass (random weights, 512 px window, batch 2 for guidance, "
                f"{w['date']}; {w['note']}): **{w['window_pass_s']} s**. **Projection** (not a measurement) for a "
                f"{p['side']}² variant: {p['windows']} windows x {p['steps']} steps x that pass = {p['seconds']} s, "
                f"{p['seconds_per_mpx']} s per megapixel (the VAE, the reference work and the load left out)."]
    return out


def render_gpu(entry: dict | None) -> list[str]:
    if not entry or "gpu" not in entry:
        reason = (entry or {}).get("not_measured", "no GPU was lent to this project's runs")
        return [f"**Not measured: {reason}.** No numbers are given rather than invented ones. On a CUDA "
                "machine: `TORCH_SPEC=\"torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128\" "
                "scripts/setup`, then `scripts/bench --gpu` (fp16, SDPA, channels-last, the variants decoded one "
                "at a time; `--compile` adds torch.compile of the UNet): seconds per variant and peak VRAM "
                "for plain, naive, first, cached (Full), Fast (8 steps, LCM-LoRA) and AD, and diffusers' own pipeline. Targets: ≤ 0.7 s per variant "
                "amortised on an H100, ≤ 6 GB peak VRAM. diffusers' attention slicing is not used: "
                "`enable_attention_slicing` replaces every attention processor, IP-Adapter's included (the "
                "image prompt would be dropped); SDPA's memory-efficient kernels do not keep attention "
                "matrices anyway. `scripts/bench --gpu --dry-run` runs the same code on a CPU at 64², 2 steps (a check "
                "that the script works before a GPU is lent, not a measurement); on a lent machine without network, "
                "`scripts/bench_on_device` (docs/guide/development.md)."]
    g = entry["gpu"]
    lines = [f"- **command**: `{entry['command']}`", f"- **date**: {entry['date']}",
             f"- **machine**: {_machine_line(entry)}", "",
             f"{g['device']} {g['dtype']}, {g['size']}², {g['steps']} steps, N = {g['variants']}, "
             f"{g['reps']} interleaved repetitions; optimisations: {', '.join(g['optimisations']) or 'none'}; "
             f"attention: {', '.join(g['attention_processors'])}.", "",
             "| method | seconds (median) | s / variant | × plain | peak VRAM (GB) |", "|---|---|---|---|---|"]
    for r in g["rows"]:
        lines.append(f"| {METHOD_TEXT.get(r['method'], r['method'])} | {r['median_s']:.2f} | {r['per_variant_s']:.3f} | "
                     f"{r['ratio_to_plain']:.2f} | {_fmt(r['peak_gb'])} |")
    return lines


def _modes(results: dict) -> list[str]:
    return ["full", "quick", *sorted(k for k in results if k not in ("full", "quick", "gpu", "correspondence",
                                                                     ADDON_PIXELS, "production_size",
                                                                     "first_call"))]


def render_addon_pixels(entries: dict | None) -> list[str]:
    """The add-on's pixel work in headless Blender, one column per labelled run (before / after)."""
    if not entries:
        return ["Not measured yet: `.venv-blender/bin/python -m scripts.benchmarks.addon_pixels --label after`."]
    labels = sorted(entries, key=lambda label: entries[label]["date"])
    first = entries[labels[0]]
    out = [f"A {first['size']}² float RGBA image in headless Blender (the bpy wheel), median of "
           f"{first['repeats']} (`python -m scripts.benchmarks.addon_pixels`, see its docstring for the cases). The load "
           "average is noted per run: compare a run's before and after, measured back to back.", "",
           "| case | " + " | ".join(f"{label} (s)" for label in labels) + " |",
           "|---|" + "---|" * len(labels)]
    cases = list(dict.fromkeys(case for label in labels for case in entries[label]["rows"]))
    for case in cases:
        cells = [_fmt(entries[label]["rows"].get(case, {}).get("median_s")) for label in labels]
        out.append(f"| {case} | " + " | ".join(cells) + " |")
    out.append("")
    out += [f"- **{label}**: {e['note'] + '; ' if e.get('note') else ''}{e['date']}, Blender {e['blender']}, "
            f"numpy {e['numpy']}, {e['machine']}, load average {e['load_average'][0]} at start, "
            f"{e['load_average'][1]} at end" for label, e in ((label, entries[label]) for label in labels)]
    return out


def render(results: dict) -> str:
    """docs/BENCHMARKS.md from every stored mode."""
    out = ["# Benchmarks", "",
           "Generated by `scripts/bench` (`python -m scripts.benchmarks`); raw numbers in "
           "[`benchmarks.json`](benchmarks.json). What is compared, and how:", "",
           "- **plain**: plain IP-Adapter, `appearance=\"none\"`: the generated branch only.",
           "- **naive**: kv replacement that recomputes the reference for every variant, as the published "
           "dual-branch kv methods do: N calls of one variant each, every call with an empty reference cache "
           "that keeps nothing, so each variant pays again for the CLIP and VAE encodings of the reference, "
           "its DDIM inversion and the reference branch (window steps each), besides its own guided generated "
           "branch. The benchmark checks that the engine really did N inversions and N reference branches.",
           "- **first**: the product's kv replacement on a texture it has not seen yet: the reference work "
           "is done once per call, for all N variants (checked: 1 inversion, 1 reference branch).",
           "- **cached**: the product's kv replacement once the texture's reference work (inverted latents "
           "and the window's K/V) is in the engine's cache: only the generated branch runs (checked: no "
           "inversion, no reference branch). This is the row of `variant_cost_ratio`.",
           "- **diffusers**: diffusers' own `StableDiffusionPipeline` after `load_ip_adapter`, on the engine's "
           "loaded modules: DDIM, the same size, steps, guidance 7.5 and N images per prompt, no tiling, the "
           "image encoded every call. `peer_ratio` is cached over this row.",
           "- **ad**: attention distillation, reference work cached.",
           "- **first_before**, **cached_before** (opt-in): the engine with the costs it had before #12 put "
           "back in the same run (inversion and reference branch over all steps, two padded copies per wrapped "
           "convolution, the image embedding computed every call), for a before/after side by side.",
           "",
           "Every comparison is measured side by side in one run: the repetitions of its cases are "
           "interleaved (round robin, the order rotated every round), and medians are reported. "
           "*UNet s* is the time inside the UNet (forward hooks), *UNet images* how many images went "
           "through it (a guided pass of N variants counts 2N). The models are random-weight models with "
           "the real SD1.5 / ViT-H architecture (`python -m backend make-test-models --full-size`): speed "
           "does not depend on the weights' values.", ""]
    for mode in _modes(results):
        entry = results.get(mode)
        title = {"full": "Full run", "quick": "Quick run (`--quick`)"}.get(mode, f"Run `{mode}` (more methods)")
        out += [f"## {title}", ""]
        if not entry or "variant_cost" not in entry:
            out += [f"Not measured yet: run `scripts/bench{' --quick' if mode == 'quick' else ''}`.", ""]
            continue
        if entry.get("note"):
            out += [f"- **note**: {entry['note']}"]
        out += [f"- **command**: `{entry['command']}`", f"- **date**: {entry['date']} (took {entry['wall_s'] / 60:.1f} min)",
                f"- **machine**: {_machine_line(entry)}", f"- **configuration**: {entry['why']}",
                f"- **result** (N = {entry.get('variant_cost_ratio_n', 4)}): " + _ratios_text(entry), "",
                "### Variant cost", "", *render_variant_cost(entry), "",
                "### AD mode", "", _ad_text(entry["variant_cost"]), *_control_costs_text(entry), "",
                "### Service overhead", "", *render_service(entry), "",
                "### Weight-free engine", "", *render_patch(entry), ""]
        if entry.get("speed"):
            out += ["### Few-step sampling and previews", "", *render_speed(entry["speed"]), ""]
    out += ["## Map correspondence (`--correspondence`)", "", *render_correspondence(results.get("correspondence")),
            ""]
    out += ["## First-call breakdown (`python -m scripts.benchmarks.first_call`)", "",
            *render_first_call(results.get("first_call")), ""]
    out += ["## Production size (`python -m scripts.benchmarks.production_size`)", "",
            *render_production_size(results.get("production_size")), ""]
    out += ["## GPU (`--gpu`)", "", *render_gpu(results.get("gpu")), ""]
    out += ["## Add-on pixel work", "", *render_addon_pixels(results.get(ADDON_PIXELS)), ""]
    findings = render_findings(results)
    if findings:
        at = out.index("## Full run")
        out[at:at] = ["## What the numbers say", "", *findings, ""]
    return "\n".join(out)
