"""The benchmark machinery (scripts/benchmarks/) on the tiny models, in seconds.

No timing is asserted: these tests check that each benchmark case does the work it claims (counted
UNet images, inversions, reference branches), that repetitions are interleaved, and that a run
writes its report and ends with the `variant_cost_ratio=X` line.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from backend import generate_variants
from backend.diffusion import engine as diffusion
from backend.params import APPEARANCE_MODES
from scripts.benchmarks import cli, common, report, speed, variant_cost

STEPS = 3


def tiny_setup(**changes) -> common.Setup:
    base = common.Setup(mode="quick", size=64, steps=STEPS, reps=1, methods=(
        "plain", "naive", "first", "first_inversion", "cached", "ad", "lgp", "diffusers", "first_before",
        "cached_before"),
                       service_reps=1, patch_size=64, patch_reps=1, why="tiny models, smoke test")
    return replace(base, **changes)


@pytest.fixture
def fresh_pipeline():
    """The GPU path changes the loaded pipeline's memory format: give later tests a fresh one."""
    yield
    diffusion.unload()


def test_interleaved_runs_every_case_each_round_in_rotated_order():
    order = []
    cases = {name: (lambda n=name: order.append(n)) for name in "abc"}
    seen = []
    times = common.interleaved(cases, 4, lambda name, rep, s: seen.append((rep, name)))
    assert order == list("abc" "bca" "cab" "abc")
    assert seen == [(r, n) for r, names in enumerate(("abc", "bca", "cab", "abc")) for n in names]
    assert {name: len(t) for name, t in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0 for ts in times.values() for t in ts)


def test_main_writes_the_report_and_prints_the_ratio_last(tiny_models, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "QUICK", tiny_setup())
    models_dir = tiny_models["base"].parent
    assert cli.main(["--quick", "--models", str(models_dir), "--out-dir", str(tmp_path)]) == 0

    printed_lines = capsys.readouterr().out.strip().splitlines()
    last = printed_lines[-3:]
    assert [line.split("=")[0] for line in last] == ["variant_cost_ratio", "first_call_ratio", "peer_ratio"]
    entry = json.loads((tmp_path / "benchmarks.json").read_text())["quick"]
    # the guided controls' cost per guided step, printed before the three ratios
    costs = entry["control_costs"]
    assert set(costs) == {"first_call_ratio_inversion", "ad_ratio", "ad_step_s", "ad_iteration_s", "lgp_ratio",
                          "lgp_step_s"}
    assert all(f"{name}={value:.3f}" in printed_lines for name, value in costs.items())
    guided = entry["variant_cost"]["guided_steps"]
    assert guided == {"ad": 1, "ad_iterations": 3, "lgp": 2}  # 3 steps: the last third; the first half, rounded
    printed = {line.split("=")[0]: float(line.split("=")[1]) for line in last}
    headline = {k: v for k, v in entry["ratios"].items() if k != "peer_ratio_without_card"}
    assert printed == pytest.approx(headline, abs=5e-4)
    assert printed["variant_cost_ratio"] == pytest.approx(entry["variant_cost_ratio"], abs=5e-4)

    # Each case pushed through the UNet exactly the images its definition implies (a guided pass of
    # n latents is 2n; inversion and reference branch are unguided, one image per step).
    rows = entry["variant_cost"]["rows"]
    images = {(r["method"], r["variants"]): r["unet_images"] for r in rows}
    expected = {}
    window = entry["variant_cost"]["window_steps"]
    for n in (1, 4):
        expected |= {("plain", n): 2 * n * STEPS, ("cached", n): 2 * n * STEPS, ("naive", n): n * (2 * STEPS + 2 * window),
                     # the first call's reference work: inversion and reference branch to / through the window
                     ("first", n): 2 * n * STEPS + 2 * window, ("first_before", n): (2 * n + 2) * STEPS,
                     # recording in the inversion: its passes only, no reference branch
                     ("first_inversion", n): 2 * n * STEPS + window,
                     # LGP: one pass of the unconditional half (n latents) per guided step, 2 of 3
                     ("lgp", n): 2 * n * STEPS + 2 * n,
                     ("cached_before", n): 2 * n * STEPS, ("diffusers", n): 2 * n * STEPS}
    del expected[("first", 1)]  # the same work as one naive variant: measured once
    if "ad" in APPEARANCE_MODES:  # plus the loss passes: iterations x N per window step (1 of 3)
        from backend.params import DiffusionOptions

        expected |= {("ad", n): 2 * n * STEPS + DiffusionOptions.ad_iterations * n for n in (1, 4)}
    assert images == expected
    for r in rows:
        assert len(r["seconds"]) == 1 and r["median_s"] > 0 and math.isfinite(r["ratio_to_plain"])
        assert r["phases_median_s"]["unet"] <= r["median_s"]
    by_name = {(r["method"], r["variants"]): r for r in rows}
    assert entry["variant_cost_ratio"] == by_name[("cached", 4)]["ratio_to_plain"]
    assert entry["ratios"]["first_call_ratio"] == by_name[("first", 4)]["ratio_to_plain"]
    assert entry["ratios"]["peer_ratio"] == pytest.approx(
        by_name[("cached", 4)]["median_s"] / by_name[("diffusers", 4)]["median_s"], abs=1e-3)
    assert all(r["minor_faults_median"] >= 0 and r["system_s_median"] >= 0 for r in rows)
    # the report card's CLIP-I is a phase of its own: the product's calls make one, the pipeline none,
    # and a cached call's image encoder (the texture's embedding kept) then did nothing else
    cached4, peer4 = by_name[("cached", 4)]["phases_median_s"], by_name[("diffusers", 4)]["phases_median_s"]
    assert cached4["report_card"] > 0 and peer4["report_card"] == 0 and cached4["image_encoder"] == 0
    assert peer4["image_encoder"] > 0  # the pipeline encodes its image prompt every call
    assert entry["ratios"]["peer_ratio_without_card"] == pytest.approx(
        (by_name[("cached", 4)]["median_s"] - cached4["report_card"]) / by_name[("diffusers", 4)]["median_s"], abs=1e-3)
    assert "peer_ratio_without_card=" in "\n".join(printed_lines[:-3])

    service = entry["service"]
    for side in ("service", "in_process"):
        assert 0 < service["first_progress_s"][side] < service["total_s"][side]
    patch = {r["texture"]: r for r in entry["patch"]["rows"]}
    assert set(patch) == set(common.PATCH_TEXTURES)
    assert patch["immunohistochemistry"]["mode"] == "RGB" and patch["brick"]["mode"] == "L"
    assert all(r["seam_max"] < 1.5 for r in patch.values())  # the patch engine tiles by construction

    report = (tmp_path / "BENCHMARKS.md").read_text()
    for name, value in entry["ratios"].items():
        assert f"{name}={value:.3f}" in report
    assert "Against diffusers' own pipeline" in report and "as before #12" in report
    assert "Not measured: no GPU" in report
    if "ad" not in APPEARANCE_MODES:
        assert "Not measured: AD mode not implemented yet" in report
    else:
        assert "Attention distillation, 3 Adam iterations" in report


