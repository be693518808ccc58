"""Generation parameters: one typed, validated record shared by the Python API, the CLI and the service.

Every parameter is a dataclass field whose `Spec` (in the field's metadata) declares its kind and
range; its default is the field's default. That pair is the only place either is written: the
checks, the service's `hello` capabilities and the add-on's property test all read it from here.
Engine-specific options are typed too (`DiffusionOptions`, `PatchOptions`) and travel inside the
record, so the engines read `params.diffusion.ad_iterations`, never a loose dict.

Torch-free, so that the service can describe and check a request without importing an engine.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from backend.errors import InputError

ENGINES = ("auto", "diffusion", "patch")
TILE_MODES = ("both", "x", "y", "none")
AXES = {"both": (True, True), "x": (True, False), "y": (False, True), "none": (False, False)}  # (wrap x, wrap y)
APPEARANCE_MODES = ("kv", "ad", "none")  # kv replacement, attention distillation, plain IP-Adapter
IP_MODES = ("full", "style")  # IP-Adapter in every cross-attention layer, or in the style block(s) only
SKETCH_MODES = ("lgp", "controlnet")  # latent guidance predictor (Voynov et al.), or an SD1.5 ControlNet
SAMPLERS = ("full", "fast")  # the model's own 30-step schedule, or a step-distillation LoRA's (diffusion/fast.py)
FAST_LORAS = ("lcm", "hyper-sd")  # the published step-distillation LoRAs fast_lora names (or a file / hub id)
FAST_SCHEDULERS = ("tcd", "ddim-trailing")
MIN_SIZE, MAX_SIZE = 64, 8192  # per side of the output
# The side of the output must be a multiple of this for each engine (diffusion: the VAE's 8x latent grid).
SIZE_MULTIPLE = {"diffusion": 8, "patch": 1}
MAX_VARIANTS = 16
UPSCALE_FACTORS = (2, 4)  # backend/upscaling.py
DERIVABLE_MAPS = ("height", "normal", "roughness")  # backend/materials/derive.py makes them
MATERIAL_MAPS = ("roughness", "metallic", "normal", "height")  # the maps the Blender add-on finds and sends
NORMAL_MODELS = ("classical", "marigold")
MAP_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # a map's name ends up in a file name
MAX_MAP_SIDE = 8192
MASK_MODES = ("keep-structure", "edit-inside")  # restyle: where the structure is kept / what is restyled
REFERENCE_PASSES = ("branch", "inversion")  # where the controls record the reference (reference_cache.py)
RESTYLE_STARTS = ("inverted", "noise")  # restyle: the generated branch starts from the inverted input or seeded noise


@dataclass(frozen=True)
class Spec:
    """What values a parameter takes. kind: int | number | choice | text | flag | names | maps | points | box
    | size | extent.

    names: a list of strings (of `choices` when given); maps: an object {map name: file path}; points,
    box: pixel coordinates (restyle masks); size: [width, height] in pixels; extent: an output size,
    an integer (a square) or [width, height], each side from `low` to `high`, normalised to (w, h)."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    multiple: int = 1
    optional: bool = False  # None is a value ("the engine's default")
    hint: str = ""

    def expected(self) -> str:
        text = {"int": f"an integer from {self.low} to {self.high}",
                "number": f"a number in [{self.low}, {self.high}]",
                "choice": " | ".join(self.choices), "text": "a string", "flag": "true or false",
                "names": "a list of names" + (f" from {', '.join(self.choices)}" if self.choices else ""),
                "maps": "an object {name: path} (names: lower-case letters, digits and _)",
                "points": "a list of [x, y] or [x, y, label] pixel positions (label 1 selects, 0 excludes)",
                "box": "[x0, y0, x1, y1] in pixels, x0 < x1 and y0 < y1",
                "size": f"[width, height] in pixels, each an integer from 1 to {MAX_MAP_SIDE}",
                "extent": f"an integer (a square) or [width, height], each side from {self.low} to {self.high} px"
                }[self.kind]
        if self.multiple > 1:
            text = f"a multiple of {self.multiple} from {self.low} to {self.high}"
        return text + (" or null for the default" if self.optional else "") + (f" ({self.hint})" if self.hint else "")

    def check(self, name: str, value):
        """The value, normalised (a list of names becomes a tuple); InputError naming `name` if invalid."""
        if value is None and self.optional:
            return None
        if self.kind == "names" and isinstance(value, (list, tuple)) and all(
                isinstance(v, str) and (not self.choices or v in self.choices) for v in value):
            return tuple(value)
        if self.kind == "maps" and isinstance(value, Mapping) and all(
                isinstance(k, str) and MAP_NAME.match(k) and isinstance(v, str) and v and "\0" not in v
                for k, v in value.items()):
            return dict(value)
        if self.kind in _COORDINATES:
            return _COORDINATES[self.kind](name, value, self)
        if not self._valid(value):
            raise InputError(f"invalid {name}={value!r}: expected {self.expected()}",
                             hint=f"pass a valid {name} (see `python -m backend generate --help`)")
        return value

    def _valid(self, value) -> bool:
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind in ("text", "flag"):
            return isinstance(value, str if self.kind == "text" else bool)
        if isinstance(value, bool) or not isinstance(value, int if self.kind == "int" else (int, float)):
            return False
        return self.low <= value <= self.high and (self.multiple == 1 or value % self.multiple == 0)


