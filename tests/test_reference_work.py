"""The reference work on the tiny random-weight models: which noise level every pass runs at, the
window-only inversion and reference branch, what is cached (inversion, recordings, image-prompt
embeddings) and the warning when the kv window rounds to no step."""

from __future__ import annotations

import contextlib
import json
import logging

import numpy as np
import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from backend import generate_variants
from backend.diffusion import balance, controls, vae
from backend.diffusion import engine as diffusion
from backend.diffusion.controls.base import GENERATED, REFERENCE, Control
from backend.diffusion.controls.distill import DISTILL

SIZE = 64


def _gen(tiny_models, reference, **kw):
    args = dict(base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]), engine="diffusion",
                variants=1, seed=0, steps=3, size=SIZE) | kw
    return generate_variants(reference, **args)


def _timesteps(pipe, steps: int) -> list[int]:
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


class Levels:
    """The noise level of every latent the schedulers produce: a forward DDIM step from t gives
    level t - 1000/steps (clean after the last), an inversion step to t gives level t."""

    def __init__(self):
        self.known: list[tuple[torch.Tensor, int]] = []

    def add(self, latents: torch.Tensor, level: int) -> None:
        self.known.append((latents.detach().clone(), level))

    def of(self, latents: torch.Tensor) -> int | None:
        latents = latents.detach()
        return next((level for known, level in self.known if known.shape == latents.shape
                     and torch.equal(known, latents)), None)

    @contextlib.contextmanager
    def tracking(self, monkeypatch):
        forward, inverse = DDIMScheduler.step, DDIMInverseScheduler.step

        def forward_step(scheduler, eps, t, sample, *a, **kw):
            out = forward(scheduler, eps, t, sample, *a, **kw)
            level = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
            if level >= 0:
                self.add(out.prev_sample, level)
            return out

        def inverse_step(scheduler, eps, t, sample, *a, **kw):
            out = inverse(scheduler, eps, t, sample, *a, **kw)
            self.add(out.prev_sample, int(t))
            return out

        monkeypatch.setattr(DDIMScheduler, "step", forward_step)
        monkeypatch.setattr(DDIMInverseScheduler, "step", inverse_step)
        yield self


class PassProbe(Control):
    """Sees every UNet pass of the call: (branch, step, timestep, the latents it denoises)."""

    def __init__(self, unet):
        self.unet, self.passes, self.handle = unet, [], None

    def setup(self, run):
        super().setup(run)
        self.handle = self.unet.register_forward_pre_hook(self._pre, with_kwargs=True)

    def _pre(self, module, args, kwargs):
        state = self.run.state
        latents, t = args[0], args[1]
        if state.branch == GENERATED and latents.shape[0] == 2 * state.latents.shape[0]:
            latents = latents.chunk(2)[1]  # classifier-free guidance: both halves are the same latents
        self.passes.append((state.branch, state.step, int(t), latents.detach().clone()))

    def record(self):
        self.handle.remove()
        return {}


@pytest.fixture
def probe(monkeypatch, pipe):
    made = []
    monkeypatch.setattr(controls, "FACTORIES", [*controls.FACTORIES, lambda *a: made.append(PassProbe(pipe.unet))
                                                or made[-1]])
    return made


@pytest.mark.parametrize(("appearance", "steps", "balance_"), [("ad", 3, 1.0), ("ad", 6, 0.5), ("kv", 6, 1.0)])
def test_every_reference_and_loss_pass_runs_at_the_level_of_the_latent_it_reads(
        tiny_models, reference, pipe, probe, monkeypatch, appearance, steps, balance_):
    timesteps = _timesteps(pipe, steps)
    window = sorted(balance.settings(balance_).window_steps(steps))
    noise = torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(0))
    diffusion.reference_cache.clear()
    with Levels().tracking(monkeypatch) as levels:
        levels.add(noise, timesteps[0])
        _gen(tiny_models, reference, latents=noise, steps=steps, balance=balance_, appearance=appearance,
             ad_iterations=2)
    passes = probe[0].passes
    reference_passes = [(step, t, x) for branch, step, t, x in passes if branch == REFERENCE]
    assert [step for step, _, _ in reference_passes] == window  # the reference branch runs the window only
    assert len([p for p in passes if p[0] == "inversion"]) == len(window)  # and is inverted only that far
    for step, t, latents in reference_passes:
        assert t == timesteps[step] and levels.of(latents) == t
    distill = [(step, t, x) for branch, step, t, x in passes if branch == DISTILL]
    assert [step for step, _, _ in distill] == ([s for s in window for _ in range(2)] if appearance == "ad" else [])
    for i, (step, t, latents) in enumerate(distill):
        assert t == timesteps[step]
        if i % 2 == 0:  # the first iteration optimises the step's own input latents, at their level
            assert levels.of(latents) == t
    generated = [(step, t, x) for branch, step, t, x in passes if branch == GENERATED]
    assert [step for step, _, _ in generated] == list(range(steps))
    for step, t, latents in generated:
        if appearance == "kv" or step not in window:  # AD's refined latents are new (checked above)
            assert levels.of(latents) == t == timesteps[step]


@contextlib.contextmanager
def damped(unet, factor: float):
    """A UNet whose noise prediction is scaled down: random weights that denoise smoothly."""
    conv = unet.conv_out
    weight, bias = conv.weight.data.clone(), conv.bias.data.clone()
    conv.weight.data *= factor
    conv.bias.data *= factor
    try:
        yield
    finally:
        conv.weight.data, conv.bias.data = weight, bias


