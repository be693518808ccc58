"""The report card's CLIP-I (backend/diffusion/clip_similarity.py): the reference's embedding is kept
per texture and encoder, so a second call encodes only its variants and gives the same cosines."""

from __future__ import annotations

import numpy as np
from PIL import Image

from backend.diffusion import clip_similarity


def test_the_reference_is_encoded_once_per_key_and_the_cosines_do_not_change(pipe, reference):
    clip_similarity.reference_embeds.clear()
    encoded: list[int] = []
    hook = pipe.image_encoder.register_forward_hook(lambda _m, args, _o: encoded.append(args[0].shape[0]))
    try:
        rng = np.random.default_rng(0)
        variants = [reference.rotate(90), Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8))]
        uncached = clip_similarity.similarities(pipe, reference, variants)
        first = clip_similarity.similarities(pipe, reference, variants, ("clip_i", "texture"))
        again = clip_similarity.similarities(pipe, reference, variants, ("clip_i", "texture"))
        other = clip_similarity.similarities(pipe, variants[1], variants, ("clip_i", "other texture"))
    finally:
        hook.remove()
    assert encoded == [3, 3, 2, 3]  # the reference with the variants, then the variants alone
    assert np.allclose(first, uncached, atol=1e-6) and np.allclose(again, first, atol=1e-6)
    assert abs(other[1] - 1.0) < 1e-5 and not np.allclose(other, first)  # a key per texture


def test_a_plain_ip_adapters_image_prompt_serves_as_the_cards_reference_embedding(pipe, reference):
    from backend.diffusion.engine import encode_conditioning

    clip_similarity.reference_embeds.clear()
    variants = [reference.rotate(90)]
    uncached = clip_similarity.similarities(pipe, reference, variants)
    conditioning = encode_conditioning(pipe, reference, "", "")
    clip_similarity.remember(("clip_i", "texture"), conditioning.image, pipe)
    encoded: list[int] = []
    hook = pipe.image_encoder.register_forward_hook(lambda _m, args, _o: encoded.append(args[0].shape[0]))
    try:
        from_prompt = clip_similarity.similarities(pipe, reference, variants, ("clip_i", "texture"))
    finally:
        hook.remove()
    assert encoded == [1] and np.allclose(from_prompt, uncached, atol=1e-5)
    clip_similarity.remember(("clip_i", "plus"), conditioning.image.expand(1, 4, -1), pipe)  # hidden states
    assert ("clip_i", "plus") not in clip_similarity.reference_embeds
