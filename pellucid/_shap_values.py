"""``shap.Explanation`` objects read as pellucid heatmaps, so that every metric and plot takes
shap's output as it comes (without importing shap)."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def is_explanation(obj: Any) -> bool:
    """Whether ``obj`` is a ``shap.Explanation`` (recognised by type, shap need not be
    imported)."""
    kind = type(obj)
    return kind.__name__ == "Explanation" and kind.__module__.split(".")[0] == "shap"


def explanation_heatmaps(explanation: Any) -> np.ndarray:
    """The values of a single-output explanation in pellucid's layout: ``(N, F)`` /  ``(F,)``
    as they are; images, which shap explains channels-last ``(N, H, W, C)`` / ``(H, W, C)``,
    summed over channels to ``(N, H, W)`` / ``(H, W)`` (pellucid's channel rule)."""
    values = np.asarray(explanation.values, dtype=np.float64)
    data = getattr(explanation, "data", None)
    data_shape = None if data is None else np.shape(data)
    base_values = getattr(explanation, "base_values", None)
    several_outputs = (values.ndim > len(data_shape) if data_shape is not None
                       else np.ndim(base_values) == 2)
    if several_outputs:
        raise ValueError(f"this shap.Explanation holds {values.shape[-1]} outputs per sample "
                         f"(values of shape {values.shape}): select one output first, e.g. "
                         f"explanation[..., k]")
    if values.ndim >= 3 and values.shape[-1] in (1, 3):  # channels-last images
        return values.sum(-1)
    return values


def as_heatmap_array(obj: Any) -> Any:
    """``obj`` itself, or the heatmaps of a ``shap.Explanation``."""
    return explanation_heatmaps(obj) if is_explanation(obj) else obj


def import_shap() -> Any:
    """shap, imported on first use (its colormap set-up warns under recent matplotlib)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        import shap
    return shap