def test_methods_without_plain_and_cached_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["--quick", "--methods", "plain", "naive", "--models", str(tmp_path / "none")])
    assert not (tmp_path / "none").exists()  # refused before any model is written


def test_a_second_mode_keeps_the_first_in_the_report(tmp_path):
    cli.store(tmp_path, "gpu", {"not_measured": "test"})
    cli.store(tmp_path, "other", {"x": 1})
    stored = json.loads((tmp_path / "benchmarks.json").read_text())
    assert stored == {"gpu": {"not_measured": "test"}, "other": {"x": 1}}
    assert "Not measured: test." in (tmp_path / "BENCHMARKS.md").read_text()


def test_a_case_that_would_measure_something_else_is_refused(tiny_models, brick_path):
    """`cached` without the texture in the cache would silently time the first call: it raises."""

    def generate(**kw):
        return generate_variants(brick_path, base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]),
                                 engine="diffusion", size=64, steps=2, **kw)

    methods = variant_cost.variant_methods(generate, tiny_setup())
    diffusion.reference_cache.clear()
    with pytest.raises(RuntimeError, match="expected 0"):
        methods["cached"](1)
    methods["cached"](1)  # the failed case did the reference work; now the cache has it


def test_naive_recomputes_per_variant_and_leaves_the_real_cache_alone(tiny_models, brick_path):
    def generate(**kw):
        return generate_variants(brick_path, base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]),
                                 engine="diffusion", size=64, steps=2, **kw)

    methods = variant_cost.variant_methods(generate, tiny_setup())
    generate(variants=1, seed=1)  # the real cache now holds this texture
    cache, entries = diffusion.reference_cache, len(diffusion.reference_cache)
    before = variant_cost.reference_work_done()
    naive = methods["naive"](3)
    assert variant_cost.reference_work_done() == (before[0] + 3, before[1] + 3)
    assert diffusion.reference_cache is cache and len(cache) == entries
    # The naive variants are the product's variants: same seeds, the same pictures (up to the float
    # rounding of a batch of 1 against a batch of 3).
    cached = methods["cached"](3)
    for a, b in zip(naive, cached, strict=True):
        diff = np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))
        assert diff.mean() < 0.5


