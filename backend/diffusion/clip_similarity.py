"""CLIP-I for the report card: the cosine of the CLIP image embeddings of the reference and each
variant, from the IP-Adapter's own image encoder (already loaded for the image prompt: no extra
model). One encoder pass over the variants (and the reference, the first time: its embedding is
kept per texture and encoder, so more variants of one texture pay for theirs only), each image
about the cost of one UNet pass at batch 1."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backend.diffusion.reference_cache import ReferenceCache

reference_embeds = ReferenceCache(8 * 2**20)  # a normalised embedding is a few KB


def _encode(encoder, processor, pictures) -> torch.Tensor:
    pixels = processor(images=[im.convert("RGB") for im in pictures], return_tensors="pt").pixel_values
    return F.normalize(encoder(pixels.to(encoder.device, encoder.dtype)).image_embeds.float(), dim=-1)


@torch.no_grad()
def similarities(pipe, reference, images, reference_key: tuple | None = None) -> list[float] | None:
    """One cosine per image, or None when the pipeline has no image encoder. `reference_key`: what
    the reference's embedding is kept under (its pixels and the encoder); None: encoded every call."""
    encoder, processor = getattr(pipe, "image_encoder", None), getattr(pipe, "feature_extractor", None)
    if encoder is None or processor is None:
        return None
    kept = reference_embeds.get(reference_key) if reference_key is not None else None
    embeds = _encode(encoder, processor, images if kept is not None else [reference, *images])
    if kept is None:
        kept, embeds = embeds[0], embeds[1:]
        if reference_key is not None:
            reference_embeds.put(reference_key, kept)
    return (embeds @ kept).tolist()
