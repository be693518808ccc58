"""Model loading for the diffusion engine (real loaders, offline), device selection, CLI end to end."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from backend import engines
from backend.diffusion import models
from backend.errors import InputError, ModelsMissingError
from backend.model_registry import registry
from tests.conftest import ROOT


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # and a test can never reach the network
    return cache


def _fake_hub_snapshot(cache, repo_id):
    """The folder a hub download of repo_id would leave in the cache (refs/main -> snapshot)."""
    commit = "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


# ------------------------------------------------------------------ device and dtype


def test_device_and_dtype_on_this_cpu_machine(monkeypatch):
    import torch

    monkeypatch.delenv("TEXTURE_VARIANTS_DEVICE", raising=False)
    monkeypatch.delenv("TEXTURE_VARIANTS_DTYPE", raising=False)
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert models.select_device() == ("cpu", "float32")
        with pytest.raises(InputError, match="cuda"):
            models.select_device("cuda")
    assert models.select_device("cpu", "fp16") == ("cpu", "float16")
    monkeypatch.setenv("TEXTURE_VARIANTS_DTYPE", "bf16")
    assert models.select_device("cpu") == ("cpu", "bfloat16")
    with pytest.raises(InputError, match="unknown device"):
        models.select_device("tpu")
    with pytest.raises(InputError, match="unknown dtype"):
        models.select_device("cpu", "int8")


# ------------------------------------------------------------------ local folders


def test_local_folders_resolve_and_load_once_with_ip_adapter_processors(tiny_models):
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    spec = models.resolve(tiny_models["base"], tiny_models["ip_adapter"], device="cpu")
    assert spec.base == tiny_models["base"] and not spec.base_single_file and spec.base_variant is None
    assert spec.ip_weight == "ip-adapter_sd15.safetensors" and spec.dtype == "float32"
    pipe = models.load_pipeline(spec)
    loads = registry.loads["pipeline"]
    assert models.load_pipeline(spec) is pipe and registry.loads["pipeline"] == loads  # reused, not reloaded
    assert spec in models.loaded_specs()
    kinds = [type(p) for p in pipe.unet.attn_processors.values()]
    assert kinds.count(IPAdapterAttnProcessor2_0) == 16
    assert pipe.image_encoder is not None and pipe.device.type == "cpu"


def test_missing_pieces_name_what_is_missing(tiny_models, tmp_path):
    with pytest.raises(ModelsMissingError, match="not found"):
        models.resolve_base(tmp_path / "nope" / "sd15")
    not_pipeline = tmp_path / "empty"
    not_pipeline.mkdir()
    with pytest.raises(InputError, match="model_index.json"):
        models.resolve_base(not_pipeline)
    with pytest.raises(ModelsMissingError, match="ip-adapter-plus_sd15"):
        models.resolve_ip_adapter(tiny_models["ip_adapter"], "plus")
    with pytest.raises(InputError, match="variant"):
        models.resolve_ip_adapter(tiny_models["ip_adapter"], "ultra")


def test_pickled_weights_are_refused_unless_opted_in(tiny_models, tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not really")
    with pytest.raises(InputError, match="allow-pickle"):
        models.resolve_base(ckpt)
    assert models.resolve_base(ckpt, allow_pickle=True) == (ckpt, True, None)

    ip = tmp_path / "ip"
    shutil.copytree(tiny_models["ip_adapter"], ip)
    encoder = ip / "models" / "image_encoder"
    (encoder / "model.safetensors").rename(encoder / "pytorch_model.bin")
    with pytest.raises(ModelsMissingError, match="allow-pickle"):
        models.resolve_ip_adapter(ip)
    assert models.resolve_ip_adapter(ip, allow_pickle=True)[0] == ip


# ------------------------------------------------------------------ hub ids (offline, from the cache)


def test_hub_ids_load_from_the_cache_with_the_fp16_files(tiny_models, empty_hf_cache):
    from diffusers import StableDiffusionPipeline

    snapshot = _fake_hub_snapshot(empty_hf_cache, "tv-test/sd15")
    StableDiffusionPipeline.from_pretrained(tiny_models["base"]).save_pretrained(snapshot, variant="fp16")
    shutil.copytree(tiny_models["ip_adapter"], _fake_hub_snapshot(empty_hf_cache, "tv-test/ip-adapter"))

    assert models.available("tv-test/sd15", "tv-test/ip-adapter") == (True, "models found locally")
    spec = models.resolve("tv-test/sd15", "tv-test/ip-adapter", device="cpu")
    assert spec.base == snapshot and spec.base_variant == "fp16"
    pipe = models.load_pipeline(spec)
    assert str(pipe.unet.dtype) == "torch.float32"  # fp16 files, upcast for the CPU


def test_absent_default_models_give_one_clear_error_and_auto_falls_back(empty_hf_cache, color_texture_path):
    from backend import generate_variants

    ok, why = models.available()
    assert not ok and "stable-diffusion-v1-5/stable-diffusion-v1-5" in why
    assert models.models_present() == {"base": False, "ip_adapter": False, "ip_adapter_plus": False}
    assert engines.resolve("auto")[0] == "patch"
    with pytest.raises(ModelsMissingError) as e:
        generate_variants(color_texture_path, engine="diffusion", size=64, steps=1)
    assert "python -m backend download-models" in e.value.hint
    with pytest.raises(ModelsMissingError) as e:
        models.resolve_ip_adapter(None, "plus")
    assert "download-models --ip-adapter-variant plus" in e.value.hint


def test_download_models_fetches_every_file_the_loader_reads(tiny_models, monkeypatch, tmp_path):
    import huggingface_hub

    asked = {}

    def fake_snapshot_download(repo_id, allow_patterns, **kw):
        assert not kw.get("local_files_only")
        asked[repo_id] = allow_patterns
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    models.download_models()
    base, ip = asked[models.DEFAULT_BASE], asked[models.DEFAULT_IP_ADAPTER]
    for needed in ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
                   "vae/diffusion_pytorch_model.fp16.safetensors", "text_encoder/model.fp16.safetensors",
                   "tokenizer/vocab.json", "scheduler/scheduler_config.json"]:
        assert any(fnmatch.fnmatch(needed, p) for p in base), needed
    for needed in ["models/ip-adapter_sd15.safetensors", "models/ip-adapter-plus_sd15.safetensors",
                   "models/image_encoder/config.json", "models/image_encoder/model.safetensors"]:
        assert any(fnmatch.fnmatch(needed, p) for p in ip), needed
    assert not any(p.endswith((".bin", ".ckpt")) for p in base + ip)


# ------------------------------------------------------------------ CLI end to end


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "backend", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)


@pytest.mark.slow  # two CLI processes each importing torch and loading the models: about 40 s
def test_cli_generates_tileable_variants_of_a_real_texture(tiny_models, brick_path, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(brick_path, src / "brick.png")
    before = sorted(os.listdir(src))
    args = ["generate", src / "brick.png", "--base", tiny_models["base"], "--ip-adapter", tiny_models["ip_adapter"],
            "--engine", "diffusion", "--variants", 2, "--seed", 7, "--steps", 2, "--size", 64]
    first = _cli(*args, "--out", tmp_path / "out")
    assert first.returncode == 0, first.stderr
    written = first.stdout.split()
    assert [os.path.basename(p) for p in written] == [
        "brick-diffusion-s7.png", "brick-diffusion-s7-tiled3x3.png",
        "brick-diffusion-s8.png", "brick-diffusion-s8-tiled3x3.png"]
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.path.basename(p) for p in written)
    assert sorted(os.listdir(src)) == before  # nothing written next to the input

    with Image.open(written[0]) as im:
        params = json.loads(im.text["parameters"])
        variant = np.asarray(im)
        assert im.size == (64, 64) and im.mode == "L"  # brick is grayscale: so is its variant
    with Image.open(written[1]) as tiled:
        assert tiled.size == (192, 192)
        assert np.array_equal(np.asarray(tiled)[64:128, 64:128], variant)
    assert params["seed"] == 7 and params["engine"] == "diffusion" and params["appearance"] == "kv"

    again = _cli(*args, "--out", tmp_path / "out")  # same command: same pictures, new names
    assert again.returncode == 0, again.stderr
    assert os.path.basename(again.stdout.split()[0]) == "brick-diffusion-s7-2.png"
    with Image.open(again.stdout.split()[0]) as im:
        assert np.array_equal(np.asarray(im), variant)


def test_cli_without_models_says_which_command_fixes_it(brick_path, tmp_path):
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1")
    result = _cli("generate", brick_path, "--out", tmp_path / "out", "--engine", "diffusion", env=env)
    assert result.returncode == 2
    assert "python -m backend download-models" in result.stderr
    assert not (tmp_path / "out").exists()


def test_single_file_checkpoint_goes_through_diffusers_single_file_loader(tiny_models, empty_hf_cache, tmp_path):
    import torch
    from safetensors.torch import save_file

    ckpt = tmp_path / "my-sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, str(ckpt))
    spec = models.resolve(ckpt, tiny_models["ip_adapter"], device="cpu")
    assert spec.base == ckpt and spec.base_single_file
    # offline and without the SD1.5 configs in the cache, the loader cannot build the pipeline:
    # the error says so and names the command that fetches them
    with pytest.raises(ModelsMissingError, match="could not load the base model") as e:
        models.load_pipeline(spec)
    assert "download-models" in e.value.hint
