"""Few-step sampling (sampler="fast"): a step-distillation LoRA in the published file layout fuses into
the UNet and unfuses bit for bit, the scheduler is the one the LoRA needs, every control acts at
exactly the steps its window names at 4 and 8 steps, the output tiles and repeats, and the reference
cache keeps fast and full trajectories apart."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, TCDScheduler
from PIL import Image

from backend import generate_variants, restyle
from backend.diffusion import controls, fast, models
from backend.diffusion import engine as diffusion
from backend.diffusion import loop as loop_module
from backend.diffusion.controls import controlnet as controlnet_control
from backend.diffusion.controls import pnp
from backend.diffusion.controls import restyle as restyle_control
from backend.diffusion.controls import sketch as sketch_control
from backend.diffusion.controls.base import GENERATED
from backend.diffusion.controls.distill import DISTILL
from backend.errors import ModelsMissingError

SIZE = 64


def _gen(tiny_models, reference, **kw):
    args = dict(engine="diffusion", variants=1, seed=0, size=SIZE, sampler="fast", fast_steps=4,
                fast_lora=str(tiny_models["fast_lora"])) | kw
    return generate_variants(reference, base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]),
                             **args)


def _arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


# ------------------------------------------------------------------ the LoRA: load, fuse, unfuse


def test_a_lora_in_the_published_layout_fuses_into_every_target_and_unfuses_bit_for_bit(tiny_models, pipe):
    from safetensors import safe_open

    path = tiny_models["fast_lora"] / "pytorch_lora_weights.safetensors"
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    # LCM-LoRA's file: kohya keys named after the diffusers modules, down/up/alpha per module
    assert "lora_unet_up_blocks_2_attentions_0_proj_in.lora_up.weight" in keys
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0.alpha" in keys
    assert "lora_unet_mid_block_resnets_0_time_emb_proj.lora_down.weight" in keys
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in keys}
    fast.use(pipe, None)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    processors = {name: type(p) for name, p in pipe.unet.attn_processors.items()}
    lora = fast.resolve(str(tiny_models["fast_lora"]))
    fast.use(pipe, lora)
    after = pipe.unet.state_dict()
    assert set(after) == set(before)  # the PEFT wrappers are gone: a plain UNet with fused weights
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert all(k.endswith(".weight") for k in changed) and len(changed) == len(modules)  # every target, only them
    assert {name: type(p) for name, p in pipe.unet.attn_processors.items()} == processors  # IP-Adapter kept
    assert fast.fused(pipe) == lora
    fast.use(pipe, lora)  # already fused: nothing changes
    assert all(torch.equal(after[k], v) for k, v in pipe.unet.state_dict().items())
    fast.use(pipe, None)
    restored = pipe.unet.state_dict()
    assert all(torch.equal(before[k], restored[k]) for k in before) and fast.fused(pipe) is None


def test_the_scheduler_and_guidance_are_the_ones_the_lora_was_distilled_for(tiny_models, tmp_path, pipe):
    lcm = fast.resolve(str(tiny_models["fast_lora"]))
    hyper_file = tmp_path / "Hyper-SD15-8steps-CFG-lora.safetensors"
    shutil.copy(tiny_models["fast_lora"] / "pytorch_lora_weights.safetensors", hyper_file)
    hyper = fast.resolve(str(hyper_file))
    assert (lcm.scheduler, lcm.guidance) == ("tcd", 1.0) and (hyper.scheduler, hyper.guidance) == ("ddim-trailing", 5.0)
    assert fast.resolve(str(hyper_file), "tcd").scheduler == "tcd"
    cond = diffusion.encode_conditioning(pipe, Image.new("RGB", (SIZE, SIZE)), "", "")
    for name, kind in (("tcd", TCDScheduler), ("ddim-trailing", DDIMScheduler)):
        loop = diffusion.Loop(pipe, cond, 4, diffusion.Progress(total=100), scheduler=name)
        assert type(loop.forward) is kind and type(loop.reference) is DDIMScheduler
        assert type(loop.inverse) is DDIMInverseScheduler
        assert loop.forward.timesteps.tolist() == loop.reference.timesteps.tolist() == [999, 749, 499, 249]
        assert loop.inverse.timesteps.tolist() == [249, 499, 749, 999]  # trailing: starts from pure noise
    record = json.loads(_gen(tiny_models, reference=Image.new("RGB", (SIZE, SIZE), (90, 60, 30)),
                             appearance="none")[0].info["parameters"])
    assert (record["sampler"], record["steps"], record["guidance_scale"]) == ("fast", 4, 1.0)


def test_the_named_loras_come_from_the_cache_only_and_name_the_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("lcm", "hyper-sd"):
        with pytest.raises(ModelsMissingError, match=fast.RECIPES[name].repo) as e:
            fast.resolve(name)
        assert "download-models --fast" in e.value.hint


# ------------------------------------------------------------------ windows at 4 and 8 steps


class _Acts:
    """Instruments every control built: (control, branch, step) whenever it acts."""

    def __init__(self):
        self.events = []

    def wrap(self, factory):
        def build(params, spec, settings):
            control = factory(params, spec, settings)
            if control is None:
                return None
            name = type(control).__name__
            setup = control.setup

            def instrumented(run):
                setup(run)
                if hasattr(control, "kv"):  # kv replacement, attention distillation
                    control.kv.observer = lambda layer, step, branch, action, *t: self.events.append(
                        (name, branch, step, action))
                if isinstance(control, controlnet_control.ControlNetGuide):
                    control.net.register_forward_hook(lambda *a: self.events.append(
                        (name, run.state.branch, run.state.step, "residuals")))
                if isinstance(control, sketch_control.LGPGuidance):
                    guide = control.guide
                    control.guide = lambda *args: (self.events.append(
                        (name, run.state.branch, run.state.step, "guide")), guide(*args))[1]

            control.setup = instrumented
            if isinstance(control, restyle_control.Restyle):
                control.observer = lambda layer, step, branch, action, *t: self.events.append(
                    (name, branch, step, f"{action} {layer}"))
            return control

        return build

    def steps(self, name: str, action: str = "", branch: str = GENERATED) -> set[int]:
        return {step for control, at, step, what in self.events
                if control == name and at == branch and what.startswith(action)}


@pytest.fixture
def acts(monkeypatch):
    acts = _Acts()
    monkeypatch.setattr(controls, "FACTORIES", [acts.wrap(f) for f in controls.FACTORIES])
    return acts


@pytest.fixture(scope="module")
def sketch_path(tmp_path_factory):
    lines = np.zeros((SIZE, SIZE), np.uint8)
    lines[::16] = 255
    path = tmp_path_factory.mktemp("sketch") / "lines.png"
    Image.fromarray(lines, "L").save(path)
    return path


# The windows the controls name, as fractions of the trajectory, at 4 and 8 steps:
# kv / AD: the last round(2/3 * balance * N) steps (balance 0.5); LGP: the first round(0.5 N);
# ControlNet: every step; Plug-and-Play (restyle strength 0.5): resnet the first floor(0.8 N),
# attention the first floor(0.5 N).
WINDOWS = {
    4: {"kv": {3}, "lgp": {0, 1}, "pnp_res": {0, 1, 2}, "pnp_qk": {0, 1}},
    8: {"kv": {5, 6, 7}, "lgp": {0, 1, 2, 3}, "pnp_res": set(range(6)), "pnp_qk": set(range(4))},
}


@pytest.mark.parametrize("steps", [4, 8])
def test_kv_and_ad_act_exactly_in_their_window(tiny_models, reference, acts, steps):
    diffusion.reference_cache.clear()
    _gen(tiny_models, reference, fast_steps=steps, appearance="kv")
    assert acts.steps("KVReplacement", "replace") == WINDOWS[steps]["kv"]
    acts.events.clear()
    _gen(tiny_models, reference, fast_steps=steps, appearance="ad", ad_iterations=1)
    assert acts.steps("AttentionDistillation", "distill", DISTILL) == WINDOWS[steps]["kv"]  # its loss passes


@pytest.mark.parametrize("steps", [4, 8])
def test_sketch_guidance_acts_exactly_in_its_window(tiny_models, reference, acts, sketch_path, steps):
    common = dict(fast_steps=steps, appearance="none", sketch=str(sketch_path), lgp=str(tiny_models["lgp"]),
                  controlnet=str(tiny_models["controlnet"]))
    _gen(tiny_models, reference, sketch_mode="lgp", **common)
    assert acts.steps("LGPGuidance") == WINDOWS[steps]["lgp"]
    _gen(tiny_models, reference, sketch_mode="controlnet", **common)
    assert acts.steps("ControlNetGuide") == set(range(steps))


@pytest.mark.parametrize("steps", [4, 8])
def test_restyle_injects_exactly_in_its_windows(tiny_models, reference, acts, steps):
    diffusion.reference_cache.clear()
    restyle(reference, "mossy stones", base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]),
            seed=0, size=SIZE, sampler="fast", fast_steps=steps, fast_lora=str(tiny_models["fast_lora"]))
    injected = [(step, what) for control, branch, step, what in acts.events
                if control == "Restyle" and branch == GENERATED and what.startswith("inject")]
    assert {step for step, what in injected if what == f"inject {pnp.RESNET}"} == WINDOWS[steps]["pnp_res"]
    assert {step for step, what in injected if what != f"inject {pnp.RESNET}"} == WINDOWS[steps]["pnp_qk"]


# ------------------------------------------------------------------ tiling, determinism, the cache


def test_fast_output_tiles_exactly_and_repeats(tiny_models, reference):
    size = 128
    noise = torch.randn((1, 4, size // 8, size // 8), generator=torch.Generator().manual_seed(3))
    a = _arr(_gen(tiny_models, reference, size=size, latents=noise, fast_steps=4)[0])
    again = _arr(_gen(tiny_models, reference, size=size, latents=noise, fast_steps=4)[0])
    b = _arr(_gen(tiny_models, reference, size=size, latents=torch.roll(noise, (8, 8), (2, 3)), fast_steps=4)[0])
    assert np.array_equal(a, again)
    assert np.abs(np.roll(a, (64, 64), (0, 1)) - b).max() <= 2 / 255


def test_fast_sampling_gives_a_live_preview_per_step_from_the_predicted_clean_latent(tiny_models, reference):
    """TCD's step output carries no predicted clean latent: the preview comes from the noise prediction,
    and it changes nothing of the result."""
    seen = []
    image = _gen(tiny_models, reference, fast_steps=4, on_step=lambda done, total, preview: seen.append(preview))[0]
    previews = [p for p in seen if p is not None]
    assert len(previews) == 4 and all(isinstance(p, Image.Image) for p in previews)
    assert np.array_equal(_arr(image), _arr(_gen(tiny_models, reference, fast_steps=4)[0]))
    x0 = loop_module._clean(type("Out", (), {})(), TCDScheduler(), torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2), 999)
    alpha = TCDScheduler().alphas_cumprod[999]
    assert torch.allclose(x0, torch.ones(1, 4, 2, 2) / alpha.sqrt())  # x0 = x_t / sqrt(a_t) when eps = 0


def test_the_reference_cache_keeps_fast_and_full_trajectories_apart(tiny_models, reference):
    diffusion.reference_cache.clear()
    counters = diffusion.counters
    full = dict(sampler="full", steps=4, appearance="kv", balance=1.0)
    inversions = counters["inversions"]
    first = _gen(tiny_models, reference, **full)[0]
    _gen(tiny_models, reference, fast_steps=4, appearance="kv", balance=1.0)
    assert counters["inversions"] == inversions + 2  # same step count, other schedule and UNet: its own work
    _gen(tiny_models, reference, fast_steps=4, appearance="kv", balance=1.0, seed=5)
    again = _gen(tiny_models, reference, **full)[0]
    assert counters["inversions"] == inversions + 2  # each reused from the cache
    assert np.array_equal(np.asarray(first), np.asarray(again))  # the base weights came back exactly
    spec = models.loaded_specs()[0]
    assert fast.fused(models.load_pipeline(spec)) is None
