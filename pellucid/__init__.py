"""pellucid: explain vision and tabular models, benchmark attribution methods, make figures."""
__version__ = "0.1.0"

from .models import as_model  # noqa: E402

__all__ = ["as_model", "__version__"]
