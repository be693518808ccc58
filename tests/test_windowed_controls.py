"""Controls above the window size (tiny models, windows of 64 px): the reference's recordings are
consumed window by window, and kv, restyle, masks and sketch guidance act per window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend import generate_variants
from backend.diffusion import engine as diffusion
from backend.diffusion import streamed


def _arr(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


def _diffuse(tiny_models, reference, **kw):
    args = dict(base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]), engine="diffusion",
                variants=1, seed=0, steps=2, window=64)
    return generate_variants(reference, **(args | kw))


@pytest.fixture
def no_cache(monkeypatch):
    """A reference cache with no room: every windowed call streams its recordings."""
    diffusion.reference_cache.clear()
    monkeypatch.setattr(diffusion.reference_cache, "max_bytes", 0)
    yield
    diffusion.reference_cache.clear()


def test_streamed_kv_equals_the_kept_recordings_and_holds_one_window_at_a_time(tiny_models, reference, monkeypatch):
    kw = dict(size=(128, 64), appearance="kv", steps=3)  # 3 windows along x
    diffusion.reference_cache.clear()
    kept = _arr(_diffuse(tiny_models, reference, **kw)[0])
    kept_peak = streamed.peak["recorded_bytes"]
    cached = _arr(_diffuse(tiny_models, reference, **kw)[0])  # the generated branch alone, reading the cache
    assert np.array_equal(kept, cached)

    diffusion.reference_cache.clear()
    monkeypatch.setattr(diffusion.reference_cache, "max_bytes", 0)
    assert np.abs(_arr(_diffuse(tiny_models, reference, **kw)[0]) - kept).max() <= 1 / 255 + 1e-9
    one_window = streamed.peak["recorded_bytes"]
    assert 0 < one_window and kept_peak >= 3 * one_window  # every window of the recorded step was kept
    _diffuse(tiny_models, reference, **(kw | dict(size=(192, 96))))  # 4 x 2 windows
    assert streamed.peak["recorded_bytes"] == one_window
    assert len(diffusion.reference_cache) == 0  # nothing kept beyond the budget
    diffusion.reference_cache.clear()


def _fixed_reference(monkeypatch, latents: torch.Tensor) -> None:
    """The reference's VAE encoding replaced by `latents` (the photo's encoder does not wrap, the rest does)."""
    monkeypatch.setattr(diffusion.vae, "encode_reference", lambda *args, **kw: latents.clone())


@pytest.mark.parametrize("appearance", ["kv"])
def test_streamed_kv_rolls_with_its_noise_and_reference_on_each_axis(tiny_models, reference, monkeypatch, no_cache,
                                                                     appearance):
    noise = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(5))  # 96 px: 2 windows per axis
    encoded = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(6))
    kw = dict(size=96, appearance=appearance)
    _fixed_reference(monkeypatch, encoded)
    base = _arr(_diffuse(tiny_models, reference, latents=noise, **kw)[0])
    for axis in (2, 3):  # a whole window stride: 6 cells, 48 px
        _fixed_reference(monkeypatch, torch.roll(encoded, 6, axis))
        rolled = _arr(_diffuse(tiny_models, reference, latents=torch.roll(noise, 6, axis), **kw)[0])
        assert np.abs(np.roll(base, 48, axis - 2) - rolled).max() <= 1 / 255 + 1e-9, axis


# ---------------------------------------------------------------- restyle, masks and sketch per window


def _restyle(tiny_models, reference, **kw):
    from backend import restyle

    args = dict(base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]), seed=0, steps=2,
                window=64) | kw
    return restyle(reference, "mossy stones", **args)


def test_restyle_rolls_with_its_reference_on_each_axis(tiny_models, reference, monkeypatch, no_cache):
    """keep-structure, inverted start: the output follows the reference's inversion, window by window."""
    encoded = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(7))  # 96 px: 2 x 2 windows
    _fixed_reference(monkeypatch, encoded)
    base = _arr(_restyle(tiny_models, reference, size=96)[0])
    for axis in (2, 3):
        _fixed_reference(monkeypatch, torch.roll(encoded, 6, axis))
        rolled = _arr(_restyle(tiny_models, reference, size=96)[0])
        assert np.abs(np.roll(base, 48, axis - 2) - rolled).max() <= 1 / 255 + 1e-9, axis


def test_a_keep_structure_mask_limits_the_injection_in_each_window_to_its_own_part(tiny_models, reference, tmp_path,
                                                                                   monkeypatch, no_cache):
    from PIL import Image

    from backend.diffusion import controls
    from backend.diffusion.controls import restyle as restyle_control

    # 128 x 64 px, windows of 8 cells at x = 0, 5, 10 (cells): the mask is 0 over exactly window 1
    mask = np.full((64, 128), 255, np.uint8)
    mask[:, 40:104] = 0
    Image.fromarray(mask, "L").save(tmp_path / "mask.png")
    events = []

    def factory(params, spec, settings):
        control = restyle_control.from_params(params, spec, settings)
        if control is not None:
            control.observer = lambda layer, step, branch, action, own, used: events.append(
                (control.run.state.window, branch, action, own, used))
        return control

    others = [f for f in controls.FACTORIES if f is not restyle_control.from_params]
    monkeypatch.setattr(controls, "FACTORIES", [*others, factory])
    _restyle(tiny_models, reference.resize((128, 64)), size=(128, 64), mask=tmp_path / "mask.png")
    injected = [(window, own, used) for window, branch, action, own, used in events if action == "inject"]
    assert {window for window, _, _ in injected} == {0, 1, 2}
    for window, own, used in injected:
        same = all(torch.equal(a, b) for a, b in zip(own, used, strict=True))
        assert same == (window == 1), window  # outside the mask the window keeps its own features


