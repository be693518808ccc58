"""Pixel rules: colour encoding, edge pictures, sizes, float map files. Plain Python (no bpy)."""
