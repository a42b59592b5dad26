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
  multipliers separately (details in ``layouts``).

Which operation gets which rule (each keeps summation-to-delta, ``sum_i C_i = f(x) - f(x0)``
for the target score, exactly unless said otherwise):

- linear operations (Linear, Conv incl. depthwise, eval-mode BatchNorm, average pooling,
  additions, concatenation, reshapes, ``permute``, ``torch.roll``, layer scale, stochastic
  depth in eval, products and matmuls with a weight): their gradient, which is the linear rule;
- elementwise nonlinearities, listed in ``mode.ELEMENTWISE`` (ReLU, ReLU6, LeakyReLU, ELU,
  SELU, CELU, GELU, SiLU, Mish, Softplus, sigmoid, tanh, hard variants incl. hardswish, clamp,
  exp, log, sqrt, rsqrt, reciprocal, square, pow, erf, abs): Rescale or RevealCancel;
- max pooling: Captum's rule (the difference of the window maxima is sent to the arg-max of the
  input and of the reference; at ties the arg-max is torch's, as for the gradient);
- products of two input-dependent tensors (``*``, ``@``, ``matmul``, ``bmm``, two-operand
  ``einsum`` with the batch first; SE gating, attention's ``q k^T`` and ``A v``): the product
  rule ``d(ab) = a_mean db + b_mean da`` with ``a_mean = (a + a0) / 2`` (``rules.bilinear``);
  a division by one is a product with its reciprocal;
- LayerNorm, GroupNorm, InstanceNorm (batch statistics), RMSNorm, softmax, log-softmax,
  ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention``: written as compositions
  of the three rules above (``composites``), so exact as well;
- ``F.normalize``, vector norms, ``logsumexp``, ``F.local_response_norm``: the fallback for
  operations without a closed rule, the operation's Jacobian averaged along the segment from
  the reference to the input (16-node Gauss-Legendre; ``rules.averaged_jacobian``): exact up to
  the quadrature error (4e-7 relative measured in the tests), not at kinks or singularities.

With RevealCancel, the last three groups use the Rescale-style rule on ``(x, x0)`` and split
their output difference by sign again (``layouts.RevealCancelLayout``). Operations not listed
are differentiated as they are and the sum is then only approximate: ``max``/``amax``
reductions, sorting, anything that reuses indices computed from the input (``max_unpool`` fed
with a pooling's indices), attention with dropout, ``nn.MultiheadAttention`` with ``bias_k``,
``add_zero_attn`` or static keys (these warn).

An operand is taken as input-dependent when it was computed with gradients (not a leaf such as a
parameter) and its first dimension is a multiple of the stacked rows (Swin's windows, attention
heads): a parameter-derived tensor laid out like that would be mistaken for one. float16 and
bfloat16 models are explained through a float32 copy (``base.full_precision``); float64 models
run in float64.

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
keep the batch as the first dimension of its activations, or of their windows and heads (the
stacked rows are told apart by it; ``nn.MultiheadAttention``'s sequence-first layout is handled)
and be in eval mode (batch statistics would mix inputs and references; a warning says so).
"""
