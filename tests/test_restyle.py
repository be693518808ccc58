"""Restyle (Plug-and-Play features under a text prompt, masks) on the tiny random-weight models.

Random weights make noise pictures; every property here is about the computation: which features
are injected where and when, what the mask lets through, what stays the input's, periodicity.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from backend import generate_variants, masks, restyle, sam
from backend.cli import main
from backend.diffusion import controls, vae
from backend.diffusion import engine as diffusion
from backend.diffusion.controls import pnp
from backend.diffusion.controls import restyle as restyle_control
from backend.diffusion.controls.base import GENERATED, REFERENCE, Control
from backend.errors import InputError, ModelsMissingError
from backend.framing import center_square

SIZE = 64
PNP_BLOCKS = {f"up_blocks.1.attentions.{i}" for i in (1, 2)} | {
    f"up_blocks.{b}.attentions.{i}" for b in (2, 3) for i in range(3)}


def _restyle(tiny_models, reference, prompt="mossy stones", **kw):
    args = dict(base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]), seed=0, steps=3,
                size=SIZE) | kw
    return restyle(reference, prompt, **args)


class _Probe(Control):
    """Keeps, per branch, the processors installed and the modules with forward hooks at its first step."""

    def __init__(self, unet):
        self.unet, self.installed, self.hooked = unet, {}, {}

    def before_step(self, state):
        if state.branch not in self.installed:
            self.installed[state.branch] = dict(self.unet.attn_processors)
            self.hooked[state.branch] = {name for name, m in self.unet.named_modules() if m._forward_hooks}
        return state.latents


@pytest.fixture
def observed(monkeypatch, pipe):
    """Every restyle control built gets an observer; events: (layer, step, branch, action, own, used)."""
    events, probe = [], _Probe(pipe.unet)

    def factory(params, spec, settings):
        control = restyle_control.from_params(params, spec, settings)
        if control is not None:
            control.observer = lambda *event: events.append(event)
        return control

    factories = [f for f in controls.FACTORIES if f is not restyle_control.from_params]
    monkeypatch.setattr(controls, "FACTORIES", [*factories, factory, lambda *a: probe])
    return events, probe


def _mask_file(tmp_path, array: np.ndarray, name="mask.png"):
    path = tmp_path / name
    Image.fromarray(array.astype(np.uint8), "L").save(path)
    return path


# ------------------------------------------------------------------ injection: layers, steps, mask


def test_injection_is_exactly_in_the_documented_layers_and_step_windows(tiny_models, reference, pipe, observed):
    events, probe = observed
    steps = 10
    diffusion.reference_cache.clear()
    totals = []
    image = _restyle(tiny_models, reference, steps=steps, on_step=lambda d, t, p: totals.append(t))[0]
    resnet_steps, attention_steps = pnp.windows(0.5, steps)
    assert resnet_steps == set(range(8)) and attention_steps == set(range(5))  # the paper's 80 % / 50 %
    layers = pnp.attention_layers(pipe.unet)
    assert {name.rsplit(".transformer_blocks", 1)[0] for name in layers} == PNP_BLOCKS and len(layers) == 8
    expected = {(pnp.RESNET, s) for s in resnet_steps} | {(layer, s) for layer in layers for s in attention_steps}
    recorded = {(e[0], e[1]): e for e in events if e[2] == REFERENCE}
    injected = {(e[0], e[1]): e for e in events if e[2] == GENERATED}
    assert set(recorded) == expected and set(injected) == expected
    assert {e[3] for e in recorded.values()} == {"record"} and {e[3] for e in injected.values()} == {"inject"}
    for key, (_, _, _, _, own, used) in injected.items():
        reference_used = recorded[key][5]
        for got, ref, mine in zip(used, reference_used, own, strict=True):
            assert got.shape[0] == 2  # both guidance halves of the one variant
            assert torch.equal(got, ref.expand_as(got))  # no mask: the reference's feature, unchanged
            assert not torch.equal(got, mine)
    # every other layer runs its own processor; the one hook sits on the resnet's second convolution
    injecting = {name + ".processor" for name in layers}
    for name, proc in probe.installed[GENERATED].items():
        assert (type(proc) is pnp.InjectQK) == (name in injecting), name
    assert probe.hooked[GENERATED] == probe.hooked[REFERENCE] == {pnp.RESNET + ".conv2"}
    assert not any(m._forward_hooks for m in pipe.unet.modules())  # removed after the call
    assert totals[-1] == 3 * steps  # inversion, reference branch (from step 0: the windows start there), generated
    record = json.loads(image.info["parameters"])
    assert record["pnp_attention_steps"] == sorted(attention_steps) and record["pnp_resnet"] == pnp.RESNET
    assert "restyle_mask" not in image.info


def test_keep_structure_injects_the_source_inside_the_mask_and_the_own_feature_outside(
        tiny_models, reference, pipe, tmp_path, observed):
    events, _ = observed
    painted = np.zeros((128, 128))
    painted[:64, :64] = 255  # the top-left quadrant: whole cells of every feature grid (2x2 and finer)
    image = _restyle(tiny_models, reference, mask=_mask_file(tmp_path, painted))[0]
    recorded = {(e[0], e[1]): e[5] for e in events if e[2] == REFERENCE}
    injected = [e for e in events if e[2] == GENERATED]
    assert {e[0] for e in injected} == {pnp.RESNET} | set(pnp.attention_layers(pipe.unet))
    for layer, step, _, _, own, used in injected:
        for got, ref, mine in zip(used, recorded[(layer, step)], own, strict=True):
            ref = ref.expand_as(got)
            if layer == pnp.RESNET:  # (batch, channels, h, w)
                h, w = got.shape[2:]
                inside = torch.zeros(h, w, dtype=torch.bool)
                inside[: h // 2, : w // 2] = True
                inside = inside.expand_as(got)
            else:  # (batch, heads, tokens, head_dim), tokens row-major over a square grid
                side = int(got.shape[2] ** 0.5)
                grid = torch.zeros(side, side, dtype=torch.bool)
                grid[: side // 2, : side // 2] = True
                inside = grid.reshape(1, 1, -1, 1).expand_as(got)
            torch.testing.assert_close(got[inside], ref[inside], rtol=0, atol=1e-6)
            torch.testing.assert_close(got[~inside], mine[~inside], rtol=0, atol=1e-6)
            assert not torch.allclose(ref[~inside], mine[~inside])
    written = np.asarray(image.info["restyle_mask"])
    assert written.shape == (SIZE, SIZE) and written[:32, :32].min() == 255 and written[32:].max() == 0


def test_strength_moves_both_windows_monotonically_from_everything_to_nothing():
    steps = 20
    sizes = [tuple(len(w) for w in pnp.windows(s, steps)) for s in np.linspace(0, 1, 11)]
    assert sizes[0] == (steps, steps) and sizes[-1] == (0, 0) and sizes[5] == (16, 10)
    assert all(a >= b for pair in zip(sizes, sizes[1:], strict=False) for a, b in zip(*pair, strict=True))
    for strength in (0.2, 0.7):
        resnet, attention = pnp.windows(strength, steps)
        assert resnet == set(range(len(resnet))) and attention == set(range(len(attention)))  # from the first step


# ------------------------------------------------------------------ edit-inside


class _BlackMask:
    """A mask source that selects nothing (users cannot give one: masks.require_selection refuses it)."""

    def fit(self, reference, size, device):
        return np.zeros((size[1], size[0]), np.float32)


def test_edit_inside_with_an_all_black_mask_returns_the_input_texture(tiny_models, reference, monkeypatch):
    def factory(params, spec, settings):
        control = restyle_control.from_params(params, spec, settings)
        if control is not None:
            control.source = _BlackMask()
        return control

    monkeypatch.setattr(controls, "FACTORIES", [f if f is not restyle_control.from_params else factory
                                                for f in controls.FACTORIES])
    out = _restyle(tiny_models, reference, mask_mode="edit-inside", points=[[5, 5]], sam=str(tiny_models["sam"]),
                   variants=2)
    original = np.asarray(center_square(reference, SIZE))
    for image in out:
        assert np.array_equal(np.asarray(image), original)


def test_edit_inside_keeps_the_original_pixels_far_outside_the_mask(tiny_models, reference, tmp_path):
    size = 128
    painted = np.zeros((128, 128))
    painted[40:70, 50:90] = 255
    out = _restyle(tiny_models, reference, size=size, mask=_mask_file(tmp_path, painted), mask_mode="edit-inside")[0]
    result, original = np.asarray(out).astype(int), np.asarray(center_square(reference, size)).astype(int)
    selected = np.asarray(out.info["restyle_mask"]) > 0
    reach = max(1, int(np.ceil(size * restyle_control.FEATHER)))
    near = np.zeros_like(selected)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            near |= np.roll(selected, (dy, dx), (0, 1))
    assert near.mean() < 0.2
    assert np.array_equal(result[~near], original[~near])
    assert np.abs(result[selected] - original[selected]).mean() > 1  # inside, the texture changed


# ------------------------------------------------------------------ tiling


@pytest.mark.parametrize("mode, start", [("keep-structure", "inverted"), ("keep-structure", "noise"),
                                         ("edit-inside", "inverted")])
def test_rolled_input_noise_and_mask_roll_the_result_exactly(tiny_models, reference, tmp_path, monkeypatch, mode,
                                                              start):
    """Tiled: rolling everything the result depends on by half the image rolls the result by as much.

    The VAE encoder reads the input as a (non-periodic) photo, so the rolled run gets the rolled
    latents of the unrolled input; the rest (inversion, both branches, the mask at every
    resolution, the feathering) is the engine's own, tiled computation."""
    size, shift = 128, 64
    painted = np.zeros((128, 128))
    painted[10:60, 20:100] = 255
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    rolled_input = Image.fromarray(np.roll(np.asarray(reference), (shift, shift), (0, 1)))
    kw = dict(size=size, steps=2, mask_mode=mode, restyle_start=start)
    diffusion.reference_cache.clear()
    a = _restyle(tiny_models, reference, latents=noise, mask=_mask_file(tmp_path, painted), **kw)[0]
    encode = vae.encode_reference

    def encode_rolled(pipe, image, size, layout=None):
        unrolled = Image.fromarray(np.roll(np.asarray(image), (-shift, -shift), (0, 1)))
        return torch.roll(encode(pipe, unrolled, size, layout), (shift // 8, shift // 8), (2, 3))

    monkeypatch.setattr(vae, "encode_reference", encode_rolled)
    b = _restyle(tiny_models, rolled_input, latents=torch.roll(noise, (8, 8), (2, 3)),
                 mask=_mask_file(tmp_path, np.roll(painted, (shift, shift), (0, 1)), "rolled.png"), **kw)[0]
    diffusion.reference_cache.clear()
    assert np.array_equal(np.roll(np.asarray(a.info["restyle_mask"]), (shift, shift), (0, 1)),
                          np.asarray(b.info["restyle_mask"]))
    rolled_a = np.roll(np.asarray(a).astype(int), (shift, shift), (0, 1))
    assert np.abs(rolled_a - np.asarray(b).astype(int)).max() <= 2


def test_feathering_wraps_on_tiled_axes_only():
    mask = torch.zeros(1, 1, 64, 64, dtype=torch.float64)
    mask[..., 20:30, 0:4] = 1  # touches the left border
    both, none = restyle_control.feather(mask, "both"), restyle_control.feather(mask, "none")
    assert both[0, 0, 25, -1] > 0 and none[0, 0, 25, -1] == 0  # across the seam only when tiled
    torch.testing.assert_close(restyle_control.feather(torch.roll(mask, (7, 9), (2, 3)), "both"),
                               torch.roll(both, (7, 9), (2, 3)))
    assert both[0, 0, 40:, 20:].max() == 0  # beyond the feather radius: exactly nothing


# ------------------------------------------------------------------ masks and SAM


def test_sam_points_give_a_mask_of_the_output_size_written_beside_the_result(tiny_models, color_texture_path,
                                                                             tmp_path, capsys):
    args = ["restyle", str(color_texture_path), "--prompt", "rusty", "--out", str(tmp_path / "out"),
            "--point", "30,40", "--point", "100,90,0", "--sam", str(tiny_models["sam"]), "--base",
            str(tiny_models["base"]), "--ip-adapter", str(tiny_models["ip_adapter"]), "--steps", "2", "--size",
            str(SIZE), "--seed", "1", "--no-preview"]
    assert main(args) == 0
    written = capsys.readouterr().out.split()
    result, mask = (tmp_path / "out" / n for n in ("gravel_color-restyle-s1.png", "gravel_color-restyle-s1-mask.png"))
    assert [str(result), str(mask)] == written
    used = Image.open(mask)
    assert used.size == (SIZE, SIZE) and used.mode == "L"
    source = Image.open(color_texture_path).convert("RGB")
    selected = sam.segment(source, ((30, 40, 1), (100, 90, 0)), None, sam.resolve_sam(tiny_models["sam"]), "cpu")
    assert np.array_equal(np.asarray(used), np.asarray(masks.mask_image(masks.fit_mask(selected, source.size, SIZE))))
    assert json.loads(Image.open(result).text["parameters"])["mask_points"] == [[30, 40, 1], [100, 90, 0]]
    assert main(args) == 0  # again: new names, nothing overwritten
    assert capsys.readouterr().out.split() == [str(result).replace("-s1.png", "-s1-2.png"),
                                               str(mask).replace("-s1-mask", "-s1-2-mask")]


@pytest.mark.parametrize("kw, match", [
    (dict(points=[[200, 5]]), "outside the 128x128 px input"),
    (dict(points=[[5, -1]]), "outside"),
    (dict(points=[[5, 5, 0]]), "only exclude"),
    (dict(box=[0, 0, 129, 50]), "reaches outside"),
    (dict(points=[[5, 5, 2]]), "invalid mask_points"),
])
def test_invalid_points_are_refused_with_what_to_do(tiny_models, reference, kw, match):
    with pytest.raises(InputError, match=match) as e:
        _restyle(tiny_models, reference, sam=str(tiny_models["sam"]), **kw)
    assert e.value.hint


def test_bad_masks_are_refused_with_what_to_do(tiny_models, reference, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    cases = [(dict(mask=text), "mask: not a readable image"),
             (dict(mask=_mask_file(tmp_path, np.zeros((50, 50)), "black.png")), "selects nothing"),
             (dict(mask=_mask_file(tmp_path, np.full((50, 80), 255), "wide.png")), "aspect ratios differ"),
             (dict(mask=tmp_path / "missing.png"), "not found"),
             (dict(mask=_mask_file(tmp_path, np.full((50, 50), 255), "white.png"), points=[[1, 1]]), "not both"),
             (dict(mask_mode="edit-inside"), "no mask was given"),
             (dict(points=[[1, 1]], sam=str(tmp_path)), "no config.json")]
    for kw, match in cases:
        with pytest.raises((InputError, ModelsMissingError), match=match) as e:
            _restyle(tiny_models, reference, **kw)
        assert e.value.hint, match
    models = dict(base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]), engine="diffusion")
    with pytest.raises(InputError, match="without restyle_prompt"):
        generate_variants(reference, mask_mode="edit-inside", **models)
    with pytest.raises(InputError, match="appearance"):
        generate_variants(reference, restyle_prompt="moss", **models)


def test_a_mask_of_any_size_with_the_inputs_aspect_is_read_like_the_input():
    quarter = Image.fromarray(np.kron(np.eye(2), np.ones((30, 45))).astype(np.uint8) * 255, "L")  # 90x60
    fitted = masks.fit_mask(quarter, (300, 200), 64)  # the input is 300x200: the centre 200x200 square
    assert fitted.shape == (64, 64)
    # the centre square spans x 50..250 of 300, i.e. 15..75 of the mask's 90: the diagonal halves meet at 45
    assert fitted[:28, :5].mean() > 0.99 and fitted[:28, -5:].max() < 0.01 and fitted[36:, -5:].mean() > 0.99


# ------------------------------------------------------------------ the reference work is shared with kv


def test_restyle_has_its_own_source_and_reuses_it(tiny_models, reference):
    """The source (empty prompt, IP-Adapter off) is not kv's inversion: variants made before do not
    shorten it; a second restyle of the texture reuses all of it."""
    steps = 3
    diffusion.reference_cache.clear()
    generate_variants(reference, base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]),
                      engine="diffusion", seed=0, steps=steps, size=SIZE)
    before = dict(diffusion.counters)
    totals = []
    image = _restyle(tiny_models, reference, steps=steps, on_step=lambda d, t, p: totals.append(t))[0]
    assert totals[-1] == 3 * steps  # its own inversion, reference branch and generated branch
    assert diffusion.counters["reference_branches"] == before["reference_branches"] + 1
    again = _restyle(tiny_models, reference, steps=steps, on_step=lambda d, t, p: totals.append(t))[0]
    assert totals[-1] == steps and diffusion.counters["reference_branches"] == before["reference_branches"] + 1
    assert json.loads(again.info["parameters"])["reference_cached"] is True
    assert np.array_equal(np.asarray(image), np.asarray(again))


