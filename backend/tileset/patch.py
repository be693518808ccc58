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
from dataclasses import dataclass

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
PHASE_TOLERANCE = 0.1  # cycles: on a lattice, windows further than this from the tiles' phase are not taken
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


@dataclass(frozen=True)
class Grid:
    """The source's lattice (a regular texture, rectified): per axis (y, x) the local phase of every
    pixel in cycles and the period, or None on an axis without one."""

    phases: tuple[np.ndarray | None, np.ndarray | None]
    periods: tuple[float | None, float | None]

    def phase_at(self, y: int, x: int) -> tuple[float, float]:
        return tuple(0.0 if ph is None else float(ph[y, x]) for ph in self.phases)

    def out_of_phase(self, shape: tuple[int, int], at: tuple[int, int], wanted: tuple[float, float]) -> np.ndarray:
        """inf for the window origins (an array of `shape`) whose pixel `at` inside the window is
        further than PHASE_TOLERANCE from the phase `wanted`; 0 elsewhere."""
        extra = np.zeros(shape)
        for phase, goal in zip(self.phases, wanted, strict=True):
            if phase is not None:
                here = phase[at[0]:at[0] + shape[0], at[1]:at[1] + shape[1]]
                extra[np.abs((here - goal + 0.5) % 1.0 - 0.5) > PHASE_TOLERANCE] = np.inf
        return extra

    def wanted(self, origin: tuple[float, float], shift: tuple[int, int]) -> tuple[float, float]:
        """The phase `shift` px (y, x) away from a point at phase `origin`."""
        return tuple(o if q is None else o + d / q for o, d, q in zip(origin, shift, self.periods, strict=True))


class _Sources:
    """Where each edge sample and interior comes from: windows of the source, seeded, spread apart,
    on a lattice all at the tiles' one phase."""

    def __init__(self, source: np.ndarray, rng: np.random.Generator, spread: int, grid: Grid | None):
        self.source, self.rng, self.spread, self.grid = source, rng, spread, grid
        self.taken: list[tuple[int, int]] = []
        self.phase: tuple[float, float] | None = None  # the lattice phase at every tile's pixel (0, 0)

    def draw(self, height: int, width: int, join: tuple[int, int, int, bool], corner: tuple[int, int]) -> tuple[int, int]:
        """A window origin (y, x). `join` (row, column, length, across rows): where, inside the window,
        two tiles will meet; the window is one whose step there is typical of the source (among the
        TYPICAL most typical), so a join never falls on a remarkable line of the texture. `corner`:
        the window's pixel that shows at a tile's pixel (0, 0) (on a lattice, at the tiles' phase)."""
        h, w = self.source.shape[:2]
        shape = (h - height + 1, w - width + 1)
        spread = np.zeros(shape)
        for y, x in self.taken:
            _exclude(spread, y, x, self.spread)
        wishes = [_atypical(self.source, shape, join), spread]
        if self.grid is not None and self.phase is not None:
            wishes.insert(0, self.grid.out_of_phase(shape, corner, self.phase))
        origin = _pick(wishes, self.rng)
        if self.grid is not None and self.phase is None:
            self.phase = self.grid.phase_at(origin[0] + corner[0], origin[1] + corner[1])
        self.taken.append(origin)
        return origin


def _pick(wishes: list[np.ndarray], rng: np.random.Generator) -> tuple[int, int]:
    """A random origin where every wish (0 = fine, inf = not) holds; the last wishes are given up
    first when none fits them all."""
    for n in range(len(wishes), -1, -1):
        free = sum(wishes[:n], np.zeros_like(wishes[0]))
        choices = np.flatnonzero(np.isfinite(free))
        if choices.size:
            return divmod(int(choices[rng.integers(len(choices))]), free.shape[1])
    raise AssertionError("unreachable: no wish at all leaves every origin")


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
               cancel: threading.Event | None = None, on_tile=None, grid: Grid | None = None) -> np.ndarray:
    """(count, T+2P, T+2P, 2) int32 source coordinates (y, x) of every padded atlas cell, in index order.

    source: (h, w, c) float32 in 0..1 (colour, plus alpha when there is one); `grid`: its lattice,
    when every tile should show it at one phase (the tile then holds whole periods: make)."""
    t, p, c = geometry.tile, geometry.padding, geometry.colours
    a = t // 2
    rng = np.random.default_rng(seed)
    sources = _Sources(source, rng, max(1, int(t * SPREAD)), grid)
    # The join of two tiles across a horizontal edge is between the sample's rows a - 1 and a; a
    # tile's pixel (0, 0) shows the horizontal sample's (a, p) and the vertical sample's (p, a).
    horizontal = [sources.draw(t + 1, t + 2 * p, (a, p, t, True), (a, p)) for _ in range(c)]
    vertical = [sources.draw(t + 2 * p, t + 1, (p, a, t, False), (p, a)) for _ in range(c)]
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
        if grid is not None:  # and on a lattice, one in the tiles' phase
            allowed += grid.out_of_phase(allowed.shape, (0, 0), grid.wanted(sources.phase, (kept, kept)))
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


def make(pixels: np.ndarray, colour_channels: int, geometry: Geometry, seed: int,
         cancel: threading.Event | None = None, on_tile=None) -> tuple[np.ndarray, dict]:
    """(cells as make_cells' but into `pixels` (h, w, c) uint8, what the record gains). On a regular
    texture (a lattice of bricks, tiles or planks) the tiles are quilted from the source rectified to
    straight lattice lines and a whole number of periods per tile (backend/patch/engine.py), all
    at one phase, so the lattice runs on across every join and through every interior."""
    from backend.patch import lattice
    from backend.patch.engine import _rectified

    source = pixels.astype(np.float32) / 255.0
    gray = source[..., :colour_channels].mean(axis=2)
    found = lattice.detect(gray)
    record: dict = {"regular": bool(found.regular)}
    if found.regular:
        t = geometry.tile
        mapping, periods = _rectified(gray, (found.period_y, found.period_x), (t, t))
        if min(mapping.shape[:2]) >= minimum_source(t, geometry.padding):
            work = gray[mapping[..., 0], mapping[..., 1]]
            grid = Grid(tuple(None if q is None else lattice.phase(work, q, axis) for axis, q in enumerate(periods)),
                        periods)
            cells = make_cells(source[mapping[..., 0], mapping[..., 1]], geometry, seed, True, cancel, on_tile, grid)
            record["period"] = [None if q is None else round(q, 2) for q in periods]
            return mapping[cells[..., 0], cells[..., 1]], record
    return make_cells(source, geometry, seed, found.regular, cancel, on_tile), record


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
