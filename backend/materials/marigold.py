"""Optional learned normals: diffusers' MarigoldNormalsPipeline, when its weights are on this machine.

The classical normals (derive.normal_from_height) stay the default and the fallback. Marigold's
frame is x right, y up, z toward the viewer: for a texture seen from above that is the OpenGL
tangent-space convention derive.py uses, so its output is stored as is. Every padded convolution
of its UNet and VAE wraps around while it runs (backend.diffusion.tiling) and the image is
processed at its own resolution (no resize), so a tileable image gives nearly periodic normals;
not exactly: the VAE encoder's stride-2 downsampling pads one side with zeros outside any Conv2d
padding, which tiling does not wrap (measured with tiny random weights: a 64 px roll of the input
and latents changes the output by up to 0.4 per component, where the classical path is exact).

Nothing here downloads but download_normals (`python -m backend download-models --normals`): the
model is a local diffusers folder or a hub id already in the Hugging Face cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from backend.errors import ModelsMissingError
from backend.model_registry import registry

DEFAULT_NORMALS = "prs-eth/marigold-normals-v1-1"


def resolve_normals(location: str | os.PathLike | None = None) -> Path:
    """The folder of the Marigold normals model: a local folder, or a hub id from the cache only."""
    value = str(location) if location is not None else DEFAULT_NORMALS
    if Path(value).is_dir():
        if not (Path(value) / "model_index.json").exists():
            raise ModelsMissingError(f"{value} is not a diffusers pipeline folder (no model_index.json)",
                                     hint="pass the folder of a Marigold normals model")
        return Path(value)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(value, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as e:
        raise ModelsMissingError(f"Marigold normals model {value!r} is not on this machine",
                                 hint=f"run `hf download {value}` (for the default: `python -m backend download-models "
                                 "--normals`) once, or use the classical "
                                 "normals (the default)") from e


def download_normals(repo_id: str = DEFAULT_NORMALS) -> Path:
    """Fetch the Marigold normals model into the Hugging Face cache (`download-models --normals`)."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.txt", "*.safetensors"]))


def load_normals(location: str | os.PathLike | None = None, device: str = "cpu", dtype: str = "float32"):
    """The MarigoldNormalsPipeline, kept in the model registry (one at a time)."""
    folder = resolve_normals(location)

    def build():
        import torch
        from diffusers import MarigoldNormalsPipeline

        pipe = MarigoldNormalsPipeline.from_pretrained(folder, torch_dtype=getattr(torch, dtype), local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)

    return registry.get("marigold", (str(folder), device, dtype), build,
                        {"path": str(folder), "device": device, "dtype": dtype})


def predict_normals(colour, pipe, *, steps: int | None = None, seed: int = 0, latents=None) -> np.ndarray:
    """(H, W, 3) unit normals of an image (PIL or (H, W, 3) uint8); derive(normals=...) takes it."""
    import torch
    from PIL import Image

    from backend.diffusion.tiling import tiling

    image = colour if isinstance(colour, Image.Image) else Image.fromarray(np.asarray(colour))
    generator = torch.Generator("cpu").manual_seed(seed) if latents is None else None
    with torch.no_grad(), tiling("both", pipe.unet, pipe.vae):
        out = pipe(image.convert("RGB"), num_inference_steps=steps, processing_resolution=0,
                   generator=generator, latents=latents, output_type="np")
    n = np.asarray(out.prediction[0], dtype=np.float64)
    return n / np.maximum(np.linalg.norm(n, axis=2, keepdims=True), 1e-8)
