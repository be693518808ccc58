"""Settings and results stored in the .blend: `scene.texture_variants`, `material.texture_variants`.

A result set (one Generate) remembers the material, Image Texture node and image it was made from,
and the nodes of the maps sent with it (`map_nodes`); each variant holds its maps (`variant.maps`).
The scene holds the current set (`settings.current`, its variants also as `settings.results`); each
material keeps the sets made from it in `history`, newest first, at most HISTORY_LIMIT, and a record
per Image Texture node that Apply changed (`applied`, keyed by node name) for Revert and Bake.
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

from . import parameters

# The backend's choices (backend/params.py, through generated/params.json) with the panel's labels.
ENGINE_ITEMS = parameters.enum_items("engine", {
    "auto": ("Auto", "Diffusion when its models are on this machine, otherwise Patch"),
    "diffusion": ("Diffusion", "Stable Diffusion 1.5 + IP-Adapter with kv replacement (needs the models)"),
    "patch": ("Patch", "Weight-free example-based synthesis: instant, no models needed"),
})
TILE_ITEMS = parameters.enum_items("tile", {
    "both": ("Both", "Seamless in X and Y"),
    "x": ("X", "Seamless left to right only"),
    "y": ("Y", "Seamless top to bottom only"),
    "none": ("None", "Not tileable"),
})
SIZE_MODE_ITEMS = [
    ("match", "Match Source", "The source's own width and height (the diffusion engine: multiples of 8), at most "
     f"{parameters.sizes()['high']} px a side"),
    ("fixed", "Fixed", "A square of the given size"),
]
APPEARANCE_ITEMS = parameters.enum_items("appearance", {
    "kv": ("KV (Keep Appearance)", "kv replacement: borrow the reference's keys/values late in denoising"),
    "ad": ("AD (Distil Appearance)",
           "Attention distillation: optimise the image towards the reference's attention features late in "
           "denoising; slower (a few extra passes per late step)"),
    "none": ("None (Image Prompt Only)", "Plain IP-Adapter: freer structure, the look may drift"),
})

SAMPLER_ITEMS = parameters.enum_items("sampler", {
    "full": ("Full", "The model's own schedule (Steps): the reference quality"),
    "fast": ("Fast", "A step-distillation LoRA (LCM-LoRA) in 8 steps, every control kept: several times faster; "
             "needs its LoRA (Download beside Fast Sampling LoRA in the preferences)"),
})
SKETCH_MODE_ITEMS = parameters.enum_items("sketch_mode", {
    "lgp": ("LGP (Soft)", "Latent guidance predictor: steers the layout towards the guide's lines in the first "
            "steps, leaving the look to the reference (one extra backward pass per early step)"),
    "controlnet": ("ControlNet (Strict)", "An SD1.5 lineart ControlNet follows the guide's lines closely "
                   "(needs its 1.4 GB model)"),
})


# Restyle (docs/guide/restyle-and-sketch.md, "Restyle"): where the mask comes from and what it means.
MASK_SOURCE_ITEMS = [
    ("none", "Whole Texture", "Restyle everywhere, no mask"),
    ("image", "Painted Mask", "An image painted white where selected (New Mask makes a blank one to paint)"),
    ("points", "Points (Segment Anything)", "Points placed with the Image Editor's 2D cursor; Segment Anything "
     "selects the part they mark (needs its model: download-models --sam)"),
]
RESTYLE_START_ITEMS = parameters.enum_items("restyle_start", {
    "inverted": ("From the Texture", "Start from the texture's own inverted noise (as the method's paper): the "
                 "structure is kept closely; every seed gives nearly the same result"),
    "noise": ("From Noise", "Start from seeded noise: more variety between seeds, the structure is kept less"),
})
MASK_MODE_ITEMS = parameters.enum_items("mask_mode", {
    "keep-structure": ("Keep Structure Inside", "The masked part keeps its structure; the rest follows the prompt"),
    "edit-inside": ("Edit Inside Only", "Only the masked part changes; the rest stays the original"),
})


class TEXTURE_VARIANTS_PG_mask_point(bpy.types.PropertyGroup):
    """A Segment Anything prompt point, in image coordinates (0-1, origin bottom-left, as Blender's UVs)."""

    u: FloatProperty(name="U", min=0.0, max=1.0)
    v: FloatProperty(name="V", min=0.0, max=1.0)
    negative: BoolProperty(name="Exclude", description="Exclude what this point marks instead of selecting it")


class TEXTURE_VARIANTS_PG_variant_map(bpy.types.PropertyGroup):
    """One map of a variant (`name`: the map's name, e.g. roughness), rearranged like its base colour."""

    image: PointerProperty(name="Image", type=bpy.types.Image)
    path: StringProperty(name="File", subtype="FILE_PATH", description="The map as written by the backend")


class TEXTURE_VARIANTS_PG_map_node(bpy.types.PropertyGroup):
    """A map a result set was made with (`name`: the map's name) and the Image Texture node it came from."""

    node_name: StringProperty(name="Node")


class TEXTURE_VARIANTS_PG_variant(bpy.types.PropertyGroup):
    """One generated variant (its image stays in bpy.data until you delete it)."""

    image: PointerProperty(name="Image", type=bpy.types.Image)
    path: StringProperty(name="File", subtype="FILE_PATH", description="The variant as written by the backend")
    seed: IntProperty(name="Seed", description="Generates this variant alone again with the same settings")
    engine: StringProperty(name="Engine")
    maps: CollectionProperty(type=TEXTURE_VARIANTS_PG_variant_map)
    overlay: PointerProperty(name="Band Overlay", type=bpy.types.Image,
                             description="Make Tileable: the result with its re-made band tinted, for the panel")
    card: StringProperty(name="Report Card", description="The backend's report card of this variant (JSON): "
                         "does it tile, is it new, does it look like the source (panel_rules.card_details)")


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
    summary: StringProperty(name="Kind", description="What kind of result set it is and its key settings "
                            "(panel_rules.result_summary)")
    expectation: StringProperty(name="Found", description="What the patch engine found in the texture and "
                                "what to expect of its variants")
    variants: CollectionProperty(type=TEXTURE_VARIANTS_PG_variant)
    map_nodes: CollectionProperty(type=TEXTURE_VARIANTS_PG_map_node)
    index: IntProperty(name="Picked Variant", default=0, min=0)

    def picked(self):
        """The picked variant, or None."""
        if 0 <= self.index < len(self.variants) and self.variants[self.index].image:
            return self.variants[self.index]
        return None

    def label(self) -> str:
        n = len(self.variants)
        kind = self.summary or {"tileable": "tileable", "restyle": "restyle", "layout": "tile set layout",
                                "upscale": "upscale"}.get(self.engine, f"{self.engine} variants")
        return f"{self.created} · {kind} · seed {self.seed} · {n} × {self.width}×{self.height}"


class TEXTURE_VARIANTS_PG_settings(bpy.types.PropertyGroup):
    engine: EnumProperty(name="Engine", items=ENGINE_ITEMS, default=parameters.default("engine"))
    variants: IntProperty(name="Variants", description="How many variants to make",
                          **parameters.keywords("variants", default=2))  # the panel offers a choice of two
    seed: IntProperty(name="Seed", description="Random seed; variant i uses seed + i", default=0,
                      min=parameters.declared("seed")["low"])  # a 32-bit property: its own maximum
    randomize_seed: BoolProperty(
        name="Randomise", default=True,
        description="Pick a new seed for every run (the seed used is stored above, so a result can be redone)",
    )
    sampler: EnumProperty(name="Quality", items=SAMPLER_ITEMS, default=parameters.default("sampler"))
    steps: IntProperty(name="Steps", description="Denoising steps (diffusion)", **parameters.keywords("steps"))
    size_mode: EnumProperty(name="Size", items=SIZE_MODE_ITEMS, default="match")
    size: IntProperty(name="Size", description="The side of the square made, in pixels (the diffusion engine: "
                      "rounded to a multiple of 8)", subtype="PIXEL", **parameters.keywords("size"))
    tile: EnumProperty(name="Tile", items=TILE_ITEMS, default=parameters.default("tile"))
    balance: FloatProperty(name="Balance", subtype="FACTOR", **parameters.keywords("balance"))
    appearance: EnumProperty(name="Appearance Method", items=APPEARANCE_ITEMS, default=parameters.default("appearance"))
    style_only: BoolProperty(
        name="Style Only", default=False,
        description="Feed the image prompt into the style block of the model only (InstantStyle): keeps colours "
        "and materials, lets the layout move more (diffusion)",
    )
    suppress_content: StringProperty(
        name="Subject to Drop",
        description="With Style Only: what the texture shows (e.g. \"bricks\", \"wood planks\"), taken out of "
        "the image prompt. Needs the CLIP ViT-H text model (docs/guide/engines.md); empty = nothing taken out",
    )
    sketch: PointerProperty(
        name="Structure Guide", type=bpy.types.Image,
        description="An image whose lines the variant's structure follows: white on black or black on white, "
        "square (paint one, load one, or make one from the texture's edges); empty = no guide (diffusion)",
    )
    sketch_mode: EnumProperty(name="Guide Mode", items=SKETCH_MODE_ITEMS, default=parameters.default("sketch_mode"))
    sketch_strength: FloatProperty(name="Guide Strength", **parameters.keywords("sketch_strength"))
    prompt: StringProperty(name="Prompt", description="What the texture shows, in words (diffusion; optional)")
    negative_prompt: StringProperty(name="Negative", description="What to keep out of the variants (diffusion; "
                                    "optional)")
    restyle_prompt: StringProperty(
        name="New Look", description="The new look, e.g. \"mossy bricks\", \"rusty metal\", \"snow in the joints\"")
    restyle_strength: FloatProperty(name="Strength", subtype="FACTOR", **parameters.keywords("restyle_strength"))
    restyle_start: EnumProperty(name="Start", items=RESTYLE_START_ITEMS, default=parameters.default("restyle_start"))
    mask_source: EnumProperty(name="Mask", items=MASK_SOURCE_ITEMS, default="none")
    mask_image: PointerProperty(name="Mask Image", type=bpy.types.Image,
                                description="White = selected; the texture's aspect ratio")
    mask_mode: EnumProperty(name="Mask Mode", items=MASK_MODE_ITEMS, default=parameters.default("mask_mode"))
    mask_points: CollectionProperty(type=TEXTURE_VARIANTS_PG_mask_point)
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


class TEXTURE_VARIANTS_PG_applied(bpy.types.PropertyGroup):
    """What Apply did to one Image Texture node (`name`: the node's name): what Revert puts back."""

    map_name: StringProperty(name="Map", description="The map the node holds; empty: the base colour")
    original_image: PointerProperty(name="Original Image", type=bpy.types.Image)
    applied_image: PointerProperty(name="Applied Image", type=bpy.types.Image)
    original_had_fake_user: BoolProperty()


MAP_ITEMS = parameters.labelled(parameters.material_maps(), {  # the Principled BSDF input each is found on
    "roughness": ("Roughness", "The image feeding Roughness"),
    "metallic": ("Metallic", "The image feeding Metallic"),
    "normal": ("Normal", "The image feeding Normal through a Normal Map node"),
    "height": ("Height", "The image feeding a Bump node's Height, or a Displacement node into the Material Output"),
}, "map names")


class TEXTURE_VARIANTS_PG_tile_set(bpy.types.PropertyGroup):
    """A material's Wang tile set (docs/guide/tile-sets.md): the backend's description and its atlases
    (`atlases`, named "color" or after their map)."""

    spec: StringProperty(name="Tile Set", description="The backend's JSON description of the set")
    atlases: CollectionProperty(type=TEXTURE_VARIANTS_PG_variant_map)
    created: StringProperty(name="Made", description="When (local time)")
    colours: EnumProperty(name="Edge Colours", default="2", items=[
        ("2", "2 (16 Tiles)", "Two codes per edge: 16 tiles, quick to make"),
        ("3", "3 (81 Tiles)", "Three codes per edge: 81 tiles, even less repetition, a larger atlas")])
    tile_size: IntProperty(name="Tile Size", default=256, min=16, max=4096, step=8, subtype="PIXEL",
                           description="Each tile's side in pixels, a multiple of 8 (the texture must be at least "
                           "this large)")
    cells_x: IntProperty(name="Cells X", default=8, min=1, max=64, description="Bake Layout: cells across")
    cells_y: IntProperty(name="Cells Y", default=8, min=1, max=64, description="Bake Layout: cells down")
    seed: IntProperty(name="Layout Seed", default=0, min=0, max=2**20,
                      description="Which random layout of the tiles (the material's and the baked one's)")
    scale: FloatProperty(name="Cells per UV", default=4.0, min=0.01, max=1024.0,
                         description="How many tiles across one UV unit when the tile set is shown")


class TEXTURE_VARIANTS_PG_material(bpy.types.PropertyGroup):
    """Per material: the chosen node, the maps sent along, what `revert` needs, and the history of result sets."""

    image_node: StringProperty(
        name="Image Node",
        description="The Image Texture node to take the texture from; empty = the one feeding Base Color "
        "(through Mix, Hue/Saturation, Color Ramp, Reroute and group nodes), else the active one",
    )
    send_maps: EnumProperty(
        name="Maps", items=MAP_ITEMS, options={"ENUM_FLAG"}, default={name for name, _, _ in MAP_ITEMS},
        description="The maps found on the material that Generate sends with the base colour, so every variant "
        "gets them rearranged the same way")
    # insertable in a library override too: Apply to a Local Copy of one records on the copy (an override)
    applied: CollectionProperty(type=TEXTURE_VARIANTS_PG_applied, override={"LIBRARY_OVERRIDABLE", "USE_INSERTION"})
    history: CollectionProperty(type=TEXTURE_VARIANTS_PG_result_set)
    history_index: IntProperty(name="Result Set", default=0, min=0)
    tile_set: PointerProperty(type=TEXTURE_VARIANTS_PG_tile_set)


CLASSES = (TEXTURE_VARIANTS_PG_mask_point, TEXTURE_VARIANTS_PG_variant_map, TEXTURE_VARIANTS_PG_map_node,
           TEXTURE_VARIANTS_PG_variant, TEXTURE_VARIANTS_PG_result_set, TEXTURE_VARIANTS_PG_settings,
           TEXTURE_VARIANTS_PG_applied, TEXTURE_VARIANTS_PG_tile_set, TEXTURE_VARIANTS_PG_material)


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
