"""Class activation maps (CAM family): one base class, one small subclass per variant.

``from pellucid.explain import GradCAM`` and ``from pellucid.explain.cam import GradCAM`` both
work. See :class:`~pellucid.explain.cam.base.BaseCAM` for the options (``target_layer``,
``reshape``, ``normalize``).
"""
from .base import BaseCAM, find_target_layer
from .cf_cam import CFCAM
from .eigen_cam import EigenCAM
from .gradient_cams import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from .perturbation_cams import AblationCAM, ScoreCAM
from .reshape import vit_reshape

__all__ = ["BaseCAM", "GradCAM", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "HiResCAM",
           "ScoreCAM", "AblationCAM", "EigenCAM", "CFCAM", "find_target_layer", "vit_reshape"]