def test_gpu_dry_run_prints_seconds_per_variant_and_peak_for_full_fast_and_the_peer(tiny_models, fresh_pipeline,
                                                                                  tmp_path, capsys):
    """`scripts/bench --gpu --dry-run`: the --gpu command's whole path on the CPU, nothing stored."""
    models_dir = tiny_models["base"].parent
    assert cli.main(["--gpu", "--dry-run", "--models", str(models_dir), "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "benchmarks.json").exists() and "nothing stored" in out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0] == "| method | seconds (median) | s / variant | × plain | peak VRAM (GB) |"
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in table[1:]}  # the rule "|---|" is not "| "
    assert set(rows) == {report.METHOD_TEXT[m] for m in ("plain", "naive", "first", "cached", "ad", "diffusers", "fast")}
    assert "optimisations: channels_last, decode one image at a time" in out
    for method in ("cached", "fast", "diffusers"):
        seconds, per_variant, _, peak = rows[report.METHOD_TEXT[method]]
        assert float(per_variant) == pytest.approx(float(seconds) / common.GPU.variants[-1], abs=0.002)
        assert peak.rstrip(" |") == report._fmt(None)  # no CUDA here: no VRAM figure, none invented
    assert f"{common.DRY_RUN.size}², {common.DRY_RUN.steps} steps, N = 4" in out
    assert [line.split("=")[0] for line in out.strip().splitlines()[-4:]] == [
        "variant_cost_ratio", "first_call_ratio", "peer_ratio", "fast_over_full"]


def test_gpu_without_cuda_fails_clearly_before_writing_models(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["--gpu", "--models", str(tmp_path / "models"), "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --gpu needs a CUDA GPU") and "--dry-run" in err
    assert not (tmp_path / "models").exists() and not (tmp_path / "benchmarks.json").exists()


def test_the_speed_section_times_cached_fast_and_full_variants_and_both_decoders(tiny_models, tmp_path, monkeypatch,
                                                                                 capsys):
    stored = {"quick": {"mode": "quick", "variant_cost": {"kept": True}}}
    (tmp_path / "benchmarks.json").write_text(json.dumps(stored))
    monkeypatch.setattr(cli, "render", lambda results: "rendered")  # the stored stand-in has no full rows
    monkeypatch.setattr(common, "QUICK", tiny_setup(speed=True))
    models_dir = tiny_models["base"].parent
    assert cli.main(["--quick", "--sections", "speed", "--models", str(models_dir), "--out-dir", str(tmp_path)]) == 0
    entry = json.loads((tmp_path / "benchmarks.json").read_text())["quick"]
    assert entry["variant_cost"] == {"kept": True}  # the other sections' results stay
    result = entry["speed"]
    rows = {r["case"]: r for r in result["rows"]}
    assert set(rows) == {"full", "fast", "fast_cfg"}
    assert (rows["full"]["steps"], rows["fast"]["steps"]) == (speed.FULL_STEPS, speed.FAST_STEPS)
    assert rows["full"]["ratio_to_full"] == 1.0 and all(len(r["seconds"]) == 1 for r in rows.values())
    assert "remake_full" not in rows["full"]["card"]  # the gate judges Fast variants only
    assert all(rows[c]["card"]["remake_full"] is (not rows[c]["card"]["same_look"]) for c in ("fast", "fast_cfg"))
    assert result["ratios"]["fast_cost_ratio"] == rows["fast"]["ratio_to_full"]
    decode = result["decode"]
    assert result["decode_size"] == speed.DECODE_SIZE  # above the run's 64²: fixed costs would dominate there
    assert 0 < decode["taesd"]["gflop"] < decode["vae"]["gflop"]
    assert result["ratios"]["preview_decode_ratio"] == pytest.approx(
        decode["taesd"]["median_s"] / decode["vae"]["median_s"], rel=0.05)  # of medians rounded to 0.1 ms
    last = capsys.readouterr().out.strip().splitlines()[-2:]
    assert [line.split("=")[0] for line in last] == ["fast_cost_ratio", "preview_decode_ratio"]
    report = "\n".join(speed.render_speed(result))
    assert "`fast_cost_ratio`" in report and "`preview_decode_ratio`" in report
    assert f"Decoding the same {speed.DECODE_SIZE}² latents" in report and "the ratio's floor" in report
    assert "| remake at Full |" in report and "say nothing about the fidelity" in report
