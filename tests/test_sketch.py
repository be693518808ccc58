"""Sketch guidance (LGP and ControlNet controls, train-lgp) on the tiny random-weight models.

Property tests: the LGP's own loss at the end of the guided window falls with the strength; a
prediction equal to the target gives no step; tiled outputs stay exactly periodic (rolling the noise
and the sketch together rolls the image); the ControlNet changes the output and keeps it periodic;
train-lgp lowers its loss and writes what generate loads; bad sketches give clear errors.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from backend import generate_variants
from backend.cli import main
from backend.diffusion import controls, lgp, sketch_models
from backend.diffusion.controls import sketch as lgp_control
from backend.diffusion.controls.base import GENERATED, Control
from backend.errors import InputError, ModelsMissingError
from backend.sketches import load_sketch

STEPS, WINDOW_END = 6, 3  # sketch_window 0.5 guides steps 0-2


def _sketch(size: int, black_on_white: bool = True) -> Image.Image:
    background, ink = (255, 0) if black_on_white else (0, 255)
    image = Image.new("L", (size, size), background)
    draw = ImageDraw.Draw(image)
    draw.line((0, size // 2, size, size // 2), fill=ink, width=max(2, size // 16))
    draw.line((size // 3, 0, size // 3, size), fill=ink, width=max(2, size // 16))
    draw.ellipse((size // 2, size // 8, size - size // 8, size // 2 - size // 8), outline=ink, width=2)
    return image


@pytest.fixture(scope="module")
def sketches(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sketches")
    paths = {}
    for size in (64, 128):
        paths[size] = folder / f"sketch{size}.png"
        _sketch(size).save(paths[size])
    return paths


def _gen(tiny_models, reference, **kw):
    args = dict(engine="diffusion", variants=1, seed=0, steps=STEPS, size=64, appearance="none",
                lgp=str(tiny_models["lgp"]), controlnet=str(tiny_models["controlnet"])) | kw
    return generate_variants(reference, base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]),
                             **args)


def _arr(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


class Probe(Control):
    """Calls `act(lgp_control, state)` before the generated branch's step `at` (after the LGP's hook)."""

    def __init__(self, made: list, at: int, act):
        self.made, self.at, self.act = made, at, act

    def before_step(self, state):
        if state.branch == GENERATED and state.step == self.at:
            self.act(self.made[-1], state)
        return state.latents


@pytest.fixture
def probe(monkeypatch):
    """install(at, act): the LGP control of each call is kept and a Probe runs after it."""
    made = []

    def keep(params, spec, settings):
        control = lgp_control.from_params(params, spec, settings)
        made.append(control)
        return control

    def install(at, act):
        others = [f for f in controls.FACTORIES if f is not lgp_control.from_params]
        monkeypatch.setattr(controls, "FACTORIES", [*others, keep, lambda *a: Probe(made, at, act)])

    return install


def test_the_lgp_loss_at_the_end_of_the_window_falls_with_the_strength(tiny_models, reference, sketches, probe):
    losses = []
    probe(WINDOW_END, lambda control, state: losses.append(control.loss(state.latents, state.timestep)))
    strengths = (0.0, 0.5, 1.0, 2.0)
    for strength in strengths:
        _gen(tiny_models, reference, sketch=str(sketches[64]), sketch_strength=strength, variants=2)
    by_strength = torch.stack(losses)  # (strengths, variants)
    assert (by_strength[1:] < by_strength[:-1]).all(), by_strength  # every variant, every increase
    assert (by_strength[-1] < 0.8 * by_strength[0]).all()  # guided clearly below unguided, same seed


def test_a_prediction_equal_to_the_sketch_encoding_gives_no_step(tiny_models, reference, sketches, probe):
    seen = {}

    def check(control, state):
        latents, t = state.latents, state.timestep
        stepped = 0.9 * latents  # any step's result
        moved = control.guide(latents, t, stepped)
        target = control.target
        with torch.no_grad():
            control.target = control.predict(latents, t)[0].float()
        try:
            still = control.guide(latents, t, stepped)
        finally:
            control.target = target
        seen["moved"], seen["still"] = (moved - stepped).abs().max(), (still - stepped).abs().max()

    probe(1, check)
    _gen(tiny_models, reference, sketch=str(sketches[64]), variants=2)
    assert seen["still"] == 0  # zero gradient: the latent is left exactly as it was
    assert seen["moved"] > 1e-3


class _After(Control):
    """Keeps, per generated step, the step's UNet input and the latents when its after_step runs."""

    def __init__(self):
        self.seen = {}

    def after_step(self, state):
        if state.branch == GENERATED:
            self.seen[state.step] = (state.model_input.clone(), state.latents.clone())
        return state.latents


