"""The add-on's preferences as the rest of the add-on reads them: where the backend, its environment and
its models are, and which torch build Set up Backend installs. The preferences themselves (their
settings and drawing) are `ui.preferences`."""

import functools
import os
from pathlib import Path

import bpy

from .connection import config as client_config
from .errors import UserError
from .setup import device as device_detect
from .setup import environment as backend_setup
from .setup import plan

ADDON_DIR = Path(__file__).resolve().parent
PACKAGE = __package__  # the add-on's module name: its preferences' bl_idname

def backend_root() -> Path:
    """The folder that holds the `backend` package: the extension folder (zip), or the repository."""
    for folder in (ADDON_DIR, ADDON_DIR.parent):
        if (folder / "backend" / "__main__.py").is_file():
            return folder
    raise UserError("not_set_up", f"The backend code is missing from {ADDON_DIR}",
                    "reinstall the extension from its zip file")


def user_folder(name: str, create: bool = True) -> Path:
    """A folder in the extension's user folder (kept across updates): jobs, the backend's venv."""
    return Path(bpy.utils.extension_path_user(PACKAGE, path=name, create=create))


def venv_folder() -> Path:
    return user_folder("backend-venv", create=False)


def get(context=None) -> "bpy.types.AddonPreferences":
    """The add-on's preferences (`ui.preferences.TextureVariantsPreferences`)."""
    context = context or bpy.context
    return context.preferences.addons[PACKAGE].preferences


def model_path(value: str) -> str | None:
    """A model preference as the backend takes it: a path made absolute (a file browser may have written
    it relative to the open .blend), or a hub id as typed; None when empty."""
    value = value.strip()
    if not value:
        return None
    if value.startswith("//") or os.path.isabs(value) or os.path.exists(bpy.path.abspath(value)):
        return os.path.normpath(bpy.path.abspath(value))
    return value


def content_encoder(context=None) -> str | None:
    return model_path(get(context).content_encoder)


# The controls' model preferences and the environment variables that override them (the backend reads
# the same variables when a request names no model).
CONTROL_MODEL_ENV = {"lgp": "TEXTURE_VARIANTS_LGP", "controlnet": "TEXTURE_VARIANTS_CONTROLNET",
                     "sam": "TEXTURE_VARIANTS_SAM"}


def control_model(name: str, context=None) -> str | None:
    """The model of a control ("lgp", "controlnet", "sam", "fast_lora") a request names: the
    environment variable (where there is one), else the preference; None = the backend's default."""
    variable = CONTROL_MODEL_ENV.get(name)
    return (os.environ.get(variable) if variable else None) or model_path(getattr(get(context), name))


def backend_config(context=None):
    """The client's settings: environment variables, then these preferences, then the set-up venv."""
    prefs = get(context)
    python = prefs.python or str(plan.venv_python(venv_folder()))
    return client_config.resolve_config(
        python=bpy.path.abspath(python), base=model_path(prefs.base), ip_adapter=model_path(prefs.ip_adapter),
        device=prefs.device, allow_pickle=prefs.allow_pickle, command=prefs.backend_command or None,
    )


def describe_hello(hello: dict) -> str:
    """The status line: what the backend said about itself."""
    parts = [f"Backend {hello.get('version', '?')}"]
    device, detail = hello.get("device"), hello.get("device_detail")
    if device or detail:
        parts.append(f"device {device} ({detail})" if device and detail else f"device {device or detail}")
    engines = hello.get("engines")
    if isinstance(engines, dict):
        ready = [name for name, info in engines.items()
                 if not isinstance(info, dict) or info.get("available", True)]
        parts.append("engines: " + (", ".join(ready) or "none ready"))
    elif engines:
        parts.append("engines: " + ", ".join(map(str, engines)))
    return " · ".join(parts)


@functools.lru_cache(maxsize=4)
def torch_build(device: str) -> device_detect.TorchBuild:
    """The torch build for this computer (nvidia-smi runs once per device setting, not per redraw)."""
    return device_detect.choose_build(device or "auto")


def setup_environment() -> backend_setup.BackendEnvironment:
    return backend_setup.BackendEnvironment(venv_folder())


def setup_device(context) -> str:
    return backend_config(context).device or "auto"


def package_indexes(context, build) -> plan.Indexes:
    prefs = get(context)
    return plan.resolve_indexes(build, prefs.torch_index, prefs.package_index)
