"""Texture Variants backend: tileable structural variants of a texture.

`from backend import generate_variants` is the Python API. Importing this package is cheap: torch
and diffusers load only when an engine runs.
"""

__version__ = "0.1.0"
__all__ = ["generate_variants", "__version__"]


def __getattr__(name):
    if name == "generate_variants":
        from backend.api import generate_variants

        return generate_variants
    raise AttributeError(name)
