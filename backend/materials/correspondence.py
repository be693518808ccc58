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
  patch features, scaled by `feature_weight`; none ship with the project;
- search: the field starts as the best of a random field and the strongest global shifts found by
  phase correlation (a shifted copy is thereby found exactly), then alternates jump-flooding
  propagation (neighbours' matches at distances 2^k ... 1, on all four sides, wrapping around the
  variant, so the field stays periodic) and random search in shrinking windows, vectorised over
  all pixels at once (Barnes et al. 2009, parallel form);
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
FEATURE_DIMS = 16
CENTRE_WEIGHT = 2.0  # the centre pixel counts as much as 4 patch pixels
GLOBAL_SHIFTS = 4  # phase-correlation peaks tried as whole-field candidates
PCA_SAMPLES = 4096


@dataclass(frozen=True)
class Correspondence:
    coords: np.ndarray  # (H, W, 2) int32: (y, x) in the reference for each variant pixel
    cost: np.ndarray  # (H, W) float32: feature distance of each match
    rmse: float  # base colour gathered through coords vs the variant, 0..1
    mae: float

    def fidelity(self) -> dict[str, float]:
        """The numbers for a parameters record."""
        return {"correspondence_rmse": round(self.rmse, 6), "correspondence_mae": round(self.mae, 6)}


def correspond(variant, reference, *, patch: int = PATCH, iterations: int = 3, seed: int = 0,
               features: Callable[[np.ndarray], np.ndarray] | None = None,
               feature_weight: float = 1.0) -> Correspondence:
    """The nearest-neighbour field from `variant` (periodic) to `reference`; images as in metrics.as_array."""
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
    search.start(_global_shifts(var, ref))
    for i in range(iterations):
        search.propagate(first=i == 0)
        search.random_search()
    coords = np.stack([search.fy, search.fx], axis=2).astype(np.int32)
    rmse, mae = fidelity(var, ref, coords)
    return Correspondence(coords, search.cost.reshape(search.fy.shape), rmse, mae)


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
    samples = samples.reshape(PCA_SAMPLES, -1)
    samples -= samples.mean(axis=0)
    _, _, vt = np.linalg.svd(samples, full_matrices=False)
    dims = min(FEATURE_DIMS, vt.shape[0])
    return vt[:dims].T.reshape(patch * patch, c, dims).astype(np.float32)


def _describe(image: np.ndarray, basis: np.ndarray, patch: int) -> np.ndarray:
    """(H, W, D + C) per-pixel features: wrapped patch projected on the basis, then the centre pixel."""
    h, w, c = image.shape
    out = np.zeros((h * w, basis.shape[2]), np.float32)
    for k, (dy, dx) in enumerate(_offsets(patch)):
        out += np.roll(image, (-dy, -dx), axis=(0, 1)).reshape(-1, c) @ basis[k]
    return np.concatenate([out.reshape(h, w, -1), CENTRE_WEIGHT * image], axis=2)


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
    """The field (fy, fx) and its cost, improved in place by whole-image candidate fields."""

    def __init__(self, fv: np.ndarray, fr: np.ndarray, rng: np.random.Generator):
        self.shape = fv.shape[:2]
        self.ref_shape = fr.shape[:2]
        self.fv = fv.reshape(-1, fv.shape[2])
        self.fr = fr.reshape(-1, fr.shape[2])
        self.rng = rng
        self.py, self.px = np.indices(self.shape)

    def start(self, shifts: list[tuple[int, int]]) -> None:
        h, w = self.ref_shape
        self.fy = self.rng.integers(0, h, self.shape)
        self.fx = self.rng.integers(0, w, self.shape)
        self.cost = self._cost(self.fy, self.fx)
        for dy, dx in shifts:
            self.consider(self.py - dy, self.px - dx)

    def _cost(self, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
        diff = self.fr[(fy * self.ref_shape[1] + fx).ravel()] - self.fv
        return np.einsum("ij,ij->i", diff, diff)

    def consider(self, cy: np.ndarray, cx: np.ndarray) -> None:
        """Take the candidate field where it is better (coordinates wrap around the reference)."""
        h, w = self.ref_shape
        cy, cx = cy % h, cx % w
        cost = self._cost(cy, cx)
        better = (cost < self.cost).reshape(self.shape)
        self.fy = np.where(better, cy, self.fy)
        self.fx = np.where(better, cx, self.fx)
        self.cost = np.minimum(cost, self.cost)

    def propagate(self, first: bool) -> None:
        """Jump flooding: each pixel tries its neighbours' matches, shifted back, at 2^k ... 1 px."""
        reach = max(self.shape) // 4 if first else 8
        jumps = [1 << k for k in range(int(np.log2(max(reach, 1))), -1, -1)]
        for jump in jumps:
            for sy, sx in ((jump, 0), (-jump, 0), (0, jump), (0, -jump)):
                # the pixel at p + s matched q; p then tries q - s (np.roll wraps around the variant)
                ny = np.roll(self.fy, (-sy, -sx), axis=(0, 1))
                nx = np.roll(self.fx, (-sy, -sx), axis=(0, 1))
                self.consider(ny - sy, nx - sx)

    def random_search(self) -> None:
        radius = max(self.ref_shape) // 2
        while radius >= 1:
            self.consider(self.fy + self.rng.integers(-radius, radius + 1, self.shape),
                          self.fx + self.rng.integers(-radius, radius + 1, self.shape))
            radius //= 2
