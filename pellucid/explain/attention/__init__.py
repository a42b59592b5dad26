"""Attention explanations for vision transformers, exported by :mod:`pellucid.explain`
(``AttentionRollout``, ``AttentionRelevance``, ``AttentionGradCAM``). The attention is captured
by :class:`~pellucid.explain.attention.capture.AttentionCapture`, a torch-function mode: no
hook, no change to the model. What a model must look like: :mod:`.base`."""
from .capture import Attention, AttentionCapture

__all__ = ["Attention", "AttentionCapture"]
