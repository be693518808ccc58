"""Generation parameters: one validated record shared by the Python API, the CLI and the service."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from backend.errors import InputError

ENGINES = ("auto", "diffusion", "patch")
TILE_MODES = ("both", "x", "y", "none")
APPEARANCE_MODES = ("kv", "ad", "none")  # kv replacement, attention distillation, plain IP-Adapter
IP_MODES = ("full", "style")  # IP-Adapter in every cross-attention layer, or in the style block(s) only
# The diffusion engine's options beyond the fields below (the API's keyword extras, the service's
# `extra` object); torch-free here so that the service's hello can list them without importing it.
DIFFUSION_OPTIONS = ("ip_adapter_variant", "device", "dtype", "allow_pickle", "kv_window", "kv_blocks",
                     "inversion_iterations", "ad_iterations", "ad_lr", "style_blocks", "suppress_scale",
                     "content_encoder")
MIN_SIZE, MAX_SIZE = 64, 2048
MAX_VARIANTS = 16


@dataclass(frozen=True)
class GenerationParams:
    engine: str = "auto"
    variants: int = 1
    seed: int | None = None
    steps: int = 30
    size: int = 512
    tile: str = "both"
    balance: float = 0.5
    appearance: str = "kv"
    ip_scale: float | None = None
    prompt: str = ""
    negative_prompt: str = ""
    guidance_scale: float | None = None
    ip_mode: str = "full"
    suppress_content: str = ""  # text whose CLIP embedding is subtracted from the image prompt's
    # Engine-specific knobs that the API passes through (kept out of the signature until stable).
    extra: dict = field(default_factory=dict)

    def validated(self) -> GenerationParams:
        """Return self after checking every field; raise InputError naming the bad one."""

        def bad(name, value, expected):
            raise InputError(f"invalid {name}={value!r}: expected {expected}",
                             hint=f"pass a valid {name} (see `python -m backend generate --help`)")

        if self.engine not in ENGINES:
            bad("engine", self.engine, " | ".join(ENGINES))
        if self.tile not in TILE_MODES:
            bad("tile", self.tile, " | ".join(TILE_MODES))
        if self.appearance not in APPEARANCE_MODES:
            bad("appearance", self.appearance, " | ".join(APPEARANCE_MODES))
        if self.ip_mode not in IP_MODES:
            bad("ip_mode", self.ip_mode, " | ".join(IP_MODES))
        if not isinstance(self.variants, int) or isinstance(self.variants, bool) or not 1 <= self.variants <= MAX_VARIANTS:
            bad("variants", self.variants, f"an integer from 1 to {MAX_VARIANTS}")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or not 1 <= self.steps <= 200:
            bad("steps", self.steps, "an integer from 1 to 200")
        if (not isinstance(self.size, int) or isinstance(self.size, bool)
                or not MIN_SIZE <= self.size <= MAX_SIZE or self.size % 64):
            bad("size", self.size, f"a multiple of 64 from {MIN_SIZE} to {MAX_SIZE}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)
                                      or not 0 <= self.seed < 2**63):
            bad("seed", self.seed, "a non-negative integer or null")
        if not isinstance(self.balance, (int, float)) or isinstance(self.balance, bool) or not 0.0 <= self.balance <= 1.0:
            bad("balance", self.balance, "a number in [0, 1] (0 = structure, 1 = appearance)")
        for name in ("ip_scale", "guidance_scale"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                      or not 0.0 <= value <= 30.0):
                bad(name, value, "a number in [0, 30] or null for the default")
        for name in ("prompt", "negative_prompt", "suppress_content"):
            if not isinstance(getattr(self, name), str):
                bad(name, getattr(self, name), "a string")
        return self

    def replace(self, **changes) -> GenerationParams:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")
