"""appearance="ad": attention distillation on the tiny random-weight models.

The loss, its gradient path, periodicity and cancel are properties of the computation, which the
random weights do not change.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from backend import generate_variants
from backend.diffusion import balance, vae
from backend.diffusion import engine as diffusion
from backend.diffusion.controls.attention import ReferenceAttention
from backend.diffusion.controls.base import GENERATED, REFERENCE, Run, StepState
from backend.diffusion.controls.distill import AttentionDistillation
from backend.diffusion.tiling import tiling
from backend.errors import CancelledError, InputError

SIZE, STEPS = 64, 3


def _gen(tiny_models, reference, **kw):
    args = dict(base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]), engine="diffusion",
                variants=1, seed=0, steps=STEPS, size=SIZE, appearance="ad")
    args.update(kw)
    return generate_variants(reference, **args)


def _arr(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


def _ad_control(pipe, steps, iterations=3, lr=0.05):
    """AD at balance 1 as the engine builds it, set up for a call of `steps` steps."""
    control, run = AttentionDistillation(balance.settings(1.0), steps, iterations, lr), Run(pipe, StepState(steps=steps))
    control.setup(run)
    return control, run


def test_ad_loss_decreases_over_the_iterations_of_a_step_with_ip_adapter_active(pipe, reference):
    steps = 3
    trainable = [p.requires_grad for p in pipe.unet.parameters()]  # as found (other tests' pipelines may differ)
    control, run = _ad_control(pipe, steps, iterations=6, lr=0.05)
    controller, window = control.kv, control.window
    step = max(window)
    ip_calls = []
    ip_processors = [p for name, p in pipe.unet.attn_processors.items()
                     if name.startswith("up_blocks.2") and hasattr(p, "to_k_ip")]
    assert ip_processors, "the tiny UNet has IP-Adapter processors in up_blocks.2"
    hooks = [p.to_k_ip[0].register_forward_hook(lambda *a: ip_calls.append(1)) for p in ip_processors]
    try:
        with torch.no_grad(), tiling("both", pipe.unet):
            pipe.set_ip_adapter_scale(1.0)
            image = reference.resize((SIZE, SIZE))
            cond = diffusion.encode_conditioning(pipe, image, "", "")
            loop = diffusion.Loop(pipe, cond, steps, diffusion.Progress(total=10 * steps), [control], run.state)
            inverted = loop.invert(vae.encode_reference(pipe, image, SIZE))
            loop.denoise(inverted, 1.0, REFERENCE)
            assert not controller.missing()

            t = loop.forward.timesteps[step]
            latents = torch.randn((2, 4, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(1))
            text, image_embeds = cond.batch(2, guided=False)

            def loss(lat):
                with torch.enable_grad(), loop.branch(GENERATED):
                    return float(control.loss(lat, t, step, text, image_embeds).detach())

            ip_calls.clear()
            losses = []
            with loop.branch(GENERATED):
                refined = control.optimise(latents, t, step, text, image_embeds,
                                           after_iteration=lambda i, value: losses.append(value))
            assert ip_calls, "the AD pass ran without IP-Adapter's image attention"
            before, after = loss(latents), loss(refined)
    finally:
        for h in hooks:
            h.remove()
    assert len(losses) == 6 and losses[0] == pytest.approx(before, rel=1e-5)
    assert after < before
    assert losses[-1] < losses[0]
    assert not torch.equal(refined, latents)
    # gradients reached only the latent: no weight holds a gradient, and every weight is as trainable as before
    assert all(p.grad is None for p in pipe.unet.parameters())
    assert [p.requires_grad for p in pipe.unet.parameters()] == trainable


def test_ad_loss_is_zero_when_the_generated_branch_is_the_reference_branch(pipe, reference):
    """The loss compares with the reference K/V: the reference's own latent has nothing to distil."""
    steps = 3
    control, run = _ad_control(pipe, steps)
    image = reference.resize((SIZE, SIZE))
    with torch.no_grad():
        pipe.set_ip_adapter_scale(1.0)
        cond = diffusion.encode_conditioning(pipe, image, "", "")
        latents = vae.encode_reference(pipe, image, SIZE)
        loop = diffusion.Loop(pipe, cond, steps, diffusion.Progress(total=10 * steps), [control], run.state)
        step = max(control.window)
        text, image_embeds = cond.batch(1, guided=False)
        t = loop.forward.timesteps[step]
        with loop.branch(REFERENCE):
            run.state.step = step
            pipe.unet(latents, t, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": image_embeds})
        with loop.branch(GENERATED):
            own = control.loss(latents, t, step, text, image_embeds)
            other = control.loss(latents.flip(-1), t, step, text, image_embeds)
    assert float(own) == pytest.approx(0.0, abs=1e-5)
    assert float(other) > 1e-3


def test_ad_rolling_the_initial_latents_by_8_rolls_the_image_by_64(tiny_models, reference):
    size = 128
    noise = torch.randn((1, 4, size // 8, size // 8), generator=torch.Generator().manual_seed(3))
    kw = dict(size=size, tile="both", balance=1.0, ad_iterations=2, ad_lr=0.2)
    a = _arr(_gen(tiny_models, reference, latents=noise, **kw)[0])
    b = _arr(_gen(tiny_models, reference, latents=torch.roll(noise, (8, 8), (2, 3)), **kw)[0])
    assert np.abs(np.roll(a, (64, 64), (0, 1)) - b).max() <= 2 / 255


def test_ad_output_differs_from_kv_and_none_and_records_its_settings(tiny_models, reference):
    kw = dict(balance=1.0, ad_lr=0.5)
    ad, kv, none = (_gen(tiny_models, reference, **kw | {"appearance": mode})[0] for mode in ("ad", "kv", "none"))
    assert np.abs(_arr(ad) - _arr(kv)).mean() > 1 / 255
    assert np.abs(_arr(ad) - _arr(none)).mean() > 1 / 255
    params = json.loads(ad.info["parameters"])
    assert (params["appearance"], params["ad_iterations"], params["ad_lr"]) == ("ad", 3, 0.5)
    # zero iterations is plain IP-Adapter denoising (the reference K/V are then unused)
    zero = _gen(tiny_models, reference, balance=1.0, ad_iterations=0)[0]
    assert np.array_equal(np.asarray(zero), np.asarray(none))


def test_cancel_inside_the_optimisation_stops_it_and_leaves_the_models_clean(tiny_models, reference, pipe):
    cancel = threading.Event()
    seen = []
    window = len(balance.settings().window_steps(STEPS))
    # inversion and reference branch to the window (2 x window passes), the generated steps before the
    # window, then (before the window's first step) 3 AD iterations: cancelled after the first of them
    cancel_at = 2 * window + (STEPS - window) + 1
    total = 2 * window + STEPS + 3 * window

    def on_step(done, total, preview):
        seen.append((done, total))
        if done == cancel_at:
            cancel.set()

    diffusion.reference_cache.clear()
    trainable = [p.requires_grad for p in pipe.unet.parameters()]
    with pytest.raises(CancelledError, match=f"after {cancel_at} of {total}"):
        _gen(tiny_models, reference, on_step=on_step, cancel=cancel, ad_iterations=3)
    assert seen[-1] == (cancel_at, total)
    assert not any(isinstance(p, ReferenceAttention) for p in pipe.unet.attn_processors.values())
    assert [p.requires_grad for p in pipe.unet.parameters()] == trainable  # the weights' freeze undone
    assert not any("_conv_forward" in m.__dict__ for m in pipe.unet.modules())
    assert _gen(tiny_models, reference)[0].size == (SIZE, SIZE)  # the next call works


@pytest.mark.parametrize("extra", [{"ad_iterations": -1}, {"ad_iterations": 1.5}, {"ad_lr": "fast"},
                                   {"ad_lr": -0.1}])
def test_bad_ad_settings_are_refused(tiny_models, reference, extra):
    with pytest.raises(InputError, match=next(iter(extra))):
        _gen(tiny_models, reference, **extra)


def _layer_gradient(dtype, scaled: bool) -> torch.Tensor:
    """The gradient of AD's loss term of one up_blocks.3-sized self-attention layer (4096 tokens, 320
    channels, 8 heads: SD1.5 at 512 px) w.r.t. its input, through the Distill processor, in `dtype`."""
    from diffusers.models.attention_processor import Attention

    from backend.diffusion.controls.attention import ReferenceKV
    from backend.diffusion.controls.distill import DISTILL, Distill, DistillationPassDone, loss_scale

    generator = torch.Generator().manual_seed(0)
    attn = Attention(320, heads=8, dim_head=40, bias=False, out_bias=True)
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    hidden = torch.randn((1, 4096, 320), generator=generator)
    ref_k, ref_v = (torch.randn((1, 8, 4096, 40), generator=generator) for _ in range(2))
    attn, hidden = attn.to(dtype), hidden.to(dtype).requires_grad_(True)
    kv = ReferenceKV(StepState(branch=DISTILL, step=0), frozenset({"layer"}), frozenset({0}),
                     {(0, "layer"): (ref_k.to(dtype), ref_v.to(dtype))})
    losses = []
    with pytest.raises(DistillationPassDone):
        Distill("layer", kv, None, losses)(attn, hidden)
    loss = torch.stack(losses).sum()
    (loss * loss_scale(torch.zeros(1, 4, 64, 64)) if scaled else loss).backward()
    return hidden.grad.float().flatten()


@pytest.mark.slow  # a full-size layer in fp16 on the CPU: about 30 s
def test_ad_gradient_survives_fp16_on_a_full_size_layer():
    """The loss is scaled before backward (Adam does not see a constant scale): in fp16 the gradient
    keeps its direction; unscaled, most of it falls into fp16's subnormal range and is lost."""
    reference = _layer_gradient(torch.float32, scaled=True)
    half = _layer_gradient(torch.float16, scaled=True)
    unscaled = _layer_gradient(torch.float16, scaled=False)
    cosine = torch.nn.functional.cosine_similarity
    assert float(cosine(half, reference, dim=0)) >= 0.99
    assert float(cosine(unscaled, reference, dim=0)) < 0.99  # the test would see the loss go missing
