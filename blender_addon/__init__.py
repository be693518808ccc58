"""Texture Variants: seamless new variants of a material's image texture, made by a local backend.

Registers the settings, operators, panels and preferences. The backend process starts on first use
(never on register) and stops on unregister; nothing else keeps running.

bpy is imported inside register()/unregister() only, so the plain modules of this package (job,
session, paths, errors, backend_setup, setup_plan, setup_runner, device_detect, backend_client)
import and unit-test without Blender.
"""


def _classes():
    from . import (
        apply_ops,
        backend_check,
        batch_operators,
        map_operators,
        operators,
        preferences,
        restyle_operators,
        setup_operators,
        ui,
    )

    return (*preferences.CLASSES, *setup_operators.CLASSES, *backend_check.CLASSES, *operators.CLASSES,
            *apply_ops.CLASSES, *restyle_operators.CLASSES, *batch_operators.CLASSES, *map_operators.CLASSES,
            *ui.CLASSES)


def register():
    import bpy

    from . import migration, properties, storage

    properties.register()
    for cls in _classes():
        bpy.utils.register_class(cls)
    storage.register()
    migration.register()  # upgrades the open file's old apply records, and each file loaded later


def unregister():
    import bpy

    from . import migration, properties, session, storage

    migration.unregister()
    storage.unregister()
    session.shutdown()  # stops the backend process; a running modal generate ends on its next tick
    for cls in reversed(_classes()):
        bpy.utils.unregister_class(cls)
    properties.unregister()
