"""The diffusion engine on the tiny random-weight models: tiling, kv replacement, inversion, cache, API.

Random weights make pictures that are noise, but every property here is about the computation
(periodicity, which K/V each branch attends with, determinism, what is cached), which does not
depend on what the weights are.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from backend import generate_variants
from backend.diffusion import balance, vae
from backend.diffusion import engine as diffusion
from backend.diffusion.balance import DEFAULT_BLOCKS
from backend.diffusion.controls.attention import self_attention_layers
from backend.diffusion.controls.base import GENERATED, REFERENCE, Control, Run, StepState
from backend.diffusion.controls.kv import KVReplacement
from backend.diffusion.tiling import tiling
from backend.errors import CancelledError, InputError

SIZE, STEPS = 64, 3


def _gen(tiny_models, reference, **kw):
    args = dict(base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]), engine="diffusion",
                variants=1, seed=0, steps=STEPS, size=SIZE)
    args.update(kw)
    return generate_variants(reference, **args)


def _arr(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


def _conv_patches(pipe) -> int:
    return sum("_conv_forward" in m.__dict__ for m in [*pipe.unet.modules(), *pipe.vae.modules()])


# ------------------------------------------------------------------ tiling


@pytest.mark.parametrize("appearance", ["kv", "none"])
def test_rolling_the_initial_latents_by_8_rolls_the_image_by_64(tiny_models, reference, pipe, appearance):
    size = 128  # 16x16 latents: a roll of 8 is a whole cell at every UNet resolution
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    kw = dict(size=size, steps=2, appearance=appearance)
    a = _arr(_gen(tiny_models, reference, latents=noise, **kw)[0])
    b = _arr(_gen(tiny_models, reference, latents=torch.roll(noise, (8, 8), (2, 3)), **kw)[0])
    assert np.abs(np.roll(a, (64, 64), (0, 1)) - b).max() <= 2 / 255
    # and the image itself wraps: the step across its border is like any interior step
    border = np.abs(a[:, 0] - a[:, -1]).mean()
    interior = np.median([np.abs(a[:, i] - a[:, i + 1]).mean() for i in range(size - 1)])
    assert border < 3 * interior
    assert _conv_patches(pipe) == 0, "circular padding must be undone after the call"


def test_tile_none_is_not_periodic_and_tile_x_only_along_x(tiny_models, reference):
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    kw = dict(size=128, steps=2, appearance="none")
    rolled_y, rolled_x = torch.roll(noise, 8, 2), torch.roll(noise, 8, 3)

    def err(tile, latents, shift):
        a = _arr(_gen(tiny_models, reference, latents=noise, tile=tile, **kw)[0])
        b = _arr(_gen(tiny_models, reference, latents=latents, tile=tile, **kw)[0])
        return np.abs(np.roll(a, shift, (0, 1)) - b).max()

    assert err("none", rolled_x, (0, 64)) > 10 / 255
    assert err("x", rolled_x, (0, 64)) <= 2 / 255
    assert err("x", rolled_y, (64, 0)) > 10 / 255


@settings(max_examples=15, deadline=None)
@given(mode=st.sampled_from(["both", "x", "y"]), shift=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_tiling_makes_any_conv_stack_shift_equivariant_on_its_axes(mode, shift, seed):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.SiLU(),
                              torch.nn.Conv2d(3, 2, 5, padding=2), torch.nn.Conv2d(2, 2, 1))
    x = torch.randn(1, 2, 12, 12)
    dims = {"both": (2, 3), "x": (3,), "y": (2,)}[mode]
    shifts = (shift,) * len(dims)
    with torch.no_grad():
        with tiling(mode, net) as patched:
            assert len(patched) == 2  # the 1x1 convolution has no padding to wrap
            out = net(x)
            out_rolled = net(torch.roll(x, shifts, dims))
        plain = net(x)
    torch.testing.assert_close(torch.roll(out, shifts, dims), out_rolled, atol=1e-5, rtol=1e-5)
    assert not any("_conv_forward" in m.__dict__ for m in net.modules())
    if mode == "both":  # wrapping both axes is exactly PyTorch's own circular padding
        circular = [torch.nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, padding=c.padding,
                                    padding_mode="circular") for c in (net[0], net[2])]
        for c, src in zip(circular, (net[0], net[2]), strict=True):
            c.load_state_dict(src.state_dict())
        with torch.no_grad():
            ref = net[3](circular[1](net[1](circular[0](x))))
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(torch.roll(plain, shifts, dims), net(torch.roll(x, shifts, dims)), atol=1e-4)


def test_decoding_one_at_a_time_keeps_the_pictures_and_their_periodicity(tiny_models, reference):
    noise = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    kw = dict(size=128, steps=2, variants=2, appearance="none")
    batched = [_arr(im) for im in _gen(tiny_models, reference, latents=noise, **kw)]
    single = [_arr(im) for im in _gen(tiny_models, reference, latents=noise, decode_one_at_a_time=True, **kw)]
    rolled = [_arr(im) for im in _gen(tiny_models, reference, latents=torch.roll(noise, (8, 8), (2, 3)),
                                      decode_one_at_a_time=True, **kw)]
    for a, b, c in zip(batched, single, rolled, strict=True):
        assert np.abs(a - b).max() <= 2 / 255
        assert np.abs(np.roll(b, (64, 64), (0, 1)) - c).max() <= 2 / 255


@pytest.mark.parametrize("mode", ["both", "x", "y"])
def test_tiling_makes_one_padded_copy_per_convolution_and_zero_pads_the_other_axis(mode, monkeypatch):
    from backend.diffusion import tiling as tiling_module

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, (3, 5), padding=(1, 2))
    x = torch.randn(2, 3, 9, 11)
    pads = []
    real_wrap_pad, real_pad = tiling_module.wrap_pad, torch.nn.functional.pad
    monkeypatch.setattr(tiling_module, "wrap_pad", lambda *a: pads.append(a[1:]) or real_wrap_pad(*a))
    with torch.no_grad(), tiling(mode, conv):
        out = conv(x)
    monkeypatch.undo()
    wrap_x, wrap_y = mode in ("both", "x"), mode in ("both", "y")
    assert pads == [(2 if wrap_x else 0, 1 if wrap_y else 0)]  # one padded copy, of the wrapped axes only
    # the reference: wrap the tiled axes, zero-pad the others, convolve without padding
    expected = real_pad(x, (2, 2, 0, 0), mode="circular" if wrap_x else "constant")
    expected = real_pad(expected, (0, 0, 1, 1), mode="circular" if wrap_y else "constant")
    with torch.no_grad():
        torch.testing.assert_close(out, torch.nn.functional.conv2d(expected, conv.weight, conv.bias))


# ------------------------------------------------------------------ kv replacement, instrumented


def _kv_control(pipe, steps):
    """kv replacement at balance 0.5 as the engine builds it, set up for a call of `steps` steps."""
    control, run = KVReplacement(balance.settings(0.5), steps), Run(pipe, StepState(steps=steps))
    control.setup(run)
    return control, run


def _loop(pipe, cond, steps, controls=(), state=None, total=10**6):
    return diffusion.Loop(pipe, cond, steps, diffusion.Progress(total=total), controls, state)


def _reference_work(pipe, reference, steps, controls=(), state=None, iterations=0):
    cond = diffusion.encode_conditioning(pipe, reference, "", "")
    loop = _loop(pipe, cond, steps, controls, state)
    latents0 = vae.encode_reference(pipe, reference, SIZE)
    inverted = loop.invert(latents0, iterations)
    reconstructed = loop.denoise(inverted, 1.0, REFERENCE)
    return cond, latents0, inverted, reconstructed


class _ProcessorProbe(Control):
    """Keeps the UNet's processors as each branch sees them at its first step."""

    def __init__(self, unet):
        self.unet, self.seen = unet, {}

    def before_step(self, state):
        self.seen.setdefault(state.branch, dict(self.unet.attn_processors))
        return state.latents


