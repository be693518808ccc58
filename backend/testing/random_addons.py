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


# The modules LCM-LoRA adapts (its training script's target modules), in the file's kohya key layout:
# lora_unet_<module path with _>.lora_down.weight / .lora_up.weight / .alpha.
LCM_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                    "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")


def fast_lora_state_dict(unet, rank: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random LoRA for `unet` with LCM-LoRA's keys: every target Linear and Conv2d, rank `rank`."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in unet.named_modules():
        if not name.endswith(LCM_LORA_TARGETS) or not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        key = "lora_unet_" + name.replace(".", "_")
        if isinstance(module, torch.nn.Linear):
            down, up = (rank, module.in_features), (module.out_features, rank)
        else:
            down = (rank, module.in_channels, *module.kernel_size)
            up = (module.out_channels, rank, 1, 1)
        state[f"{key}.lora_down.weight"] = torch.randn(*down, generator=gen) * 0.1
        state[f"{key}.lora_up.weight"] = torch.randn(*up, generator=gen) * 0.1
        state[f"{key}.alpha"] = torch.tensor(float(rank))
    return state


def write_random_fast_lora(folder: str | os.PathLike, unet, seed: int = 0) -> Path:
    """folder/pytorch_lora_weights.safetensors: a random LoRA for `unet` in LCM-LoRA's file layout."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pytorch_lora_weights.safetensors"
    save_file(fast_lora_state_dict(unet, seed=seed), str(path))
    return path


def write_random_taesd(folder: str | os.PathLike, full_size: bool = False, seed: int = 0) -> Path:
    """A random-weight AutoencoderTiny in the madebyollin/taesd layout (config.json +
    diffusion_pytorch_model.safetensors); `full_size`: TAESD's real widths and depths."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    width, encoder, decoder = (64, (1, 3, 3, 3), (3, 3, 3, 1)) if full_size else (8, (1, 1, 1, 1), (1, 1, 1, 1))
    model = AutoencoderTiny(encoder_block_out_channels=(width,) * 4, decoder_block_out_channels=(width,) * 4,
                            num_encoder_blocks=encoder, num_decoder_blocks=decoder)
    model.save_pretrained(folder, safe_serialization=True)
    return Path(folder)
