"""Whole PBR materials: map sets (maps), correspondence back to the reference, derived maps, learned normals."""
