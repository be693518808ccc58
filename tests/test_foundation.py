"""The foundation: test models load through the real loaders and behave like SD1.5 + IP-Adapter."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from tests.conftest import ROOT


def _pipeline(models, with_adapter=True):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(models["base"], safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    if with_adapter:
        pipe.load_ip_adapter(str(models["ip_adapter"]), subfolder="models",
                             weight_name="ip-adapter_sd15.safetensors")
    return pipe


def _run(pipe, image=None, seed=0):
    kwargs = dict(prompt="", num_inference_steps=3, height=64, width=64, output_type="np",
                  generator=torch.Generator().manual_seed(seed))
    if image is not None:
        kwargs["ip_adapter_image"] = image
    return pipe(**kwargs).images[0]


def test_block_layout_is_sd15(tiny_models):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_models["base"], subfolder="unet")
    assert [type(b).__name__ for b in unet.down_blocks] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert [type(b).__name__ for b in unet.up_blocks] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    assert unet.config.layers_per_block == 2
    # 16 cross-attention layers, as in SD1.5: down 0-2 (2 each), mid (1), up 1-3 (3 each).
    assert sum(n.endswith("attn2.processor") for n in unet.attn_processors) == 16
    assert any(n.startswith("up_blocks.3.attentions.2") for n in unet.attn_processors)


def test_ip_adapter_file_has_the_real_key_layout(tiny_models):
    from safetensors.torch import load_file

    sd = load_file(tiny_models["ip_adapter"] / "models" / "ip-adapter_sd15.safetensors")
    assert {k for k in sd if k.startswith("image_proj.")} == {
        "image_proj.proj.weight", "image_proj.proj.bias", "image_proj.norm.weight", "image_proj.norm.bias"}
    indices = sorted({int(k.split(".")[1]) for k in sd if k.startswith("ip_adapter.")})
    assert indices == list(range(1, 32, 2))
    for i in indices:
        assert f"ip_adapter.{i}.to_k_ip.weight" in sd and f"ip_adapter.{i}.to_v_ip.weight" in sd


def test_vae_downsamples_8x(tiny_models):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(tiny_models["base"], subfolder="vae")
    with torch.no_grad():
        latent = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert latent.shape == (1, 4, 8, 8)


def test_generates_with_ip_adapter_active(tiny_models, reference):
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    pipe = _pipeline(tiny_models)
    ip_procs = [p for p in pipe.unet.attn_processors.values() if isinstance(p, IPAdapterAttnProcessor2_0)]
    assert len(ip_procs) == 16
    out = _run(pipe, reference)
    assert out.shape == (64, 64, 3) and np.isfinite(out).all()


def test_ip_adapter_scale_zero_equals_no_adapter_and_large_scale_changes(tiny_models, reference):
    plain = _run(_pipeline(tiny_models, with_adapter=False))
    pipe = _pipeline(tiny_models)
    pipe.set_ip_adapter_scale(0.0)
    at_zero = _run(pipe, reference)
    pipe.set_ip_adapter_scale(50.0)
    at_large = _run(pipe, reference)
    np.testing.assert_allclose(at_zero, plain, atol=1e-5)
    assert np.abs(at_large - plain).mean() > 1e-3


def test_make_test_models_cli_writes_the_real_layout(tmp_path):
    result = subprocess.run([sys.executable, "-m", "backend", "make-test-models", str(tmp_path / "m")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for rel in ["sd15/model_index.json", "sd15/unet/diffusion_pytorch_model.safetensors",
                "sd15/vae/diffusion_pytorch_model.safetensors", "sd15/text_encoder/model.safetensors",
                "sd15/tokenizer", "sd15/scheduler/scheduler_config.json",
                "ip-adapter/models/ip-adapter_sd15.safetensors",
                "ip-adapter/models/image_encoder/config.json",
                "ip-adapter/models/image_encoder/model.safetensors"]:
        assert (tmp_path / "m" / rel).exists(), rel
    assert not list((tmp_path / "m").rglob("*.bin")), "weights must be safetensors"


def test_import_boundaries_hold_and_the_checker_catches_violations(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import check_imports

    assert check_imports.violations() == []
    (tmp_path / "blender_addon").mkdir()
    (tmp_path / "backend").mkdir()
    (tmp_path / "blender_addon" / "paths.py").write_text("def f():\n    import torch\n")
    (tmp_path / "backend" / "y.py").write_text("from bpy import data\n")
    found = check_imports.violations(tmp_path)
    assert len(found) == 2 and "torch" in found[0] and "bpy" in found[1]
