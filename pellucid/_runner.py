"""The one base of everything that runs a user's model: explainers, metrics, concept extractors
and evaluation procedures.

:class:`ModelRunner` owns what they all do the same way:

- hyperparameters (:class:`~pellucid._params.Configurable`: keyword-only, ``get_params``,
  ``set_params``, ``sklearn.base.clone``, ``repr``) and the ones every runner has:
  ``batch_size``, ``seed``, ``device``, ``progress``;
- the seeded private generator (:meth:`ModelRunner._generator`; the global RNG is never used);
- the prelude of every call (:meth:`ModelRunner._call`): validate the inputs, check them against
  the model, run the subclass's own checks, bind the targets (output selector, probabilities,
  forward arguments), all before any expensive pass, and keep the model's batch-norm running
  statistics;
- one ``probabilities`` policy (:mod:`pellucid.selectors`): where a subclass offers it, the
  softmax over the class dimension of the selected output, refused before any pass when there is
  no class dimension of at least 2.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

import torch

from ._params import Configurable
from ._scorer import Scorer
from ._validation import check_input_matches_module, check_inputs, check_positive_int, check_seed
from .models import as_model, preserved_running_stats


class ModelRunner(Configurable):
    """Base of whatever runs a model.

    Parameters common to all:
        model: a ``torch.nn.Module`` (logits), a scikit-learn estimator or a numpy callable.
        batch_size: most inputs in one forward pass; bounds memory.
        seed: random seed (same seed, same result; ``None``: fresh randomness each call);
            unused by deterministic methods.
        device: where the model runs; ``None`` = the model's own device.
        progress: show a tqdm bar when the work takes more than one batch.
    """

    _model_arguments = ("model",)
    probabilities = False  # subclasses that offer the choice take it as a keyword

    def __init__(self, model: Any, *, batch_size: int = 64, seed: int | None = 0,
                 device: Any = None, progress: bool = True):
        self.model = model
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.seed = check_seed(seed)
        self.device = device
        self.progress = bool(progress)
        self._model = as_model(model, device=device)

    @contextlib.contextmanager
    def _call(self, x: torch.Tensor, targets: Any = None, forward_kwargs: Any = None
              ) -> Iterator[Scorer]:
        """The prelude of every public entry point, after :meth:`_validate` gave ``x``: yields
        the :class:`~pellucid._scorer.Scorer` of this call; the model's batch-norm running
        statistics are put back when the block ends, even on an exception (see
        :meth:`_running`)."""
        with self._running():
            yield Scorer.bind(self._model, targets, x, probabilities=self.probabilities,
                              forward_kwargs=forward_kwargs, batch_size=self.batch_size)

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        """Around every call that runs the model: forward passes in training mode update
        batch-norm running statistics, which are put back when the block ends, even on an
        exception (pellucid never changes a model); and gradients are enabled whatever the
        caller's context (``torch.no_grad()``, ``torch.inference_mode()``): white-box methods
        need them, and black-box passes set inference mode themselves."""
        with torch.inference_mode(False), torch.enable_grad():
            with preserved_running_stats(self._model.module):
                yield

    def _validate(self, inputs: Any) -> torch.Tensor:
        x = check_inputs(inputs)
        self._check_input_kind(x)
        if self._model.module is not None:
            check_input_matches_module(x, self._model.module)
        self._check_inputs(x)
        return x

    def _check_inputs(self, x: torch.Tensor) -> None:
        """Subclass-specific input checks (e.g. images only); the default accepts both kinds."""

    def _generator(self) -> torch.Generator:
        return seeded_generator(self.seed)


def keeps_model_state(method: Callable) -> Callable:
    """Decorator for the public methods of a runner that do not go through :meth:`_call`: they
    run inside :meth:`ModelRunner._running` too."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._running():
            return method(self, *args, **kwargs)

    return wrapper


def seeded_generator(seed: int | None) -> torch.Generator:
    """A private generator seeded with ``seed`` (``None``: fresh entropy); the global RNG is
    never touched."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator
