"""Keep the material's proportions: how much of the output is each coarse colour region of the exemplar.

Quilting picks each block for how well its borders match, which knows nothing of the whole: on a
non-stationary exemplar (brown regions in blue stroma) a run of easy matches in one material can
crowd another out. Every exemplar pixel gets a coarse class (k-means of the colours blurred over
REGION px, so classes are regions, not grain); the quilter keeps the running class counts of the
output and scores each candidate window by how far the output's histogram would be from the
exemplar's once the window is added (total variation distance).
"""

from __future__ import annotations

import numpy as np
import scipy.cluster.vq
import scipy.ndimage

CLASSES = 6  # coarse colour classes (k-means)
REGION = 8  # px: colours are averaged over about this much before they are classed
SAMPLE = 4096  # exemplar pixels the k-means is fitted on
STEP = 4  # px between the window origins whose proportions are computed


class Proportions:
    """Coarse classes of one exemplar and the window counts of each class, for every window size asked."""

    def __init__(self, exemplar: np.ndarray, seed: int = 0):
        """exemplar: (h, w, c) float in [0, 1]."""
        h, w, c = exemplar.shape
        smooth = scipy.ndimage.uniform_filter(exemplar.astype(np.float32), size=(REGION, REGION, 1), mode="reflect")
        flat = smooth.reshape(-1, c)
        rng = np.random.default_rng(seed)
        sample = flat[rng.choice(len(flat), min(SAMPLE, len(flat)), replace=False)]
        k = min(CLASSES, len(np.unique(sample.round(3), axis=0)))
        self.classes = max(1, k)
        if k < 2:  # a flat exemplar has one class: nothing to keep in proportion
            self.labels = np.zeros((h, w), np.uint8)
        else:
            centroids, _ = scipy.cluster.vq.kmeans2(sample.astype(np.float64), k, minit="++", seed=rng)
            self.labels = scipy.cluster.vq.vq(flat, centroids.astype(np.float32))[0].astype(np.uint8).reshape(h, w)
        self.target = np.bincount(self.labels.ravel(), minlength=self.classes) / (h * w)
        # Integral images, one class at a time (a 2048² exemplar would need 100 MB per extra copy).
        self._integral = np.zeros((self.classes, h + 1, w + 1), np.int32)
        for k in range(self.classes):
            np.cumsum(np.cumsum(self.labels == k, axis=0, dtype=np.int32), axis=1, out=self._integral[k, 1:, 1:])

    def window_counts(self, bh: int, bw: int, step: int = 1) -> np.ndarray:
        """(classes, ceil((h - bh + 1) / step), ...): class counts of the bh x bw windows whose origins
        lie on a grid of `step` px."""
        s = self._integral
        return (s[:, bh::step, bw::step] - s[:, :-bh:step, bw::step] - s[:, bh::step, :-bw:step]
                + s[:, :-bh:step, :-bw:step])

    def distance_after(self, counts: np.ndarray, bh: int, bw: int) -> np.ndarray:
        """Total variation distance to the exemplar's proportions if each window were added to `counts`.

        Evaluated for window origins STEP px apart and held in between: the proportions of two
        windows a few pixels apart hardly differ, and this is a sixteenth of the work."""
        added = self.window_counts(bh, bw, STEP).astype(np.float32)
        total = counts.sum() + bh * bw
        missing = (self.target * total - counts).astype(np.float32)  # what the output lacks, per class
        distance = np.abs(added[0] - missing[0])
        for k in range(1, self.classes):
            distance += np.abs(added[k] - missing[k])
        h, w = self.labels.shape
        full = np.repeat(np.repeat(distance, STEP, axis=0), STEP, axis=1)[:h - bh + 1, :w - bw + 1]
        return full * (0.5 / total)