def test_the_step_is_strength_times_the_guided_steps_norm_over_the_gradients(tiny_models, reference, sketches,
                                                                             monkeypatch):
    """z = z̃ - strength * ||z̃ - z_t|| / ||grad L|| * grad L, with z̃ the step the loop took from z_t
    (classifier-free guidance at 7.5 included), per variant, in float32."""
    before, after, observed = _After(), _After(), []

    def keep(params, spec, settings):
        control = lgp_control.from_params(params, spec, settings)
        control.observer = lambda *values: observed.append(values)
        return control

    others = [f for f in controls.FACTORIES if f is not lgp_control.from_params]
    monkeypatch.setattr(controls, "FACTORIES", [*others, lambda *a: before, keep, lambda *a: after])
    strength = 0.7
    _gen(tiny_models, reference, sketch=str(sketches[64]), sketch_strength=strength, variants=2, guidance_scale=7.5)
    assert len(observed) == WINDOW_END and sorted(before.seen) == list(range(STEPS))
    for step, (taken, grad, scale) in enumerate(observed):
        model_input, stepped = before.seen[step]
        start = model_input[-2:]
        assert model_input.shape[0] == 4 and torch.equal(model_input[:2], start)  # CFG: both halves, z_t
        assert taken.dtype == grad.dtype == torch.float32
        torch.testing.assert_close(taken, stepped.float() - start.float(), rtol=0, atol=0)
        expected = strength * (stepped - start).flatten(1).norm(dim=1) / grad.flatten(1).norm(dim=1)
        torch.testing.assert_close(scale, expected, rtol=1e-5, atol=0)
        moved = after.seen[step][1] - stepped
        torch.testing.assert_close(moved, -expected.view(-1, 1, 1, 1) * grad, rtol=1e-4, atol=1e-6)
        assert moved.flatten(1).norm(dim=1).div(taken.flatten(1).norm(dim=1)).sub(strength).abs().max() < 1e-4
    for step in range(WINDOW_END, STEPS):  # outside the window the step's result is left alone
        assert torch.equal(after.seen[step][1], before.seen[step][1])


def test_progress_counts_the_guidance_passes_and_the_record_names_them(tiny_models, reference, sketches):
    totals = []
    image = _gen(tiny_models, reference, sketch=str(sketches[64]), on_step=lambda d, t, p: totals.append((d, t)))[0]
    assert totals[-1] == (STEPS + WINDOW_END, STEPS + WINDOW_END)  # appearance none: one pass per step + guidance
    record = json.loads(image.info["parameters"])
    assert record["sketch_mode"] == "lgp" and record["sketch_window_steps"] == [0, 1, 2]
    assert record["sketch"] == str(sketches[64])


@pytest.mark.parametrize(("mode", "appearance"), [("lgp", "kv"), ("lgp", "ad"), ("controlnet", "kv")])
def test_rolling_the_noise_and_the_sketch_rolls_the_tiled_image(tiny_models, reference, sketches, tmp_path, mode,
                                                                appearance):
    size = 128  # 16x16 latents: a roll of 8 is a whole cell at every UNet resolution
    rolled = tmp_path / "rolled.png"
    Image.fromarray(np.roll(np.asarray(Image.open(sketches[size])), (64, 64), (0, 1))).save(rolled)
    noise = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(3))
    kw = dict(size=size, steps=4, sketch_mode=mode, appearance=appearance, sketch_strength=2.0)
    a = _arr(_gen(tiny_models, reference, sketch=str(sketches[size]), latents=noise, **kw)[0])
    b = _arr(_gen(tiny_models, reference, sketch=str(rolled), latents=torch.roll(noise, (8, 8), (2, 3)), **kw)[0])
    plain = _arr(_gen(tiny_models, reference, latents=noise, **(kw | {"sketch_strength": 0.0}))[0])
    assert np.abs(np.roll(a, (64, 64), (0, 1)) - b).max() <= 2 / 255
    assert np.abs(a - plain).mean() > 0.5 / 255  # the sketch did change the image


