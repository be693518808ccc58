"""`train-lgp`: train a Latent Guidance Predictor on your own textures.

Recipe (the published one, on textures): each image is centre-cropped to `size`, its Canny edge map
(backend/sketches.edge_map, white on black) and the image itself are VAE-encoded once; every step
takes a batch, noises the image latents at timesteps drawn from [250, 900), runs the frozen UNet
(with the IP-Adapter loaded and the unconditional text and image prompt, exactly the pass sketch
guidance reads) and fits the MLP to the edge latents by MSE, with Adam. The noise-level input is
the true noise here (the UNet's estimate at inference).

Output folder: `lgp.safetensors` (what `--lgp DIR` loads) and `training_state.pt` (optimizer state
and step, tensors only), both written atomically every `save_every` steps and at the end; running
the command again with the same --out resumes from them. Before and after, the loss is measured on
a fixed evaluation set (each image at fixed timesteps and noise, the MLP in inference mode).
torch is imported by the functions that use it: the CLI reads TrainingOptions without loading it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from backend.diffusion import models, sketch_models
from backend.errors import InputError
from backend.framing import center_square
from backend.images import load_reference, write_atomic
from backend.sketches import edge_map

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
TIMESTEPS = (250, 900)
EVAL_TIMESTEPS = (300, 575, 850)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".tga", ".exr"}


@dataclass(frozen=True)
class TrainingOptions:
    steps: int = 2000
    batch_size: int = 4
    lr: float = 1e-4
    size: int = 512
    seed: int = 0
    save_every: int = 200
    device: str | None = None
    dtype: str | None = None


@dataclass
class Data:
    """The encoded training set and the frozen models' pieces one step needs."""

    pipe: object
    scheduler: object
    images: object  # (N, 4, h, w) image latents
    edges: object  # (N, 4, h, w) edge-map latents
    text: object  # (1, ...) unconditional text embedding
    image_embeds: object  # (1, ...) unconditional image-prompt embedding


def image_files(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--images {folder} is not a folder", hint="pass a folder of texture images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"no images in {folder}", hint=f"put textures ({', '.join(sorted(IMAGE_SUFFIXES))}) there")
    return files


def prepare(base, ip_adapter, files: list[Path], options: TrainingOptions) -> Data:
    """Load the frozen pipeline and encode every image and its edge map (no grad)."""
    import torch
    from diffusers import DDIMScheduler
    from tqdm import tqdm

    from backend.diffusion.vae import encode_reference

    spec = models.resolve(base, ip_adapter, device=options.device, dtype=options.dtype)
    pipe = models.load_pipeline(spec)
    pipe.set_ip_adapter_scale(1.0)
    device = pipe._execution_device
    images, edges = [], []
    with torch.no_grad():
        for path in tqdm(files, desc="encoding", unit="image", disable=None):
            square = center_square(load_reference(path).rgb, options.size)
            images.append(encode_reference(pipe, square, options.size).float())
            edges.append(encode_reference(pipe, edge_map(square).convert("RGB"), options.size).float())
        text = pipe.encode_prompt("", device, 1, False)[0]
        image_embeds = pipe.prepare_ip_adapter_image_embeds(square, None, device, 1, True)[0].chunk(2)[0]
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    return Data(pipe, scheduler, torch.cat(images), torch.cat(edges), text, image_embeds)


def batch_loss(lgp, data: Data, index, t, noise):
    """MSE of the LGP's prediction against the edge latents, for images `index` noised at `t`."""
    import torch
    import torch.nn.functional as F

    from backend.diffusion.lgp import features_at, noise_level

    unet, n = data.pipe.unet, len(index)
    x0 = data.images[index]
    noisy = data.scheduler.add_noise(x0, noise, t)
    with torch.no_grad():
        features, _ = features_at(unet, noisy.to(unet.dtype), t, data.text.expand(n, -1, -1),
                                  [data.image_embeds.expand(n, *data.image_embeds.shape[1:])])
    return F.mse_loss(lgp(features, noise_level(data.scheduler, noise, t)), data.edges[index])


