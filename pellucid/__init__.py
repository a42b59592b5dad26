"""pellucid: explain vision and tabular models, benchmark attribution methods, make figures.

``pellucid.explain`` (attribution methods) and ``pellucid.metrics`` are imported with the
package (their classes load on first use); ``pellucid.plots``, ``pellucid.zoo``,
``pellucid.datasets`` and ``pellucid.benchmark`` are imported when asked for.
"""
__version__ = "0.1.0"

from . import explain, metrics  # noqa: E402
from .models import as_model  # noqa: E402

__all__ = ["as_model", "explain", "metrics", "__version__"]
