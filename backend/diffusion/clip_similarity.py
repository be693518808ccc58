"""CLIP-I for the report card: the cosine of the CLIP image embeddings of the reference and each
variant, from the IP-Adapter's own image encoder (already loaded for the image prompt: no extra
model). One encoder pass over the reference and the variants together, about the cost of one UNet
pass at batch 1."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def similarities(pipe, reference, images) -> list[float] | None:
    """One cosine per image, or None when the pipeline has no image encoder."""
    encoder, processor = getattr(pipe, "image_encoder", None), getattr(pipe, "feature_extractor", None)
    if encoder is None or processor is None:
        return None
    pictures = [im.convert("RGB") for im in (reference, *images)]
    pixels = processor(images=pictures, return_tensors="pt").pixel_values
    embeds = encoder(pixels.to(encoder.device, encoder.dtype)).image_embeds.float()
    embeds = F.normalize(embeds, dim=-1)
    return (embeds[1:] @ embeds[0]).tolist()
