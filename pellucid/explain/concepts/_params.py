"""scikit-learn habit shared by the concept classes: ``__init__`` arguments are stored under
the same names; ``get_params`` returns them and ``repr`` shows them."""
from __future__ import annotations

import inspect
from typing import Any


def init_params(obj: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """``{name: value}`` of the named ``__init__`` arguments of ``obj``'s class, ``self``
    and ``exclude`` (e.g. the model) left out."""
    parameters = list(inspect.signature(type(obj).__init__).parameters.values())[1:]
    return {p.name: getattr(obj, p.name) for p in parameters
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in exclude}


def params_repr(obj: Any, exclude: tuple[str, ...] = ()) -> str:
    params = ", ".join(f"{k}={v!r}" for k, v in init_params(obj, exclude).items())
    return f"{type(obj).__name__}({params})"
