"""Add-on preferences: where the backend and its models are, where variants live, and the Set up
backend button."""

import os
import sys
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, StringProperty

from . import backend_config as client_config
from . import backend_setup
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


def backend_config(context=None):
    """The client's settings: environment variables, then these preferences, then the set-up venv."""
    prefs = get(context)
    python = prefs.python or str(backend_setup.venv_python(venv_folder()))
    return client_config.resolve_config(
        python=bpy.path.abspath(python), base=model_path(prefs.base), ip_adapter=model_path(prefs.ip_adapter),
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


class TEXTURE_VARIANTS_OT_setup_backend(bpy.types.Operator):
    """Create a Python environment for the backend in the extension's user folder and install its packages"""

    bl_idname = "texture_variants.setup_backend"
    bl_label = "Set up Backend"
    bl_options = {"REGISTER"}

    _run = None
    _timer = None

    def _steps(self, context):
        return backend_setup.setup_steps(sys.executable, venv_folder(), backend_root(), get(context).device)

    def _refuse_offline(self, steps) -> bool:
        if bpy.app.online_access:
            return False
        manual = backend_setup.manual_instructions(steps)
        print("Texture Variants: install the backend by hand with:\n" + manual)
        self.report({"ERROR"}, "Online access is off, so the backend's packages cannot be downloaded. To fix: "
                    "allow it in Preferences > System > Network, or run the commands printed in the system "
                    "console and set Backend Python to the environment's python")
        return True

    def _checked_steps(self, context):
        """The set-up steps, or None after reporting why they cannot run offline (bad settings raise)."""
        steps = self._steps(context)
        return None if self._refuse_offline(steps) else steps

    @reports_errors()
    def execute(self, context):  # scripts and background mode: blocks until done
        steps = self._checked_steps(context)
        if steps is None:
            return {"CANCELLED"}
        run = backend_setup.SetupRun(steps).start()
        run.join()
        return self._finish(context, run)

    @reports_errors()
    def invoke(self, context, event):
        steps = self._checked_steps(context)
        if steps is None:
            return {"CANCELLED"}
        TEXTURE_VARIANTS_OT_setup_backend._run = backend_setup.SetupRun(steps).start()
        self._timer = context.window_manager.event_timer_add(0.25, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        run = TEXTURE_VARIANTS_OT_setup_backend._run
        if event.type == "ESC":
            run.cancel()
        if event.type == "TIMER":
            for area in context.screen.areas if context.screen else ():
                area.tag_redraw()
            if run.finished:
                context.window_manager.event_timer_remove(self._timer)
                return self._finish(context, run)
        return {"PASS_THROUGH"}

    def _finish(self, context, run):
        TEXTURE_VARIANTS_OT_setup_backend._run = None
        if run.error:
            self.report({"ERROR"}, f"Backend setup: {run.error}. To fix: check your internet connection and "
                        "disk space, see the system console, then click Set up Backend again")
            print("\n".join(run.lines))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Backend installed in {venv_folder()}")
        bpy.ops.texture_variants.check_backend("EXEC_DEFAULT" if bpy.app.background else "INVOKE_DEFAULT")
        return {"FINISHED"}


class TextureVariantsPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    python: StringProperty(
        name="Backend Python", subtype="FILE_PATH",
        description="A Python interpreter with the backend's packages installed; empty = the one Set up "
        "Backend made (the TEXTURE_VARIANTS_PYTHON environment variable overrides this)",
    )
    base: StringProperty(
        name="Base Model", subtype="FILE_PATH",
        description="SD1.5 model: a diffusers folder, a .safetensors checkpoint, or a hub id already in the "
        "Hugging Face cache; empty = stable-diffusion-v1-5/stable-diffusion-v1-5 (TEXTURE_VARIANTS_BASE "
        "overrides this)",
    )
    ip_adapter: StringProperty(
        name="IP-Adapter", subtype="DIR_PATH",
        description="A folder in the h94/IP-Adapter layout or a hub id already in the Hugging Face cache; "
        "empty = h94/IP-Adapter (TEXTURE_VARIANTS_IP_ADAPTER overrides this)",
    )
    content_encoder: StringProperty(
        name="Content Encoder", subtype="DIR_PATH",
        description="For Style Only with Content: the CLIP ViT-H/14 text model (a folder with config.json, "
        "model.safetensors and the tokenizer, or a hub id already in the Hugging Face cache); empty = "
        "laion/CLIP-ViT-H-14-laion2B-s32B-b79K from the cache",
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
    variant_storage: EnumProperty(
        name="Keep Variants", default="beside", items=[
            ("beside", "Next to the .blend", "In a 'variants' folder next to the saved .blend (packed while it "
             "is not saved)"),
            ("pack", "Packed", "Packed into the .blend"),
        ])
    job_max_age_days: FloatProperty(
        name="Delete Jobs After (days)", default=7.0, min=0.0, max=3650.0,
        description="Finished job folders (the backend's scratch space) older than this are deleted when a job "
        "starts or on Clean Up Jobs")
    job_max_megabytes: FloatProperty(
        name="Job Folders Limit (MB)", default=2000.0, min=0.0,
        description="Past this size, the oldest finished job folders are deleted too")
    status: StringProperty(name="Status", default="Not checked yet")

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        col = layout.column()
        col.prop(self, "python")
        col.prop(self, "base")
        col.prop(self, "ip_adapter")
        col.prop(self, "content_encoder")
        col.prop(self, "device")
        col.prop(self, "allow_pickle")
        overridden = [name for name in ("TEXTURE_VARIANTS_PYTHON", "TEXTURE_VARIANTS_BASE",
                                        "TEXTURE_VARIANTS_IP_ADAPTER") if os.environ.get(name)]
        if overridden:
            col.label(text="Overridden by the environment: " + ", ".join(overridden), icon="INFO")
        col.separator()
        col.prop(self, "bake_folder")
        col.prop(self, "pack_on_bake")
        col.prop(self, "variant_storage")
        col.prop(self, "job_max_age_days")
        col.prop(self, "job_max_megabytes")
        col.operator("texture_variants.clean_up_jobs", icon="TRASH")

        box = layout.box()
        run = TEXTURE_VARIANTS_OT_setup_backend._run
        if run is not None:
            box.progress(factor=run.fraction, type="BAR", text=run.label)
            box.label(text=run.last_line[:120])
        else:
            row = box.row()
            row.operator(TEXTURE_VARIANTS_OT_setup_backend.bl_idname, icon="CONSOLE")
            row.operator("texture_variants.check_backend", icon="FILE_REFRESH")
            if not bpy.app.online_access:
                box.label(text="Online access is off: Set up Backend will print the commands to run by hand",
                          icon="ERROR")
        box.label(text=self.status, icon="CHECKMARK" if self.status.startswith("Backend") else "INFO")


CLASSES = (TEXTURE_VARIANTS_OT_setup_backend, TextureVariantsPreferences)
