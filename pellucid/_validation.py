"""Input, target, hyperparameter and heatmap checks with messages that say what was expected
and what came. Every check runs before any expensive work and never changes its argument."""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch
from torch import nn

from ._shap_values import as_heatmap_array

BLACK_BOX_METHODS = "Occlusion, Rise, Sobol, KernelShap, Lime or FeatureAblation"


def as_float_tensor(inputs: Any, name: str = "inputs") -> torch.Tensor:
    """A float tensor view of a tensor or array (the caller's object is never modified)."""
    if isinstance(inputs, torch.Tensor):
        tensor = inputs.detach()
    elif isinstance(inputs, np.ndarray) or isinstance(inputs, (list, tuple)):
        tensor = torch.as_tensor(np.asarray(inputs))
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, "
                        f"got {type(inputs).__name__}")
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int64, torch.int32, torch.uint8)):
        raise TypeError(f"{name} must hold numbers, got dtype {tensor.dtype}")
    return tensor.float() if tensor.dtype != torch.float32 else tensor


def check_inputs(inputs: Any) -> torch.Tensor:
    """Images ``(N, C, H, W)`` or tabular ``(N, F)``, finite, at least one sample."""
    x = as_float_tensor(inputs)
    if x.ndim not in (2, 4):
        raise ValueError(
            f"inputs must be images (N, C, H, W) or tabular (N, F); got shape {tuple(x.shape)} "
            f"(rank {x.ndim}). Add a batch dimension with x[None] for a single sample."
        )
    if len(x) == 0:
        raise ValueError("inputs hold no sample (N = 0)")
    check_finite(x, "inputs")
    return x


def check_finite(x: torch.Tensor, name: str) -> None:
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f"{name} must be finite; found {bad} NaN/inf value(s)")


def require_images(x: torch.Tensor, who: str) -> None:
    """For methods and metrics defined on images only."""
    if x.ndim != 4:
        raise ValueError(f"{who} needs images (N, C, H, W); got inputs of shape "
                         f"{tuple(x.shape)}")


def check_input_matches_module(x: torch.Tensor, module: nn.Module) -> None:
    """Channel / feature count against the Conv2d or Linear layer that runs first, where that
    is known without running the model: the first layer of (nested) ``nn.Sequential``
    containers. Other modules may register their layers in any order (a head declared before
    its body), so they are checked by the first one-sample pass instead (``Scorer.bind``)."""
    layer = module
    while isinstance(layer, nn.Sequential) and len(layer):
        layer = layer[0]
    if isinstance(layer, nn.Conv2d):
        if x.ndim != 4:
            raise ValueError(f"the model starts with a Conv2d and expects images "
                             f"(N, {layer.in_channels}, H, W); got shape {tuple(x.shape)}")
        if x.shape[1] != layer.in_channels:
            raise ValueError(f"the model's first Conv2d expects {layer.in_channels} channels; "
                             f"inputs have {x.shape[1]} (shape {tuple(x.shape)})")
    elif isinstance(layer, nn.Linear) and x.ndim == 2 and x.shape[1] != layer.in_features:
        raise ValueError(f"the model's first Linear layer expects {layer.in_features} "
                         f"features; inputs have {x.shape[1]}")


def check_fits_images(name: str, size: int, x: torch.Tensor) -> None:
    """A grid or patch ``size`` no larger than the images ``x`` (tabular inputs pass)."""
    if x.ndim == 4 and size > min(x.shape[2:]):
        raise ValueError(f"{name}={size} is larger than the images ({x.shape[2]} x "
                         f"{x.shape[3]}); choose {name} <= {min(x.shape[2:])}")


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_non_negative(name: str, value: Any) -> float:
    """A finite number >= 0 (NaN and inf refused: a noise or a scale of inf gives NaN maps)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and (
        0 <= value < float("inf"))
    if not ok:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_probability(name: str, value: Any, open_interval: bool = True) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and (
        0 < value < 1 if open_interval else 0 <= value <= 1)
    if not ok:
        interval = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: tuple) -> Any:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_seed(seed: Any) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"seed must be an int or None, got {seed!r}")
    return None if seed is None else int(seed)


def check_class_indices(name: str, values: Any, n: int, size: int,
                        allow_columns: bool = False) -> torch.Tensor:
    """An int, ``n`` ints or (``allow_columns``) an ``(n, T)`` array of ints in ``[0, size)``;
    returns ``(n, T)`` long."""
    if isinstance(values, bool):
        raise TypeError(f"{name} must be an int or a sequence of {n} ints, got a bool")
    if isinstance(values, (np.ndarray, torch.Tensor)) and values.ndim == 0:
        scalar = np.asarray(values.cpu() if torch.is_tensor(values) else values)
        if scalar.dtype.kind in "iu":  # a 0-d integer array or tensor is one int, not N ints
            values = int(scalar)
    if isinstance(values, numbers.Integral):
        t = torch.full((n, 1), int(values), dtype=torch.long)
    else:
        try:
            t = torch.as_tensor(np.asarray(values.cpu() if torch.is_tensor(values) else values))
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name} must be an int or a sequence of {n} ints, "
                            f"got {type(values).__name__}") from error
        if t.is_floating_point() or t.dtype == torch.bool or t.dtype.is_complex:
            raise TypeError(f"{name} must be integers, got dtype {t.dtype}")
        if t.ndim == 2 and allow_columns:
            if len(t) != n or t.shape[1] == 0:
                raise ValueError(f"{name} as an array must have shape ({n}, T) with T >= 1, one "
                                 f"row per input; got {tuple(t.shape)}")
        elif t.ndim > 1:
            expected = f"({n},) or ({n}, T)" if allow_columns else f"({n},)"
            raise ValueError(f"{name} must have shape {expected}; got {tuple(t.shape)}")
        else:
            t = t.reshape(-1, 1)
            if len(t) != n:
                raise ValueError(f"{name} must hold one class per input: expected {n}, "
                                 f"got {len(t)}")
        t = t.long()
    if t.numel() and (t.min() < 0 or t.max() >= size):
        raise ValueError(f"{name} must be class indices in [0, {size}); got values from "
                         f"{t.min().item()} to {t.max().item()}")
    return t


def check_heatmaps(heatmaps: Any, inputs: torch.Tensor) -> torch.Tensor:
    """Heatmaps ``(N, H, W)`` for images ``(N, C, H, W)`` (``(N, C, H, W)`` is summed over
    channels), ``(N, F)`` for tabular; finite; a ``shap.Explanation`` is read as its values
    (channels-last images summed over channels). Returns float32 CPU."""
    h = as_float_tensor(as_heatmap_array(heatmaps), "heatmaps").cpu()
    if inputs.ndim == 4:
        if h.ndim == 4 and h.shape == inputs.shape:
            h = h.sum(1)
        expected = (inputs.shape[0], inputs.shape[2], inputs.shape[3])
    else:
        expected = tuple(inputs.shape)
    if tuple(h.shape) != tuple(expected):
        raise ValueError(f"heatmaps must have shape {tuple(expected)} to match inputs of shape "
                         f"{tuple(inputs.shape)}; got {tuple(h.shape)}")
    check_finite(h, "heatmaps")
    return h


def check_white_box(model: Any, method: str) -> nn.Module:
    """White-box methods need gradients, so a Module."""
    from .models import Model
    module = model.module if isinstance(model, Model) else model
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"{method} needs the gradients of a torch.nn.Module; got {type(model).__name__}. "
            f"For scikit-learn estimators or numpy callables use a black-box method: "
            f"{BLACK_BOX_METHODS}."
        )
    return module
