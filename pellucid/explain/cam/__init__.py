"""Class activation maps (CAM family): one base class (:mod:`.base`), one small subclass per
variant, exported by :mod:`pellucid.explain` (``from pellucid.explain import GradCAM``). This
package exports the family's helpers: :class:`BaseCAM` (options ``target_layer``, ``reshape``,
``normalize``), :func:`find_target_layer`, :func:`vit_reshape` and
:func:`channels_last_reshape`.
"""
from .base import BaseCAM, find_target_layer
from .reshape import channels_last_reshape, vit_reshape

__all__ = ["BaseCAM", "find_target_layer", "vit_reshape", "channels_last_reshape"]
