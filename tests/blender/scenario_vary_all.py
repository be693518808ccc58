"""scripts/blender_vary_all.py on a saved .blend with two materials, as `blender -b file.blend --python
scripts/blender_vary_all.py -- ...` runs it (the bpy wheel has no blender binary: the file is opened and
the script run with that command line). Extra arguments: the two texture files."""

import os
import runpy
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))

import bpy  # noqa: E402
import harness as h  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "blender_vary_all.py")


def run_script(*args) -> int:
    saved = sys.argv
    sys.argv = ["blender", "-b", bpy.data.filepath, "--python", SCRIPT, "--", *args]
    try:
        runpy.run_path(SCRIPT, run_name="__main__")
    except SystemExit as e:
        return e.code
    finally:
        sys.argv = saved
    return None  # the script did not exit with a code


def hashes(folder) -> dict:
    return {os.path.relpath(os.path.join(d, f), folder): h.sha256(os.path.join(d, f))
            for d, _, files in os.walk(folder) for f in files}


def scenario(rec):
    zip_path, workdir, _ = h.args()
    h.install(zip_path)
    project = os.path.join(workdir, "project")
    os.makedirs(os.path.join(project, "maps"))
    h.clean_scene()
    for name, texture in zip(("Brick", "Grass"), sys.argv[4:6], strict=True):
        path = shutil.copy(texture, os.path.join(project, "maps", os.path.basename(texture)))
        h.plane_with_image(bpy.data.images.load(path), name)
    blend = os.path.join(project, "file.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    before = hashes(project)

    rec["exit"] = run_script("--engine", "patch", "--variants", "1", "--seed", "5", "--size", "64")
    rec["originals_unchanged"] = {path: hashes(project).get(path) == digest for path, digest in before.items()}
    rec["project_files"] = sorted(hashes(project))
    rec["again"] = run_script("--engine", "patch")  # the default output exists now: refused

    bpy.ops.wm.open_mainfile(filepath=os.path.join(project, "file-variants.blend"))
    rec["saved"] = {}
    for material in bpy.data.materials:
        node = material.node_tree.nodes["Texture"]
        image = node.image
        rec["saved"][material.name] = {
            "image": image.name, "filepath": image.filepath, "exists": os.path.isfile(bpy.path.abspath(image.filepath)),
            "packed": image.packed_file is not None, "size": list(image.size),
            "original": record.original_image.filepath
            if (record := material.texture_variants.applied.get("Texture")) and record.original_image else None,
            "history": len(material.texture_variants.history)}


h.Recorder().run(scenario)
