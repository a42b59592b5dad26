"""Faithfulness and localization metrics; they consume heatmaps and return MetricResults."""
from .._lazy import lazy_exports
from .base import MetricResult

_EXPORTS = {
    **dict.fromkeys(["Deletion", "Insertion", "MuFidelity"], ".fidelity"),
    **dict.fromkeys(["Road"], ".road"),
    **dict.fromkeys(["PointingGame", "RelevanceMass", "RelevanceRankAccuracy"], ".localization"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["MetricResult", *_EXPORTS]
