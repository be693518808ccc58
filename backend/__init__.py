"""Texture Variants backend: tileable structural variants of a texture.

`from backend import generate_variants` (and `restyle`, `make_tileable`, `make_tileset`, `tileset_layout`, `upscale`) is the Python API. Importing this package is cheap: torch
and diffusers load only when an engine runs.
"""

__version__ = "0.1.0"
__all__ = ["generate_variants", "restyle", "make_tileable", "make_tileset", "tileset_layout", "upscale", "__version__"]


def __getattr__(name):
    if name in ("generate_variants", "restyle", "make_tileable", "make_tileset", "tileset_layout"):
        from backend import api

        return getattr(api, name)
    if name == "upscale":
        from backend.upscaling import upscale

        return upscale
    raise AttributeError(name)
