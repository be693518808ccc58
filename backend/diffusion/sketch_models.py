"""Finding, loading and fetching the sketch-guidance models: the LGP and the SD1.5 ControlNet.

- LGP (`lgp=`): a hub id (read from the Hugging Face cache only), a folder, or a file. Our own
  format is `lgp.safetensors` (the MLP's state dict under the published key names; metadata
  `encodings`), written by `train-lgp` and `make-test-models`. The published SD1.5 LGP is a pickled
  `.pt` training checkpoint: it is read only with `allow_pickle`, and then as tensors only
  (`torch.load(weights_only=True)`: no code runs).
- ControlNet (`controlnet=`): a hub id or a diffusers ControlNetModel folder (config.json +
  diffusion_pytorch_model.safetensors), e.g. lllyasviel/control_v11p_sd15_lineart.

Without `lgp=` / `controlnet=` the environment variables TEXTURE_VARIANTS_LGP / _CONTROLNET, then the
default hub ids, are used. Nothing here downloads except `download()` (`download-models --lgp / --controlnet`). Loaded models
are kept in the model registry (backend.model_registry).
"""

from __future__ import annotations

import os
from pathlib import Path

from backend.diffusion import hub, models
from backend.errors import InputError, ModelsMissingError
from backend.model_registry import load_pretrained, registry

DEFAULT_LGP = "ogkalu/Stable-Diffusion-Latent-Guidance-Predictor"
DEFAULT_CONTROLNET = "lllyasviel/control_v11p_sd15_lineart"
LGP_FILE = "lgp.safetensors"
LGP_PATTERNS = ["*.safetensors", "*.pt", "*.pth", "*.json", "*.md"]
CONTROLNET_PATTERNS = ["config.json", "diffusion_pytorch_model.safetensors"]
_PICKLED = (".pt", ".pth", ".bin", ".ckpt")
# Defaults for calls that name no model (the Blender add-on's backend, render farms).
ENV_LGP, ENV_CONTROLNET = "TEXTURE_VARIANTS_LGP", "TEXTURE_VARIANTS_CONTROLNET"



def _fix(flag: str, value: str | None) -> str:
    return f"{models.DOWNLOAD_COMMAND} {flag}" + ("" if value is None else f" {value}")


def _lgp_file(folder: Path, allow_pickle: bool) -> Path:
    """The weights file of an LGP folder: lgp.safetensors, another .safetensors, or a pickled file."""
    if (folder / LGP_FILE).is_file():
        return folder / LGP_FILE
    safe = sorted(folder.glob("*.safetensors"))
    pickled = sorted(p for p in folder.iterdir() if p.suffix in _PICKLED)
    if safe:
        return safe[0]
    if pickled and allow_pickle:
        return pickled[0]
    if pickled:
        raise InputError(f"the LGP in {folder} is a pickled file ({pickled[0].name}): loading pickles can run code",
                         hint="opt in with --allow-pickle if you trust it (its tensors alone are read), or "
                         "train your own with python -m backend train-lgp")
    raise ModelsMissingError(f"no LGP weights (.safetensors) in {folder}",
                             hint="pass the folder train-lgp wrote, or run " + _fix("--lgp", None))


def resolve_lgp(lgp: str | os.PathLike | None, *, allow_pickle: bool = False) -> Path:
    """The LGP weights file; ModelsMissingError naming the download command when absent."""
    lgp = lgp if lgp is not None else os.environ.get(ENV_LGP) or None
    value = str(lgp) if lgp is not None else DEFAULT_LGP
    path = Path(value).expanduser()
    if path.is_dir():
        return _lgp_file(path, allow_pickle)
    if path.is_file():
        if path.suffix in _PICKLED and not allow_pickle:
            raise InputError(f"{path.name} is a pickled LGP checkpoint: loading pickles can run code",
                             hint="opt in with --allow-pickle if you trust it (its tensors alone are read)")
        return path
    if not hub.is_hub_id(value):
        raise ModelsMissingError(f"LGP {value!r} not found", hint="check the path, or pass a hub id")
    fix = _fix("--lgp", None if lgp is None else value)
    return _lgp_file(hub.from_cache(value, LGP_PATTERNS, "LGP", fix), allow_pickle)


