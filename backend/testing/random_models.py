"""Random-weight models with the real SD1.5 / IP-Adapter (/ LGP / ControlNet) architecture, written in the real layout.

`make_test_models(dir)` writes
  dir/sd15/        a diffusers StableDiffusionPipeline folder (as on the hub, safety checker omitted)
  dir/ip-adapter/  laid out like the h94/IP-Adapter repository:
                   models/ip-adapter_sd15.safetensors, models/image_encoder/
  dir/clip-text/   the CLIP text tower matching the image encoder (what content suppression loads
                   from laion/CLIP-ViT-H-14-laion2B-s32B-b79K): config.json, model.safetensors, tokenizer
  dir/lgp/         a Latent Guidance Predictor for that UNet (lgp.safetensors, as train-lgp writes it)
  dir/controlnet/  a ControlNet made from that UNet (ControlNetModel.from_unet), in the diffusers layout,
                   its zero-initialised output convs given random weights so that it changes something
  dir/sam/         a Segment Anything model for restyle masks, laid out like the SlimSAM checkpoints
                   (config.json, model.safetensors, preprocessor_config.json); tiny in both sizes
  dir/fast-lora/   a step-distillation LoRA for that UNet in LCM-LoRA's file layout
                   (pytorch_lora_weights.safetensors, kohya lora_unet_* keys)
  dir/taesd/       a tiny autoencoder (AutoencoderTiny) in the madebyollin/taesd layout, for previews

so everything downstream loads them through exactly the code that loads the real models
(`from_pretrained` + `load_ip_adapter`). Tiny by default; `full_size=True` uses the real SD1.5 and
ViT-H dimensions (random weights: right for timings, useless for pictures).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

# The UNet block layout of SD1.5, kept in both sizes: kv replacement targets up_blocks.2/3 by name.
DOWN_BLOCKS = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
UP_BLOCKS = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
IP_ADAPTER_TOKENS = 4  # ip-adapter_sd15 projects one CLIP embedding to 4 tokens


@dataclass(frozen=True)
class Dims:
    unet_channels: tuple[int, ...]
    unet_heads: int  # SD1.5 calls this attention_head_dim; it is really the number of heads
    unet_groups: int
    text_width: int
    text_layers: int
    text_heads: int
    text_ffn: int
    text_vocab: int
    vae_channels: tuple[int, ...]
    vae_layers: int
    vae_groups: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    vision_ffn: int
    vision_image_size: int
    vision_patch: int
    vision_projection: int
    sample_size: int  # pixels
    content_width: int  # the CLIP text tower paired with the image encoder (shares its projection)
    content_layers: int
    content_heads: int
    content_ffn: int


TINY = Dims(
    unet_channels=(32, 32, 64, 64), unet_heads=4, unet_groups=8,
    text_width=32, text_layers=2, text_heads=4, text_ffn=64, text_vocab=1000,
    vae_channels=(16, 16, 32, 32), vae_layers=1, vae_groups=8,
    vision_width=32, vision_layers=2, vision_heads=4, vision_ffn=64,
    vision_image_size=32, vision_patch=8, vision_projection=32,
    sample_size=64,
    content_width=32, content_layers=2, content_heads=4, content_ffn=64,
)

# Real SD1.5 (v1-inference.yaml) and the ViT-H/14 image encoder of h94/IP-Adapter.
FULL = Dims(
    unet_channels=(320, 640, 1280, 1280), unet_heads=8, unet_groups=32,
    text_width=768, text_layers=12, text_heads=12, text_ffn=3072, text_vocab=49408,
    vae_channels=(128, 256, 512, 512), vae_layers=2, vae_groups=32,
    vision_width=1280, vision_layers=32, vision_heads=16, vision_ffn=5120,
    vision_image_size=224, vision_patch=14, vision_projection=1024,
    sample_size=512,
    content_width=1024, content_layers=24, content_heads=16, content_ffn=4096,
)

# The scheduler config shipped with SD1.5 (PNDM); the engine converts it to DDIM / DDIM inverse.
SCHEDULER_CONFIG = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, trained_betas=None,
)


def _clip_tokenizer(vocab_size: int):
    """A byte-level BPE vocabulary with no merges: tokenises any text, needs no download."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) <= vocab_size
    return CLIPTokenizer(vocab={tok: i for i, tok in enumerate(tokens)}, merges=[], model_max_length=77)


