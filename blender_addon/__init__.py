"""Texture Variants: seamless new variants of a material's image texture, made by a local backend.

Registers the settings, operators, panels and preferences. The backend process starts on first use
(never on register) and stops on unregister; nothing else keeps running.

bpy is imported inside register()/unregister() only, so the plain folders of this package
(connection/, setup/, pixels/) and the plain modules beside it (errors, paths, panel_rules) import
and unit-test without Blender. scripts/check_imports.py says what each folder may import.
"""


def _classes():
    from .operators import (
        apply,
        batch,
        check,
        compare,
        generate,
        judge,
        maps,
        preview,
        restyle,
        setup,
        tile_set,
        tileable,
        upscale,
    )
    from .ui import panel, preferences

    return (*preferences.CLASSES, *setup.CLASSES, *check.CLASSES, *generate.CLASSES, *apply.CLASSES,
            *restyle.CLASSES, *tileable.CLASSES, *preview.CLASSES, *compare.CLASSES, *judge.CLASSES, *batch.CLASSES,
            *maps.CLASSES, *tile_set.CLASSES, *upscale.CLASSES, *panel.CLASSES)


def register():
    import bpy

    from . import properties
    from .material import migration, storage

    properties.register()
    for cls in _classes():
        bpy.utils.register_class(cls)
    storage.register()
    migration.register()  # upgrades the open file's old apply records, and each file loaded later


def unregister():
    import bpy

    from . import properties
    from .connection import session
    from .material import migration, storage

    migration.unregister()
    storage.unregister()
    session.shutdown()  # stops the backend process; a running modal generate ends on its next tick
    for cls in reversed(_classes()):
        bpy.utils.unregister_class(cls)
    properties.unregister()