# ---------------------------------------------------------------- pixel coordinates (restyle masks)


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _point(p) -> bool:
    if not isinstance(p, (list, tuple)) or len(p) not in (2, 3) or not all(_finite_number(c) for c in p[:2]):
        return False
    return len(p) == 2 or (isinstance(p[2], int) and not isinstance(p[2], bool) and p[2] in (0, 1))


def _points(name: str, value, spec: Spec) -> tuple[tuple[float, float, int], ...]:
    """Points as ((x, y, label), ...); a point without a label selects (label 1)."""
    items = value if isinstance(value, (list, tuple)) else None
    valid = bool(items) and all(_point(p) for p in items)
    if not valid:
        raise InputError(f"invalid {name}={value!r}: expected {spec.expected()}",
                         hint="e.g. [[120, 80], [300, 40, 0]]: pixel x, y of the input image, label 1 or 0")
    return tuple((float(p[0]), float(p[1]), int(p[2]) if len(p) == 3 else 1) for p in items)


def _box(name: str, value, spec: Spec) -> tuple[float, float, float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 4 and all(_finite_number(c) for c in value)
            and value[0] < value[2] and value[1] < value[3]):
        raise InputError(f"invalid {name}={value!r}: expected {spec.expected()}",
                         hint="give the left, top, right and bottom pixel coordinates of the input image")
    return tuple(float(c) for c in value)


def _size(name: str, value, spec: Spec) -> tuple[int, int]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_MAP_SIDE for v in value)):
        raise InputError(f"invalid {name}={value!r}: expected {spec.expected()}",
                         hint="e.g. [1024, 512]: the width and height of the texture the reference was squeezed from")
    return int(value[0]), int(value[1])


def _extent(name: str, value, spec: Spec) -> tuple[int, int]:
    """An output size: n (a square) or [w, h]; each side in [spec.low, spec.high]."""
    pair = (value, value) if not isinstance(value, (list, tuple)) else value
    if not (len(pair) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and spec.low <= v <= spec.high
                                   for v in pair)):
        raise InputError(f"invalid {name}={value!r}: expected {spec.expected()}",
                         hint="e.g. 512 for 512x512, or [1024, 384] for 1024 wide and 384 high")
    return int(pair[0]), int(pair[1])


_COORDINATES = {"points": _points, "box": _box, "size": _size, "extent": _extent}


