"""The connection to the backend: which process to run, the client speaking its protocol, files across it,
the session and the jobs it follows. Plain Python (no bpy), tested outside Blender."""
