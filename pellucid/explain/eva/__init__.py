"""EVA (Fel et al., 2023): verified bounds (IBP, CROWN) of a model over a perturbation set and
the attribution built on them. ``Eva`` is exported from :mod:`pellucid.explain`;
:func:`~.verified.output_bounds` bounds a model's outputs over a box."""
from .verified import output_bounds

__all__ = ["output_bounds"]
