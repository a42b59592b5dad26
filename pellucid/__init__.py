"""pellucid: explain vision and tabular models, benchmark attribution methods, make figures.

``pellucid.explain`` (attribution methods), ``pellucid.metrics`` (heatmap metrics) and
``pellucid.procedures`` (ROAR, KAR, model randomization) are imported with the package (their
classes load on first use); ``pellucid.selectors`` (what output is explained),
``pellucid.plots``, ``pellucid.zoo``, ``pellucid.datasets`` and ``pellucid.benchmark`` are
imported when asked for. The design: docs/design.md.
"""
__version__ = "0.1.0"

from . import explain, metrics, procedures  # noqa: E402
from .models import as_model  # noqa: E402

__all__ = ["as_model", "explain", "metrics", "procedures", "__version__"]
