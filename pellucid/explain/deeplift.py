"""DeepLIFT (Shrikumar, Greenside, Kundaje, 2017) and its multi-baseline form, DeepLIFT-SHAP
(Lundberg & Lee, 2017).

DeepLIFT explains ``f(x) - f(x0)`` for a reference ``x0`` (the ``baseline``): contributions
``C_i = (x_i - x0_i) * m_i`` with multipliers ``m`` back-propagated by the chain rule, in which
every nonlinearity's derivative is replaced by a ratio of differences:

- Rescale: ``m = (f(x) - f(x0)) / (x - x0)`` (``f'(x)`` when ``|x - x0| <= 1e-10``);
- RevealCancel (paper Sec. 3.5.3): the positive and negative parts ``dx+`` and ``dx-`` of the
  difference reaching a nonlinearity get separate multipliers ``dy+/dx+`` and ``dy-/dx-`` with
  ``dy+ = 1/2 (f(x0 + dx+) - f(x0)) + 1/2 (f(x0 + dx- + dx+) - f(x0 + dx-))`` and symmetrically
  for ``dy-``; linear layers split ``w_i dx_i`` by sign (Sec. 3.5.1) and propagate the two
  multipliers separately (details in ``_deeplift_layouts``).

Linear operations (Linear, Conv, eval-mode BatchNorm, average pooling, additions, reshapes)
keep their gradient, which is the linear rule. Max pooling uses Captum's rule (the difference of
the window maxima is sent to the arg-max of the input and of the reference), which keeps the sum
exact; at ties (a window of ReLU zeros) the arg-max is torch's, as for the gradient. Every rule
here satisfies summation-to-delta: ``sum_i C_i = f(x) - f(x0)`` for the target logit.
The elementwise nonlinearities with a rule are listed in ``_deeplift_mode.ELEMENTWISE`` (ReLU,
ReLU6, LeakyReLU, ELU, SELU, CELU, GELU, SiLU, Mish, Softplus, sigmoid, tanh, hard variants,
clamp). Operations without a rule are differentiated as they are and the sum is then only
approximate: softmax, layer/group norm (these warn), products of activations, and anything that
reuses indices computed from the input (``max_unpool`` fed with a pooling's indices). Explain a
model that returns logits.

Heatmaps: ``C`` summed over channels for images ``(N, H, W)`` (so a heatmap still sums to
``f(x) - f(x0)``), ``C`` itself for tabular inputs ``(N, F)``.

Why no module hooks. Captum and shap attach the rules to backward hooks of ``nn.ReLU``-like
modules and keep each module's input and output on the module. That breaks when the activation
is a function call (``F.relu``, ``torch.relu``: no module, no hook, the plain gradient is used
and the sum misses ``f(x) - f(x0)``), when one module object is called several times (the
tensors stored by one call are overwritten by the next), and when the ReLU works in place (the
stored input is overwritten) -- the last two are what residual blocks usually do (torchvision's
``BasicBlock`` calls one in-place ``self.relu`` before and after ``out + identity``).
Here the rules live in the autograd graph instead:

1. The input and its reference run through the model in one batch (``[x ; x0]``, for
   RevealCancel ``[x0 ; x ; x0 + dx+ ; x0 + dx-]``), so every activation carries its reference.
2. While the model runs, a ``torch.overrides.TorchFunctionMode`` (a context manager, left even
   when the forward raises) sees every torch function call, however it is written, and runs each
   nonlinearity as a ``torch.autograd.Function`` whose forward is the normal function and whose
   backward returns the DeepLIFT multiplier of *that call*, computed from the input and
   reference rows of *its own* input. Each call is its own graph node, so a reused module is
   simply several nodes; an in-place call is executed out of place and copied back, and the node
   saves only multipliers, so later in-place writes cannot corrupt it; a residual addition is an
   ordinary linear node.
3. One ``torch.autograd.grad`` of the target score w.r.t. ``x - x0`` then yields the multipliers.
Nothing of the model (parameters, hooks, modes, ``requires_grad``) is changed. The model must
keep the batch as the first dimension of its activations (the stacked rows are told apart by it)
and be in eval mode (batch statistics would mix inputs and references; a warning says so).
"""
from __future__ import annotations

from typing import Any

import torch

from .._baselines import check_baseline, make_baseline
from .._batching import iter_slices
from .._validation import as_float_tensor, check_choice, check_finite
from ._deeplift_layouts import LAYOUTS
from ._deeplift_mode import DeepLiftMode
from .base import WhiteBoxExplainer, reduce_channels

RULES = tuple(LAYOUTS)


