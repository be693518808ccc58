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