def test_generated_branch_uses_exactly_the_reference_kv_inside_the_window_only(pipe, reference):
    steps = 4
    layers = self_attention_layers(pipe.unet, DEFAULT_BLOCKS)
    assert len(layers) == 6 and all(n.startswith(("up_blocks.2.", "up_blocks.3.")) and n.endswith("attn1")
                                    for n in layers)
    window = balance.settings(0.5).window_steps(steps)
    control, run = _kv_control(pipe, steps)
    controller, probe = control.kv, _ProcessorProbe(pipe.unet)
    events, own_keys = [], []
    controller.observer = lambda layer, step, branch, action, hidden, key, value: events.append(
        (layer, step, branch, action, key.clone(), value.clone()))

    # to_k of every self-attention layer: called when a branch computes its own keys
    hooks = []
    for name, module in pipe.unet.named_modules():
        if name.endswith("attn1"):
            hooks.append(module.to_k.register_forward_hook(
                lambda m, i, o, name=name: own_keys.append((name, run.state.branch, run.state.step))))
    original = dict(pipe.unet.attn_processors)
    try:
        with torch.no_grad():
            _reference_work(pipe, reference, steps, [control, probe], run.state)
            noise = torch.randn(2, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(0))
            cond = diffusion.encode_conditioning(pipe, reference, "", "")
            _loop(pipe, cond, steps, [control, probe], run.state, total=steps).denoise(noise, 7.5, GENERATED)
    finally:
        for h in hooks:
            h.remove()
    assert dict(pipe.unet.attn_processors) == original
    for installed in probe.seen.values():
        for name, proc in installed.items():
            if name.removesuffix(".processor") not in layers:
                assert proc is original[name]  # other layers (and IP-Adapter's) untouched

    recorded = {(layer, step): (k, v) for layer, step, branch, action, k, v in events if branch == REFERENCE}
    replaced = [(layer, step, k, v) for layer, step, branch, action, k, v in events if branch == GENERATED]
    assert set(recorded) == {(name, s) for name in layers for s in window}
    assert {(layer, step) for layer, step, *_ in replaced} == set(recorded)
    for layer, step, key, value in replaced:
        ref_key, ref_value = recorded[(layer, step)]
        assert key.shape[0] == 4  # 2 variants x (unconditional, conditional)
        assert torch.equal(key, ref_key.expand_as(key)) and torch.equal(value, ref_value.expand_as(value))
    generated_own = {(name, step) for name, branch, step in own_keys if branch == GENERATED}
    all_attn1 = {name for name, _, _ in own_keys}
    assert len(all_attn1) == 16 and generated_own == {
        (name, s) for name in all_attn1 for s in range(steps) if not (name in layers and s in window)}