# ------------------------------------------------------------------ faithful to the reference code


class _Passes(Control):
    """Per UNet pass: the branch, the text embeddings and the IP-Adapter scales in place."""

    def __init__(self, unet):
        self.unet, self.passes = unet, []

    def unet_kwargs(self, state):
        scales = [s for proc in self.unet.attn_processors.values() if hasattr(proc, "scale") for s in proc.scale]
        self.passes.append((state.branch, state.text_embeds.clone(), scales))
        return {}


def test_the_source_reads_the_empty_prompt_only_with_ip_adapter_off(tiny_models, reference, pipe, monkeypatch):
    probe = _Passes(pipe.unet)
    monkeypatch.setattr(controls, "FACTORIES", [*controls.FACTORIES, lambda *a: probe])
    diffusion.reference_cache.clear()
    _restyle(tiny_models, reference, prompt="mossy stones", negative_prompt="blurry", ip_scale=0.8)
    empty, _ = pipe.encode_prompt("", pipe._execution_device, 1, False)
    restyled, _ = pipe.encode_prompt("mossy stones", pipe._execution_device, 1, False)
    branches = {branch for branch, _, _ in probe.passes}
    assert branches == {"inversion", "reference", "generated"}
    for branch, text, scales in probe.passes:
        if branch in ("inversion", "reference"):
            assert text.shape[0] == 1 and torch.equal(text, empty)  # guidance 1: the empty prompt alone
            assert scales and set(scales) == {0.0}  # IP-Adapter's image attention skipped
        else:
            assert torch.equal(text[1:], restyled) and not torch.equal(text[:1], empty)  # negative, then prompt
            assert set(scales) == {0.8}
    diffusion.reference_cache.clear()


