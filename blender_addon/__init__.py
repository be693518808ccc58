"""Texture Variants: seamless new variants of a material's image texture, made by a local backend.

Registers the settings, operators, panels and preferences. The backend process starts on first use
(never on register) and stops on unregister; nothing else keeps running.
"""

import bpy

from . import operators, preferences, properties, session, ui

CLASSES = (*preferences.CLASSES, *operators.CLASSES, *ui.CLASSES)


def register():
    properties.register()
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    session.shutdown()  # stops the backend process; a running modal generate ends on its next tick
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
    properties.unregister()