def param(default, kind: str, low=None, high=None, **spec):
    """A dataclass field with its default and its Spec."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"spec": Spec(kind, low, high, **spec)})
    if isinstance(default, (list, tuple)):
        return field(default=tuple(default), metadata={"spec": Spec(kind, low, high, **spec)})
    return field(default=default, metadata={"spec": Spec(kind, low, high, **spec)})


def specs(cls) -> dict[str, tuple[Spec, object]]:
    """{name: (spec, default)} of a parameter dataclass, in declaration order."""
    return {f.name: (f.metadata["spec"], f.default_factory() if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(cls) if "spec" in f.metadata}


class Checked:
    """Mixin: `validated()` checks and normalises every field that has a Spec."""

    def validated(self):
        changes = {name: spec.check(name, getattr(self, name)) for name, (spec, _) in specs(type(self)).items()}
        return dataclasses.replace(self, **changes)

    def changed(self) -> dict:
        """The options that differ from their defaults (what a parameters record lists)."""
        return {name: getattr(self, name) for name, (_, default) in specs(type(self)).items()
                if getattr(self, name) != default}


@dataclass(frozen=True)
class DiffusionOptions(Checked):
    """Options of the diffusion engine (the API's extra keywords, the service's `extra` object)."""

    ip_adapter_variant: str = param("standard", "choice", choices=("standard", "plus"))
    device: str | None = param(None, "text", optional=True, hint="auto, cpu, cuda, cuda:N or mps")
    dtype: str | None = param(None, "text", optional=True, hint="auto, float16, float32 or bfloat16")
    allow_pickle: bool = param(False, "flag")
    kv_window: float | None = param(None, "number", 0.0, 1.0, optional=True,
                                    hint="a fraction of the steps, counted from the end")
    kv_blocks: tuple[str, ...] | None = param(None, "names", optional=True, hint='e.g. ["up_blocks.2", "up_blocks.3"]')
    inversion_iterations: int = param(0, "int", 0, 20)
    reference_passes: str = param("branch", "choice", choices=REFERENCE_PASSES,
                                  hint="branch: kv/AD record the reference in its own branch through the window (the "
                                       "method); inversion: in the inversion's passes at the same timesteps, one "
                                       "level less noisy (a first call saves the window's branch passes)")
    ad_iterations: int = param(3, "int", 0, 50, hint="Adam iterations per window step")
    ad_lr: float = param(0.05, "number", 0.0, 10.0, hint="Adam learning rate")
    style_blocks: tuple[str, ...] = param(("up_blocks.1",), "names", hint='e.g. ["up_blocks.1"]')
    suppress_scale: float = param(0.8, "number", 0.0, 10.0)
    content_encoder: str | None = param(None, "text", optional=True)
    decode_one_at_a_time: bool = param(False, "flag")
    upscale_strength: float = param(0.3, "number", 0.0, 1.0, hint="upscale: the fraction of the steps re-noised and "
                                    "denoised at the larger size (detail added; the structure stays below about 0.5)")
    window: int = param(512, "int", 64, 2048, multiple=64,
                        hint="px: larger outputs are denoised and decoded in overlapping windows of this side")
    taesd: str | None = param(None, "text", optional=True,
                              hint="tiny autoencoder for the live previews: folder or hub id (default: "
                                   "madebyollin/taesd when it is in the HF cache, else a latent colour map)")
    draft: bool = param(False, "flag", hint="decode the final images with the tiny autoencoder: a quick look")
    # Few-step sampling (sampler="fast"; backend/diffusion/fast.py)
    fast_lora: str = param("lcm", "text", hint="lcm (LCM-LoRA), hyper-sd (Hyper-SD 8-step CFG), or a LoRA "
                           ".safetensors file, folder or hub id")
    fast_scheduler: str | None = param(None, "choice", choices=FAST_SCHEDULERS, optional=True,
                                       hint="default: the one fast_lora was distilled for")
    # Sketch guidance (backend/diffusion/controls/sketch.py, controlnet.py)
    sketch_window: float = param(0.5, "number", 0.0, 1.0, hint="LGP: a fraction of the steps, counted from the start")
    lgp: str | None = param(None, "text", optional=True, hint="LGP weights: hub id, folder or file")
    controlnet: str | None = param(None, "text", optional=True, hint="SD1.5 ControlNet: hub id or folder")
    # Restyle (controls/restyle.py): Plug-and-Play feature injection under a text prompt, with a mask.
    restyle_prompt: str = param("", "text", hint="the new look; empty = no restyle")
    restyle_strength: float = param(0.5, "number", 0.0, 1.0,
                                    hint="0 = keep all the structure, 1 = follow the text alone (0.5: the published "
                                         "setting)")
    restyle_start: str = param("inverted", "choice", choices=RESTYLE_STARTS,
                               hint="inverted: from the input's inverted noise (the paper; keeps structure); "
                                    "noise: from seeded noise (more variety, less structure)")
    mask: str | None = param(None, "text", optional=True, hint="a mask image, white = selected")
    mask_points: tuple | None = param(None, "points", optional=True)
    mask_box: tuple | None = param(None, "box", optional=True)
    mask_mode: str = param("keep-structure", "choice", choices=MASK_MODES)
    sam: str | None = param(None, "text", optional=True, hint="Segment Anything folder or hub id")


@dataclass(frozen=True)
class PatchOptions(Checked):
    """Options of the weight-free engine (docs/PATCH_ENGINE.md)."""

    structure: str = param("auto", "choice", choices=("auto", "regular", "stochastic"),
                           hint="regular: bricks, tiles, planks; stochastic: irregular materials; "
                                "auto: decided from the reference")


ENGINE_OPTIONS = {"diffusion": DiffusionOptions, "patch": PatchOptions}


@dataclass(frozen=True)
class GenerationParams(Checked):
    engine: str = param("auto", "choice", choices=ENGINES)
    variants: int = param(1, "int", 1, MAX_VARIANTS)
    seed: int | None = param(None, "int", 0, 2**63 - 1, optional=True)
    steps: int = param(30, "int", 1, 200)
    sampler: str = param("full", "choice", choices=SAMPLERS,
                         hint="fast: a step-distillation LoRA, fast_steps steps (download-models --fast)")
    fast_steps: int = param(8, "int", 1, 50, hint="denoising steps of the fast sampler (4-8)")
    size: tuple[int, int] = param((512, 512), "extent", MIN_SIZE, MAX_SIZE)  # (width, height)
    tile: str = param("both", "choice", choices=TILE_MODES)
    balance: float = param(0.5, "number", 0.0, 1.0,
                           hint="0 = new structure, 1 = closest appearance to the original (0.5 is the published "
                                "recipe)")
    appearance: str = param("kv", "choice", choices=APPEARANCE_MODES)
    ip_scale: float | None = param(None, "number", 0.0, 30.0, optional=True)
    prompt: str = param("", "text")
    negative_prompt: str = param("", "text")
    guidance_scale: float | None = param(None, "number", 0.0, 30.0, optional=True)
    ip_mode: str = param("full", "choice", choices=IP_MODES)
    suppress_content: str = param("", "text")  # text whose CLIP embedding is subtracted from the image prompt's
    maps: dict = param({}, "maps", hint='the material\'s other maps, e.g. {"roughness": "/path/r.png"}; '
                       "each variant gets one file per map, rearranged like its base colour")
    derive: tuple[str, ...] = param((), "names", choices=DERIVABLE_MAPS,
                                    hint="maps made from each variant's base colour")
    map_size: tuple[int, int] | None = param(
        None, "size", optional=True,
        hint="kept for older clients that squeeze a texture to a square: the reference is a squeezed copy of a "
             "texture this size, given maps are stretched to it and each variant's maps written at this size; "
             "ask for size [width, height] instead")
    normals: str = param("classical", "choice", choices=NORMAL_MODELS,
                         hint="how derived normals are made: from the height (classical) or by Marigold "
                              "(its weights must be on this machine: download-models --normals)")
    # Sketch guidance: an image whose lines the variant's structure follows (diffusion engine only)
    sketch: str | None = param(None, "text", optional=True, hint="path of an image, lines on a plain background")
    sketch_mode: str = param("lgp", "choice", choices=SKETCH_MODES)
    sketch_strength: float = param(1.0, "number", 0.0, 5.0,
                                   hint="how strongly the structure follows the guide (lgp: guidance step size; "
                                        "controlnet: conditioning scale)")
    diffusion: DiffusionOptions = field(default_factory=DiffusionOptions)
    patch: PatchOptions = field(default_factory=PatchOptions)

    @classmethod
    def build(cls, options: Mapping | None = None, **fields) -> GenerationParams:
        """The validated record from plain values: the common `fields` and the engine `options`.

        An option is taken by every engine that knows it; one that no engine in play knows is refused
        (for `engine="auto"` each option must be known to one of the engines auto may pick).
        """
        params = cls(**fields).validated()
        options = dict(options or {})
        candidates = list(ENGINE_OPTIONS) if params.engine == "auto" else [params.engine]
        known = {name for engine in candidates for name in specs(ENGINE_OPTIONS[engine])}
        unknown = sorted(set(options) - known)
        if unknown:
            where = "any engine" if params.engine == "auto" else f"the {params.engine} engine"
            raise InputError(f"unknown parameter(s) for {where}: {unknown}",
                             hint=f"known options: {', '.join(sorted(known)) or 'none'} (common parameters "
                             "such as seed or balance are not options)")
        typed = {engine: ENGINE_OPTIONS[engine](**{k: v for k, v in options.items() if k in specs(ENGINE_OPTIONS[engine])})
                 .validated() for engine in candidates}
        return dataclasses.replace(params, **typed)

    def validated(self) -> GenerationParams:
        """Self with every field checked (and normalised); InputError naming the bad one."""
        checked = super().validated()
        both = sorted(set(checked.maps) & set(checked.derive))
        if both:
            raise InputError(f"map(s) {', '.join(both)} both given and asked to be derived",
                             hint="give a map or derive it, not both")
        if checked.map_size is not None and not (checked.maps or checked.derive):
            raise InputError("map_size applies to maps, and there are none",
                             hint="give maps or derive (or leave map_size out)")
        checked.check_size(checked.engine)
        if checked.normals != "classical" and "normal" not in checked.derive:
            raise InputError(f"normals={checked.normals!r} only applies to a derived normal map",
                             hint="add normal to derive, or leave normals at classical")
        return dataclasses.replace(checked, diffusion=self.diffusion.validated(), patch=self.patch.validated())

    def check_size(self, engine: str) -> None:
        """InputError when `engine` cannot make this size (the diffusion engine: sides on its 8 px latent grid)."""
        multiple = SIZE_MULTIPLE.get(engine, 1)
        if self.width % multiple or self.height % multiple:
            raise InputError(f"size {self.width}x{self.height}: the {engine} engine needs sides that are multiples "
                             f"of {multiple}", hint=f"e.g. {self.width // multiple * multiple}x"
                             f"{self.height // multiple * multiple}, or the patch engine, which takes any size")

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    def replace(self, **changes) -> GenerationParams:
        return dataclasses.replace(self, **changes)

    def options(self, engine: str):
        """The typed options of `engine` ("diffusion" or "patch")."""
        return getattr(self, engine)

    def to_dict(self, engine: str | None = None) -> dict:
        """The common fields, and the options of `engine` that differ from their defaults."""
        d = {name: getattr(self, name) for name in self.field_names()}
        if engine is not None:
            d |= self.options(engine).changed()
        return d

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(specs(cls))


def capabilities() -> dict:
    """What a generate request takes, for the service's `hello`: the choices of the choice fields, the
    names a list field takes (derive), each engine's options and the output sizes (per side, and the
    multiple each engine needs)."""
    return {"choices": {name: list(spec.choices) for name, (spec, _) in specs(GenerationParams).items()
                        if spec.kind == "choice"},
            "names": {name: list(spec.choices) for name, (spec, _) in specs(GenerationParams).items()
                      if spec.kind == "names" and spec.choices},
            "extra": {engine: list(specs(cls)) for engine, cls in ENGINE_OPTIONS.items()},
            "size": {"min": MIN_SIZE, "max": MAX_SIZE, "multiple": dict(SIZE_MULTIPLE)}}


def _declaration(spec: Spec, default) -> dict:
    out = {"kind": spec.kind, "default": list(default) if isinstance(default, tuple) else default}
    out |= {key: getattr(spec, key) for key in ("low", "high") if getattr(spec, key) is not None}
    out |= {"choices": list(spec.choices)} if spec.choices else {}
    out |= {"multiple": spec.multiple} if spec.multiple > 1 else {}
    out |= {"optional": True} if spec.optional else {}
    return out | ({"help": spec.hint} if spec.hint else {})


def declarations() -> dict:
    """Every parameter's kind, default, range, choices and help text, and the map names, as JSON values:
    what the Blender add-on's generated copy holds (scripts/params_spec.py writes it; the add-on
    cannot import this package). `sizes`: the output sides, and the largest input side read as it is
    and read reduced (backend.images, heavier than this module: imported for the spec only)."""
    from backend.images import MAX_SIDE, MAX_SOURCE_SIDE

    return {"parameters": {name: _declaration(*sd) for name, sd in specs(GenerationParams).items()},
            "options": {engine: {name: _declaration(*sd) for name, sd in specs(cls).items()}
                        for engine, cls in ENGINE_OPTIONS.items()},
            "maps": {"material": list(MATERIAL_MAPS), "derivable": list(DERIVABLE_MAPS)},
            "sizes": capabilities()["size"] | {"input_max": MAX_SIDE, "source_max": MAX_SOURCE_SIDE}}

