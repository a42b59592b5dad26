"""Attribution methods; every class is an :class:`~pellucid.explain.base.Explainer`."""
from .._lazy import lazy_exports
from .base import Explainer, WhiteBoxExplainer

_EXPORTS = {
    **dict.fromkeys(["Saliency", "GradientInput"], ".gradients.saliency"),
    "IntegratedGradients": ".gradients.integrated_gradients",
    **dict.fromkeys(["SmoothGrad", "VarGrad", "SquareGrad"], ".gradients.noise"),
    "Occlusion": ".perturbation.occlusion",
    "Rise": ".perturbation.rise",
    "SobolAttribution": ".perturbation.sobol",
    **dict.fromkeys(["DeepLift", "DeepLiftShap"], ".deeplift.deeplift"),
    **dict.fromkeys(["GuidedBackprop", "Deconvolution", "GuidedGradCAM"],
                    ".backward_rules.guided"),
    "LRP": ".backward_rules.lrp",
    **dict.fromkeys(["GradCAM", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "HiResCAM"],
                    ".cam.gradient_cams"),
    **dict.fromkeys(["ScoreCAM", "AblationCAM"], ".cam.perturbation_cams"),
    "EigenCAM": ".cam.eigen_cam",
    "CFCAM": ".cam.cf_cam",
    "Craft": ".concepts.craft",
    "FeatureAblation": ".groups.ablation",
    "KernelShap": ".groups.kernel_shap",
    "Lime": ".groups.lime",
    "ShapleyValueSampling": ".groups.shapley_sampling",
    "Lima": ".groups.lima",
    "AttentionRollout": ".attention.rollout",
    "AttentionRelevance": ".attention.relevance",
    "AttentionGradCAM": ".attention.grad_cam",
    "ShapExplainer": ".shap_interop",
    "Eva": ".eva.eva",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["Explainer", "WhiteBoxExplainer", *_EXPORTS]