def test_generated_branch_from_the_inverted_noise_reproduces_the_reference_branch(pipe, reference):
    steps = 4
    control, run = _kv_control(pipe, steps)
    with torch.no_grad(), tiling("both", pipe.unet):
        cond, _, inverted, reconstructed = _reference_work(pipe, reference, steps, [control], run.state)
        generated = _loop(pipe, cond, steps, [control], run.state, total=steps).denoise(inverted.clone(), 1.0,
                                                                                       GENERATED)
    torch.testing.assert_close(generated, reconstructed, atol=1e-5, rtol=1e-5)


def test_kv_changes_the_output_and_balance_zero_equals_plain_ip_adapter(tiny_models, reference):
    plain = _arr(_gen(tiny_models, reference, appearance="none")[0])
    at_zero = _arr(_gen(tiny_models, reference, appearance="kv", balance=0.0)[0])
    kv = _arr(_gen(tiny_models, reference, appearance="kv", balance=1.0)[0])
    assert np.array_equal(plain, at_zero)  # an empty window replaces nothing
    # on random weights the swapped attention moves the picture only a little (the tiny VAE
    # flattens latent differences), but it moves it
    assert not np.array_equal(kv, plain)


# ------------------------------------------------------------------ inversion


def test_inversion_then_reconstruction_returns_to_the_reference_latents(pipe, reference):
    """Stated bound: RMS error <= 0.1 latent units (the noise has std 1) after 20 steps with 6
    fixed-point refinements per inversion step.

    Random weights make the noise prediction swing with the latent, the worst case for DDIM
    inversion: plain inversion (no refinement) lands several times farther off on them.
    """
    with torch.no_grad():
        _, latents0, _, refined = _reference_work(pipe, reference, 20, iterations=6)
        _, _, _, plain = _reference_work(pipe, reference, 20, iterations=0)
    error = (refined - latents0).pow(2).mean().sqrt().item()
    plain_error = (plain - latents0).pow(2).mean().sqrt().item()
    assert error <= 0.1
    assert plain_error > 3 * error


# ------------------------------------------------------------------ cache


def test_second_call_on_the_same_reference_does_no_reference_work(tiny_models, reference):
    diffusion.reference_cache.clear()
    before = dict(diffusion.counters)
    first = _gen(tiny_models, reference, seed=5)
    assert diffusion.counters["inversions"] == before["inversions"] + 1
    assert diffusion.counters["reference_branches"] == before["reference_branches"] + 1
    steps_seen = []
    second = _gen(tiny_models, reference, seed=5, on_step=lambda s, t, p: steps_seen.append(t))
    assert diffusion.counters["inversions"] == before["inversions"] + 1
    assert diffusion.counters["reference_branches"] == before["reference_branches"] + 1
    assert set(steps_seen) == {STEPS}  # only the generated branch ran
    assert np.array_equal(_arr(first[0]), _arr(second[0]))
    assert json.loads(second[0].info["parameters"])["reference_cached"] is True
    # another texture misses
    other = Image.fromarray(255 - np.asarray(reference))
    _gen(tiny_models, other, seed=5)
    assert diffusion.counters["inversions"] == before["inversions"] + 2


def test_reference_cache_evicts_least_recently_used_beyond_its_byte_budget():
    from backend.diffusion.reference_cache import ReferenceCache, ReferenceWork

    def work():
        return ReferenceWork(trajectory=[torch.zeros(256)])  # 1 KiB

    cache = ReferenceCache(max_bytes=2 * 1024)
    cache.put("a", work())
    cache.put("b", work())
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", work())
    assert "a" in cache and "c" in cache and "b" not in cache
    assert cache.nbytes() <= 2 * 1024
    cache.put("huge", ReferenceWork(trajectory=[torch.zeros(4096)]))
    assert "huge" not in cache