def resolve_controlnet(controlnet: str | os.PathLike | None) -> Path:
    """The folder of a diffusers ControlNetModel; ModelsMissingError naming the download command."""
    controlnet = controlnet if controlnet is not None else os.environ.get(ENV_CONTROLNET) or None
    value = str(controlnet) if controlnet is not None else DEFAULT_CONTROLNET
    path = Path(value).expanduser()
    fix = _fix("--controlnet", None if controlnet is None else value)
    if path.is_dir():
        folder = path
    elif hub.is_hub_id(value):
        folder = hub.from_cache(value, CONTROLNET_PATTERNS, "ControlNet", fix)
    else:
        raise ModelsMissingError(f"ControlNet {value!r} not found",
                                 hint="pass a diffusers ControlNet folder or a hub id (e.g. " + DEFAULT_CONTROLNET + ")")
    if not (folder / "config.json").is_file() or not (folder / "diffusion_pytorch_model.safetensors").is_file():
        raise ModelsMissingError(f"no config.json + diffusion_pytorch_model.safetensors of a ControlNet in {folder}",
                                 hint=f"run `{fix}`, or pass a diffusers ControlNet folder")
    return folder


def read_lgp_state(path: Path) -> tuple[dict, int]:
    """(state dict, number of encodings) from our safetensors file or a published checkpoint."""
    import torch

    from backend.diffusion.lgp import ENCODINGS

    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
        return state, int(meta.get("encodings", ENCODINGS))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler raises many kinds for files that are not checkpoints
        raise InputError(f"could not read the LGP checkpoint {path}: {e}",
                         hint="pass a .safetensors file written by train-lgp, or the published .pt") from e
    state = loaded.get("model_state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{path} holds no LGP state dict", hint="pass an LGP checkpoint")
    return state, ENCODINGS


def build_lgp(state: dict, encodings: int):
    """The LatentGuidancePredictor holding `state` (its width read from the first layer)."""
    from backend.diffusion.lgp import LatentGuidancePredictor

    first = state.get("layers.0.weight")
    if first is None or first.ndim != 2:
        raise InputError("the file is not an LGP: no layers.0.weight matrix",
                         hint="pass weights written by train-lgp, or the published SD1.5 LGP")
    lgp = LatentGuidancePredictor(int(first.shape[1]), encodings, out_channels=int(state[_last_weight(state)].shape[0]))
    try:
        lgp.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"the LGP weights do not fit the LGP architecture: {e}",
                         hint="pass weights written by train-lgp, or the published SD1.5 LGP") from e
    return lgp


def _last_weight(state: dict) -> str:
    return max((k for k in state if k.startswith("layers.") and k.endswith(".weight") and state[k].ndim == 2),
               key=lambda k: int(k.split(".")[1]))


def load_lgp(path: Path, device: str):
    """The LGP at `path`, in eval mode, frozen, float32 on `device` (kept in the model registry)."""
    key = (path, path.stat().st_mtime_ns, device)
    return registry.get("lgp", key, lambda: build_lgp(*read_lgp_state(path)).eval().requires_grad_(False).to(device),
                        {"path": str(path), "device": device})


def save_lgp(lgp, path: Path, metadata: dict | None = None) -> Path:
    """Write the LGP's state dict as safetensors, atomically (replacing `path`: our own checkpoint)."""
    from safetensors.torch import save

    from backend.images import write_atomic

    state = {k: v.detach().cpu().contiguous() for k, v in lgp.state_dict().items()}
    meta = {"format": "texture-variants-lgp", "encodings": str(lgp.encodings),
            **{k: str(v) for k, v in (metadata or {}).items()}}
    return write_atomic(path, lambda f: f.write(save(state, metadata=meta)), overwrite=True)


def load_controlnet(folder: Path, device: str, dtype: str):
    """The diffusers ControlNetModel in `folder` on `device` (kept in the model registry)."""
    from diffusers import ControlNetModel

    return load_pretrained("controlnet", ControlNetModel, folder, device, dtype,
                           f"pass a diffusers ControlNet folder, or run `{_fix('--controlnet', None)}`")


def download(lgp: str | None = None, controlnet: str | None = None) -> dict[str, Path]:
    """Fetch the asked-for sketch models into the Hugging Face cache, with progress."""
    from huggingface_hub import snapshot_download

    paths = {}
    if lgp:
        paths["lgp"] = Path(snapshot_download(lgp, allow_patterns=LGP_PATTERNS))
    if controlnet:
        paths["controlnet"] = Path(snapshot_download(controlnet, allow_patterns=CONTROLNET_PATTERNS))
    return paths
