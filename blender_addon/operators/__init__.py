"""The operators (bpy.types.Operator classes): the public scripting API, texture_variants.*."""
