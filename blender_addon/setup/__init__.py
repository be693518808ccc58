"""Set up Backend: the plan, running it, the environment on disk, which torch build fits this machine.
Plain Python (no bpy), tested outside Blender."""
