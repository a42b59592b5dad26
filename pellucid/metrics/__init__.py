"""Faithfulness and localization metrics: ``metric(inputs, heatmaps, targets=None, *,
masks=None) -> MetricResult`` on heatmaps from any method (see :mod:`pellucid.metrics.base`)."""
from .._lazy import lazy_exports
from .base import Metric, MetricResult, ModelMetric

_EXPORTS = {
    **dict.fromkeys(["Deletion", "Insertion", "MuFidelity"], ".fidelity"),
    **dict.fromkeys(["Road"], ".road"),
    **dict.fromkeys(["PointingGame", "RelevanceMass", "RelevanceRankAccuracy"], ".localization"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["Metric", "ModelMetric", "MetricResult", *_EXPORTS]
