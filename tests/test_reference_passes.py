"""reference_passes="inversion": kv and AD record the reference in the inversion's own UNet passes.

Inversion step i runs the UNet at the timestep of denoising step steps - 1 - i, with guidance 1 and
the reference branch's conditioning, like that step's reference-branch pass; only its input latent
differs (the inversion's, one level less noisy). Where the two passes get the same latent they are the
same pass, so the recordings must be equal; the controls must record at exactly their window's
steps; the cache must keep the two ways apart; the outputs must stay periodic.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend import generate_variants
from backend.diffusion import balance, vae
from backend.diffusion import engine as diffusion
from backend.diffusion.controls.base import REFERENCE, Run, StepState
from backend.diffusion.controls.kv import KVReplacement
from backend.diffusion.loop import counters

SIZE = 64


def _gen(tiny_models, reference, **kw):
    args = dict(base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]), engine="diffusion",
                variants=1, seed=0, steps=6, size=SIZE) | kw
    return generate_variants(reference, **args)


def _kv(pipe, steps, balance_):
    control, run = KVReplacement(balance.settings(balance_), steps), Run(pipe, StepState(steps=steps))
    control.setup(run)
    seen = []
    control.kv.observer = lambda layer, step, branch, action, *rest: seen.append((step, branch, action, layer))
    return control, run, seen


def _loop(pipe, reference, steps, control, run):
    cond = diffusion.encode_conditioning(pipe, reference, "", "")
    return diffusion.Loop(pipe, cond, steps, diffusion.Progress(total=10**6), [control], run.state)


@pytest.mark.parametrize(("steps", "balance_", "iterations"), [(6, 0.5, 0), (6, 1.0, 1), (4, 0.75, 0)])
def test_a_recording_taken_in_the_inversion_equals_the_branch_pass_on_the_same_latent(
        pipe, reference, steps, balance_, iterations):
    control, run, _ = _kv(pipe, steps, balance_)
    loop = _loop(pipe, reference, steps, control, run)
    inputs: dict[int, torch.Tensor] = {}  # denoising step -> the latent its recording pass read (the last iteration)
    hook = pipe.unet.register_forward_pre_hook(
        lambda module, args: inputs.__setitem__(run.state.step, args[0].detach().clone()))
    with torch.no_grad():
        latents0 = vae.encode_reference(pipe, reference, SIZE)
        try:
            loop.invert(latents0, iterations, count=len(control.window), record=True)
        finally:
            hook.remove()
        in_inversion = dict(run.recorded)
        assert {step for step, _ in in_inversion} == set(control.window)
        for step in sorted(control.window):  # the branch's pass of this step, on the same latent
            run.recorded.clear()
            loop.denoise(inputs[step], 1.0, REFERENCE, start=step)
            for layer in control.kv.layers:
                for got, want in zip(in_inversion[(step, layer)], run.recorded[(step, layer)], strict=True):
                    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_the_inversion_records_at_exactly_the_window_steps_and_layers(pipe, reference):
    steps = 6
    control, run, seen = _kv(pipe, steps, 0.5)
    assert 0 < len(control.window) < steps
    loop = _loop(pipe, reference, steps, control, run)
    with torch.no_grad():
        loop.invert(vae.encode_reference(pipe, reference, SIZE), count=steps, record=True)  # past the window
    expected = {(step, REFERENCE, "record", layer) for step in control.window for layer in control.kv.layers}
    assert set(seen) == expected and len(seen) == len(expected)  # each layer once per window step, nowhere else
    assert set(run.recorded) == {(step, layer) for step in control.window for layer in control.kv.layers}


def _passes(tiny_models, reference, **kw) -> int:
    totals = []
    _gen(tiny_models, reference, on_step=lambda done, total, preview: totals.append(total), **kw)
    return totals[-1]


@pytest.mark.parametrize("appearance", ["kv", "ad"])
def test_recording_in_the_inversion_saves_the_branch_and_the_cache_keeps_the_two_ways_apart(
        tiny_models, reference, appearance):
    steps, window = 6, len(balance.settings(0.5).window_steps(6))
    extra = window * 2 if appearance == "ad" else 0  # AD: ad_iterations=2 per window step
    kw = dict(appearance=appearance, balance=0.5, ad_iterations=2)
    diffusion.reference_cache.clear()
    branches = counters["reference_branches"]
    assert _passes(tiny_models, reference, reference_passes="inversion", **kw) == steps + window + extra
    assert counters["reference_branches"] == branches  # no branch ran
    assert _passes(tiny_models, reference, reference_passes="inversion", **kw) == steps + extra  # cached
    # the default way does not take the other way's recordings: its own inversion and branch
    assert _passes(tiny_models, reference, **kw) == steps + 2 * window + extra
    assert counters["reference_branches"] == branches + 1
    assert len(diffusion.reference_cache) == 2
    fresh = _gen(tiny_models, reference, reference_passes="inversion", **kw)[0]
    assert "reference_recorded_in" not in json.loads(fresh.info["parameters"])  # cached: nothing recorded now
    diffusion.reference_cache.clear()
    again = _gen(tiny_models, reference, reference_passes="inversion", **kw)[0]
    assert json.loads(again.info["parameters"])["reference_recorded_in"] == "inversion"
    assert np.array_equal(np.asarray(fresh), np.asarray(again))  # cached or not, the same picture


def test_a_partly_cached_inversion_is_redone_so_the_result_does_not_depend_on_earlier_calls(tiny_models, reference):
    kw = dict(reference_passes="inversion", seed=3)
    diffusion.reference_cache.clear()
    _gen(tiny_models, reference, balance=0.5, **kw)  # caches a shorter inversion
    after_narrow = _gen(tiny_models, reference, balance=1.0, **kw)[0]
    diffusion.reference_cache.clear()
    alone = _gen(tiny_models, reference, balance=1.0, **kw)[0]
    assert np.array_equal(np.asarray(after_narrow), np.asarray(alone))


def test_controls_that_need_the_branch_keep_it(tiny_models, reference):
    """Restyle records latents and features per step of its branch: it cannot record in the inversion."""
    diffusion.reference_cache.clear()
    branches = counters["reference_branches"]
    _gen(tiny_models, reference, appearance="none", restyle_prompt="rust", reference_passes="inversion", steps=4)
    assert counters["reference_branches"] == branches + 1


def test_rolling_the_initial_latents_rolls_the_image_when_recording_in_the_inversion(tiny_models, reference):
    size = 128  # 16x16 latents: a roll of 8 is a whole cell at every UNet resolution
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    kw = dict(size=size, steps=3, appearance="kv", reference_passes="inversion")
    a = np.asarray(_gen(tiny_models, reference, latents=noise, **kw)[0], dtype=np.float64) / 255
    b = np.asarray(_gen(tiny_models, reference, latents=torch.roll(noise, (8, 8), (2, 3)), **kw)[0],
                   dtype=np.float64) / 255
    assert np.abs(np.roll(a, (64, 64), (0, 1)) - b).max() <= 2 / 255


def test_above_the_window_size_the_branch_steps_with_the_generated_one(tiny_models, reference):
    """Split into windows, the reference branch runs beside the generated one (streamed): it is kept."""
    diffusion.reference_cache.clear()
    branches = counters["reference_branches"]
    image = _gen(tiny_models, reference, size=128, window=64, steps=3, reference_passes="inversion")[0]
    assert counters["reference_branches"] == branches + 1
    assert "reference_recorded_in" not in json.loads(image.info["parameters"])
