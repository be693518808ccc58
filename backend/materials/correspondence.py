"""Dense wrap-around correspondence from a generated variant back to its reference (PatchMatch).

For every pixel p of the variant, `coords[p]` is the (y, x) of the reference pixel whose patch looks
most like p's patch, so that gathering the reference's other maps through it (maps.gather) gives
maps that follow the generated base colour. How:

- patches: PATCH x PATCH windows of the base colour, projected on their first FEATURE_DIMS
  principal components (estimated on the reference), plus the centre pixel itself (so that a
  zero distance means an equal centre pixel); both images are read as tori: the variant is
  periodic, and the reference's wrapped windows are candidates like any other;
- deep features (hook): `features(image) -> (H, W, D)` per-pixel features of an (H, W, 3) float
  image, e.g. upsampled VGG/DINO activations computed with circular padding, are appended to the
  patch features at the finest level, scaled by `feature_weight`; none ship with the project;
- search: every LATTICE-th pixel of the variant (per axis) starts from its exact nearest neighbour
  in the leading TREE_DIMS feature dimensions (a k-d tree over every reference pixel: global reach,
  so a pixel whose patch occurs in the reference finds it wherever it is), the other pixels from
  their lattice pixel's match moved along with them; the strongest global shifts found by phase
  correlation are whole-field candidates (a shifted copy is thereby found exactly). Then rounds of
  jump-flooding propagation (neighbours' matches at distances 2^k ... 1, on all four sides,
  wrapping around the variant, so the field stays periodic) and random search in shrinking windows
  (Barnes et al. 2009, parallel form), vectorised over the pixels still improving (those whose
  match or a neighbour's changed; an exact match, cost 0, is done), until a round lowers the total
  cost by less than CONVERGED of itself (at most `iterations` rounds);
- fidelity: the reference's base colour gathered through the field against the variant's, RMSE
  and mean absolute error in 0..1 (0 = every pixel found exactly): one number per variant for its
  parameters record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backend.metrics import as_array

PATCH = 7
FEATURE_DIMS = 5  # with the 3 centre-pixel values: 8 float32, one 32-byte row (see _chunked)
CENTRE_WEIGHT = 2.0
QUANTUM = 4096  # features are rounded to 1 / QUANTUM  # the centre pixel counts as much as 4 patch pixels
GLOBAL_SHIFTS = 4  # phase-correlation peaks tried as whole-field candidates
PCA_SAMPLES = 4096
TREE_DIMS = 4  # the leading feature dimensions the k-d tree seeds search in
LATTICE = 4  # every LATTICE-th variant pixel (per axis) is seeded by the k-d tree
CONVERGED = 0.035  # the search stops when a round lowers the total cost by less than this share
MAX_ROUNDS = 12
CHUNK = 8  # float32 features per 32-byte row of the search's tables


@dataclass(frozen=True)
class Correspondence:
    coords: np.ndarray  # (H, W, 2) int32: (y, x) in the reference for each variant pixel
    cost: np.ndarray  # (H, W) float32: feature distance of each match
    rmse: float  # base colour gathered through coords vs the variant, 0..1
    mae: float

    def fidelity(self) -> dict[str, float]:
        """The numbers for a parameters record."""
        return {"correspondence_rmse": round(self.rmse, 6), "correspondence_mae": round(self.mae, 6)}


def correspond(variant, reference, *, patch: int = PATCH, iterations: int = MAX_ROUNDS, seed: int = 0,
               features: Callable[[np.ndarray], np.ndarray] | None = None,
               feature_weight: float = 1.0) -> Correspondence:
    """The nearest-neighbour field from `variant` (periodic) to `reference`; images as in metrics.as_array.
    `iterations`: the most search rounds (the search stops earlier once converged)."""
    var, ref = _colour(as_array(variant)), _colour(as_array(reference))
    if patch < 1 or patch % 2 == 0 or patch > min(*ref.shape[:2], *var.shape[:2]):
        raise ValueError(f"patch must be an odd size no larger than either image, got {patch}")
    rng = np.random.default_rng(seed)
    basis = _pca_basis(ref, patch, rng)
    fv, fr = _describe(var, basis, patch), _describe(ref, basis, patch)
    if features is not None:
        fv = np.concatenate([fv, feature_weight * _checked(features(var), var)], axis=2)
        fr = np.concatenate([fr, feature_weight * _checked(features(ref), ref)], axis=2)
    search = _Search(fv, fr, rng)
    search.seed(_global_shifts(var, ref))
    search.converge(iterations)
    coords = np.stack([search.fy.reshape(search.shape), search.fx.reshape(search.shape)], axis=2).astype(np.int32)
    rmse, mae = fidelity(var, ref, coords)
    return Correspondence(coords, search.cost.reshape(search.shape), rmse, mae)


def fidelity(variant, reference, coords: np.ndarray) -> tuple[float, float]:
    """(RMSE, MAE) in 0..1 of reference[coords] against variant."""
    var, ref = as_array(variant), as_array(reference)
    diff = ref[coords[..., 0], coords[..., 1]] - var
    return float(np.sqrt(np.mean(diff ** 2))), float(np.mean(np.abs(diff)))


def _colour(arr: np.ndarray) -> np.ndarray:
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr


def _checked(values: np.ndarray, image: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 3 or values.shape[:2] != image.shape[:2]:
        raise ValueError(f"features() must return (H, W, D) for an {image.shape[:2]} image, got {values.shape}")
    return values


def _offsets(patch: int) -> list[tuple[int, int]]:
    r = patch // 2
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]


def _pca_basis(ref: np.ndarray, patch: int, rng: np.random.Generator) -> np.ndarray:
    """(patch², C, FEATURE_DIMS): principal directions of the reference's (wrapped) patches."""
    h, w, c = ref.shape
    ys, xs = rng.integers(0, h, PCA_SAMPLES), rng.integers(0, w, PCA_SAMPLES)
    samples = np.stack([ref[(ys + dy) % h, (xs + dx) % w] for dy, dx in _offsets(patch)], axis=1)
    samples = samples.reshape(PCA_SAMPLES, -1).astype(np.float64)
    samples -= samples.mean(axis=0)
    _, vectors = np.linalg.eigh(samples.T @ samples)  # the scatter matrix's eigenvectors: cheaper than an SVD
    dims = min(FEATURE_DIMS, vectors.shape[1])
    return vectors[:, ::-1][:, :dims].reshape(patch * patch, c, dims).astype(np.float32)