# ------------------------------------------------------------------ API contract


def test_same_seed_same_images_different_seed_different_and_variants_reproducible_alone(tiny_models, reference):
    a = _gen(tiny_models, reference, variants=2, seed=11)
    b = _gen(tiny_models, reference, variants=2, seed=11)
    c = _gen(tiny_models, reference, variants=1, seed=12)
    assert [np.array_equal(_arr(x), _arr(y)) for x, y in zip(a, b, strict=True)] == [True, True]
    assert np.abs(_arr(a[0]) - _arr(a[1])).mean() > 1 / 255
    # variant 1 of seed 11 is seed 12, and generating it alone gives the same picture
    assert json.loads(a[1].info["parameters"])["seed"] == 12
    assert np.abs(_arr(a[1]) - _arr(c[0])).max() <= 2 / 255
    params = json.loads(a[0].info["parameters"])
    assert params["engine"] == "diffusion" and params["appearance"] == "kv" and params["seed"] == 11
    assert params["kv_blocks"] == ["up_blocks.2", "up_blocks.3"] and params["kv_window_steps"] == [2]
    assert a[0].size == (SIZE, SIZE) and a[0].mode == "RGB"


def test_cancel_stops_within_one_step_and_leaves_the_models_clean(tiny_models, reference, pipe):
    diffusion.reference_cache.clear()
    cancel = threading.Event()
    seen = []

    def on_step(step, total, preview):
        seen.append(step)
        if step == 2:
            cancel.set()

    original = dict(pipe.unet.attn_processors)
    with pytest.raises(CancelledError):  # 6 steps: the reference work (window of 2) takes 4 passes
        _gen(tiny_models, reference, on_step=on_step, cancel=cancel, seed=3, steps=6)
    assert seen == [1, 2]
    assert dict(pipe.unet.attn_processors) == original and _conv_patches(pipe) == 0
    assert len(diffusion.reference_cache) == 0  # half-done reference work is not kept


def test_on_step_reports_every_pass_with_previews_of_the_generated_branch(tiny_models, reference):
    diffusion.reference_cache.clear()
    calls = []
    _gen(tiny_models, reference, seed=4, on_step=lambda s, t, p: calls.append((s, t, p)))
    window = len(balance.settings().window_steps(STEPS))
    total = 2 * window + STEPS  # inversion and reference branch up to / through the window, generated branch
    assert [(s, t) for s, t, _ in calls] == [(i, total) for i in range(1, total + 1)]
    assert all(p is None for _, _, p in calls[:-STEPS])
    previews = [p for _, _, p in calls[-STEPS:]]
    assert all(isinstance(p, Image.Image) and p.size == (SIZE // 8, SIZE // 8) for p in previews)


def test_latents_of_the_wrong_shape_and_unknown_extras_are_refused(tiny_models, reference):
    with pytest.raises(InputError, match="latents have shape"):
        _gen(tiny_models, reference, latents=torch.zeros(1, 4, 4, 4))
    with pytest.raises(InputError, match="unknown parameter"):
        _gen(tiny_models, reference, kv_windw=0.5)
    with pytest.raises(InputError, match="no self-attention layers"):
        _gen(tiny_models, reference, kv_blocks=["up_blocks.9"])


def test_grayscale_non_square_alpha_reference_gives_a_square_grayscale_variant(tiny_models, tmp_path, reference):
    gray = reference.convert("L").resize((96, 64))
    rgba = Image.merge("LA", (gray, Image.new("L", gray.size, 128)))
    path = tmp_path / "gray_alpha.png"
    rgba.save(path)
    out = _gen(tiny_models, str(path))[0]
    assert out.size == (SIZE, SIZE) and out.mode == "L"


# ------------------------------------------------------------------ balance


@settings(max_examples=50, deadline=None)
@given(a=st.floats(0, 1), b=st.floats(0, 1), steps=st.integers(1, 200))
def test_balance_maps_monotonically_to_a_window_at_the_end(a, b, steps):
    lo, hi = sorted((a, b))
    w_lo, w_hi = balance.settings(lo).window_steps(steps), balance.settings(hi).window_steps(steps)
    assert w_lo <= w_hi
    assert w_hi == frozenset(range(steps - len(w_hi), steps))  # always the final steps


def test_balance_default_is_the_recipe():
    s = balance.settings(0.5)
    assert s.blocks == ("up_blocks.2", "up_blocks.3") and s.ip_scale == 1.0
    assert s.window_steps(30) == frozenset(range(20, 30))  # the final third
    assert balance.settings(0.0).window_steps(30) == frozenset()
    assert balance.settings(0.5, ip_scale=0.3, window=0.1).window_steps(30) == frozenset(range(27, 30))
