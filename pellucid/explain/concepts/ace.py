"""ACE: Automated Concept-based Explanations (Ghorbani et al., 2019, NeurIPS).

1. Each image of the class is cut into SLIC superpixels at several resolutions
   (``n_segments``, the paper's 15, 50 and 80; :func:`pellucid.features.slic`); segments
   under ``min_size`` of the image are dropped.
2. Each segment becomes an image as in the paper: its bounding box, the pixels outside the
   segment set to ``fill`` (the paper's grey, 117.5 / 255), resized (bilinear) to the input size.
3. Their activations at ``target_layer`` are clustered by k-means (``n_clusters``); outliers
   are removed by keeping the ``max_segments`` segments nearest each centre, and clusters
   with segments from fewer than ``min_images`` of the images are dropped (a concept recurs).
4. Each cluster is a concept scored by :class:`~.tcav.Tcav` against ``random_examples``:
   clusters are ranked by TCAV score, with their significance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.cluster import KMeans

from ..._imaging import upsample
from ..._validation import check_positive_int, check_probability
from ...features import slic
from .tcav import Tcav, TcavResult


def segment_image(image: torch.Tensor, mask: torch.Tensor, fill: float) -> torch.Tensor:
    """ACE's segment image: the bounding box of ``mask`` (``(H, W)`` bool) in ``image``
    ``(C, H, W)``, ``fill`` outside the segment, resized (bilinear) to ``(H, W)``."""
    rows, cols = torch.nonzero(mask.any(1))[:, 0], torch.nonzero(mask.any(0))[:, 0]
    box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    patch = torch.where(mask, image, torch.full_like(image, fill))
    return upsample(patch[None, :, box[0], box[1]], tuple(image.shape[1:]))[0]


@dataclass
class AceResult:
    """Segments kept and their clusters, ranked.

    Attributes: ``patches`` ``(n, C, H, W)`` the segment images; ``image_index`` ``(n,)``
    their image; ``masks`` ``(n, H, W)`` bool, each segment in its image; ``labels`` ``(n,)``
    their cluster; ``clusters`` the kept cluster ids from the most to the least important;
    ``scores`` ``(len(clusters),)`` TCAV scores in that order, ``significant`` likewise;
    ``tcav`` the :class:`~.tcav.TcavResult` (concepts named ``"cluster k"``).
    """

    patches: torch.Tensor
    image_index: torch.Tensor
    masks: torch.Tensor
    labels: np.ndarray
    clusters: list[int]
    scores: np.ndarray
    significant: np.ndarray
    tcav: TcavResult


class Ace(Tcav):
    """ACE (Ghorbani et al., 2019); see the module docstring. ``Tcav``'s parameters
    (``target_layer``, ``n_runs``, ``classifier``, ``alpha``, ``cache_dir``), and:

    Parameters:
        n_segments: SLIC segments per image at each resolution.
        compactness: SLIC compactness.
        min_size: smallest segment kept, as a fraction of the image.
        fill: value of the pixels outside a segment (images in ``[0, 1]``: the paper's grey).
        n_clusters: k-means clusters.
        max_segments: segments kept per cluster (nearest its centre).
        min_images: fraction of the images a cluster must have segments from.
    """

    input_kinds = ("images",)

    def __init__(self, model: Any, *, target_layer: Any = None,
                 n_segments: Sequence[int] = (15, 50, 80), compactness: float = 10.0,
                 min_size: float = 0.01, fill: float = 117.5 / 255, n_clusters: int = 25,
                 max_segments: int = 40, min_images: float = 0.5, **tcav_options: Any):
        super().__init__(model, target_layer=target_layer, **tcav_options)
        self.n_segments = tuple(check_positive_int("n_segments", n) for n in n_segments)
        self.compactness = float(compactness)
        self.min_size = check_probability("min_size", min_size, open_interval=False)
        self.fill = float(fill)
        self.n_clusters = check_positive_int("n_clusters", n_clusters)
        self.max_segments = check_positive_int("max_segments", max_segments)
        self.min_images = check_probability("min_images", min_images, open_interval=False)

    def __call__(self, images: Any, targets: Any = None, *, random_examples: Any,
                 forward_kwargs: Any = None) -> AceResult:
        x = self._validate(images)  # images only: input_kinds
        pool = self._validate(random_examples)
        if len(pool) < 2 * self.max_segments:
            raise ValueError(f"random_examples must hold >= 2 * max_segments = "
                             f"{2 * self.max_segments} images (TCAV draws counter-examples "
                             f"and random concepts of a cluster's size); got {len(pool)}")
        patches, image_index, masks = self.segments(x)
        if len(patches) < self.n_clusters:
            raise ValueError(f"{len(patches)} segments are fewer than n_clusters="
                             f"{self.n_clusters}; pass more images or lower n_clusters")
        activations = self.activations(patches).numpy()
        labels = self._cluster(activations, image_index.numpy(), len(x))
        kept = labels >= 0
        clusters = sorted(set(labels[kept].tolist()))
        if not clusters:
            raise ValueError("no cluster has segments from min_images of the images; lower "
                             "min_images or n_clusters, or pass more images")
        patches, image_index, masks = patches[kept], image_index[kept], masks[kept]
        labels = labels[kept]
        concepts = {f"cluster {k}": patches[labels == k] for k in clusters}
        result = Tcav.__call__(self, x, targets, concepts=concepts, random_examples=pool,
                               forward_kwargs=forward_kwargs)
        order = np.argsort(-result.scores, kind="stable")
        return AceResult(patches, image_index, masks, labels, [clusters[i] for i in order],
                         result.scores[order], result.significant[order], result)

    def segments(self, images: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every segment of ``images`` at every resolution as an image (bounding box, ``fill``
        outside the segment, resized): ``(patches, image_index, masks)``."""
        x = torch.as_tensor(images, dtype=torch.float32)
        patches, index, masks = [], [], []
        for n_segments in self.n_segments:
            labels = slic(x, n_segments=n_segments, compactness=self.compactness)
            for i, segmentation in enumerate(labels):
                for label in torch.unique(segmentation):
                    mask = segmentation == label
                    if mask.float().mean() < self.min_size:
                        continue
                    patches.append(segment_image(x[i], mask, self.fill))
                    index.append(i)
                    masks.append(mask)
        if not patches:
            raise ValueError("no segment is larger than min_size; lower min_size")
        return torch.stack(patches), torch.tensor(index), torch.stack(masks)

    def _cluster(self, activations: np.ndarray, image_index: np.ndarray, n_images: int
                 ) -> np.ndarray:
        """Cluster of each segment, ``-1`` for outliers and dropped clusters."""
        kmeans = KMeans(self.n_clusters, n_init=4, random_state=self.seed).fit(activations)
        distances = np.linalg.norm(activations - kmeans.cluster_centers_[kmeans.labels_], axis=1)
        labels = np.full(len(activations), -1)
        for k in range(self.n_clusters):
            members = np.flatnonzero(kmeans.labels_ == k)
            members = members[np.argsort(distances[members], kind="stable")][:self.max_segments]
            if len(members) >= 2 and len(set(image_index[members])) >= self.min_images * n_images:
                labels[members] = k
        return labels
