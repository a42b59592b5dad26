"""Attribution methods; every class is an :class:`~pellucid.explain.base.Explainer`."""
from .._lazy import lazy_exports
from .base import Explainer, WhiteBoxExplainer

_EXPORTS = {
    **dict.fromkeys(["Saliency", "GradientInput", "IntegratedGradients", "SmoothGrad", "VarGrad",
                     "SquareGrad"], ".gradients"),
    "Occlusion": ".occlusion",
    "Rise": ".rise",
    "SobolAttribution": ".sobol",
    **dict.fromkeys(["DeepLift", "DeepLiftShap"], ".deeplift"),
    **dict.fromkeys(["GradCAM", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "HiResCAM", "ScoreCAM",
                     "AblationCAM", "EigenCAM", "CFCAM"], ".cam"),
    "Craft": ".concepts",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["Explainer", "WhiteBoxExplainer", *_EXPORTS]
