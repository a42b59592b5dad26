"""Concept-based explanations: CRAFT (Fel et al., 2023) and the holistic family of
factorizations and concept importance estimators (Fel et al., 2023)."""
from .craft import Craft
from .factorization import (FACTORIZATIONS, ConceptFactorization, DictionaryConcepts,
                            ICAConcepts, KMeansConcepts, NMFConcepts, NotFittedError, PCAConcepts,
                            encode_differentiable, make_factorization)
from .importance import (IMPORTANCE_METHODS, gradient_input_importance, occlusion_importance,
                         sobol_importance)
from .metrics import (ConceptScores, bottleneck_fidelity, hoyer_sparsity, reconstruction_error,
                      sparsity)
from .modules import ConceptHead, ConceptModel, split_sequential

__all__ = [
    "Craft", "ConceptFactorization", "NMFConcepts", "PCAConcepts", "ICAConcepts",
    "KMeansConcepts", "DictionaryConcepts", "FACTORIZATIONS", "make_factorization",
    "encode_differentiable", "NotFittedError", "IMPORTANCE_METHODS", "sobol_importance",
    "occlusion_importance", "gradient_input_importance", "ConceptScores", "reconstruction_error",
    "sparsity", "hoyer_sparsity", "bottleneck_fidelity", "ConceptHead", "ConceptModel",
    "split_sequential",
]
