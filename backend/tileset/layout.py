"""Where each tile of a Wang tile set goes: the layout rule that Blender's node group computes too.

Cells (i, j): i is the column from the LEFT, j the row from the BOTTOM (Blender's UV convention).
Every edge of the cell grid gets a code from a hash of its own position, so a cell and its neighbour
compute the same code for the edge they share, with no memory of the rest of the layout:

    west(i, j) = V(i, j)    east(i, j) = V(i + 1, j)    south(i, j) = H(i, j)    north(i, j) = H(i, j + 1)
    V(x, y) = min(c - 1, floor(c * h(x, y, 2 * seed)))    H(x, y) = min(c - 1, floor(c * h(x, y, 2 * seed + 1)))

in float32, where h is exactly Blender's White Noise Texture node in 3D mode ("Value" output) fed
the vector (x, y, z) as floats: Jenkins' lookup3 hash of the three floats' bit patterns
(`hash_uint3(floatBitsToUint(x), ...)` in gpu_shader_common_hash.glsl, BLI_hash.hh and Cycles'
hash.h), divided by 0xFFFFFFFF as float32. With a period (N, M), x is taken mod N and y mod M
(floored, so the result is +0.0, never -0.0, whose bits differ) before hashing: the layout wraps.
The tile with codes (n, e, s, w) has index ((n * c + e) * c + s) * c + w in the atlas (atlas.py).
"""

from __future__ import annotations

import numpy as np

_MASK = np.uint64(0xFFFFFFFF)


def _rot(x: np.ndarray, k: int) -> np.ndarray:
    return ((x << np.uint64(k)) | (x >> np.uint64(32 - k))) & _MASK


def _final_step(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """x ^= y; x -= rot(y, k), in unsigned 32-bit arithmetic (uint64 lanes, masked)."""
    return ((x ^ y) + np.uint64(1 << 32) - _rot(y, k)) & _MASK


def hash_uint3(kx: np.ndarray, ky: np.ndarray, kz: np.ndarray) -> np.ndarray:
    """Jenkins' lookup3 `hashword` of three 32-bit words (its `final` mix), as Blender has it; uint32."""
    start = np.uint64((0xDEADBEEF + (3 << 2) + 13) & 0xFFFFFFFF)
    a = (np.asarray(kx, np.uint64) + start) & _MASK
    b = (np.asarray(ky, np.uint64) + start) & _MASK
    c = (np.asarray(kz, np.uint64) + start) & _MASK
    c = _final_step(c, b, 14)
    a = _final_step(a, c, 11)
    b = _final_step(b, a, 25)
    c = _final_step(c, b, 16)
    a = _final_step(a, c, 4)
    b = _final_step(b, a, 14)
    c = _final_step(c, b, 24)
    return c.astype(np.uint32)


def white_noise(x, y, z) -> np.ndarray:
    """Blender's White Noise Texture (3D, "Value") at the float32 vector (x, y, z): float32 in [0, 1]."""
    bits = [np.asarray(v, np.float32).view(np.uint32) for v in np.broadcast_arrays(
        np.asarray(x, np.float32), np.asarray(y, np.float32), np.asarray(z, np.float32))]
    return hash_uint3(*bits).astype(np.float32) / np.float32(4294967295.0)


def _code(x, y, z: float, colours: int, period: tuple[int, int] | None) -> np.ndarray:
    x, y = np.asarray(x, np.int64), np.asarray(y, np.int64)
    if period is not None:
        x, y = np.mod(x, period[0]), np.mod(y, period[1])
    h = white_noise(x.astype(np.float32), y.astype(np.float32), np.float32(z))
    return np.minimum(colours - 1, np.floor(np.float32(colours) * h)).astype(np.int64)


def vertical_code(x, y, colours: int, seed: int, period: tuple[int, int] | None = None) -> np.ndarray:
    """V(x, y): the code of the vertical edge on the left of cell (x, y)."""
    return _code(x, y, 2.0 * seed, colours, period)


def horizontal_code(x, y, colours: int, seed: int, period: tuple[int, int] | None = None) -> np.ndarray:
    """H(x, y): the code of the horizontal edge below cell (x, y)."""
    return _code(x, y, 2.0 * seed + 1.0, colours, period)


def check_seed(seed: int) -> int:
    """A layout seed: 2 * seed + 1 must be exact in float32, as Blender's node group computes it."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**23:
        from backend.errors import InputError

        raise InputError(f"a layout seed must be a whole number from 0 to {2**23 - 1}, not {seed!r}",
                         hint="e.g. --seed 0")
    return int(seed)


def cell_edges(columns: int, rows: int, colours: int, seed: int, period: tuple[int, int] | None = None,
               origin: tuple[int, int] = (0, 0)) -> dict[str, np.ndarray]:
    """{"n", "e", "s", "w"}: (rows, columns) int arrays of the edge codes of cells i = origin[0] + column,
    j = origin[1] + row (array row 0 = j = origin[1], the BOTTOM row of cells)."""
    i = origin[0] + np.arange(columns)[None, :]
    j = origin[1] + np.arange(rows)[:, None]
    return {"n": horizontal_code(i, j + 1, colours, seed, period), "e": vertical_code(i + 1, j, colours, seed, period),
            "s": horizontal_code(i, j, colours, seed, period), "w": vertical_code(i, j, colours, seed, period)}


def tile_index(n, e, s, w, colours: int):
    """The atlas index of the tile with edge codes (n, e, s, w)."""
    return ((n * colours + e) * colours + s) * colours + w


def codes_of(index: int, colours: int) -> dict[str, int]:
    """The edge codes of the tile at `index` (tile_index's inverse)."""
    w = index % colours
    s = index // colours % colours
    e = index // colours**2 % colours
    n = index // colours**3
    return {"n": n, "e": e, "s": s, "w": w}


def cell_tiles(columns: int, rows: int, colours: int, seed: int, period: tuple[int, int] | None = None,
               origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """(rows, columns) atlas indices; array row 0 is the bottom row of cells (j = origin[1])."""
    edges = cell_edges(columns, rows, colours, seed, period, origin)
    return tile_index(edges["n"], edges["e"], edges["s"], edges["w"], colours)


def render(tiles: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """An image of the cells: `tiles` (count, T, T, C) as the tiles' pixels (row 0 = the tile's top),
    `cells` (rows, columns) indices with row 0 the bottom row; the image's row 0 is the top, so the
    bottom row of cells is at the bottom of the image."""
    rows, columns = cells.shape
    _, t, _, channels = tiles.shape
    top_down = cells[::-1]
    out = tiles[top_down]  # (rows, columns, T, T, C)
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3, 4).reshape(rows * t, columns * t, channels))
