"""Segment Anything (SAM) through transformers: point and box prompts to a mask of the input image.

The default model is SlimSAM (nielsr/slimsam-50-uniform: SAM ViT-B pruned to half, about 112 MB,
loaded with transformers' SamModel like any SAM checkpoint); `sam` may name another hub id or a local
folder with config.json, model.safetensors and preprocessor_config.json (TEXTURE_VARIANTS_SAM sets
the default, e.g. for the Blender add-on's backend or a render farm). Like the diffusion models,
it is read from the Hugging Face cache only and fetched by `download-models --sam` alone.
`write_tiny_sam(folder)` writes a random-weight SAM in the same layout for the tests.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from PIL import Image

from backend.errors import ModelsMissingError

log = logging.getLogger(__name__)

DEFAULT_SAM = "nielsr/slimsam-50-uniform"
SAM_PATTERNS = ["config.json", "model.safetensors", "preprocessor_config.json"]
DOWNLOAD_COMMAND = "python -m backend download-models --sam"

_lock = threading.Lock()
_loaded: dict[tuple, tuple] = {}


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
    """(SamModel, SamProcessor) from `folder`, kept for reuse (one at a time)."""
    from transformers import SamModel, SamProcessor

    key = (folder, device)
    with _lock:
        if key not in _loaded:
            _loaded.clear()
            log.info("loading Segment Anything %s", folder)
            try:
                model = SamModel.from_pretrained(folder, use_safetensors=True, local_files_only=True)
                processor = SamProcessor.from_pretrained(folder, local_files_only=True)
            except (OSError, ValueError) as e:
                raise ModelsMissingError(f"could not load Segment Anything from {folder}: {e}",
                                         hint=f"pass a SAM folder in the hub layout, or run `{DOWNLOAD_COMMAND}`") from e
            _loaded[key] = (model.to(device).eval(), processor)
        return _loaded[key]


def unload() -> bool:
    with _lock:
        had = bool(_loaded)
        _loaded.clear()
    return had


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


def write_tiny_sam(folder: str | os.PathLike, seed: int = 0) -> Path:
    """A random-weight SAM (SamConfig with tiny vision / prompt-encoder / mask-decoder configs) and its
    processor, saved like the hub checkpoints (config.json, model.safetensors, preprocessor_config.json)."""
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel

    side, patch, width = 64, 16, 32
    config = SamConfig(
        vision_config=dict(hidden_size=width, output_channels=width, num_hidden_layers=2, num_attention_heads=2,
                           image_size=side, patch_size=patch, window_size=2, global_attn_indexes=[1],
                           num_pos_feats=width // 2, mlp_dim=2 * width),
        prompt_encoder_config=dict(hidden_size=width, image_size=side, patch_size=patch, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=width, mlp_dim=2 * width, num_attention_heads=2, iou_head_hidden_dim=width),
    )
    torch.manual_seed(seed)
    folder = Path(folder)
    SamModel(config).save_pretrained(folder, safe_serialization=True)
    SamImageProcessor(size={"longest_edge": side}, pad_size={"height": side, "width": side}).save_pretrained(folder)
    return folder
