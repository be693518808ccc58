"""Random-weight add-on models in their real layouts: Segment Anything, Marigold normals.

Fixtures for make-test-models and the tests (see backend/testing/__init__.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from backend.testing.random_models import SCHEDULER_CONFIG, TINY, sd15_pipeline


def write_tiny_sam(folder: str | os.PathLike, seed: int = 0) -> Path:
    """A random-weight SAM (SamConfig with tiny vision / prompt-encoder / mask-decoder configs) and its
    processor, saved like the hub checkpoints (config.json, model.safetensors, preprocessor_config.json)."""
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


def write_tiny_marigold_normals(folder: str | os.PathLike) -> Path:
    """A random-weight Marigold normals pipeline with tiny SD-shaped parts, in the real folder layout."""
    from diffusers import DDIMScheduler, MarigoldNormalsPipeline, UNet2DConditionModel

    sd = sd15_pipeline(TINY)
    # Marigold's UNet reads the image latent and the noisy normal latent stacked: 8 channels in.
    unet = UNet2DConditionModel.from_config({**sd.unet.config, "in_channels": 8})
    config = {k: v for k, v in SCHEDULER_CONFIG.items() if k != "skip_prk_steps"}
    scheduler = DDIMScheduler(**config, prediction_type="v_prediction", timestep_spacing="trailing")
    pipe = MarigoldNormalsPipeline(unet=unet, vae=sd.vae, scheduler=scheduler, text_encoder=sd.text_encoder,
                                   tokenizer=sd.tokenizer, prediction_type="normals", use_full_z_range=True,
                                   default_denoising_steps=2, default_processing_resolution=TINY.sample_size)
    pipe.save_pretrained(folder)
    return Path(folder)
