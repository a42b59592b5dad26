"""ROAR and KAR: RemOve And Retrain / Keep And Retrain (Hooker, Erhan, Kindermans, Kim, 2019,
"A Benchmark for Interpretability Methods in Deep Neural Networks"; reference code
google-research/interpretability_benchmark).

A model is trained on the original data with the user's ``train_fn``, and the explainer factory
(:mod:`pellucid.procedures.base`) explains every training and test input for its true label.
Then, for every fraction ``f``, the top ``round(f * P)`` pixels (all channels of a pixel
together) or features of every training and test input, ranked by that input's heatmap, are
replaced by the training set's mean (per channel for images, per feature for tabular data): ROAR
replaces the top-ranked ones, KAR all the others (it keeps the top). A fresh model is trained
from scratch on the modified training set with the user's ``train_fn`` and its accuracy measured
on the modified test set, ``repeats`` times. The same is done with a random ranking (one random
permutation per input, drawn once from ``seed``): an explanation is informative only if ROAR
accuracy falls faster (KAR accuracy stays higher) than with the random ranking. Rankings are
computed once and reused for every fraction and repeat.

The result is about the dataset, not about single inputs: ``curves`` is ``(repeats, S)`` test
accuracy, ``scores`` the normalized area under each repeat's curve (so a "sample" here is a
retraining run), ``details`` the per-fraction mean and std and the same for the random ranking.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._batching import predict_batched
from .._runner import seeded_generator
from .._scoring import check_fractions, descending_ranks, trapezoid_auc
from .._validation import check_inputs, check_positive_int, check_seed
from ..metrics import MetricResult
from ..models import as_model
from ..zoo import fit_from_scratch
from .base import Procedure


def check_labels(labels: Any, n: int, name: str) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(labels.cpu() if torch.is_tensor(labels) else labels))
    if y.is_floating_point() or y.dtype == torch.bool or y.ndim != 1 or len(y) != n:
        raise ValueError(f"{name} must be {n} integer class labels (one per input); got "
                         f"dtype {y.dtype} and shape {tuple(y.shape)}")
    return y.long()


def accepts_seed(function: Callable) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "seed" or p.kind == p.VAR_KEYWORD for p in parameters)


class _Retraining(Procedure):
    """ROAR and KAR; subclasses set ``name``, ``higher_is_better`` and ``keeps_top``.

    Parameters:
        train_fn: ``train_fn(x_train, y_train) -> fitted model`` (a torch Module returning
            logits, a scikit-learn classifier or a callable); it gets numpy arrays if
            ``x_train`` was one, else tensors, and ``seed=`` (``seed + repeat``) when its
            signature has a ``seed`` parameter.
        explainer, explainer_kwargs: the explainer factory, applied to the model trained on
            the original data (``seed``) with the true labels as targets.
        fractions: increasing fractions of pixels/features removed (kept for KAR).
        repeats: trainings per fraction and ranking.
        seed: seed of the random ranking and of the trainings.
        batch_size: most inputs per forward pass when measuring accuracy.
        progress: print nothing when False; a tqdm bar over the trainings otherwise.
    """

    keeps_top = False
    _model_arguments = ("train_fn", "explainer")

    def __init__(self, train_fn: Callable, explainer: Any, *, explainer_kwargs: dict | None = None,
                 fractions: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                 repeats: int = 3, seed: int | None = 0, batch_size: int = 256,
                 progress: bool = True):
        if not callable(train_fn):
            raise TypeError(f"train_fn must be callable (x_train, y_train) -> fitted model; "
                            f"got {type(train_fn).__name__}")
        self._check_explainer(explainer, explainer_kwargs)
        self.train_fn = train_fn
        self.explainer = explainer
        self.explainer_kwargs = explainer_kwargs
        self.fractions = check_fractions("fractions", fractions)
        self.repeats = check_positive_int("repeats", repeats)
        self.seed = check_seed(seed)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.progress = bool(progress)

    def evaluate(self, x_train: Any, y_train: Any, x_test: Any, y_test: Any) -> MetricResult:
        """Explain, then retrain on inputs degraded along the heatmaps; see the module
        docstring."""
        xs, ys, as_numpy, ranks, fill = self._prepare(x_train, y_train, x_test, y_test)
        generator = seeded_generator(self.seed)
        rankings = {"explanation": ranks,
                    "random": {part: torch.rand(ranks[part].shape, generator=generator).argsort(1)
                               for part in ranks}}
        bar = tqdm(total=2 * len(self.fractions) * self.repeats, desc=self.name,
                   disable=not self.progress, leave=False)
        accuracies = {name: self._accuracies(xs, ys, as_numpy, ranking, fill, bar)
                      for name, ranking in rankings.items()}
        bar.close()
        fractions = np.asarray(self.fractions)
        details = {"accuracy_mean": accuracies["explanation"].mean(0),
                   "accuracy_std": accuracies["explanation"].std(0),
                   "random_curves": accuracies["random"],
                   "random_accuracy_mean": accuracies["random"].mean(0),
                   "random_accuracy_std": accuracies["random"].std(0),
                   "random_scores": trapezoid_auc(accuracies["random"], fractions)}
        return MetricResult(self.name, trapezoid_auc(accuracies["explanation"], fractions),
                            curves=accuracies["explanation"], fractions=fractions,
                            higher_is_better=self.higher_is_better, details=details)

    __call__ = evaluate

    def _prepare(self, x_train: Any, y_train: Any, x_test: Any, y_test: Any) -> tuple:
        """Checked inputs and labels ``{"train": ..., "test": ...}``, whether the user passed
        numpy arrays, the ``(N, P)`` :func:`descending_ranks` of each split's heatmaps (model
        trained on the original data, true labels as targets), and the training mean."""
        as_numpy = isinstance(x_train, np.ndarray)
        xs = {"train": check_inputs(x_train), "test": check_inputs(x_test)}
        if xs["train"].shape[1:] != xs["test"].shape[1:]:
            raise ValueError(f"x_test inputs {tuple(xs['test'].shape[1:])} differ from x_train "
                             f"inputs {tuple(xs['train'].shape[1:])}")
        ys = {"train": check_labels(y_train, len(xs["train"]), "y_train"),
              "test": check_labels(y_test, len(xs["test"]), "y_test")}
        model = self._train(xs["train"], ys["train"], as_numpy, repeat=0)
        ranks = {part: descending_ranks(self._heatmaps(model, xs[part], ys[part]))
                 for part in xs}
        fill = xs["train"].mean(dim=(0, 2, 3) if xs["train"].ndim == 4 else 0, keepdim=True)
        return xs, ys, as_numpy, ranks, fill

    def _accuracies(self, xs: dict, ys: dict, as_numpy: bool, ranks: dict, fill: torch.Tensor,
                    bar: Any) -> np.ndarray:
        """``(repeats, S)`` test accuracy of models retrained on the splits degraded along
        ``ranks`` (:meth:`_degrade`) at every fraction."""
        accuracies = np.empty((self.repeats, len(self.fractions)))
        for j, fraction in enumerate(self.fractions):
            degraded = {part: self._degrade(xs[part], ranks[part], fraction, fill)
                        for part in xs}
            for repeat in range(self.repeats):
                model = self._train(degraded["train"], ys["train"], as_numpy, repeat)
                accuracies[repeat, j] = self._accuracy(model, degraded["test"], ys["test"])
                bar.update()
        return accuracies

    def _degrade(self, x: torch.Tensor, ranks: torch.Tensor, fraction: float,
                 fill: torch.Tensor) -> torch.Tensor:
        """``x`` with the top ``round(fraction * P)`` ranked pixels/features replaced by
        ``fill`` (ROAR), or all the others (KAR)."""
        count = int(round(fraction * ranks.shape[1]))
        replaced = (ranks >= count) if self.keeps_top else (ranks < count)
        replaced = replaced.view(len(x), 1, *x.shape[2:]) if x.ndim == 4 else replaced
        return torch.where(replaced, fill, x)

    def _train(self, x: torch.Tensor, y: torch.Tensor, as_numpy: bool, repeat: int) -> Any:
        args = (x.numpy(), y.numpy()) if as_numpy else (x, y)
        if accepts_seed(self.train_fn):
            seed = None if self.seed is None else self.seed + repeat
            return self.train_fn(*args, seed=seed)
        return self.train_fn(*args)

    def _accuracy(self, fitted: Any, x: torch.Tensor, y: torch.Tensor) -> float:
        scores = predict_batched(as_model(fitted), x, batch_size=self.batch_size)
        predicted = scores.argmax(1)
        classes = getattr(fitted, "classes_", None)
        if classes is not None:
            predicted = torch.as_tensor(np.asarray(classes)[predicted.numpy()])
        return float((predicted == y).double().mean())


class Roar(_Retraining):
    """ROAR (Hooker et al., 2019): remove the top-ranked fraction, retrain, test accuracy; a
    steeper fall than the random ranking's is better (``higher_is_better=False``)."""

    name = "roar"
    higher_is_better = False


class Kar(_Retraining):
    """KAR (Hooker et al., 2019): keep only the top-ranked fraction, retrain, test accuracy;
    higher is better."""

    name = "kar"
    higher_is_better = True
    keeps_top = True


def train_small_cnn(x: Any, y: Any, *, seed: int | None = 0, epochs: int = 30,
                    learning_rate: float = 1e-2, batch_size: int = 64) -> nn.Module:
    """Train a small CNN (conv 16 - conv 16 - 4x4 average pool - linear) from scratch with Adam
    and cross-entropy on images ``(N, C, H, W)`` and integer labels; a ready ``train_fn`` for
    :class:`Roar`/:class:`Kar` on small images (seconds on a CPU). The global RNG is left as it
    was. Returns the model in eval mode (:func:`pellucid.zoo.fit_from_scratch`)."""
    channels, n_classes = np.shape(x)[1], int(np.max(np.asarray(y))) + 1
    return fit_from_scratch(
        lambda: nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(),
                              nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, n_classes)),
        x, y, epochs=epochs, lr=learning_rate, batch_size=batch_size, seed=seed)
