"""Wang tile sets: repetition-free surfaces from one texture (docs/guide/tile-sets.md)."""
