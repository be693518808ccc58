"""Live previews by the tiny autoencoder (TAESD): periodic like the output, one small picture per
denoising step, and the final image still the full VAE's (unless a draft is asked for)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backend import generate_variants
from backend.diffusion import vae
from backend.diffusion.tiling import tiling, wrap_pad
from backend.errors import ModelsMissingError


@pytest.fixture(scope="module")
def taesd(tiny_models):
    return vae.load_taesd(vae.resolve_taesd(tiny_models["taesd"]), "cpu", "float32")


def _gen(tiny_models, reference, **kw):
    args = dict(engine="diffusion", variants=1, seed=0, steps=3, size=64, appearance="none") | kw
    return generate_variants(reference, base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]),
                             **args)


def test_taesd_previews_roll_with_the_latents_on_the_tiled_axes(taesd):
    latents = torch.randn((1, 4, 32, 32), generator=torch.Generator().manual_seed(0))
    rolled = torch.roll(latents, (8, 8), (2, 3))
    with torch.no_grad(), tiling("both", taesd.decoder):
        a, b = (vae.taesd_decode(taesd, x, 0.18215) for x in (latents, rolled))
        small = [np.asarray(vae.taesd_previewer(taesd, 0.18215, side=128)(x)[0]) for x in (latents, rolled)]
    assert a.shape == (1, 3, 256, 256)
    assert torch.allclose(torch.roll(a, (64, 64), (2, 3)), b, atol=1e-5)
    assert small[0].shape == (128, 128, 3)  # reduced by a whole factor: a roll stays a roll
    assert np.abs(np.roll(small[0].astype(int), (32, 32), (0, 1)) - small[1]).max() <= 1
    with torch.no_grad():  # without tiling the border is zero-padded: not a roll
        plain = vae.taesd_decode(taesd, rolled, 0.18215)
    assert not torch.allclose(torch.roll(a, (64, 64), (2, 3)), plain, atol=1e-3)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_the_wrap_pad_is_circular_padding_in_the_inputs_memory_format(memory_format):
    x = torch.randn((2, 5, 6, 7), dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    for pad_x, pad_y in [(1, 1), (0, 2), (3, 0), (7, 6)]:
        padded = wrap_pad(x.contiguous(memory_format=memory_format), pad_x, pad_y)
        expected = F.pad(x, (pad_x, pad_x, pad_y, pad_y), mode="circular")
        assert torch.equal(padded, expected) and padded.is_contiguous(memory_format=memory_format)
        grad = torch.randn_like(expected)
        ours, theirs = (torch.autograd.grad(y, x, grad)[0] for y in (padded, expected))  # AD, LGP: backward
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-12)  # sums of the same terms in another order
    assert torch.equal(wrap_pad(x[0], 2, 1), F.pad(x[0], (2, 2, 1, 1), mode="circular"))  # unbatched, as Conv2d takes
    with pytest.raises(ValueError, match="at least"):
        wrap_pad(x, 8, 1)


def test_the_channels_last_taesd_decodes_what_the_library_model_does(tiny_models, taesd):
    from diffusers import AutoencoderTiny

    library = AutoencoderTiny.from_pretrained(tiny_models["taesd"]).eval()
    assert taesd.decoder.layers[0].weight.is_contiguous(memory_format=torch.channels_last)
    latents = torch.randn((2, 4, 16, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), tiling("both", taesd.decoder, library.decoder):
        ours = vae.taesd_decode(taesd, latents, 0.18215)
        theirs = (library.decode(latents / 0.18215).sample / 2 + 0.5).clamp(0, 1)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_one_small_taesd_preview_per_step_and_the_final_image_is_the_full_vaes(tiny_models, reference):
    seen = []
    steps, size = 3, 384
    image = _gen(tiny_models, reference, steps=steps, size=size, taesd=str(tiny_models["taesd"]),
                 on_step=lambda done, total, preview: seen.append((done, preview)))[0]
    previews = [p for _, p in seen if p is not None]
    assert len(previews) == steps and [d for d, p in seen if p is not None] == list(range(1, steps + 1))
    assert {p.info["decoder"] for p in previews} == {"taesd"}
    assert {p.size for p in previews} == {(size // 2, size // 2)}  # at most 256 px
    plain = _gen(tiny_models, reference, steps=steps, size=size)[0]  # latent-map previews
    assert np.array_equal(np.asarray(image), np.asarray(plain))  # previews change nothing of the result
    assert "draft" not in json.loads(image.info["parameters"])


def test_a_draft_is_decoded_by_taesd_and_says_so(tiny_models, reference):
    full = _gen(tiny_models, reference)[0]
    draft = _gen(tiny_models, reference, draft=True, taesd=str(tiny_models["taesd"]))[0]
    assert draft.size == full.size and not np.array_equal(np.asarray(draft), np.asarray(full))
    assert json.loads(draft.info["parameters"])["draft"] is True


def test_a_missing_taesd_names_the_download(tiny_models, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not vae.taesd_available()
    with pytest.raises(ModelsMissingError, match="download-models"):
        _gen(tiny_models, reference, draft=True)