class _DeepLiftBase(WhiteBoxExplainer):
    """Attributions averaged over (input, reference) pairs; subclasses choose the pairs."""

    def __init__(self, model: Any, *, rule: str = "rescale", **common: Any):
        super().__init__(model, **common)
        self.rule = check_choice("rule", rule, RULES)

    def _pairs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(references, input index, reference index)`` of every pair."""
        raise NotImplementedError

    def _explain(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return reduce_channels(self._attributions(x, targets), "sum")

    def _attributions(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Contributions ``(x - x0) * m`` with the input's shape, averaged over each input's
        pairs. A pass holds ``batch_size // streams`` pairs of 2 or 4 rows (at least one pair)."""
        x = x.cpu()
        references, inputs_of, references_of = self._pairs(x)
        pairs_per_pass = max(1, self.batch_size // LAYOUTS[self.rule].streams)
        total = torch.zeros_like(x)
        for s in iter_slices(len(inputs_of), pairs_per_pass, self.progress,
                             desc=type(self).__name__):
            i = inputs_of[s]
            total.index_add_(0, i, self._pass(x[i], references[references_of[s]], targets[i]))
        counts = torch.bincount(inputs_of, minlength=len(x)).to(x.dtype)
        return total / counts.view(-1, *[1] * (x.ndim - 1))

    def _pass(self, x: torch.Tensor, x0: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        layout = LAYOUTS[self.rule]
        device = self._model.device
        delta = (x - x0).to(device).requires_grad_(True)
        stacked = layout.build(x0.to(device), delta)
        with DeepLiftMode(layout, rows=len(stacked)):
            outputs = self._model.forward_with_grad(stacked)
        scores = layout.target_scores(outputs.reshape(len(stacked), -1), targets.to(device))
        (multipliers,) = torch.autograd.grad(scores.sum(), delta)
        return (delta * multipliers).detach().float().cpu()


class DeepLift(_DeepLiftBase):
    """DeepLIFT (Shrikumar et al., 2017): ``C_i = (x_i - x0_i) m_i`` with Rescale or
    RevealCancel multipliers; ``sum_i C_i = f_c(x) - f_c(x0)``. See the module docstring.

    Parameters:
        baseline: the reference ``x0``: a number, a tensor broadcastable to the inputs,
            ``"blur"`` or ``"mean"`` (see ``pellucid._baselines``).
        rule: ``"rescale"`` or ``"reveal_cancel"``.
        **common: ``batch_size`` (rows per pass; each input takes 2, or 4 with RevealCancel),
            ``device``, ``progress`` (``seed`` is unused: the method is deterministic).

    Heatmaps: contributions summed over channels ``(N, H, W)``; ``(N, F)`` for tabular inputs.
    """

    def __init__(self, model: Any, *, baseline: Any = 0.0, rule: str = "rescale",
                 **common: Any):
        super().__init__(model, rule=rule, **common)
        self.baseline = check_baseline(baseline)

    def _check_inputs(self, x: torch.Tensor) -> None:
        make_baseline(self.baseline, x)  # shape and kind, early (finiteness: check_baseline)

    def _pairs(self, x):
        index = torch.arange(len(x))
        return make_baseline(self.baseline, x), index, index


class DeepLiftShap(_DeepLiftBase):
    """DeepLIFT-SHAP (Lundberg & Lee, 2017): the mean over ``background`` samples ``b`` of
    single-reference DeepLIFT, ``C_i = mean_b (x_i - b_i) m_i(x, b)``, an estimate of the
    Shapley values of ``f_c`` with the background as the reference distribution;
    ``sum_i C_i = f_c(x) - mean_b f_c(b)``.

    Parameters:
        background: reference inputs ``(B, C, H, W)`` or ``(B, F)``, same sample shape as the
            inputs. Every (input, background sample) pair is one DeepLIFT pass, batched.
        rule: ``"rescale"`` or ``"reveal_cancel"``.
        **common: as :class:`DeepLift`.

    Heatmaps: contributions summed over channels ``(N, H, W)``; ``(N, F)`` for tabular inputs.
    """

    def __init__(self, model: Any, *, background: Any, rule: str = "rescale", **common: Any):
        super().__init__(model, rule=rule, **common)
        self.background = background
        sample = as_float_tensor(background, "background")
        if sample.ndim not in (2, 4) or len(sample) == 0:
            raise ValueError("background must hold reference inputs (B, C, H, W) or (B, F) with "
                             f"B >= 1; got shape {tuple(sample.shape)}")
        check_finite(sample, "background")

    def _background(self) -> torch.Tensor:
        return as_float_tensor(self.background, "background").cpu()

    def _check_inputs(self, x: torch.Tensor) -> None:
        shape = tuple(self._background().shape)
        if shape[1:] != tuple(x.shape[1:]):
            raise ValueError(f"background samples must have the inputs' sample shape "
                             f"{tuple(x.shape[1:])}; got background of shape {shape}")

    def _pairs(self, x):
        background = self._background()
        n, b = len(x), len(background)
        return background, torch.arange(n).repeat_interleave(b), torch.arange(b).repeat(n)
