"""The weight-free tile set: Wang tiles quilted from the texture itself (after Cohen et al. 2003).

1. Edge samples: for every edge colour k, one window of the source for the horizontal edges with
   code k and one for the vertical edges (spread over the source, seeded). A tile whose north edge
   has code k shows, in its top part, the horizontal sample from its middle row down; a tile whose
   south edge has code k shows the same sample's upper half in its bottom part. Put one above the
   other, the two tiles show consecutive rows of one window across their join: no seam, and every
   tile with that code has the very same pixels along that edge. East and west alike.
2. Corners: the four edge parts of a tile meet along its diagonals, where minimum-error paths
   (skimage.graph.route_through_array) from each corner to the centre, inside a lens around the
   diagonal, decide which sample shows. The outermost rows and columns never lie on a path, so an
   edge is all its own sample's; the corner pixel belongs to the horizontal edge.
3. Interior: a window of its own per tile, the one whose ring matches the edge parts best (masked
   SSD for every window at once, backend/patch/quilting.py), not one that just continues an edge
   sample and not near one another tile took, is cut in with minimum-error cuts on all four sides
   inside a band EDGE_BAND..EDGE_BAND + CUT_BAND of the tile side from the edges. So tiles that
   share edge codes share only those edge bands; their interiors differ.
4. Padding: around each tile, every edge sample is continued outwards (what the neighbour across
   that edge shows), so Linear sampling at the tile's border never reads another tile.

The result is one source coordinate per atlas pixel: maps are gathered through it exactly.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
from skimage.graph import route_through_array

from backend.errors import CancelledError, InputError
from backend.patch.quilting import _Correlator, _cut_cost, _exclude, _new_pixels
from backend.tileset.atlas import Geometry
from backend.tileset.layout import codes_of

EDGE_BAND = 1 / 32  # of the tile side: kept from the edge samples whatever the interior's cut does
CUT_BAND = 1 / 8  # of the tile side: where the interior's cut runs, inside the edge band
LENS = 0.5  # the corner paths stay within this slope of the diagonal (a lens from corner to centre)
TOLERANCE = 0.1  # interior windows within (1 + TOLERANCE) x the best cost are equally good
SPREAD = 0.25  # of the tile side: edge samples and interiors keep at least this far apart in the source
TYPICAL = 0.3  # edge samples are drawn among the windows whose join step is this share of the most typical
CONTINUATION = 0.25  # of the interior's side: windows this close to an edge sample's continuation are out
N, E, S, W = "n", "e", "s", "w"


def bands(tile: int) -> tuple[int, int]:
    """(kept, overlap): px kept from the edges, px of the band the interior's cut runs in."""
    kept = max(2, int(round(tile * EDGE_BAND)))
    return kept, max(3, int(round(tile * CUT_BAND)))


def minimum_source(tile: int, padding: int) -> int:
    """The shorter side a source needs: an edge sample is T + 1 by T + 2P px."""
    return tile + 2 * padding + 1


def check(source_size: tuple[int, int], tile: int, padding: int) -> None:
    w, h = source_size
    if tile < 16 or tile % 8:
        raise InputError(f"the tile size must be a multiple of 8, at least 16 px, not {tile}", hint="e.g. --size 256")
    if not 0 <= padding <= tile // 2:
        raise InputError(f"the padding must be 0 to half the tile ({tile // 2} px), not {padding}",
                         hint="e.g. --padding 8")
    need = minimum_source(tile, padding)
    if min(w, h) < need:
        largest = (min(w, h) - 2 * padding - 1) // 8 * 8
        raise InputError(f"the texture is {w}x{h} px: smaller than a tile of {tile} px with {padding} px padding "
                         f"needs ({need} px a side)",
                         hint=f"give a smaller --size (at most {largest} px here)" if largest >= 16 else
                         "use a larger texture")


class _Sources:
    """Where each edge sample and interior comes from: windows of the source, seeded, spread apart."""

    def __init__(self, source: np.ndarray, rng: np.random.Generator, spread: int):
        self.source, self.rng, self.spread = source, rng, spread
        self.taken: list[tuple[int, int]] = []

    def draw(self, height: int, width: int, join: tuple[int, int, int, bool] | None = None) -> tuple[int, int]:
        """A window origin (y, x). `join` (row, column, length, across rows): where, inside the window,
        two tiles will meet; the window is one whose step there is typical of the source (among the
        TYPICAL most typical), so a join never falls on a remarkable line of the texture."""
        h, w = self.source.shape[:2]
        free = np.zeros((h - height + 1, w - width + 1))
        if join is not None:
            free += _atypical(self.source, free.shape, join)
        for y, x in self.taken:
            _exclude(free, y, x, self.spread)
        choices = np.flatnonzero(np.isfinite(free)) if np.isfinite(free).any() else np.arange(free.size)
        origin = divmod(int(choices[self.rng.integers(len(choices))]), free.shape[1])
        self.taken.append(origin)
        return origin