def _describe(image: np.ndarray, basis: np.ndarray, patch: int) -> np.ndarray:
    """(H, W, D + C) per-pixel features: wrapped patch projected on the basis, then the centre pixel.
    Bands of rows at a time: each band's patches as one (pixels, patch² C) matrix, one product."""
    h, w, c = image.shape
    r = patch // 2
    padded = np.pad(image.astype(np.float32), ((r, r), (r, r), (0, 0)), mode="wrap")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (patch, patch), axis=(0, 1))  # (h, w, c, p, p)
    flat_basis = basis.reshape(patch, patch, c, -1).transpose(2, 0, 1, 3).reshape(c * patch * patch, -1)
    out = np.empty((h, w, basis.shape[2]), np.float32)
    band = max(1, 2**11 // w)  # rows whose copied windows stay in the cache
    for y in range(0, h, band):
        out[y:y + band] = (windows[y:y + band].reshape(-1, c * patch * patch) @ flat_basis).reshape(-1, w, out.shape[2])
    # rounded to a grid far finer than any patch difference: equal patches get bit-equal features
    # wherever they are (the product's rounding depends on the row's place in its band), so an exact
    # match costs exactly 0 and leaves the search
    out = np.round(out * QUANTUM) / QUANTUM
    return np.concatenate([out, CENTRE_WEIGHT * image.astype(np.float32)], axis=2)


def _global_shifts(var: np.ndarray, ref: np.ndarray) -> list[tuple[int, int]]:
    """The strongest circular shifts (dy, dx) with var ≈ roll(ref, (dy, dx)), by phase correlation."""
    if var.shape != ref.shape:
        return []
    a, b = np.fft.rfft2(var.mean(axis=2)), np.fft.rfft2(ref.mean(axis=2))
    cross = a * np.conj(b)
    surface = np.fft.irfft2(cross / np.maximum(np.abs(cross), 1e-12), s=var.shape[:2])
    peaks = np.argsort(surface.ravel())[::-1][:GLOBAL_SHIFTS]
    return [tuple(int(v) for v in np.unravel_index(p, surface.shape)) for p in peaks]


class _Search:
    """The field (fy, fx) and its cost, flat over the variant's pixels, improved in place by
    candidate matches for all pixels or for the pixels still improving (`active`)."""

    def __init__(self, fv: np.ndarray, fr: np.ndarray, rng: np.random.Generator):
        self.shape = fv.shape[:2]
        self.ref_shape = fr.shape[:2]
        self.fv, self.fr = _chunked(fv), _chunked(fr)
        self.rng = rng
        self.py, self.px = (a.ravel() for a in np.indices(self.shape, dtype=np.int32))
        self.active = np.arange(self.fv.shape[1], dtype=np.int32)
        # wrapping by table look-up (cheaper than %), for every coordinate a candidate can have
        self.margin = 2 * max(*self.ref_shape, *self.shape, LATTICE)
        self.wrap_y, self.wrap_x = (np.arange(-self.margin, n + self.margin, dtype=np.int32) % n
                                    for n in self.ref_shape)

    def seed(self, shifts: list[tuple[int, int]]) -> None:
        """For a lattice of pixels (every LATTICE-th row and column, from a random corner) their exact
        nearest neighbours in the leading TREE_DIMS feature dimensions (a k-d tree over every
        reference pixel); every other pixel starts from its lattice pixel's match, moved along; then
        the global shifts as whole-field candidates."""
        from scipy.spatial import cKDTree

        h, w = self.ref_shape
        oy, ox = self.rng.integers(0, LATTICE, 2)
        ly, lx = (self.py - oy) // LATTICE * LATTICE + oy, (self.px - ox) // LATTICE * LATTICE + ox
        lattice = np.flatnonzero((ly == self.py) & (lx == self.px))
        tree = cKDTree(self.fr[0, :, :TREE_DIMS], leafsize=32, balanced_tree=False, compact_nodes=False)
        _, nearest = tree.query(self.fv[0, lattice, :TREE_DIMS], k=1)
        match = np.zeros(len(self.py), np.int32)
        match[lattice] = nearest
        owner = (ly % self.shape[0]) * self.shape[1] + lx % self.shape[1]
        my, mx = np.divmod(match[owner], w)
        self.fy, self.fx = ((my + self.py - ly) % h).astype(np.int32), ((mx + self.px - lx) % w).astype(np.int32)
        self.cost = self._cost(self.fy, self.fx, self.fv)
        for dy, dx in shifts:
            self.consider(self.py - dy, self.px - dx)

    def _cost(self, fy: np.ndarray, fx: np.ndarray, own: np.ndarray) -> np.ndarray:
        flat = fy * self.ref_shape[1] + fx
        cost = None
        for chunk, mine in zip(self.fr, own, strict=True):
            diff = np.take(chunk, flat, axis=0)  # take: faster than indexing
            diff -= mine
            part = np.einsum("ij,ij->i", diff, diff)
            cost = part if cost is None else np.add(cost, part, out=cost)
        return cost

    def consider(self, cy: np.ndarray, cx: np.ndarray, idx=None, own=None) -> None:
        """Take the candidates (for the pixels `idx`, default all; `own`: their features) where they
        are better; coordinates wrap around the reference."""
        h, w = self.ref_shape
        cy, cx = np.take(self.wrap_y, cy + self.margin), np.take(self.wrap_x, cx + self.margin)
        if idx is None:
            cost = self._cost(cy, cx, self.fv)
            better = cost < self.cost
            self.fy, self.fx = np.where(better, cy, self.fy), np.where(better, cx, self.fx)
            self.cost = np.minimum(cost, self.cost)
            return
        cost = self._cost(cy, cx, np.take(self.fv, idx, axis=1) if own is None else own)
        better = cost < self.cost[idx]
        won = idx[better]
        self.fy[won], self.fx[won], self.cost[won] = cy[better], cx[better], cost[better]

    def converge(self, rounds: int) -> None:
        """Propagation and random search over the pixels still improving, until a round lowers the
        total cost by less than CONVERGED of itself (or after `rounds`)."""
        reach = LATTICE
        for _ in range(rounds):
            before_fy, before_fx, total = self.fy.copy(), self.fx.copy(), float(self.cost.sum())
            self.active = self.active[self.cost[self.active] > 0]  # an exact match cannot improve
            if not len(self.active):
                return
            self.propagate(reach)
            self.random_search()
            changed = (self.fy != before_fy) | (self.fx != before_fx)
            if total - float(self.cost.sum()) <= CONVERGED * total:
                return
            self.active = np.flatnonzero(_grown(changed.reshape(self.shape), 2).ravel())
            reach = 1

    def propagate(self, reach: int) -> None:
        """Jump flooding: each active pixel tries its neighbours' matches, shifted back, at 2^k ... 1 px."""
        idx = self.active
        own = np.take(self.fv, idx, axis=1)
        h, w = self.shape
        py, px = self.py[idx], self.px[idx]
        for jump in [1 << k for k in range(int(np.log2(max(reach, 1))), -1, -1)]:
            for sy, sx in ((jump, 0), (-jump, 0), (0, jump), (0, -jump)):
                # the pixel at p + s matched q; p then tries q - s (wrapping around the variant)
                n = ((py + sy) % h) * w + (px + sx) % w
                self.consider(self.fy[n] - sy, self.fx[n] - sx, idx, own)

    def random_search(self) -> None:
        idx = self.active
        own = np.take(self.fv, idx, axis=1)
        radius = max(self.ref_shape) // 2
        while radius >= 1:
            jump = self.rng.integers(-radius, radius + 1, (2, len(idx)), dtype=np.int32)
            self.consider(self.fy[idx] + jump[0], self.fx[idx] + jump[1], idx, own)
            radius //= 2


def _chunked(features: np.ndarray) -> np.ndarray:
    """(H, W, D) features as (chunks, H W, CHUNK) float32, zero-padded: numpy's take copies rows of
    exactly 32 bytes several times faster than rows of any other width, and the search is mostly takes."""
    flat = features.reshape(-1, features.shape[2])
    chunks = -(-flat.shape[1] // CHUNK)
    padded = np.zeros((flat.shape[0], chunks * CHUNK), np.float32)
    padded[:, :flat.shape[1]] = flat
    return np.ascontiguousarray(padded.reshape(-1, chunks, CHUNK).transpose(1, 0, 2))


def _grown(mask: np.ndarray, by: int) -> np.ndarray:
    """`mask` dilated by `by` px on the torus (a square)."""
    out = mask.copy()
    for axis in (0, 1):
        grown = out.copy()
        for step in range(1, by + 1):
            grown |= np.roll(out, step, axis) | np.roll(out, -step, axis)
        out = grown
    return out
