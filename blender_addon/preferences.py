"""Add-on preferences: where the backend and its models are, and the Set up backend button."""

import os
import time
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from . import backend_config as client_config
from . import session, setup_plan
from .errors import UserError, reports_errors

ADDON_DIR = Path(__file__).resolve().parent

DEVICE_ITEMS = [
    ("auto", "Auto", "CUDA or Apple Metal when available, otherwise CPU"),
    ("cuda", "CUDA", "An NVIDIA GPU"),
    ("mps", "Metal", "Apple Silicon GPU"),
    ("cpu", "CPU", "No GPU (slow for diffusion; the patch engine is fast anywhere)"),
]


def backend_root() -> Path:
    """The folder that holds the `backend` package: the extension folder (zip), or the repository."""
    for folder in (ADDON_DIR, ADDON_DIR.parent):
        if (folder / "backend" / "__main__.py").is_file():
            return folder
    raise UserError("not_set_up", f"The backend code is missing from {ADDON_DIR}",
                    "reinstall the extension from its zip file")


def user_folder(name: str, create: bool = True) -> Path:
    """A folder in the extension's user folder (kept across updates): jobs, the backend's venv."""
    return Path(bpy.utils.extension_path_user(__package__, path=name, create=create))


def venv_folder() -> Path:
    return user_folder("backend-venv", create=False)


def get(context=None) -> "TextureVariantsPreferences":
    context = context or bpy.context
    return context.preferences.addons[__package__].preferences


def backend_config(context=None):
    """The client's settings: environment variables, then these preferences, then the set-up venv."""
    prefs = get(context)
    python = prefs.python or str(setup_plan.venv_python(venv_folder()))
    return client_config.resolve_config(
        python=bpy.path.abspath(python), base=prefs.base or None, ip_adapter=prefs.ip_adapter or None,
        device=prefs.device, allow_pickle=prefs.allow_pickle,
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


def _show_not_ready(operator, context, error: UserError) -> None:
    get(context).status = f"Not ready: {error.message}"


class TEXTURE_VARIANTS_OT_check_backend(bpy.types.Operator):
    """Start the backend and show what it reports (version, engines, device)"""

    bl_idname = "texture_variants.check_backend"
    bl_label = "Check Backend"
    bl_options = {"REGISTER"}

    timeout: bpy.props.FloatProperty(name="Timeout", default=60.0, min=0.0,
                                     description="How long to wait for the backend to find its device")

    _timer = None
    _asked = ""
    _since = 0.0

    def _start(self, context) -> None:
        session.shared().start(backend_config(context), str(backend_root()))
        get(context).status = describe_hello(session.shared().hello)

    def _step(self, context) -> bool:
        """One round of asking for the device; True when known (or when waiting is over)."""
        current = session.shared()
        current.pump()
        reply = current.replies.pop(self._asked, None) if self._asked else None
        if reply is not None:
            current.note_status(reply)
            get(context).status = describe_hello(current.hello)
            self._asked = ""
        if current.device_known() or time.monotonic() - self._since > self.timeout:
            return True
        if not self._asked:
            self._asked = current.request_status()
        return False

    @reports_errors(_show_not_ready)
    def execute(self, context):  # scripts and background mode: waits for the device
        self._start(context)
        self._since = time.monotonic()
        while not self._step(context):
            time.sleep(0.2)
        self.report({"INFO"}, get(context).status)
        return {"FINISHED"}

    @reports_errors(_show_not_ready)
    def invoke(self, context, event):  # the UI: hello now, the device when torch has loaded
        self._start(context)
        self._since = time.monotonic()
        self._timer = context.window_manager.event_timer_add(0.3, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            done = self._step(context)
        except UserError:
            done = True
        for area in context.screen.areas if context.screen else ():
            area.tag_redraw()
        if done:
            context.window_manager.event_timer_remove(self._timer)
            return {"FINISHED"}
        return {"PASS_THROUGH"}


class TextureVariantsPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    python: StringProperty(
        name="Backend Python", subtype="FILE_PATH",
        description="A Python interpreter with the backend's packages installed; empty = the one Set up "
        "Backend made (the TEXTURE_VARIANTS_PYTHON environment variable overrides this)",
    )
    base: StringProperty(
        name="Base Model",
        description="SD1.5 model: a diffusers folder, a .safetensors checkpoint, or a hub id already in the "
        "Hugging Face cache; empty = stable-diffusion-v1-5/stable-diffusion-v1-5 (TEXTURE_VARIANTS_BASE "
        "overrides this)",
    )
    ip_adapter: StringProperty(
        name="IP-Adapter",
        description="A folder in the h94/IP-Adapter layout or a hub id already in the Hugging Face cache; "
        "empty = h94/IP-Adapter (TEXTURE_VARIANTS_IP_ADAPTER overrides this)",
    )
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="auto")
    allow_pickle: BoolProperty(
        name="Trust Pickled Weights", default=False,
        description="Also load .ckpt/.bin model weights (they can run code: only files you trust). Starts the "
        "backend with --allow-pickle",
    )
    bake_folder: StringProperty(
        name="Bake Folder", subtype="DIR_PATH",
        description="Where Bake writes textures; empty = a 'textures' folder next to the saved .blend",
    )
    pack_on_bake: BoolProperty(name="Pack Baked Textures", default=False,
                               description="Also pack baked textures into the .blend")
    status: StringProperty(name="Status", default="Not checked yet")
    installer: EnumProperty(name="Installer", default="uv", items=[
        ("uv", "uv", "uv installs several times faster than pip; taken from the package index into the "
         "backend's environment when it is not on PATH (pip is used when that fails)"),
        ("pip", "pip", "Python's own installer"),
    ])
    torch_index: StringProperty(
        name="Torch Index",
        description="Package index for torch; empty = torch's own index for the chosen build (PyPI for "
        "Apple's), 'default' = the index pip is configured with (TEXTURE_VARIANTS_TORCH_INDEX overrides this)",
    )
    package_index: StringProperty(
        name="Package Index",
        description="Package index for the other packages; empty = PyPI, 'default' = the index pip is "
        "configured with (TEXTURE_VARIANTS_INDEX overrides this)",
    )

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        col = layout.column()
        col.prop(self, "python")
        col.prop(self, "base")
        col.prop(self, "ip_adapter")
        col.prop(self, "device")
        col.prop(self, "allow_pickle")
        overridden = [name for name in ("TEXTURE_VARIANTS_PYTHON", "TEXTURE_VARIANTS_BASE",
                                        "TEXTURE_VARIANTS_IP_ADAPTER") if os.environ.get(name)]
        if overridden:
            col.label(text="Overridden by the environment: " + ", ".join(overridden), icon="INFO")
        col.separator()
        col.prop(self, "bake_folder")
        col.prop(self, "pack_on_bake")

        from . import setup_operators  # it imports this module

        box = layout.box()
        setup_operators.draw_section(box, self, context)
        box.label(text=self.status, icon="CHECKMARK" if self.status.startswith("Backend") else "INFO")


CLASSES = (TEXTURE_VARIANTS_OT_check_backend, TextureVariantsPreferences)
