"""Segment Anything (SAM) through transformers: point and box prompts to a mask of the input image.

The default model is SlimSAM (nielsr/slimsam-50-uniform: SAM ViT-B pruned to half, about 112 MB,
loaded with transformers' SamModel like any SAM checkpoint); `sam` may name another hub id or a local
folder with config.json, model.safetensors and preprocessor_config.json (TEXTURE_VARIANTS_SAM sets
the default, e.g. for the Blender add-on's backend or a render farm). Like the diffusion models,
it is read from the Hugging Face cache only and fetched by `download-models --sam` alone.
backend.testing.random_addons writes a random-weight SAM in the same layout for the tests.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from backend.errors import ModelsMissingError
from backend.model_registry import registry

DEFAULT_SAM = "nielsr/slimsam-50-uniform"
SAM_PATTERNS = ["config.json", "model.safetensors", "preprocessor_config.json"]
DOWNLOAD_COMMAND = "python -m backend download-models --sam"

def resolve_sam(sam: str | os.PathLike | None = None) -> Path:
    """The local folder of the SAM model (a folder, or a hub id read from the cache only)."""
    from backend.diffusion.hub import local_or_cached

    sam = sam if sam is not None else os.environ.get("TEXTURE_VARIANTS_SAM") or None
    value = str(sam) if sam is not None else DEFAULT_SAM
    fix = DOWNLOAD_COMMAND + ("" if sam is None else f" {value}")
    folder = local_or_cached(value, SAM_PATTERNS, "Segment Anything model", fix,
                             hint=f"pass a SAM folder or hub id, or run `{fix}` for the default; or paint a mask")
    missing = [name for name in SAM_PATTERNS if not (folder / name).exists()]
    if missing:
        raise ModelsMissingError(f"no {', '.join(missing)} in the Segment Anything folder {folder}",
                                 hint=f"a SAM folder holds {', '.join(SAM_PATTERNS)}: run `{fix}`")
    return folder


def load_sam(folder: Path, device: str):
    """(SamModel, SamProcessor) from `folder`, kept in the model registry (one at a time)."""

    def build():
        from transformers import SamModel, SamProcessor

        try:
            model = SamModel.from_pretrained(folder, use_safetensors=True, local_files_only=True)
            processor = SamProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelsMissingError(f"could not load Segment Anything from {folder}: {e}",
                                     hint=f"pass a SAM folder in the hub layout, or run `{DOWNLOAD_COMMAND}`") from e
        return model.to(device).eval(), processor

    return registry.get("sam", (folder, device), build, {"path": str(folder), "device": device})


def segment(image: Image.Image, points, box, folder: Path, device: str) -> Image.Image:
    """SAM's mask ("L", the image's size, white = selected) for `points` ((x, y, label), ...) and/or
    `box` (x0, y0, x1, y1), pixel coordinates of `image`. With a single point and no box SAM's three
    candidate masks are scored and the best kept (its own advice for ambiguous prompts)."""
    import numpy as np
    import torch

    model, processor = load_sam(folder, device)
    inputs: dict = {}
    if points:
        inputs["input_points"] = [[[[x, y] for x, y, _ in points]]]
        inputs["input_labels"] = [[[label for *_, label in points]]]
    if box is not None:
        inputs["input_boxes"] = [[list(box)]]
    encoded = processor(images=image.convert("RGB"), return_tensors="pt", **inputs).to(device)
    multimask = box is None and len(points or ()) == 1
    with torch.no_grad():
        out = model(**encoded, multimask_output=multimask)
    masks = processor.image_processor.post_process_masks(out.pred_masks.cpu(), encoded["original_sizes"].cpu(),
                                                         encoded["reshaped_input_sizes"].cpu())[0]
    best = int(out.iou_scores[0, 0].argmax()) if multimask else 0
    return Image.fromarray(masks[0, best].numpy().astype(np.uint8) * 255, "L")


def download_sam(repo_id: str | None = None) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id or DEFAULT_SAM, allow_patterns=SAM_PATTERNS))