def _atypical(source: np.ndarray, shape: tuple[int, int], join: tuple[int, int, int, bool]) -> np.ndarray:
    """0 for the window origins whose join step is among the TYPICAL most typical, inf elsewhere."""
    from scipy import ndimage

    row, column, length, across_rows = join
    gray = source.mean(axis=2)
    if across_rows:  # step between row y - 1 and row y, summed over `length` columns from x
        step = np.abs(np.diff(gray, axis=0, prepend=gray[:1]))
        mean = ndimage.uniform_filter1d(step, length, axis=1, origin=-(length // 2), mode="nearest")
    else:
        step = np.abs(np.diff(gray, axis=1, prepend=gray[:, :1]))
        mean = ndimage.uniform_filter1d(step, length, axis=0, origin=-(length // 2), mode="nearest")
    at = mean[row:row + shape[0], column:column + shape[1]]
    off = np.abs(at - np.median(at))
    return np.where(off <= np.quantile(off, TYPICAL), 0.0, np.inf)


def make_cells(source: np.ndarray, geometry: Geometry, seed: int, regular: bool = False,
               cancel: threading.Event | None = None, on_tile=None) -> np.ndarray:
    """(count, T+2P, T+2P, 2) int32 source coordinates (y, x) of every padded atlas cell, in index order.

    source: (h, w, c) float32 in 0..1 (colour, plus alpha when there is one)."""
    t, p, c = geometry.tile, geometry.padding, geometry.colours
    a = t // 2
    rng = np.random.default_rng(seed)
    sources = _Sources(source, rng, max(1, int(t * SPREAD)))
    # The join of two tiles across a horizontal edge is between the sample's rows a - 1 and a.
    horizontal = [sources.draw(t + 1, t + 2 * p, (a, p, t, True)) for _ in range(c)]
    vertical = [sources.draw(t + 2 * p, t + 1, (p, a, t, False)) for _ in range(c)]
    correlator = _Correlator(source)
    kept, overlap = bands(t)
    inner = t - 2 * kept
    interiors: list[tuple[int, int]] = []
    cells = np.zeros((geometry.count, t + 2 * p, t + 2 * p, 2), np.int32)
    span = np.arange(-p, t + p)
    for index in range(geometry.count):
        if cancel is not None and cancel.is_set():
            raise CancelledError()
        codes = codes_of(index, c)
        parts = _parts(horizontal, vertical, codes, span, a, p)  # {side: (T+2P, T+2P, 2)} where defined
        label = _edge_labels(source, parts, t, p)
        coords = np.zeros((t + 2 * p, t + 2 * p, 2), np.int32)
        for side, part in parts.items():
            coords[label == side] = part[label == side]
        body = coords[p:t + p, p:t + p]
        # The interior: a window of its own, cut in inside the edge band.
        block = body[kept:t - kept, kept:t - kept]
        template = source[block[..., 0], block[..., 1]]
        ring = np.ones((inner, inner), bool)
        ring[overlap:inner - overlap, overlap:inner - overlap] = False
        cost = correlator.ssd(template, ring)
        allowed = cost.copy()
        for part in parts.values():  # not the window that just continues an edge sample
            cy, cx = part[p + kept, p + kept]
            _exclude(allowed, int(cy), int(cx), max(1, int(inner * CONTINUATION)))
        for y, x in interiors:  # nor one near another tile's interior
            _exclude(allowed, y, x, max(1, int(t * SPREAD)))
        if not np.isfinite(allowed).any():
            allowed = cost
        best = float(allowed.min())
        choices = np.flatnonzero(allowed <= best + abs(best) * TOLERANCE + 1e-9)
        oy, ox = divmod(int(choices[rng.integers(len(choices))]), allowed.shape[1])
        interiors.append((oy, ox))
        window = source[oy:oy + inner, ox:ox + inner]
        take = _new_pixels(_cut_cost(window, template, regular), dict.fromkeys(("left", "right", "top", "bottom"),
                                                                               True), overlap)
        ys, xs = np.nonzero(take)
        block[ys, xs, 0] = oy + ys
        block[ys, xs, 1] = ox + xs
        cells[index] = coords
        if on_tile is not None:
            on_tile(index + 1, geometry.count)
    return cells


def _parts(horizontal, vertical, codes: dict[str, int], span: np.ndarray, a: int, p: int) -> dict[str, np.ndarray]:
    """Each edge's sample as source coordinates over the whole padded cell (y, x in -P..T+P-1)."""
    ys, xs = np.meshgrid(span, span, indexing="ij")
    (ny, nx), (sy, sx) = horizontal[codes[N]], horizontal[codes[S]]
    (wy, wx), (ey, ex) = vertical[codes[W]], vertical[codes[E]]
    return {N: np.stack([ny + a + ys, nx + p + xs], axis=2), S: np.stack([sy + ys - a, sx + p + xs], axis=2),
            W: np.stack([wy + p + ys, wx + a + xs], axis=2), E: np.stack([ey + p + ys, ex + xs - a], axis=2)}


def _edge_labels(source: np.ndarray, parts: dict[str, np.ndarray], t: int, p: int) -> np.ndarray:
    """Which edge sample shows at each pixel of the padded cell: the padding by its side (the corners
    of the padding: the horizontal edge's), the tile split along minimum-error paths from its
    corners to its centre."""
    from scipy import ndimage

    size = t + 2 * p
    label = np.empty((size, size), "<U1")
    label[:p + t // 2] = N
    label[p + t // 2:] = S
    label[p:p + t, :p] = W
    label[p:p + t, p + t:] = E
    inside = {side: part[p:p + t, p:p + t] for side, part in parts.items()}
    centre = (t // 2, t // 2)
    barrier = np.zeros((t, t), bool)
    for corner, (one, other) in {(0, 0): (N, W), (0, t - 1): (N, E), (t - 1, 0): (S, W), (t - 1, t - 1): (S, E)}.items():
        cost = _lens_of(t, corner, centre).copy()
        rows, cols = np.nonzero(np.isfinite(cost))
        a, b = inside[one][rows, cols], inside[other][rows, cols]
        difference = ((source[a[:, 0], a[:, 1]] - source[b[:, 0], b[:, 1]]) ** 2).sum(axis=1)
        cost[rows, cols] = difference + 1e-6 * float(difference.mean() + 1e-6)  # ties go the short way
        path, _ = route_through_array(cost, corner, centre, fully_connected=True, geometric=True)
        barrier[tuple(np.array(path).T)] = True
    regions, _ = ndimage.label(~barrier)
    seeds = {N: (0, t // 2), S: (t - 1, t // 2), W: (t // 2, 0), E: (t // 2, t - 1)}
    body = np.full((t, t), "", "<U1")
    for side, seed in seeds.items():
        body[(regions == regions[seed]) & ~barrier] = side
    unset = body == ""
    if unset.any():  # the paths and anything they closed off: the nearest region's side
        _, (iy, ix) = ndimage.distance_transform_edt(unset, return_indices=True)
        body = body[iy, ix]
    for y, x in ((0, 0), (0, t - 1)):
        body[y, x] = N
    for y, x in ((t - 1, 0), (t - 1, t - 1)):
        body[y, x] = S
    label[p:p + t, p:p + t] = body
    return label


@functools.lru_cache(maxsize=16)
def _lens_of(t: int, corner: tuple[int, int], centre: tuple[int, int]) -> np.ndarray:
    lens = _lens(t, corner, centre)
    lens.flags.writeable = False
    return lens


def _lens(t: int, corner: tuple[int, int], centre: tuple[int, int]) -> np.ndarray:
    """inf outside the lens around the segment corner -> centre (and on the tile's outermost rows and
    columns, but for the corner itself); 0 inside."""
    ys, xs = np.mgrid[:t, :t].astype(np.float64)
    (cy, cx), (ty, tx) = corner, centre
    length = np.hypot(ty - cy, tx - cx)
    uy, ux = (ty - cy) / length, (tx - cx) / length
    along = (ys - cy) * uy + (xs - cx) * ux
    across = np.abs((ys - cy) * ux - (xs - cx) * uy)
    inside = (along >= -0.5) & (along <= length + 0.5) & (across <= LENS * np.minimum(along, length - along) + 0.75)
    border = (ys == 0) | (xs == 0) | (ys == t - 1) | (xs == t - 1)
    inside &= ~border
    inside[corner] = True
    inside[centre] = True
    return np.where(inside, 0.0, np.inf)
