"""Shared fixtures: the tiny random-weight models (written once, reused across runs) and textures."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# One torch thread per process (set before torch loads; inherited by subprocesses): on a small,
# shared CPU, several threads per test process thrash and run up to 10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _models_key() -> str:
    # Regenerate the cached models whenever a generator changes.
    digest = hashlib.sha256()
    for path in sorted((ROOT / "backend" / "testing").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    """{"base": .../sd15, "ip_adapter": .../ip-adapter, "lgp", "controlnet", "sam"}: tiny models on disk."""
    from backend.testing.random_models import make_test_models

    folder = ROOT / ".test-models" / f"tiny-{_models_key()}"
    done = folder / ".complete"
    if not done.exists():
        make_test_models(folder)
        done.touch()
    return {"base": folder / "sd15", "ip_adapter": folder / "ip-adapter", "lgp": folder / "lgp",
            "controlnet": folder / "controlnet", "sam": folder / "sam", "fast_lora": folder / "fast-lora",
            "taesd": folder / "taesd"}


def _skimage_texture(name: str, size: int) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, name)()
    image = Image.fromarray(arr)
    w, h = image.size
    side = min(w, h)
    return image.crop((0, 0, side, side)).resize((size, size), Image.Resampling.LANCZOS)


@pytest.fixture(scope="session")
def brick_path(tmp_path_factory) -> Path:
    """scikit-image's CC0 brick texture (grayscale), 128 px, as a PNG on disk."""
    path = tmp_path_factory.mktemp("textures") / "brick.png"
    _skimage_texture("brick", 128).save(path)
    return path


@pytest.fixture(scope="session")
def color_texture_path(tmp_path_factory) -> Path:
    """A small colour texture (scikit-image's CC0 'coffee' crop is not a texture; we use a tinted gravel)."""
    path = tmp_path_factory.mktemp("textures") / "gravel_color.png"
    gray = np.asarray(_skimage_texture("gravel", 128), dtype=np.float32) / 255.0
    rgb = np.stack([gray * 0.9 + 0.1, gray * 0.7, gray * 0.5], axis=-1)
    Image.fromarray((rgb * 255).astype(np.uint8), "RGB").save(path)
    return path


@pytest.fixture(scope="module")
def pipe(tiny_models):
    """The tiny SD1.5 + IP-Adapter pipeline the engine currently holds, through its real loading path.

    Module scope, not session: other tests unload or swap the engine's pipeline, and a stale object
    would not be the one generate_variants uses.
    """
    from backend.diffusion import models

    return models.load_pipeline(models.resolve(tiny_models["base"], tiny_models["ip_adapter"]))


@pytest.fixture(scope="session")
def reference(color_texture_path) -> Image.Image:
    """The colour texture as an RGB PIL image (tests must not modify it)."""
    return Image.open(color_texture_path).convert("RGB")
