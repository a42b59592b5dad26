"""Attribution methods; every class is an :class:`~pellucid.explain.base.Explainer`."""
from .base import Explainer, WhiteBoxExplainer

__all__ = ["Explainer", "WhiteBoxExplainer"]
