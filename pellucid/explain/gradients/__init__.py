"""Gradient attribution methods: Saliency, GradientInput, IntegratedGradients, SmoothGrad,
VarGrad, SquareGrad.

All are one computation, :class:`AggregatedGradients`: the gradient of the target score at
``K`` copies of each input (the input itself, noisy samples, or points on a path), summed with
one weight per copy, then turned into attributions. The ``N * K`` copies share one index space
and are built one batch at a time, so memory is bounded by ``batch_size`` (plus the running
sums, one input-sized tensor per statistic), never by ``nb_samples`` or ``steps``.

Channel rules for images (tabular ``(N, F)`` attributions are returned as computed):

=====================  ==============================  ========================================
method                 attribution before reduction     channels -> pixel
=====================  ==============================  ========================================
Saliency               ``|g|``                          max (Simonyan et al.)
SmoothGrad             ``|E[g(x + noise)]|``            max, as Saliency (noise 0 = Saliency)
GradientInput          ``x * g``                        sum (keeps ``sum = f(x)`` for linear f)
IntegratedGradients    ``(x - b) * mean path gradient`` sum (keeps completeness)
SquareGrad             ``E[g(x + noise) ** 2]``         mean (non-negative)
VarGrad                ``Var[g(x + noise)]``            mean (non-negative)
=====================  ==============================  ========================================
"""
