"""Scores of a concept set ``A ~ U W + offset`` (Fel et al., 2023, "A Holistic Approach ...";
Zhang et al., 2021, ICE), accumulated batch by batch:

- ``reconstruction_error``: relative Frobenius error ``||A - U W - offset||_F / ||A||_F``;
- ``sparsity``: fraction of near-zero coefficients, ``|u_ij| <= tol * max_j |u_ij|`` (row-wise);
- ``hoyer_sparsity``: mean over rows of ``(sqrt(R) - |u|_1 / |u|_2) / (sqrt(R) - 1)`` in
  ``[0, 1]`` (Hoyer, 2004; 1 = one active concept; a zero row counts as 1);
- ``fidelity``: bottleneck fidelity, the fraction of inputs whose predicted class is the same
  through the concepts, ``argmax h(U W + offset) == argmax h(A)``.
"""
from __future__ import annotations

import math

import torch

SPARSITY_TOLERANCE = 1e-3


def hoyer(coefficients: torch.Tensor) -> torch.Tensor:
    """Hoyer sparsity of each row of ``(n, R)`` coefficients, ``(n,)``."""
    r = coefficients.shape[1]
    if r == 1:
        return torch.ones(len(coefficients), dtype=torch.float64)
    u = coefficients.double()
    l1, l2 = u.abs().sum(1), u.norm(dim=1)
    ratio = torch.where(l2 > 0, l1 / l2.clamp_min(1e-300), torch.ones_like(l1))
    return (math.sqrt(r) - ratio) / (math.sqrt(r) - 1)


class ConceptScores:
    """Accumulates the scores above over batches; ``result()`` returns them as floats."""

    def __init__(self, tol: float = SPARSITY_TOLERANCE):
        self.tol = tol
        self.squared_error = self.squared_norm = 0.0
        self.near_zero = self.n_coefficients = 0
        self.hoyer_sum, self.n_rows = 0.0, 0
        self.agree = self.n_inputs = 0

    def update_reconstruction(self, activations: torch.Tensor,
                              reconstruction: torch.Tensor) -> None:
        a, a_hat = activations.double(), reconstruction.double()
        self.squared_error += float(((a - a_hat) ** 2).sum())
        self.squared_norm += float((a**2).sum())

    def update_coefficients(self, coefficients: torch.Tensor) -> None:
        """``coefficients`` ``(n, R)``: one row per activation vector."""
        u = coefficients.double().abs()
        row_max = u.amax(dim=1, keepdim=True)
        self.near_zero += int((u <= self.tol * row_max).sum())
        self.n_coefficients += u.numel()
        self.hoyer_sum += float(hoyer(coefficients).sum())
        self.n_rows += len(u)

    def update_predictions(self, logits: torch.Tensor, logits_through_concepts: torch.Tensor
                           ) -> None:
        self.agree += int((logits.argmax(1) == logits_through_concepts.argmax(1)).sum())
        self.n_inputs += len(logits)

    def result(self) -> dict[str, float]:
        nan = float("nan")
        return {
            "reconstruction_error": (math.sqrt(self.squared_error / self.squared_norm)
                                     if self.squared_norm > 0 else nan),
            "sparsity": self.near_zero / self.n_coefficients if self.n_coefficients else nan,
            "hoyer_sparsity": self.hoyer_sum / self.n_rows if self.n_rows else nan,
            "fidelity": self.agree / self.n_inputs if self.n_inputs else nan,
        }


def reconstruction_error(activations, reconstruction) -> float:
    """``||A - A_hat||_F / ||A||_F``."""
    scores = ConceptScores()
    scores.update_reconstruction(torch.as_tensor(activations), torch.as_tensor(reconstruction))
    return scores.result()["reconstruction_error"]


def sparsity(coefficients, tol: float = SPARSITY_TOLERANCE) -> float:
    """Fraction of coefficients with ``|u_ij| <= tol * max_j |u_ij|``."""
    scores = ConceptScores(tol)
    scores.update_coefficients(torch.as_tensor(coefficients))
    return scores.result()["sparsity"]


def hoyer_sparsity(coefficients) -> float:
    """Mean Hoyer sparsity of the rows of ``(n, R)`` coefficients."""
    return float(hoyer(torch.as_tensor(coefficients)).mean())


def bottleneck_fidelity(logits, logits_through_concepts) -> float:
    """Fraction of inputs with ``argmax`` unchanged through the concept bottleneck."""
    scores = ConceptScores()
    scores.update_predictions(torch.as_tensor(logits), torch.as_tensor(logits_through_concepts))
    return scores.result()["fidelity"]
