"""Vary and bake every material of a .blend, headless (docs/guide/batch-and-remote.md, "Batch", "Headless: every material of a file").

    blender -b scene.blend --python scripts/blender_vary_all.py -- [--engine patch] [--variants 1]
        [--seed N] [--size 512] [--timeout S] [--output scene-variants.blend]

It runs Generate for Selected on every material of the file (one batch through the backend the
add-on is configured for: the local interpreter, or a remote command), applies each material's
first new variant, bakes it into the bake folder (default: textures/ next to the .blend) and saves
the file as a new .blend (default: <name>-variants.blend beside it; never an existing file). The
opened .blend and the original textures are not changed.

Needs the Texture Variants extension installed and enabled in that Blender (once:
`blender --command extension install-file -r user_default -e texture_variants-<version>.zip`) and its
backend (Set up Backend in the preferences, or TEXTURE_VARIANTS_PYTHON / _BACKEND_COMMAND / _BASE /
_IP_ADAPTER for the farm's own). Exit code 0 when every material was varied and baked, 1 when some
were not (each is printed with the reason; the others are still baked and saved), 2 on a usage error.
"""

import argparse
import os
import sys

import bpy


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="blender -b FILE.blend --python blender_vary_all.py --",
                                     description="Vary and bake every material of the opened .blend.")
    parser.add_argument("--engine", choices=("auto", "diffusion", "patch"), help="default: the file's setting")
    parser.add_argument("--variants", type=int, default=1, help="variants per material (the first is applied)")
    parser.add_argument("--seed", type=int, help="the first seed; each material gets its own (default: random)")
    parser.add_argument("--size", type=int, help="a fixed output size in pixels (default: Match Source)")
    parser.add_argument("--timeout", type=float, default=0.0, help="cancel the jobs after this many seconds")
    parser.add_argument("--output", help="the .blend to write (default: <name>-variants.blend beside the opened one)")
    return parser.parse_args(argv)


def newest(material) -> tuple:
    """The images of the material's newest result set (a new set shows as a change)."""
    history = material.texture_variants.history
    return tuple(v.image.name for v in history[0].variants if v.image) if len(history) else ()


def holder(material):
    """(an object of the view layer using `material`, its slot index), or (None, -1)."""
    for obj in bpy.context.view_layer.objects:
        for index, slot in enumerate(obj.material_slots):
            if slot.material == material:
                return obj, index
    return None, -1


def apply_and_bake(material) -> str:
    """Apply the newest set's first variant to `material` and bake it; '' when done, else why not."""
    obj, index = holder(material)
    if obj is None:
        return "no object of the view layer uses it, so it cannot be made active to apply"
    bpy.context.view_layer.objects.active = obj
    obj.active_material_index = index
    try:
        bpy.ops.texture_variants.use_result_set(index=0)
        bpy.ops.texture_variants.apply_variant(index=0)
        bpy.ops.texture_variants.bake()
    except RuntimeError as e:  # an operator's error report, with what to do
        return str(e).strip()
    return ""


def configure(args) -> None:
    settings = bpy.context.scene.texture_variants
    if args.engine:
        settings.engine = args.engine
    settings.variants = args.variants
    if args.seed is not None:
        settings.seed, settings.randomize_seed = args.seed, False
    if args.size:
        settings.size_mode, settings.size = "fixed", args.size


def main(argv: list[str]) -> int:
    args = parse(argv)
    if not bpy.data.filepath:
        print("blender_vary_all: open a saved .blend (blender -b FILE.blend --python ...)", file=sys.stderr)
        return 2
    output = os.path.abspath(args.output or os.path.splitext(bpy.data.filepath)[0] + "-variants.blend")
    if os.path.exists(output):
        print(f"blender_vary_all: {output} exists; pass another --output (nothing is overwritten)", file=sys.stderr)
        return 2
    if "generate_selected" not in dir(bpy.ops.texture_variants):
        print("blender_vary_all: the Texture Variants extension is not enabled in this Blender: blender --command "
              "extension install-file -r user_default -e texture_variants-<version>.zip", file=sys.stderr)
        return 2
    configure(args)
    materials = [m for m in bpy.data.materials if m.users and not getattr(m, "is_grease_pencil", False)]
    before = {m.name: newest(m) for m in materials}
    try:
        bpy.ops.texture_variants.generate_selected(all_materials=True, timeout=args.timeout)
    except RuntimeError as e:  # no material got variants; the message names each one and why
        print(f"blender_vary_all: {e}", file=sys.stderr)
    failed = {}
    for material in materials:
        if newest(material) == before[material.name]:
            failed[material.name] = "got no variants (see the report above)"
        elif why := apply_and_bake(material):
            failed[material.name] = why
        else:
            baked = ", ".join(r.applied_image.filepath for r in material.texture_variants.applied)
            print(f"blender_vary_all: {material.name}: baked {baked}")
    for name, why in failed.items():
        print(f"blender_vary_all: {name}: {why}", file=sys.stderr)
    bpy.ops.wm.save_as_mainfile(filepath=output, copy=True)
    print(f"blender_vary_all: {len(materials) - len(failed)} of {len(materials)} materials varied and baked; "
          f"saved {output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []))
