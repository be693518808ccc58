"""The add-on's preferences: their settings (where the backend and its models are, where variants live)
and how they are drawn, the Set up Backend box included (`ui.setup`)."""

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, StringProperty

from .. import prefs
from .setup import draw_indexes, draw_setup

DEVICE_ITEMS = [
    ("auto", "Auto", "CUDA or Apple Metal when available, otherwise CPU"),
    ("cuda", "CUDA", "An NVIDIA GPU"),
    ("mps", "Metal", "Apple Silicon GPU"),
    ("cpu", "CPU", "No GPU (slow for diffusion; the patch engine is fast anywhere)"),
]


class TextureVariantsPreferences(bpy.types.AddonPreferences):
    bl_idname = prefs.PACKAGE

    python: StringProperty(
        name="Backend Python", subtype="FILE_PATH",
        description="A Python interpreter with the backend's packages installed; empty = the one Set up "
        "Backend made (the TEXTURE_VARIANTS_PYTHON environment variable overrides this)",
    )
    backend_command: StringProperty(
        name="Backend Command",
        description="Run the backend with this command instead of Backend Python, e.g. 'ssh gpu-box "
        "/opt/texture-variants/.venv/bin/python -m backend serve --remote' for a GPU server "
        "(docs/guide/batch-and-remote.md, 'Remote GPU'); empty = the local interpreter (TEXTURE_VARIANTS_BACKEND_COMMAND overrides this)",
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
    lgp: StringProperty(
        name="LGP Model", subtype="FILE_PATH",
        description="The Structure Guide's soft mode (LGP): a .safetensors written by train-lgp, the published .pt "
        "(needs Trust Pickled Weights) or a hub id already downloaded; empty = "
        "ogkalu/Stable-Diffusion-Latent-Guidance-Predictor from the cache (TEXTURE_VARIANTS_LGP overrides this)",
    )
    controlnet: StringProperty(
        name="ControlNet Model", subtype="DIR_PATH",
        description="The Structure Guide's strict mode: an SD1.5 ControlNet folder (diffusers layout) or a hub id "
        "already downloaded; empty = lllyasviel/control_v11p_sd15_lineart from the cache "
        "(TEXTURE_VARIANTS_CONTROLNET overrides this)",
    )
    sam: StringProperty(
        name="Segment Anything Model", subtype="DIR_PATH",
        description="Restyle's point masks: a Segment Anything folder (transformers layout) or a hub id already "
        "downloaded; empty = nielsr/slimsam-50-uniform from the cache (TEXTURE_VARIANTS_SAM overrides this)",
    )
    fast_lora: StringProperty(
        name="Fast Sampling LoRA", subtype="FILE_PATH",
        description="Quality: Fast: a step-distillation LoRA for SD1.5 (a .safetensors file, a folder, a hub id "
        "already downloaded, or 'lcm' / 'hyper-sd'); empty = LCM-LoRA from the cache",
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
        """Models and device first (what every artist sets), then files, set-up, and the pipeline
        settings a studio's TD changes, folded away."""
        layout = self.layout
        layout.use_property_split = True
        col = layout.column()
        col.prop(self, "base")
        col.prop(self, "ip_adapter")
        for name, download in (("content_encoder", "content-encoder"), ("lgp", "lgp"), ("controlnet", "controlnet"),
                               ("sam", "sam"), ("fast_lora", "fast")):
            row = col.row(align=True)
            row.prop(self, name)
            row.operator("texture_variants.download_model", text="Download", icon="IMPORT").model = download
        col.prop(self, "device")
        overridden = [name for name in ("TEXTURE_VARIANTS_PYTHON", "TEXTURE_VARIANTS_BACKEND_COMMAND",
                                        "TEXTURE_VARIANTS_BASE", "TEXTURE_VARIANTS_IP_ADAPTER",
                                        *prefs.CONTROL_MODEL_ENV.values()) if os.environ.get(name)]
        if overridden:
            col.label(text="Overridden by the environment: " + ", ".join(overridden), icon="INFO")
        header, body = layout.panel("texture_variants_prefs_files", default_closed=False)
        header.label(text="Files")
        if body:
            col = body.column()
            for name in ("bake_folder", "pack_on_bake", "variant_storage", "job_max_age_days", "job_max_megabytes"):
                col.prop(self, name)
            col.operator("texture_variants.clean_up_jobs", icon="TRASH")
        box = layout.box()
        draw_setup(box, self, context)
        box.label(text=self.status, icon="CHECKMARK" if self.status.startswith("Backend") else "INFO")
        header, body = layout.panel("texture_variants_prefs_pipeline", default_closed=True)
        header.label(text="Pipeline")
        if body:
            col = body.column()
            for name in ("python", "backend_command", "allow_pickle"):
                col.prop(self, name)
            draw_indexes(col, self)


CLASSES = (TextureVariantsPreferences,)
