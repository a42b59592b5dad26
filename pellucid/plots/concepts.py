"""Concept gallery: the crops that activate each concept most, next to the concept importances;
TCAV bars with significance marks; CRAFT's recursion tree."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from ._common import draw_image, figure_and_axes, image_for_display, new_figure, to_numpy


def top_crops(images: Any, crop_boxes: Any, crop_size: Sequence[int] | int,
              coefficients: Any, k: int = 6) -> list[torch.Tensor]:
    """For each concept, the ``k`` crops with the largest coefficient: a list of
    ``(k, C, h, w)`` tensors. ``crop_boxes`` ``(n_crops, 3)`` holds (image index, top, left) into
    ``images`` ``(N, C, H, W)``; ``coefficients`` ``(n_crops, n_concepts)`` (e.g. CRAFT's
    ``crop_boxes_``, ``crop_size_`` and ``crops_u_``)."""
    x = torch.as_tensor(to_numpy(images, "images"), dtype=torch.float32)
    boxes = np.asarray(to_numpy(crop_boxes, "crop_boxes"), dtype=int)
    u = to_numpy(coefficients, "coefficients")
    height, width = (crop_size, crop_size) if np.isscalar(crop_size) else tuple(crop_size)
    if x.ndim != 4 or boxes.ndim != 2 or boxes.shape[1] != 3 or u.shape[0] != len(boxes):
        raise ValueError(f"expected images (N, C, H, W), crop_boxes (n, 3) and coefficients "
                         f"(n, n_concepts); got {tuple(x.shape)}, {boxes.shape}, {u.shape}")
    galleries = []
    for concept in range(u.shape[1]):
        best = np.argsort(-u[:, concept], kind="stable")[:k]
        galleries.append(torch.stack([x[i, :, top:top + height, left:left + width]
                                      for i, top, left in boxes[best]]))
    return galleries


def concept_gallery(crops_per_concept: Sequence[Any], importances: Any, *,
                    concept_names: Sequence[str] | None = None, sort: bool = True,
                    cell_size: float = 1.3) -> Figure:
    """Importance bars (left) and, for each concept, a row of its example crops (right).

    Args:
        crops_per_concept: one ``(k, C, h, w)`` tensor/array of crops per concept
            (:func:`top_crops` builds them); concepts may have different ``k``.
        importances: ``(n_concepts,)`` importance of each concept (e.g. CRAFT's
            ``importances_``).
        concept_names: row labels (default ``"concept i"``).
        sort: rows from the most to the least important concept.
    """
    importance = to_numpy(importances, "importances").reshape(-1)
    n = len(crops_per_concept)
    if n == 0 or len(importance) != n:
        raise ValueError(f"need one importance per concept: {n} crop sets, "
                         f"{len(importance)} importances")
    names = list(concept_names) if concept_names is not None else [f"concept {i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"concept_names must hold {n} names, got {len(names)}")
    crops = [to_numpy(c, f"crops_per_concept[{i}]") for i, c in enumerate(crops_per_concept)]
    for i, c in enumerate(crops):
        if c.ndim != 4 or len(c) == 0:
            raise ValueError(f"crops_per_concept[{i}] must be (k, C, h, w) with k >= 1, "
                             f"got shape {c.shape}")
    order = np.argsort(-importance, kind="stable") if sort else np.arange(n)
    k = max(len(c) for c in crops)
    figure = new_figure((3 + cell_size * k, cell_size * n + 0.6))
    grid = figure.add_gridspec(n, k + 1, width_ratios=[3 / cell_size] + [1] * k)
    bars = figure.add_subplot(grid[:, 0])
    bars.barh(np.arange(n), importance[order], color="tab:blue")
    bars.set_yticks(np.arange(n), [names[i] for i in order])
    bars.invert_yaxis()
    bars.set_xlabel("importance")
    bars.set_title("concept importance")
    for row, concept in enumerate(order):
        for col in range(k):
            ax = figure.add_subplot(grid[row, col + 1])
            ax.axis("off")
            if col < len(crops[concept]):
                draw_image(ax, image_for_display(crops[concept][col]))
            if col == 0:
                ax.set_title(names[concept], fontsize="small", loc="left")
    return figure


def tcav_bars(result: Any, *, ax: Any = None) -> Figure:
    """TCAV scores of a :class:`~pellucid.explain.concepts.TcavResult` (or an ``AceResult``'s
    ``tcav``): one bar per concept (mean over the runs, with the runs' standard deviation), the
    random CAVs' mean score as a dashed line, and ``*`` over the significant concepts
    (Bonferroni-corrected p < alpha; the p-value is written above each bar)."""
    scores = np.asarray(result.scores, dtype=float)
    spread = np.asarray(result.run_scores, dtype=float).std(1)
    figure, axes = figure_and_axes(ax, (1.2 + 0.9 * len(scores), 3.2))
    positions = np.arange(len(scores))
    colours = ["tab:blue" if s else "tab:gray" for s in result.significant]
    axes.bar(positions, scores, yerr=spread, color=colours, capsize=3)
    axes.axhline(float(np.mean(result.random_scores)), color="black", linestyle="--",
                 linewidth=1, label="random CAVs")
    for x, score, p, significant in zip(positions, scores, result.p_values, result.significant):
        axes.text(x, min(score + 0.08, 1.08), ("* " if significant else "") + f"p={p:.2g}",
                  ha="center", fontsize="small")
    axes.set_xticks(positions, list(result.concepts), rotation=30, ha="right")
    axes.set_ylim(0, 1.15)
    axes.set_ylabel("TCAV score")
    axes.legend(loc="lower right", fontsize="small")
    return figure


def concept_tree_figure(nodes: Sequence[Any], *, ax: Any = None) -> Figure:
    """CRAFT's recursion tree (:func:`~pellucid.explain.concepts.concept_tree`): one column per
    level, each concept labelled with its layer, index and importance, linked to its parent."""
    leaves: list[tuple[Any, int, float]] = []          # (node, depth, y), leaves one per row

    def place(node, depth):
        ys = [place(child, depth + 1) for child in node.children]
        y = float(np.mean(ys)) if ys else float(sum(not n.children for n, _, _ in leaves))
        leaves.append((node, depth, y))
        for child_y in ys:
            axes.plot([depth + 0.35, depth + 0.65], [y, child_y], color="gray", linewidth=1)
        return y

    if not nodes:
        raise ValueError("concept_tree_figure needs at least one node")
    n_leaves = sum(_count_leaves(node) for node in nodes)
    figure, axes = figure_and_axes(ax, (3.5 * _depth(nodes), 0.6 * n_leaves + 1))
    for node in nodes:
        place(node, 0)
    for node, depth, y in leaves:
        axes.text(depth, y, f"{node.layer} #{node.index}\n{node.importance:.3g}", ha="center",
                  va="center", fontsize="small",
                  bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "tab:blue"})
    axes.set_xlim(-0.6, _depth(nodes) - 0.4)
    axes.set_ylim(n_leaves - 0.5, -0.5)
    axes.axis("off")
    return figure


def _count_leaves(node) -> int:
    return sum(_count_leaves(child) for child in node.children) if node.children else 1


def _depth(nodes) -> int:
    return 1 + max((_depth(node.children) for node in nodes if node.children), default=0)