def evaluate(lgp, data: Data, seed: int) -> float:
    """Mean loss over the fixed evaluation set (every image at EVAL_TIMESTEPS), in inference mode."""
    import torch

    mode, total, count = lgp.training, 0.0, 0
    lgp.eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in EVAL_TIMESTEPS:
            index = torch.arange(len(data.images))
            noise = torch.randn(data.images.shape, generator=gen).to(data.images.device)
            total += float(batch_loss(lgp, data, index, torch.full((len(index),), t, device=noise.device), noise))
            count += 1
    lgp.train(mode)
    return total / count


def _resume(out: Path, lgp, optimiser) -> int:
    """Load the checkpoint in `out` when there is one; the step it reached (0 for a fresh run)."""
    import torch

    weights, state_file = out / sketch_models.LGP_FILE, out / STATE_FILE
    if not weights.exists():
        return 0
    if not state_file.exists():
        raise InputError(f"{weights} exists but is not a resumable train-lgp run (no {STATE_FILE})",
                         hint="choose an empty --out folder: an existing LGP is never overwritten")
    state, _ = sketch_models.read_lgp_state(weights)
    lgp.load_state_dict(state)
    saved = torch.load(state_file, map_location="cpu", weights_only=True)
    optimiser.load_state_dict(saved["optimizer"])
    return int(saved["step"])


def _save(out: Path, lgp, optimiser, step: int, base) -> None:
    import torch

    sketch_models.save_lgp(lgp, out / sketch_models.LGP_FILE, {"step": step, "base": base})
    write_atomic(out / STATE_FILE, lambda f: torch.save({"optimizer": optimiser.state_dict(), "step": step}, f),
                 overwrite=True)


def train_lgp(base, images, out, *, ip_adapter=None, options: TrainingOptions = TrainingOptions()) -> dict:
    """Train (or resume training) an LGP; returns {path, steps, loss_before, loss_after, seconds}."""
    import torch
    from tqdm import tqdm

    from backend.diffusion.lgp import LatentGuidancePredictor, input_width

    files, out = image_files(images), Path(out)
    data = prepare(base, ip_adapter, files, options)
    device = data.images.device
    lgp = LatentGuidancePredictor(input_width(data.pipe.unet)).init_weights().to(device)
    optimiser = torch.optim.Adam(lgp.parameters(), lr=options.lr)
    start = _resume(out, lgp, optimiser)
    before, began = evaluate(lgp, data, options.seed), time.perf_counter()
    lgp.train()
    bar = tqdm(range(start, options.steps), initial=start, total=options.steps, desc="train-lgp", unit="step",
               disable=None)
    for step in bar:
        gen = torch.Generator().manual_seed(options.seed * 1_000_003 + step)  # resumable: a step's draw is fixed
        index = torch.randint(len(files), (min(options.batch_size, len(files)),), generator=gen)
        t = torch.randint(*TIMESTEPS, (len(index),), generator=gen).to(device)
        noise = torch.randn((len(index), *data.images.shape[1:]), generator=gen).to(device)
        optimiser.zero_grad(set_to_none=True)
        loss = batch_loss(lgp, data, index.to(device), t, noise)
        loss.backward()
        optimiser.step()
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        if (step + 1) % options.save_every == 0 or step + 1 == options.steps:
            _save(out, lgp, optimiser, step + 1, str(base))
    seconds = time.perf_counter() - began
    after = evaluate(lgp, data, options.seed)
    log.info("train-lgp: %d steps in %.1f s, evaluation loss %.4f -> %.4f", options.steps - start, seconds, before, after)
    return {"path": out / sketch_models.LGP_FILE, "steps": options.steps, "trained_steps": options.steps - start,
            "loss_before": before, "loss_after": after, "seconds": seconds}
