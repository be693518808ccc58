"""The material in Blender: which node, its maps, images in and out, result sets, where files live and
older files upgraded. Touches Blender data (bpy); no operators, no drawing."""