def test_the_sketch_encoding_is_shift_equivariant_when_tiled(pipe, sketches):
    image = load_sketch(sketches[128], 128)
    rolled = Image.fromarray(np.roll(np.asarray(image), (64, 32), (0, 1)))
    encoded, encoded_rolled = (lgp_control.encode_sketch(pipe, im, 128, "both") for im in (image, rolled))
    # equal up to float summation order (convolution kernels may block the rolled input differently)
    torch.testing.assert_close(torch.roll(encoded, (8, 4), (2, 3)), encoded_rolled, atol=5e-5, rtol=1e-4)
    plain, plain_rolled = (lgp_control.encode_sketch(pipe, im, 128, "none") for im in (image, rolled))
    assert not torch.allclose(torch.roll(plain, (8, 4), (2, 3)), plain_rolled, atol=1e-4)


def test_controlnet_changes_the_output_with_ip_adapter_and_kv(tiny_models, reference, sketches):
    plain = _arr(_gen(tiny_models, reference, appearance="kv")[0])
    guided = _gen(tiny_models, reference, appearance="kv", sketch=str(sketches[64]), sketch_mode="controlnet")[0]
    weak = _arr(_gen(tiny_models, reference, appearance="kv", sketch=str(sketches[64]), sketch_mode="controlnet",
                     sketch_strength=0.0)[0])
    assert np.abs(_arr(guided) - plain).mean() > 0.5 / 255
    assert np.array_equal(weak, plain)  # strength 0: no residuals, the plain kv + IP-Adapter result
    record = json.loads(guided.info["parameters"])
    assert record["kv_window_steps"] and record["ip_scale"] > 0 and record["controlnet"] == str(tiny_models["controlnet"])


def test_sketch_polarity_is_normalised_to_white_on_black(tmp_path):
    _sketch(64, black_on_white=True).save(tmp_path / "bw.png")
    _sketch(64, black_on_white=False).save(tmp_path / "wb.png")
    a, b = (np.asarray(load_sketch(tmp_path / name, 64)) for name in ("bw.png", "wb.png"))
    assert np.array_equal(a, b) and np.median(a) == 0 and a.max() == 255
    assert load_sketch(tmp_path / "bw.png", 128).size == (128, 128)


def test_bad_sketches_give_clear_errors(tiny_models, reference, tmp_path, sketches):
    (tmp_path / "notes.png").write_text("not an image")
    Image.new("L", (96, 64)).save(tmp_path / "wide.png")
    with pytest.raises(InputError, match="sketch: not a readable image"):
        _gen(tiny_models, reference, sketch=str(tmp_path / "notes.png"))
    with pytest.raises(InputError, match="sketch: input image not found"):
        _gen(tiny_models, reference, sketch=str(tmp_path / "missing.png"))
    with pytest.raises(InputError, match="96x64 px but the output is 64x64: their aspects differ") as err:
        _gen(tiny_models, reference, sketch=str(tmp_path / "wide.png"), sketch_mode="controlnet")
    assert "the output's aspect" in err.value.hint
    with pytest.raises(InputError, match="needs the diffusion engine"):
        generate_variants(reference, engine="patch", size=64, sketch=str(sketches[64]))
    with pytest.raises(InputError, match="invalid sketch_mode"):
        _gen(tiny_models, reference, sketch=str(sketches[64]), sketch_mode="canny")


