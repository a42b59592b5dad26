"""Heatmap metrics (faithfulness, robustness, randomization, complexity, ground truth,
localization): ``metric(inputs, heatmaps, targets=None, *, masks=None) -> MetricResult`` on
heatmaps from any method (see :mod:`pellucid.metrics.base`)."""
from .._lazy import lazy_exports
from .base import Metric, MetricResult, ModelMetric

_EXPORTS = {
    **dict.fromkeys(["Deletion", "Insertion", "MuFidelity"], ".fidelity"),
    **dict.fromkeys(["Road"], ".road"),
    **dict.fromkeys(["PointingGame", "RelevanceMass", "RelevanceRankAccuracy", "LocalizationAUC",
                     "TopKIntersection", "Focus"], ".localization"),
    "Infidelity": ".infidelity",
    **dict.fromkeys(["AverageDrop", "AverageIncrease"], ".average_drop"),
    "Monotonicity": ".monotonicity",
    "Irof": ".irof",
    **dict.fromkeys(["SensitivityMax", "SensitivityAvg", "LocalLipschitz"], ".robustness"),
    "RandomLogit": ".random_logit",
    **dict.fromkeys(["Sparseness", "Complexity", "EffectiveComplexity"], ".complexity"),
    **dict.fromkeys(["RankCorrelation", "FeatureAgreement", "RankAgreement", "SignAgreement",
                     "SuppressorMass"], ".ground_truth"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["Metric", "ModelMetric", "MetricResult", *_EXPORTS]
