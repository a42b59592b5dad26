"""CRAFT's recursion (Fel et al., 2023, CRAFT, section 3.1): a concept found at a layer ``L``
is split into sub-concepts at an earlier layer ``L'`` using only the crops where it is active.

For each concept ``k`` of a fitted :class:`~.craft.Craft` at ``L``, the ``active_fraction`` of
its crops with the largest coefficient ``U[:, k]`` are taken as images (resized as in ``fit``)
and a new ``Craft`` at ``L'`` extracts ``n_concepts`` sub-concepts from them (each crop taken
whole: ``patch_size=1.0``, ``crops_per_image=1``); their importances for the same class are
estimated on those crops. Repeating over ``layers`` gives a tree with importances per level.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..._validation import check_probability
from .craft import Craft, _crops


@dataclass
class ConceptNode:
    """One concept of the tree: its ``layer``, ``index`` among the concepts of its parent's
    decomposition, ``vector`` (its row of ``concepts_``), ``importance`` for the class,
    ``crops`` (the images it was found on, ``(n, C, H, W)``, its parent's active crops at the
    first level: the input images), ``craft`` (the fitted Craft it belongs to) and
    ``children``."""

    layer: Any
    index: int
    vector: torch.Tensor
    importance: float
    craft: Craft
    crops: torch.Tensor
    children: list["ConceptNode"] = field(default_factory=list)


def active_crops(craft: Craft, images: torch.Tensor, concept: int,
                 active_fraction: float) -> torch.Tensor:
    """The crops of ``fit`` (``images``: the ones ``craft`` was fitted on) where ``concept`` is
    most active: the top ``active_fraction`` by coefficient (at least one), as images."""
    u = craft.crops_u_[:, concept].numpy()
    count = max(1, int(round(active_fraction * len(u))))
    best = np.argsort(-u, kind="stable")[:count]
    return _crops(torch.as_tensor(images, dtype=torch.float32),
                  craft.crop_boxes_.numpy()[best], craft.crop_size_)


def concept_tree(model: Any, images: Any, targets: Any = None, *, layers: Sequence[Any],
                 n_concepts: int | Sequence[int] = 5, active_fraction: float = 0.3,
                 **craft_options: Any) -> list[ConceptNode]:
    """The concepts of ``images`` (one class) at ``layers[0]``, each decomposed at
    ``layers[1]`` on its active crops, and so on (layers from the last to the first).

    ``n_concepts``: per level (an int for all). ``craft_options`` go to every ``Craft``
    (``factorization``, ``importance``, ``nb_design``, ``batch_size``, ``seed`` ...); the
    first level also takes ``patch_size`` and ``crops_per_image`` from them. Returns the
    first level's nodes."""
    if not layers:
        raise ValueError("layers must name at least one layer, from the last to the first")
    counts = [n_concepts] * len(layers) if isinstance(n_concepts, int) else list(n_concepts)
    if len(counts) != len(layers):
        raise ValueError(f"n_concepts gives {len(counts)} counts for {len(layers)} layers")
    fraction = check_probability("active_fraction", active_fraction, open_interval=False)
    if fraction == 0:
        raise ValueError("active_fraction must be > 0")
    root = Craft(model, target_layer=layers[0], n_concepts=counts[0], **craft_options)
    root.fit(images, targets)
    x = root._check_images(images)
    return _nodes(root, x, model, list(layers), counts, fraction, craft_options)


def _nodes(craft, x, model, layers, counts, fraction, options) -> list[ConceptNode]:
    importances = craft.estimate_importance(x)
    nodes = [ConceptNode(layers[0], k, craft.concepts_[k], float(importances[k]), craft, x)
             for k in range(craft.n_concepts)]
    if len(layers) == 1:
        return nodes
    child_options = {**options, "patch_size": 1.0, "crops_per_image": 1}
    for node in nodes:
        crops = active_crops(craft, x, node.index, fraction)
        child = Craft(model, target_layer=layers[1], n_concepts=counts[1], **child_options)
        child.fit(crops, craft.class_id_)
        node.children = _nodes(child, crops, model, layers[1:], counts[1:], fraction, options)
    return nodes
