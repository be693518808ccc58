"""CLIP-I for the report card: the cosine of the CLIP image embeddings of the reference and each
variant, from the IP-Adapter's own image encoder (already loaded for the image prompt: no extra
model). One encoder pass over the variants, each image about the cost of one UNet pass at batch 1.
The reference's embedding is kept per texture and encoder, so more variants of a texture pay for
theirs only; with a plain IP-Adapter it is the image prompt's own embedding (`remember`), so not
even a first call encodes the reference twice."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backend.diffusion.reference_cache import ReferenceCache

reference_embeds = ReferenceCache(8 * 2**20)  # a normalised embedding is a few KB


def _encode(encoder, processor, pictures) -> torch.Tensor:
    pixels = processor(images=[im.convert("RGB") for im in pictures], return_tensors="pt").pixel_values
    return F.normalize(encoder(pixels.to(encoder.device, encoder.dtype)).image_embeds.float(), dim=-1)


def remember(key: tuple, image_prompt: torch.Tensor, pipe) -> None:
    """Keep the reference's embedding from its IP-Adapter image prompt when that is the same pooled
    CLIP embedding (a plain IP-Adapter's; a Plus one's is the hidden states), so a first call does
    not encode the reference a second time for its card."""
    encoder = getattr(pipe, "image_encoder", None)
    if encoder is None or key in reference_embeds or image_prompt.numel() != encoder.config.projection_dim:
        return
    reference_embeds.put(key, F.normalize(image_prompt.reshape(-1).float(), dim=-1))


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
