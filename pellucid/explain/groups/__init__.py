"""Methods over feature groups (``feature_mask``, :mod:`pellucid.features`): FeatureAblation,
Lime, KernelShap, ShapleyValueSampling."""