@pytest.mark.parametrize("steps", [7, 30, 50])
def test_windows_are_the_reference_codes(steps):
    """pnp-diffusers: pnp_f_t = int(n_timesteps * 0.8), pnp_attn_t = int(n_timesteps * 0.5), the first
    that many timesteps (scheduler.timesteps[:k])."""
    resnet, attention = pnp.windows(0.5, steps)
    assert resnet == set(range(int(steps * 0.8))) and attention == set(range(int(steps * 0.5)))
    assert (len(resnet), len(attention)) == {7: (5, 3), 30: (24, 15), 50: (40, 25)}[steps]


def test_inverted_start_does_not_depend_on_the_seed_and_noise_start_does(tiny_models, reference):
    diffusion.reference_cache.clear()
    a, b = (np.asarray(_restyle(tiny_models, reference, seed=seed)[0]) for seed in (0, 1))
    assert np.array_equal(a, b)
    c, d = (np.asarray(_restyle(tiny_models, reference, seed=seed, restyle_start="noise")[0]) for seed in (0, 1))
    assert not np.array_equal(c, d) and not np.array_equal(a, c)
    # several variants: the first is the one-variant result, the others differ by their seeded noise
    first, second = (np.asarray(im) for im in _restyle(tiny_models, reference, seed=5, variants=2))
    assert np.abs(first.astype(int) - a).max() <= 2  # batch 2 vs batch 1: float rounding only
    assert np.abs(second.astype(int) - a).mean() > 5
    diffusion.reference_cache.clear()


def test_the_generated_branch_starts_from_the_inverted_noise(tiny_models, reference, pipe, monkeypatch):
    starts = {}

    class Start(Control):
        def before_step(self, state):
            if state.step == 0:
                starts[state.branch] = state.latents.clone()
            return state.latents

    factories = [f for f in controls.FACTORIES if f is not restyle_control.from_params]
    monkeypatch.setattr(controls, "FACTORIES", [*factories, restyle_control.from_params, lambda *a: Start()])
    noise = torch.randn(3, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(9))
    diffusion.reference_cache.clear()
    _restyle(tiny_models, reference, variants=3, latents=noise)
    inverted = starts["reference"]
    assert inverted.shape[0] == 1 and not torch.equal(inverted, noise[:1])
    expected = torch.cat([inverted, (1 - 0.3**2) ** 0.5 * inverted + 0.3 * noise[1:]])
    torch.testing.assert_close(starts["generated"], expected, rtol=0, atol=1e-6)
    diffusion.reference_cache.clear()