def test_edit_inside_keeps_the_pixels_outside_the_mask_above_the_window(tiny_models, reference, tmp_path, no_cache):
    from PIL import Image

    from backend.diffusion.controls.inpaint import feather
    from backend.framing import cover

    mask = np.zeros((64, 128), np.uint8)
    mask[16:48, 24:72] = 255
    Image.fromarray(mask, "L").save(tmp_path / "mask.png")
    wide = reference.resize((128, 64))  # the mask is painted over the input
    (image,) = _restyle(tiny_models, wide, size=(128, 64), mask=tmp_path / "mask.png", mask_mode="edit-inside")
    weight = feather(torch.from_numpy(mask / 255.0)[None, None], "both")[0, 0].numpy()
    outside = weight == 0
    source = np.asarray(cover(wide, (128, 64)), dtype=np.int64)
    assert outside.mean() > 0.5
    assert np.array_equal(np.asarray(image, dtype=np.int64)[outside], source[outside])


@pytest.mark.parametrize("mode", ["lgp", "controlnet"])
def test_sketch_guidance_works_per_window_and_rolls_with_the_sketch(tiny_models, reference, tmp_path, mode):
    from PIL import Image, ImageDraw

    sketch = Image.new("L", (96, 96), 255)
    draw = ImageDraw.Draw(sketch)
    draw.line((0, 40, 96, 40), fill=0, width=6)
    draw.ellipse((50, 10, 86, 30), outline=0, width=3)
    noise = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(8))
    kw = dict(size=96, appearance="none", steps=2, sketch_window=1.0, sketch_mode=mode, lgp=str(tiny_models["lgp"]),
              controlnet=str(tiny_models["controlnet"]))
    sketch.save(tmp_path / "sketch.png")
    base = _arr(_diffuse(tiny_models, reference, latents=noise, sketch=str(tmp_path / "sketch.png"), **kw)[0])
    plain = _arr(_diffuse(tiny_models, reference, latents=noise, **(kw | dict(sketch_mode="lgp")))[0])
    assert np.abs(base - plain).mean() > 1e-3  # the guidance acted
    for axis in (2, 3):
        rolled_sketch = Image.fromarray(np.roll(np.asarray(sketch), 48, axis - 2))
        rolled_sketch.save(tmp_path / f"sketch{axis}.png")
        rolled = _arr(_diffuse(tiny_models, reference, latents=torch.roll(noise, 6, axis),
                               sketch=str(tmp_path / f"sketch{axis}.png"), **kw)[0])
        assert np.abs(np.roll(base, 48, axis - 2) - rolled).max() <= 1 / 255 + 1e-9, axis


def test_sketch_guidance_is_refused_where_it_would_meet_the_kv_recordings(tiny_models, reference, tmp_path):
    from PIL import Image

    from backend.errors import InputError

    Image.new("L", (96, 96), 255).save(tmp_path / "sketch.png")
    with pytest.raises(InputError, match="sketch guidance cannot run") as e:
        _diffuse(tiny_models, reference, size=96, appearance="kv", sketch=str(tmp_path / "sketch.png"), steps=3,
                 sketch_window=1.0, lgp=str(tiny_models["lgp"]))
    assert "sketch_window" in e.value.hint
    with pytest.raises(InputError, match="appearance ad works up to the window size"):
        _diffuse(tiny_models, reference, size=96, appearance="ad")


@pytest.mark.parametrize("case", ["kv", "edit-inside", "sketch"])
def test_one_window_through_the_paired_loop_equals_the_single_pass(tiny_models, reference, tmp_path, monkeypatch,
                                                                   case):
    """At the window size, forcing the windowed path (one window: the reference and generated branches
    stepped together) gives the single pass's result."""
    from PIL import Image

    from backend.diffusion.windows import Layout

    if case == "kv":
        run = lambda: _diffuse(tiny_models, reference, size=64, appearance="kv", steps=3)  # noqa: E731
    elif case == "edit-inside":
        mask = np.zeros((64, 64), np.uint8)
        mask[16:48, 8:40] = 255
        Image.fromarray(mask, "L").save(tmp_path / "mask.png")
        run = lambda: _restyle(tiny_models, reference, size=64, mask=tmp_path / "mask.png",  # noqa: E731
                               mask_mode="edit-inside")
    else:
        Image.new("L", (64, 64), 0).save(tmp_path / "sketch.png")
        run = lambda: _diffuse(tiny_models, reference, size=64, appearance="none",  # noqa: E731
                               sketch=str(tmp_path / "sketch.png"), lgp=str(tiny_models["lgp"]))
    diffusion.reference_cache.clear()
    single = _arr(run()[0])
    diffusion.reference_cache.clear()
    monkeypatch.setattr(Layout, "active", property(lambda self: True))
    windowed = _arr(run()[0])
    diffusion.reference_cache.clear()
    assert np.abs(single - windowed).max() <= 1 / 255 + 1e-9