def sd15_pipeline(d: Dims):
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(
        sample_size=d.sample_size // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=DOWN_BLOCKS,
        up_block_types=UP_BLOCKS,
        block_out_channels=d.unet_channels,
        layers_per_block=2,
        attention_head_dim=d.unet_heads,
        cross_attention_dim=d.text_width,
        norm_num_groups=d.unet_groups,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=d.vae_channels,
        layers_per_block=d.vae_layers,
        latent_channels=4,
        norm_num_groups=d.vae_groups,
        sample_size=d.sample_size,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=d.text_width,
            intermediate_size=d.text_ffn,
            num_attention_heads=d.text_heads,
            num_hidden_layers=d.text_layers,
            vocab_size=d.text_vocab,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=d.text_width,
            bos_token_id=d.text_vocab - 2,
            eos_token_id=d.text_vocab - 1,
            pad_token_id=d.text_vocab - 1,
        )
    )
    tokenizer = _clip_tokenizer(d.text_vocab)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(**SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _cross_attention_hidden_sizes(unet) -> list[int]:
    """Hidden size of every cross-attention (attn2) layer, in `attn_processors` order."""
    sizes = []
    for name in unet.attn_processors:
        if not name.endswith("attn2.processor"):
            continue
        block = name.split(".")[0]
        if block == "mid_block":
            sizes.append(unet.config.block_out_channels[-1])
        elif block == "up_blocks":
            up = int(name.split(".")[1])
            sizes.append(list(reversed(unet.config.block_out_channels))[up])
        else:
            down = int(name.split(".")[1])
            sizes.append(unet.config.block_out_channels[down])
    return sizes


def _ip_adapter_state_dict(unet, d: Dims) -> dict[str, torch.Tensor]:
    """The key layout of h94/IP-Adapter models/ip-adapter_sd15.safetensors.

    `ip_adapter.{i}` numbers all attention processors (attn1, attn2 alternate), so the cross-attention
    ones are the odd indices 1, 3, 5, ... as in the original file.
    """
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen) * 0.02

    cross = d.text_width
    sd = {
        "image_proj.proj.weight": rand(cross * IP_ADAPTER_TOKENS, d.vision_projection),
        "image_proj.proj.bias": torch.zeros(cross * IP_ADAPTER_TOKENS),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    for n, hidden in enumerate(_cross_attention_hidden_sizes(unet)):
        index = 2 * n + 1
        sd[f"ip_adapter.{index}.to_k_ip.weight"] = rand(hidden, cross)
        sd[f"ip_adapter.{index}.to_v_ip.weight"] = rand(hidden, cross)
    return sd


def _image_encoder(d: Dims):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=d.vision_width,
            intermediate_size=d.vision_ffn,
            num_attention_heads=d.vision_heads,
            num_hidden_layers=d.vision_layers,
            image_size=d.vision_image_size,
            patch_size=d.vision_patch,
            projection_dim=d.vision_projection,
            hidden_act="gelu",
        )
    )


def _content_encoder(d: Dims):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(
        CLIPTextConfig(
            hidden_size=d.content_width,
            intermediate_size=d.content_ffn,
            num_attention_heads=d.content_heads,
            num_hidden_layers=d.content_layers,
            vocab_size=d.text_vocab,
            max_position_embeddings=77,
            hidden_act="gelu",
            projection_dim=d.vision_projection,  # the joint CLIP space the image embeddings live in
            bos_token_id=d.text_vocab - 2,
            eos_token_id=d.text_vocab - 1,
            pad_token_id=d.text_vocab - 1,
        )
    )


def _controlnet(unet):
    from diffusers import ControlNetModel

    net = ControlNetModel.from_unet(unet)
    for conv in (*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out):
        torch.nn.init.normal_(conv.weight, std=0.02)
    return net


def make_test_models(out_dir: str | Path, *, full_size: bool = False, seed: int = 0) -> dict[str, Path]:
    """Write random-weight SD1.5 + IP-Adapter + CLIP text + LGP + ControlNet + SAM + fast LoRA + TAESD folders;
    returns their paths by role ({"base", "ip_adapter", "content_encoder", "lgp", "controlnet", "sam",
    "fast_lora", "taesd"})."""
    from safetensors.torch import save_file

    from backend.diffusion.lgp import LatentGuidancePredictor, input_width
    from backend.diffusion.sketch_models import LGP_FILE, save_lgp

    d = FULL if full_size else TINY
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    base_dir = out_dir / "sd15"
    ip_dir = out_dir / "ip-adapter"

    pipe = sd15_pipeline(d)
    pipe.save_pretrained(base_dir, safe_serialization=True)

    models = ip_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    save_file(_ip_adapter_state_dict(pipe.unet, d), str(models / "ip-adapter_sd15.safetensors"))
    _image_encoder(d).save_pretrained(models / "image_encoder", safe_serialization=True)
    text_dir = out_dir / "clip-text"
    _content_encoder(d).save_pretrained(text_dir, safe_serialization=True)
    _clip_tokenizer(d.text_vocab).save_pretrained(text_dir)
    save_lgp(LatentGuidancePredictor(input_width(pipe.unet)).eval(), out_dir / "lgp" / LGP_FILE)
    _controlnet(pipe.unet).save_pretrained(out_dir / "controlnet", safe_serialization=True)
    (out_dir / "README.txt").write_text(
        "Random-weight test models with the SD1.5 / IP-Adapter architecture "
        f"({'full size' if full_size else 'tiny'}). Pictures from them are noise by design.\n"
    )
    from backend.testing.random_addons import write_random_fast_lora, write_random_taesd, write_tiny_sam

    sam_dir = write_tiny_sam(out_dir / "sam", seed=seed)
    write_random_fast_lora(out_dir / "fast-lora", pipe.unet, seed=seed)
    write_random_taesd(out_dir / "taesd", full_size=full_size, seed=seed)
    return {"base": base_dir, "ip_adapter": ip_dir, "content_encoder": text_dir, "lgp": out_dir / "lgp",
            "controlnet": out_dir / "controlnet", "sam": sam_dir, "fast_lora": out_dir / "fast-lora",
            "taesd": out_dir / "taesd"}
