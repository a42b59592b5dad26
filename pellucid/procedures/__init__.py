"""Evaluation procedures that retrain or alter the model and call an explainer themselves:
ROAR / KAR / DiffROAR (retraining) and the model randomization sanity check. Unlike a heatmap
metric they take an explainer factory, not heatmaps (see
:class:`~pellucid.procedures.base.Procedure`)."""
from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["Roar", "Kar"], ".roar"),
    "DiffRoar": ".diff_roar",
    "ModelRandomization": ".randomization",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = [*_EXPORTS]