def test_missing_or_unsafe_sketch_models_name_the_fix(tiny_models, reference, sketches, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelsMissingError, match="download-models --lgp nobody/no-lgp"):
        _gen(tiny_models, reference, sketch=str(sketches[64]), lgp="nobody/no-lgp")
    with pytest.raises(ModelsMissingError, match="download-models --controlnet"):
        _gen(tiny_models, reference, sketch=str(sketches[64]), sketch_mode="controlnet", controlnet="nobody/no-cn")
    # The published LGP's format: a pickled training checkpoint holding model_state_dict.
    state, _ = sketch_models.read_lgp_state(tiny_models["lgp"] / sketch_models.LGP_FILE)
    published = tmp_path / "published"
    published.mkdir()
    torch.save({"model_state_dict": state, "loss": torch.tensor(0.1)}, published / "LGP.pt")
    with pytest.raises(InputError, match="pickled file"):
        _gen(tiny_models, reference, sketch=str(sketches[64]), lgp=str(published))
    from_pickle = _gen(tiny_models, reference, sketch=str(sketches[64]), lgp=str(published), allow_pickle=True)[0]
    ours = _gen(tiny_models, reference, sketch=str(sketches[64]))[0]
    assert np.array_equal(np.asarray(from_pickle), np.asarray(ours))  # the same tensors, the same result


def test_an_lgp_for_another_unet_is_refused(tiny_models, reference, sketches, tmp_path):
    sketch_models.save_lgp(lgp.LatentGuidancePredictor(7080), tmp_path / "sd15.safetensors")
    with pytest.raises(InputError, match="takes 7080 input channels; this base model's UNet gives 424"):
        _gen(tiny_models, reference, sketch=str(sketches[64]), lgp=str(tmp_path / "sd15.safetensors"))


def test_train_lgp_lowers_its_loss_resumes_and_writes_what_generate_loads(tiny_models, tmp_path, sketches, capsys,
                                                                         color_texture_path, brick_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, source in enumerate((color_texture_path, brick_path) * 2):
        Image.open(source).rotate(90 * i).save(images / f"texture{i}.png")
    out = tmp_path / "lgp"
    common = ["train-lgp", "--base", str(tiny_models["base"]), "--ip-adapter", str(tiny_models["ip_adapter"]),
              "--images", str(images), "--out", str(out), "--size", "64", "--lr", "1e-3", "--save-every", "10"]
    assert main([*common, "--steps", "20"]) == 0
    first = capsys.readouterr().out
    before, after = (float(x) for x in first.split("evaluation loss ")[1].split(" (")[0].split(" -> "))
    assert after < 0.9 * before, first
    assert main([*common, "--steps", "30"]) == 0  # resumes at step 20: 10 more steps
    second = capsys.readouterr().out
    assert "(10 steps in" in second and float(second.split("evaluation loss ")[1].split(" ->")[0]) == pytest.approx(after)
    assert main(["generate", str(color_texture_path), "--out", str(tmp_path / "out"), "--engine", "diffusion",
                 "--base", str(tiny_models["base"]), "--ip-adapter", str(tiny_models["ip_adapter"]), "--size", "64",
                 "--steps", "2", "--seed", "1", "--no-preview", "--sketch", str(sketches[64]), "--sketch-mode", "lgp",
                 "--lgp", str(out)]) == 0
    written = capsys.readouterr().out.split()
    record = json.loads(Image.open(written[0]).info["parameters"])
    assert record["lgp"] == str(out / sketch_models.LGP_FILE) and record["sketch_window_steps"] == [0]


def test_train_lgp_never_overwrites_an_lgp_that_is_not_its_run(tiny_models, tmp_path, brick_path):
    (tmp_path / "images").mkdir()
    Image.open(brick_path).save(tmp_path / "images" / "a.png")
    out = tmp_path / "out"
    sketch_models.save_lgp(lgp.LatentGuidancePredictor(424), out / sketch_models.LGP_FILE)
    kept = (out / sketch_models.LGP_FILE).read_bytes()
    code = main(["train-lgp", "--base", str(tiny_models["base"]), "--ip-adapter", str(tiny_models["ip_adapter"]),
                 "--images", str(tmp_path / "images"), "--out", str(out), "--size", "64", "--steps", "1"])
    assert code == 2 and (out / sketch_models.LGP_FILE).read_bytes() == kept
