"""Black-box methods that run the model on perturbed copies of each input: Occlusion, RISE and
Sobol attribution (:mod:`.base` holds what RISE and Sobol share)."""
