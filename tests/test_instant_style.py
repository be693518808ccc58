"""ip_mode="style" and content suppression (InstantStyle) on the tiny random-weight models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from backend import cli, generate_variants
from backend.diffusion import balance, models
from backend.diffusion import engine as diffusion
from backend.diffusion.controls import style as instant_style
from backend.diffusion.controls.base import Run, StepState
from backend.errors import InputError, ModelsMissingError
from backend.params import GenerationParams

SIZE, STEPS = 64, 2


@pytest.fixture(scope="module")
def content_encoder(tiny_models):
    return tiny_models["base"].parent / "clip-text"  # written by make_test_models beside sd15/


def _gen(tiny_models, reference, **kw):
    args = dict(base=str(tiny_models["base"]), ip_adapter=str(tiny_models["ip_adapter"]), engine="diffusion",
                variants=1, seed=0, steps=STEPS, size=SIZE, appearance="none")
    args.update(kw)
    return generate_variants(reference, **args)


def _ip_scales(pipe) -> dict[str, float]:
    return {name.removesuffix(".processor"): p.scale[0] for name, p in pipe.unet.attn_processors.items()
            if hasattr(p, "to_k_ip")}


@pytest.mark.parametrize("blocks, inside", [
    (None, lambda name: name.startswith("up_blocks.1.")),  # the default: SD1.5's counterpart of SDXL's
    (["up_blocks.1.attentions.1"], lambda name: name.startswith("up_blocks.1.attentions.1.")),
    (["down_blocks.2", "mid_block"], lambda name: name.startswith(("down_blocks.2.", "mid_block."))),
])
def test_style_mode_scales_are_zero_outside_the_style_blocks_and_the_chosen_scale_inside(
        tiny_models, reference, pipe, blocks, inside):
    extra = {} if blocks is None else {"style_blocks": blocks}
    image = _gen(tiny_models, reference, ip_mode="style", ip_scale=0.7, **extra)[0]
    scales = _ip_scales(pipe)
    assert len(scales) == 16  # every cross-attention layer of the SD1.5 layout carries IP-Adapter
    assert any(inside(n) for n in scales) and not all(inside(n) for n in scales)
    for name, scale in scales.items():
        assert scale == (0.7 if inside(name) else 0.0), name
    assert json.loads(image.info["parameters"])["ip_mode"] == "style"
    _gen(tiny_models, reference, ip_mode="full", ip_scale=0.7)
    assert set(_ip_scales(pipe).values()) == {0.7}  # full mode puts every layer back


def test_style_output_differs_from_full(tiny_models, reference):
    style, full = (_gen(tiny_models, reference, ip_mode=mode, appearance="kv")[0] for mode in ("style", "full"))
    assert np.abs(np.asarray(style, float) - np.asarray(full, float)).mean() > 1


@pytest.mark.parametrize("blocks", [["up_blocks.0"], ["up_blocks.9"], ["up_blocks.1.attentions.3"],
                                    ["mid_block.attentions.1"], ["conv_in"], "up_blocks.1", []])
def test_bad_style_blocks_are_refused_with_the_valid_names(pipe, blocks):
    with pytest.raises(InputError) as e:
        instant_style.scale_config(pipe.unet, blocks, 1.0)
    assert "block" in e.value.message and e.value.hint


def _suppressed(tiny_models, pipe, cond, content_encoder, lam):
    """`cond` through the InstantStyle control the engine builds for suppress_content="bricks"."""
    params = GenerationParams.build({"content_encoder": str(content_encoder), "suppress_scale": lam},
                                    engine="diffusion", suppress_content="bricks")
    spec = models.resolve(tiny_models["base"], tiny_models["ip_adapter"], device="cpu")
    control = instant_style.from_params(params, spec, balance.settings())
    control.setup(Run(pipe, StepState()))
    return control.conditioning(cond)


def test_suppression_subtracts_exactly_lambda_times_the_text_embedding(tiny_models, pipe, reference, content_encoder):
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    image = reference.resize((SIZE, SIZE))
    with torch.no_grad():
        plain = diffusion.encode_conditioning(pipe, image, "", "")
        # the text embedding computed independently of the engine's loader
        tokenizer = CLIPTokenizer.from_pretrained(content_encoder)
        encoder = CLIPTextModelWithProjection.from_pretrained(content_encoder).eval()
        text = encoder(**tokenizer(["bricks"], return_tensors="pt")).text_embeds
        for lam in (0.0, 0.5, 0.8, 2.0):
            suppressed = _suppressed(tiny_models, pipe, plain, content_encoder, lam)
            assert suppressed.image.shape == plain.image.shape  # (1, 1 image, projection_dim)
            torch.testing.assert_close(plain.image - suppressed.image, lam * text.view_as(plain.image), rtol=1e-5,
                                       atol=1e-6)
            # only the conditional image embedding changes; text and the unconditional half do not
            assert torch.equal(suppressed.image_uncond, plain.image_uncond) and torch.equal(suppressed.text, plain.text)
    assert text.abs().max() > 0


def test_suppression_changes_the_output_and_is_recorded(tiny_models, reference, content_encoder):
    plain = _gen(tiny_models, reference, ip_mode="style")[0]
    suppressed = _gen(tiny_models, reference, ip_mode="style", suppress_content="bricks",
                      content_encoder=str(content_encoder), suppress_scale=2.0)[0]
    assert not np.array_equal(np.asarray(plain), np.asarray(suppressed))
    params = json.loads(suppressed.info["parameters"])
    assert (params["suppress_content"], params["suppress_scale"]) == ("bricks", 2.0)


def test_missing_text_encoder_gives_a_clear_message(tiny_models, reference, tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelsMissingError) as e:
        _gen(tiny_models, reference, suppress_content="bricks")
    assert models.DEFAULT_CONTENT_ENCODER in e.value.message
    assert "python -m backend download-models --content-encoder" in e.value.hint
    with pytest.raises(ModelsMissingError, match="not found"):
        _gen(tiny_models, reference, suppress_content="bricks", content_encoder=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelsMissingError, match="CLIP text encoder"):
        _gen(tiny_models, reference, suppress_content="bricks", content_encoder=str(tmp_path / "empty"))


def test_download_models_fetches_the_text_tower_only_when_asked(monkeypatch, tmp_path):
    import fnmatch

    import huggingface_hub

    asked = {}
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, allow_patterns, **kw: asked.setdefault(repo_id, allow_patterns) and str(tmp_path))
    models.download_models()
    assert models.DEFAULT_CONTENT_ENCODER not in asked
    assert cli.main(["download-models", "--content-encoder"]) == 0
    patterns = asked[models.DEFAULT_CONTENT_ENCODER]
    for needed in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):  # what the loader reads
        assert any(fnmatch.fnmatch(needed, p) for p in patterns), needed
    assert not any(p.endswith((".bin", ".pt")) for p in patterns)


def test_bad_ip_mode_is_refused(tiny_models, reference):
    with pytest.raises(InputError, match="ip_mode"):
        _gen(tiny_models, reference, ip_mode="layout")


def test_cli_passes_the_research_options(tiny_models, color_texture_path, content_encoder, tmp_path, capsys):
    code = cli.main(["generate", str(color_texture_path), "--out", str(tmp_path), "--engine", "diffusion",
                     "--base", str(tiny_models["base"]), "--ip-adapter", str(tiny_models["ip_adapter"]),
                     "--size", "64", "--steps", "2", "--seed", "1", "--no-preview", "--balance", "1",
                     "--appearance", "ad", "--ad-iterations", "1", "--ad-lr", "0.1", "--ip-mode", "style",
                     "--style-blocks", "up_blocks.1.attentions.1", "--suppress-content", "wood planks",
                     "--suppress-scale", "0.5", "--content-encoder", str(content_encoder)])
    assert code == 0
    (path,) = capsys.readouterr().out.split()
    params = json.loads(Image.open(path).info["parameters"])
    assert {k: params[k] for k in ("appearance", "ad_iterations", "ad_lr", "ip_mode", "style_blocks",
                                   "suppress_content", "suppress_scale")} == {
        "appearance": "ad", "ad_iterations": 1, "ad_lr": 0.1, "ip_mode": "style",
        "style_blocks": ["up_blocks.1.attentions.1"], "suppress_content": "wood planks", "suppress_scale": 0.5}


@pytest.mark.slow  # a service running every research mode on the tiny models: about 25 s
def test_service_lists_the_research_parameters_in_hello_and_runs_them(tiny_models, content_encoder,
                                                                       color_texture_path, tmp_path):
    from tests.service_process import ServiceProcess

    (tmp_path / "service").mkdir()
    proc = ServiceProcess(tmp_path / "service", "--base", str(tiny_models["base"]),
                          "--ip-adapter", str(tiny_models["ip_adapter"]))
    try:
        hello = proc.ask("hello")
        parameters = hello["parameters"]
        assert {"ip_mode", "suppress_content", "appearance"} <= set(parameters["fields"])
        assert parameters["choices"]["appearance"] == ["kv", "ad", "none"]
        assert parameters["choices"]["ip_mode"] == ["full", "style"]
        assert {"ad_iterations", "ad_lr", "style_blocks", "suppress_scale", "content_encoder"} <= set(
            parameters["extra"]["diffusion"])
        (tmp_path / "out").mkdir()
        job = proc.send("generate", input=str(color_texture_path), output_dir=str(tmp_path / "out"), engine="diffusion",
                        size=64, steps=2, seed=5, balance=1.0, appearance="ad", ip_mode="style",
                        suppress_content="bricks",
                        extra={"ad_iterations": 1, "ad_lr": 0.1, "content_encoder": str(content_encoder)})
        events = proc.job_events(job)
        assert events[-1]["type"] == "result", events[-1]
        params = events[-1]["files"][0]["parameters"]
        assert (params["appearance"], params["ad_iterations"], params["ip_mode"], params["suppress_content"]) == (
            "ad", 1, "style", "bricks")
        progress = [e for e in events if e["type"] == "progress"]
        window = len(params["kv_window_steps"])  # inversion and reference branch run the window only
        assert window == 1 and progress[-1]["total"] == 2 + 2 * window + window  # + 1 AD iteration per window step
        bad = proc.ask("generate", input=str(color_texture_path), output_dir=str(tmp_path), ip_mode="layout")
        assert bad["type"] == "error" and "ip_mode" in bad["message"]
    finally:
        assert proc.stop() == 0, proc.stderr_tail()


def test_blender_panel_settings_become_the_backend_parameters():
    from backend.params import GenerationParams
    from blender_addon.connection import job as jobs

    base = {"engine": "diffusion", "variants": 1, "steps": 4, "size": 64, "tile": "both", "balance": 0.5,
            "appearance": "ad"}
    on = jobs.request_params(base | {"style_only": True, "suppress_content": "  wood planks "}, 3)
    assert (on["ip_mode"], on["suppress_content"], on["appearance"]) == ("style", "wood planks", "ad")
    GenerationParams(**on).validated()
    off = jobs.request_params(base | {"style_only": False, "suppress_content": "wood planks"}, 3)
    assert "ip_mode" not in off and "suppress_content" not in off  # the backend's defaults: full, none
    blank = jobs.request_params(base | {"style_only": True, "suppress_content": "  "}, 3)
    assert blank["ip_mode"] == "style" and "suppress_content" not in blank
