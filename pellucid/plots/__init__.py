"""Figures for explanations and benchmarks. Every function returns a matplotlib Figure (made
without pyplot, so none is left open); single-panel ones draw on ``ax=`` when given.
:func:`save_figure` writes PNG, SVG or PDF by extension."""
from ._common import save_figure
from .concepts import concept_gallery, concept_tree_figure, tcav_bars, top_crops
from .curves import plot_curves, plot_roar
from .grid import method_grid
from .overlay import overlay
from .significance import cliques, critical_difference_diagram, significance_matrix
from .tabular import beeswarm, tabular_bars, waterfall

__all__ = ["overlay", "method_grid", "plot_curves", "plot_roar", "concept_gallery", "top_crops",
           "tcav_bars", "concept_tree_figure", "tabular_bars", "waterfall", "beeswarm",
           "save_figure", "critical_difference_diagram", "significance_matrix", "cliques"]
