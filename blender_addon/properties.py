"""Settings and results stored in the .blend: `scene.texture_variants`, `material.texture_variants`.

A result set (one Generate) remembers the material, Image Texture node and image it was made from.
The scene holds the current set (`settings.current`, its variants also as `settings.results`); each
material keeps the sets made from it in `history`, newest first, at most HISTORY_LIMIT.
"""

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
SIZE_MODE_ITEMS = [
    ("match", "Match Source", "The source's width and height, in multiples of 64, at most 2048 px"),
    ("fixed", "Fixed", "A square of the given size"),
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


class TEXTURE_VARIANTS_PG_result_set(bpy.types.PropertyGroup):
    """The variants of one Generate and what they were made for."""

    material: PointerProperty(name="Material", type=bpy.types.Material,
                              description="The material the variants were made for (set on the current set)")
    node_name: StringProperty(name="Node", description="The Image Texture node the variants were made for")
    source: PointerProperty(name="Source", type=bpy.types.Image, description="The image they are variants of")
    created: StringProperty(name="Made", description="When (local time)")
    engine: StringProperty(name="Engine")
    seed: IntProperty(name="Seed", description="The first variant's seed")
    width: IntProperty(name="Width", subtype="PIXEL")
    height: IntProperty(name="Height", subtype="PIXEL")
    notes: StringProperty(name="Notes", description="How the size or aspect differs from the source's")
    expectation: StringProperty(name="Found", description="What the patch engine found in the texture and "
                                "what to expect of its variants")
    variants: CollectionProperty(type=TEXTURE_VARIANTS_PG_variant)
    index: IntProperty(name="Picked Variant", default=0, min=0)

    def picked(self):
        """The picked variant, or None."""
        if 0 <= self.index < len(self.variants) and self.variants[self.index].image:
            return self.variants[self.index]
        return None

    def label(self) -> str:
        n = len(self.variants)
        return f"{self.created} · {self.engine} · seed {self.seed} · {n} × {self.width}×{self.height}"


class TEXTURE_VARIANTS_PG_settings(bpy.types.PropertyGroup):
    engine: EnumProperty(name="Engine", items=ENGINE_ITEMS, default="auto")
    variants: IntProperty(name="Variants", description="How many variants to make", default=2, min=1, max=16)
    seed: IntProperty(name="Seed", description="Random seed; variant i uses seed + i", default=0, min=0)
    randomize_seed: BoolProperty(
        name="Randomise", default=True,
        description="Pick a new seed for every run (the seed used is stored above, so a result can be redone)",
    )
    steps: IntProperty(name="Steps", description="Denoising steps (diffusion)", default=30, min=1, max=200)
    size_mode: EnumProperty(name="Size", items=SIZE_MODE_ITEMS, default="match")
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
    prompt: StringProperty(name="Prompt", description="What the texture shows, in words (diffusion; optional)")
    negative_prompt: StringProperty(name="Negative", description="What to keep out of the variants (diffusion; "
                                    "optional)")
    current: PointerProperty(type=TEXTURE_VARIANTS_PG_result_set)

    @property
    def results(self):
        """The current set's variants (scripts: `scene.texture_variants.results`)."""
        return self.current.variants

    @property
    def results_index(self) -> int:
        return self.current.index

    @results_index.setter
    def results_index(self, value: int) -> None:
        self.current.index = value

    def picked(self):
        """The picked variant of the current set, or None."""
        return self.current.picked()


class TEXTURE_VARIANTS_PG_material(bpy.types.PropertyGroup):
    """Per material: the chosen node, what `revert` needs, and the history of result sets."""

    image_node: StringProperty(
        name="Image Node",
        description="The Image Texture node to take the texture from; empty = the one feeding Base Color "
        "(through Mix, Hue/Saturation, Color Ramp, Reroute and group nodes), else the active one",
    )
    original_image: PointerProperty(name="Original Image", type=bpy.types.Image)
    applied_image: PointerProperty(name="Applied Image", type=bpy.types.Image)
    node_name: StringProperty(name="Node")
    original_had_fake_user: BoolProperty()
    history: CollectionProperty(type=TEXTURE_VARIANTS_PG_result_set)
    history_index: IntProperty(name="Result Set", default=0, min=0)


CLASSES = (TEXTURE_VARIANTS_PG_variant, TEXTURE_VARIANTS_PG_result_set, TEXTURE_VARIANTS_PG_settings,
           TEXTURE_VARIANTS_PG_material)


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
