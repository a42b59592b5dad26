"""Hyperparameters in scikit-learn's habit, for every configurable object of pellucid.

A subclass declares its hyperparameters as keyword-only arguments of ``__init__``, stores each
under the same name and validates it there (no other work in ``__init__``). Positional arguments
are the objects worked on (the model), named in ``_model_arguments``: they are not
hyperparameters, ``repr`` does not show them, and a clone shares them.
"""
from __future__ import annotations

import inspect
from typing import Any

from ._validation import require_images


class Configurable:
    """``get_params``, ``set_params``, ``repr`` and ``sklearn.base.clone`` from the named
    arguments of ``__init__`` along the class hierarchy, ``_model_arguments`` left out."""

    _model_arguments: tuple[str, ...] = ()
    input_kinds: tuple[str, ...] = ("images", "tabular")  # what inputs it is defined on

    def _check_input_kind(self, x: Any) -> None:
        """``ValueError`` for tabular inputs when the class is defined on images only."""
        if "tabular" not in self.input_kinds:
            require_images(x, type(self).__name__)

    @classmethod
    def _param_names(cls) -> list[str]:
        names: list[str] = []
        for klass in cls.__mro__:
            if "__init__" not in vars(klass) or klass is object:
                continue
            for p in list(inspect.signature(klass.__init__).parameters.values())[1:]:
                named = p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                if named and p.name not in names and p.name not in cls._model_arguments:
                    names.append(p.name)
        return names

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyperparameters by name (the model excluded); ``deep`` is accepted for scikit-learn
        and changes nothing (no hyperparameter is itself an estimator)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> "Configurable":
        """Change hyperparameters, validated as ``__init__`` validates them; returns ``self``.
        An unknown name raises ``ValueError`` listing the valid ones, and nothing changes."""
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no hyperparameter {unknown}; valid: "
                             f"{self._param_names()}")
        rebuilt = type(self)(*self._models(), **{**self.get_params(), **params})
        self.__dict__.update(rebuilt.__dict__)
        return self

    def __sklearn_clone__(self) -> "Configurable":
        """``sklearn.base.clone``: the same hyperparameters, the same model (not a copy: a
        clone explains the same model), no fitted state."""
        return type(self)(*self._models(), **self.get_params())

    def _models(self) -> list[Any]:
        return [getattr(self, name) for name in self._model_arguments]

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"
