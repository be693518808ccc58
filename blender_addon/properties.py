"""Settings and results stored in the .blend: `scene.texture_variants`, `material.texture_variants`."""

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

ENGINE_ITEMS = [
    ("auto", "Auto", "Diffusion when its models are on this machine, otherwise Patch"),
    ("diffusion", "Diffusion", "Stable Diffusion 1.5 + IP-Adapter with kv replacement (needs the models)"),
    ("patch", "Patch", "Weight-free example-based synthesis: instant, no models needed"),
]
TILE_ITEMS = [
    ("both", "Both", "Seamless in X and Y"),
    ("x", "X", "Seamless left to right only"),
    ("y", "Y", "Seamless top to bottom only"),
    ("none", "None", "Not tileable"),
]
APPEARANCE_ITEMS = [
    ("kv", "KV (Keep Appearance)", "kv replacement: borrow the reference's keys/values late in denoising"),
    ("ad", "AD (Distil Appearance)",
     "Attention distillation: optimise the image towards the reference's attention features late in "
     "denoising; slower (a few extra passes per late step)"),
    ("none", "None (Image Prompt Only)", "Plain IP-Adapter: freer structure, the look may drift"),
]

SKETCH_MODE_ITEMS = [
    ("lgp", "LGP (Soft)", "Latent guidance predictor: steers the layout towards the guide's lines in the first "
     "steps, leaving the look to the reference (one extra backward pass per early step)"),
    ("controlnet", "ControlNet (Strict)", "An SD1.5 lineart ControlNet follows the guide's lines closely "
     "(needs its 1.4 GB model)"),
]


class TEXTURE_VARIANTS_PG_variant(bpy.types.PropertyGroup):
    """One generated variant (its image stays in bpy.data until you delete it)."""

    image: PointerProperty(name="Image", type=bpy.types.Image)
    path: StringProperty(name="File", subtype="FILE_PATH", description="The variant as written by the backend")
    seed: IntProperty(name="Seed", description="Generates this variant alone again with the same settings")
    engine: StringProperty(name="Engine")


class TEXTURE_VARIANTS_PG_settings(bpy.types.PropertyGroup):
    engine: EnumProperty(name="Engine", items=ENGINE_ITEMS, default="auto")
    variants: IntProperty(name="Variants", description="How many variants to make", default=2, min=1, max=16)
    seed: IntProperty(name="Seed", description="Random seed; variant i uses seed + i", default=0, min=0)
    randomize_seed: BoolProperty(
        name="Randomise", default=True,
        description="Pick a new seed for every run (the seed used is stored above, so a result can be redone)",
    )
    steps: IntProperty(name="Steps", description="Denoising steps (diffusion)", default=30, min=1, max=200)
    size: IntProperty(name="Size", description="Output size in pixels, rounded to a multiple of 64",
                      default=512, min=64, max=2048, step=64, subtype="PIXEL")
    tile: EnumProperty(name="Tile", items=TILE_ITEMS, default="both")
    balance: FloatProperty(
        name="Balance", default=0.5, min=0.0, max=1.0, subtype="FACTOR",
        description="0 = new structure, 1 = closest appearance to the original (0.5 is the published recipe)",
    )
    appearance: EnumProperty(name="Appearance", items=APPEARANCE_ITEMS, default="kv")
    style_only: BoolProperty(
        name="Style Only", default=False,
        description="Feed the image prompt into the style block of the model only (InstantStyle): keeps colours "
        "and materials, lets the layout move more (diffusion)",
    )
    suppress_content: StringProperty(
        name="Content",
        description="With Style Only: what the texture shows (e.g. \"bricks\", \"wood planks\"), taken out of "
        "the image prompt. Needs the CLIP ViT-H text model (see README); empty = nothing taken out",
    )
    sketch: PointerProperty(
        name="Structure Guide", type=bpy.types.Image,
        description="An image whose lines the variant's structure follows: white on black or black on white, "
        "square (paint one, load one, or make one from the texture's edges); empty = no guide (diffusion)",
    )
    sketch_mode: EnumProperty(name="Guide Mode", items=SKETCH_MODE_ITEMS, default="lgp")
    sketch_strength: FloatProperty(
        name="Guide Strength", default=1.0, min=0.0, max=5.0,
        description="How strongly the structure follows the guide (LGP: guidance step size; ControlNet: "
        "conditioning scale)",
    )
    image_node: StringProperty(
        name="Image Node",
        description="The Image Texture node to take the texture from; empty = the one feeding Base Color, "
        "else the active Image Texture node",
    )
    results: CollectionProperty(type=TEXTURE_VARIANTS_PG_variant)
    results_index: IntProperty(name="Picked Variant", default=0, min=0)

    def picked(self):
        """The picked variant, or None."""
        if 0 <= self.results_index < len(self.results) and self.results[self.results_index].image:
            return self.results[self.results_index]
        return None


class TEXTURE_VARIANTS_PG_material(bpy.types.PropertyGroup):
    """What `revert` needs: the image the node held before a variant was applied."""

    original_image: PointerProperty(name="Original Image", type=bpy.types.Image)
    node_name: StringProperty(name="Node")
    original_had_fake_user: BoolProperty()


CLASSES = (TEXTURE_VARIANTS_PG_variant, TEXTURE_VARIANTS_PG_settings, TEXTURE_VARIANTS_PG_material)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.texture_variants = PointerProperty(type=TEXTURE_VARIANTS_PG_settings)
    bpy.types.Material.texture_variants = PointerProperty(type=TEXTURE_VARIANTS_PG_material)


def unregister() -> None:
    del bpy.types.Material.texture_variants
    del bpy.types.Scene.texture_variants
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