@settings(max_examples=8, deadline=None)
@given(steps=st.integers(3, 10), fraction=st.floats(0.05, 0.9), seed=st.integers(0, 2**16))
def test_the_window_only_reference_branch_reconstructs_no_worse_than_the_full_replay(pipe, steps, fraction, seed):
    window = balance.settings(window=fraction).window_steps(steps)
    if not window:
        return
    rng = np.random.default_rng(seed)
    image = Image.fromarray((rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8))
    with torch.no_grad(), damped(pipe.unet, 0.3):
        pipe.set_ip_adapter_scale(1.0)
        cond = diffusion.encode_conditioning(pipe, image, "", "")
        latents0 = vae.encode_reference(pipe, image, SIZE)
        loop = diffusion.Loop(pipe, cond, steps, diffusion.Progress(total=10**6))
        trajectory = []
        loop.invert(latents0, count=steps, trajectory=trajectory)
        start = min(window)
        partial = loop.denoise(trajectory[steps - start - 1], 1.0, REFERENCE, start=start)
        full = loop.denoise(trajectory[-1], 1.0, REFERENCE)

    def error(x):
        return float((x - latents0).pow(2).mean().sqrt())

    assert error(partial) <= error(full) + 1e-6
    if len(window) < steps:
        assert error(partial) < error(full)


def _passes(tiny_models, reference, **kw) -> int:
    totals = []
    _gen(tiny_models, reference, on_step=lambda done, total, preview: totals.append(total), **kw)
    return totals[-1]


def test_a_longer_window_continues_the_cached_inversion_and_each_window_keeps_its_recordings(tiny_models, reference):
    steps = 6
    narrow, wide = (len(balance.settings(b).window_steps(steps)) for b in (0.5, 1.0))
    assert 0 < narrow < wide < steps
    diffusion.reference_cache.clear()
    assert _passes(tiny_models, reference, steps=steps, balance=0.5) == steps + 2 * narrow
    continued = _gen(tiny_models, reference, steps=steps, balance=1.0, seed=3)
    # the wider window: only the inversion steps the cache lacks, then its own reference branch
    assert _passes(tiny_models, reference, steps=steps, balance=1.0, seed=4) == steps
    assert len(diffusion.reference_cache) == 1
    assert _passes(tiny_models, reference, steps=steps, balance=0.5) == steps  # both windows' recordings kept
    diffusion.reference_cache.clear()
    assert _passes(tiny_models, reference, steps=steps, balance=1.0, seed=4) == steps + 2 * wide
    fresh = _gen(tiny_models, reference, steps=steps, balance=1.0, seed=3)
    assert np.array_equal(np.asarray(continued[0]), np.asarray(fresh[0]))  # continuing changes nothing


def test_a_continued_inversion_runs_only_the_missing_steps(tiny_models, reference):
    steps = 6
    narrow, wide = (len(balance.settings(b).window_steps(steps)) for b in (0.5, 1.0))
    diffusion.reference_cache.clear()
    _gen(tiny_models, reference, steps=steps, balance=0.5)
    assert _passes(tiny_models, reference, steps=steps, balance=1.0) == steps + (wide - narrow) + wide


def test_the_image_encoder_runs_once_per_texture(tiny_models, reference, pipe):
    """The image prompt is encoded once per texture (the report card's CLIP-I encodes the variants
    each call, apart from the image prompt: not counted here)."""
    calls = []
    encode = pipe.prepare_ip_adapter_image_embeds

    def counted(*args, **kwargs):
        calls.append(1)
        return encode(*args, **kwargs)

    pipe.prepare_ip_adapter_image_embeds = counted
    try:
        diffusion.image_embeds_cache.clear()
        plain = _gen(tiny_models, reference, appearance="none")
        again = _gen(tiny_models, reference, appearance="none", seed=1)
        _gen(tiny_models, reference, appearance="kv")
        assert len(calls) == 1
        assert np.array_equal(np.asarray(_gen(tiny_models, reference, appearance="none")[0]), np.asarray(plain[0]))
        assert not np.array_equal(np.asarray(again[0]), np.asarray(plain[0]))
        _gen(tiny_models, Image.fromarray(255 - np.asarray(reference)), appearance="none")
        assert len(calls) == 2  # another texture is encoded
    finally:
        del pipe.prepare_ip_adapter_image_embeds


@pytest.mark.parametrize(("steps", "balance_"), [(1, 0.5), (2, 0.25), (1, 1.0 / 3)])
def test_a_window_that_rounds_to_no_step_is_reported(tiny_models, reference, caplog, steps, balance_):
    assert not balance.settings(balance_).window_steps(steps)
    with caplog.at_level(logging.WARNING, logger="backend.diffusion.engine"):
        image = _gen(tiny_models, reference, steps=steps, balance=balance_)[0]
    warnings = json.loads(image.info["parameters"])["warnings"]
    assert len(warnings) == 1 and "rounds to no step" in warnings[0] and "plain IP-Adapter" in warnings[0]
    assert warnings[0] in caplog.text


def test_no_warning_when_the_window_has_a_step_or_none_was_asked_for(tiny_models, reference):
    for kw in (dict(steps=3, balance=0.5), dict(steps=1, balance=0.0), dict(steps=1, appearance="none")):
        assert "warnings" not in json.loads(_gen(tiny_models, reference, **kw)[0].info["parameters"])
