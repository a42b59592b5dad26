"""Concept-based explanations: CRAFT (Fel et al., 2023) with its recursion, the holistic family
of factorizations, concept importance estimators and concept metrics (Fel et al., 2023), TCAV
(Kim et al., 2018) and ACE (Ghorbani et al., 2019), at any layer split by ``torch.fx``."""
from .craft import Craft
from .factorization import (FACTORIZATIONS, ConceptFactorization, DictionaryConcepts,
                            ICAConcepts, KMeansConcepts, NMFConcepts, NotFittedError, PCAConcepts,
                            encode_differentiable, make_factorization)
from .importance import (IMPORTANCE_METHODS, gradient_input_importance, occlusion_importance,
                         sobol_importance)
from .metrics import (ConceptScores, bottleneck_fidelity, hoyer_sparsity, reconstruction_error,
                      sparsity)
from .modules import ConceptHead, ConceptMaskModel, ConceptModel, split_sequential
from .ace import Ace, AceResult
from .recursion import ConceptNode, active_crops, concept_tree
from .split import LayerSplit, split_model
from .tcav import Tcav, TcavResult

__all__ = [
    "Craft", "ConceptFactorization", "NMFConcepts", "PCAConcepts", "ICAConcepts",
    "KMeansConcepts", "DictionaryConcepts", "FACTORIZATIONS", "make_factorization",
    "encode_differentiable", "NotFittedError", "IMPORTANCE_METHODS", "sobol_importance",
    "occlusion_importance", "gradient_input_importance", "ConceptScores", "reconstruction_error",
    "sparsity", "hoyer_sparsity", "bottleneck_fidelity", "ConceptHead", "ConceptModel",
    "ConceptMaskModel", "split_sequential", "LayerSplit", "split_model", "Tcav", "TcavResult",
    "ConceptNode", "concept_tree", "active_crops", "Ace", "AceResult",
]
