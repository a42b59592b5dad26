"""Concept extraction as dictionary learning: activations ``A (n, C) ~ U W + offset``.

``W`` ``(n_concepts, C)`` holds one concept (a direction in activation space) per row and ``U``
``(n, n_concepts)`` the coefficients of each activation vector. Fel et al. (2023), "A Holistic
Approach to Unifying Automatic Concept Extraction and Concept Importance Estimation", cast
CRAFT's NMF and the usual alternatives as constraints on ``(U, W)``:

- ``"nmf"``: ``U >= 0, W >= 0`` (CRAFT; Fel et al., 2023); the activations must be >= 0.
- ``"pca"``: rows of ``W`` orthonormal, ``U = (A - mean) W^T``; ``offset`` = the mean.
- ``"ica"``: FastICA on PCA-whitened activations, ``U`` = the independent (unit-variance)
  sources, ``W`` = the mixing matrix; ``offset`` = the mean.
- ``"kmeans"``: ``U`` one-hot (the nearest centroid), ``W`` = the centroids.
- ``"dictionary"``: sparse codes, ``min 0.5 ||A - U W||^2 + alpha |U|_1`` with atoms in the
  unit ball, fitted on ``A / rms(A)`` so ``alpha`` is scale-free.

Every factorization has one interface: ``fit(A) -> U``, ``transform(A) -> U``,
``inverse_transform(U) = U W + offset``, ``components_`` (``W``) and ``offset_``.

``encode_differentiable(a, factorization)`` computes ``U`` with the exact solver and back-
propagates by implicit differentiation on the active set ``S`` of each row (the non-zero
coefficients of NMF / sparse codes, all coefficients of PCA / ICA): from the optimality
condition ``W_S (W_S^T u_S - a) + r = 0`` (``r`` constant on ``S``),
``du_S / da = (W_S W_S^T)^{-1} W_S``. This is exact for PCA and ICA, and the implicit
gradient of the NNLS / lasso solution for NMF and sparse codes. KMeans assignments are
piecewise constant and have no useful gradient.
"""
from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF, PCA, FastICA
from sklearn.exceptions import ConvergenceWarning

from ..._validation import check_positive_int, check_seed
from ..._params import Configurable
from ._sparse_coding import lasso_codes, learn_dictionary


class NotFittedError(RuntimeError):
    """A concept method was used before ``fit``."""


def check_non_negative_activations(activations, method: str) -> None:
    """ValueError when activations (an array or tensor) have a negative value."""
    size = activations.numel() if isinstance(activations, torch.Tensor) else np.size(activations)
    minimum = float(activations.min()) if size else 0.0
    if minimum < 0:
        raise ValueError(
            f"{method} needs non-negative activations (g must end after a ReLU or another "
            f"non-negative layer); got a minimum of {minimum:.4g}. Split the model after a "
            f"ReLU, or choose factorization='pca', 'ica', 'kmeans' or 'dictionary'.")


class ConceptFactorization(Configurable):
    """Base of the factorizations; subclasses implement ``_fit`` and ``_transform``.

    Attributes after ``fit``: ``components_`` ``(n_concepts, C)`` float64, ``offset_`` ``(C,)``.
    """

    name = "abstract"
    requires_non_negative = False   # activations (and U, W) must be >= 0
    sparse_codes = False            # the active set of a row is its non-zero coefficients
    differentiable = True           # implicit differentiation of U w.r.t. A is meaningful
    overcomplete_allowed = True     # n_concepts may exceed the number of channels

    def __init__(self, n_concepts: int = 10, *, seed: int | None = 0):
        self.n_concepts = check_positive_int("n_concepts", n_concepts)
        self.seed = check_seed(seed)

    # -- public interface ----------------------------------------------------------------
    def fit(self, activations: Any) -> np.ndarray:
        """Fit on ``A (n, C)``; returns the coefficients ``U (n, n_concepts)``."""
        a = self._check_activations(activations)
        self.check_channels(a.shape[1])
        if len(a) < self.n_concepts:
            raise ValueError(f"need at least n_concepts={self.n_concepts} activation vectors to "
                             f"fit; got {len(a)}. Pass more images or more crops per image.")
        self.offset_ = np.zeros(a.shape[1])
        with warnings.catch_warnings():
            # scikit-learn's iterative solvers warn at max_iter; the reconstruction error
            # (pellucid.explain.concepts.metrics) is what tells whether the fit is good
            warnings.simplefilter("ignore", ConvergenceWarning)
            coefficients = self._fit(a)
        return np.asarray(coefficients, dtype=np.float64)

    def check_channels(self, channels: int) -> None:
        """ValueError when ``n_concepts`` exceeds ``channels`` for a factorization that
        cannot be overcomplete (PCA, ICA)."""
        if not self.overcomplete_allowed and self.n_concepts > channels:
            raise ValueError(f"{self.name} extracts at most as many concepts as there are "
                             f"channels: n_concepts={self.n_concepts} > {channels} channels. "
                             f"Lower n_concepts or use 'nmf', 'kmeans' or 'dictionary'.")

    def transform(self, activations: Any) -> np.ndarray:
        """Coefficients ``U (n, n_concepts)`` of new activations (``W`` fixed)."""
        self._check_fitted()
        a = self._check_activations(activations)
        if a.shape[1] != self.components_.shape[1]:
            raise ValueError(f"activations must have {self.components_.shape[1]} channels "
                             f"(as in fit); got {a.shape[1]}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return np.asarray(self._transform(a), dtype=np.float64)

    def inverse_transform(self, coefficients):
        """Reconstructed activations ``U W + offset`` (numpy in, numpy out; torch likewise)."""
        self._check_fitted()
        if isinstance(coefficients, torch.Tensor):
            w = torch.as_tensor(self.components_, dtype=coefficients.dtype,
                                device=coefficients.device)
            offset = torch.as_tensor(self.offset_, dtype=coefficients.dtype,
                                     device=coefficients.device)
            return coefficients @ w + offset
        return np.asarray(coefficients) @ self.components_ + self.offset_

    def support(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Boolean active set of each row of ``U`` used by implicit differentiation."""
        if self.sparse_codes:
            return coefficients != 0
        return torch.ones_like(coefficients, dtype=torch.bool)

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "components_")

    # -- helpers -------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit first")

    def _check_activations(self, activations: Any) -> np.ndarray:
        if isinstance(activations, torch.Tensor):
            activations = activations.detach().cpu().numpy()
        a = np.asarray(activations, dtype=np.float64)
        if a.ndim != 2:
            raise ValueError(f"activations must be a matrix (n, channels); got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("activations must be finite; found NaN/inf")
        if self.requires_non_negative:
            check_non_negative_activations(a, self.name)
        return a

    def _fit(self, a: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _transform(self, a: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class NMFConcepts(ConceptFactorization):
    """Non-negative matrix factorization (scikit-learn ``NMF``), as in CRAFT. ``transform``
    solves the non-negative least squares ``min_{u >= 0} ||a - u W||`` of each row exactly
    (``scipy.optimize.nnls``)."""

    name = "nmf"
    requires_non_negative = True
    sparse_codes = True

    def __init__(self, n_concepts: int = 10, *, seed: int | None = 0, max_iter: int = 500):
        super().__init__(n_concepts, seed=seed)
        self.max_iter = check_positive_int("max_iter", max_iter)

    def _fit(self, a):
        self.estimator_ = NMF(n_components=self.n_concepts, max_iter=self.max_iter,
                              random_state=self.seed)
        u = self.estimator_.fit_transform(a)
        self.components_ = self.estimator_.components_
        return u

    def _transform(self, a):
        # exact non-negative least squares per row (active set), so that the implicit
        # gradient of encode_differentiable is the gradient of these coefficients
        basis = self.components_.T
        return np.stack([nnls(basis, row)[0] for row in a]) if len(a) else a[:, :0]


class PCAConcepts(ConceptFactorization):
    """Principal components (scikit-learn ``PCA``, exact SVD): ``U = (A - mean) W^T``."""

    name = "pca"
    overcomplete_allowed = False

    def _fit(self, a):
        self.estimator_ = PCA(n_components=self.n_concepts, svd_solver="full")
        u = self.estimator_.fit_transform(a)
        self.components_, self.offset_ = self.estimator_.components_, self.estimator_.mean_
        return u

    def _transform(self, a):
        return self.estimator_.transform(a)


class ICAConcepts(ConceptFactorization):
    """Independent components: PCA whitening to ``n_concepts`` dimensions, then scikit-learn
    ``FastICA(whiten=False)`` (parallel, logcosh) on the whitened scores.

    ``U = (A - mean) E^T`` with ``E = unmixing @ whitening`` (unit-variance sources) and
    ``W = (E^+)^T``, so that ``U W + mean`` is the projection of ``A`` on the principal
    subspace. (FastICA's own whitening zeroes a component when the first channel is constant,
    e.g. a dead ReLU channel, because it fixes signs with ``sign(u[0])``.)
    """

    name = "ica"
    overcomplete_allowed = False

    def __init__(self, n_concepts: int = 10, *, seed: int | None = 0, max_iter: int = 1000):
        super().__init__(n_concepts, seed=seed)
        self.max_iter = check_positive_int("max_iter", max_iter)

    def _fit(self, a):
        pca = PCA(n_components=self.n_concepts, svd_solver="full").fit(a)
        variances = pca.explained_variance_
        rank = int((variances > 1e-10 * variances[0]).sum()) if variances[0] > 0 else 0
        if rank < self.n_concepts:
            raise ValueError(f"ica needs activations spanning n_concepts={self.n_concepts} "
                             f"dimensions; they span {rank} (dead or duplicate channels). "
                             f"Lower n_concepts.")
        whitening = pca.components_ / np.sqrt(variances)[:, None]
        self.estimator_ = FastICA(whiten=False, max_iter=self.max_iter, random_state=self.seed)
        self.estimator_.fit((a - pca.mean_) @ whitening.T)
        self.encoder_ = self.estimator_.components_ @ whitening
        self.components_, self.offset_ = np.linalg.pinv(self.encoder_).T, pca.mean_
        return self._transform(a)

    def _transform(self, a):
        return (a - self.offset_) @ self.encoder_.T


class KMeansConcepts(ConceptFactorization):
    """k-means (scikit-learn ``KMeans``): ``U`` one-hot of the nearest centroid."""

    name = "kmeans"
    differentiable = False

    def __init__(self, n_concepts: int = 10, *, seed: int | None = 0, n_init: int = 4):
        super().__init__(n_concepts, seed=seed)
        self.n_init = check_positive_int("n_init", n_init)

    def _fit(self, a):
        self.estimator_ = KMeans(n_clusters=self.n_concepts, n_init=self.n_init,
                                 random_state=self.seed)
        self.estimator_.fit(a)
        self.components_ = self.estimator_.cluster_centers_
        return self._transform(a)

    def _transform(self, a):
        return np.eye(self.n_concepts)[self.estimator_.predict(a)]


class DictionaryConcepts(ConceptFactorization):
    """Sparse dictionary learning: ``min 0.5 ||A/s - U D||^2 + alpha |U|_1``, ``||d_k|| <= 1``
    (lasso codes by FISTA, atoms by block coordinate descent; see ``_sparse_coding``).

    ``s = rms(A)`` makes ``alpha`` independent of the scale of the activations; ``W = s D``.
    """

    name = "dictionary"
    sparse_codes = True

    def __init__(self, n_concepts: int = 10, *, seed: int | None = 0, alpha: float = 0.1,
                 max_iter: int = 100, tol: float = 1e-6):
        super().__init__(n_concepts, seed=seed)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ValueError(f"alpha must be a number > 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.max_iter = check_positive_int("max_iter", max_iter)
        self.tol = float(tol)

    def _fit(self, a):
        self.scale_ = float(np.sqrt(np.mean(a**2))) or 1.0
        atoms, codes = learn_dictionary(a / self.scale_, self.n_concepts, self.alpha,
                                        max_iter=self.max_iter, tol=self.tol,
                                        rng=np.random.default_rng(self.seed))
        self.components_ = atoms * self.scale_
        return codes

    def _transform(self, a):
        return lasso_codes(a / self.scale_, self.components_ / self.scale_, self.alpha)


FACTORIZATIONS = {cls.name: cls for cls in
                  (NMFConcepts, PCAConcepts, ICAConcepts, KMeansConcepts, DictionaryConcepts)}


def make_factorization(factorization: Any, n_concepts: int, seed: int | None
                       ) -> ConceptFactorization:
    """A new unfitted factorization from a name in ``FACTORIZATIONS`` or a copy of an
    unfitted :class:`ConceptFactorization` (whose ``n_concepts`` must agree)."""
    if isinstance(factorization, ConceptFactorization):
        if factorization.n_concepts != n_concepts:
            raise ValueError(f"n_concepts={n_concepts} disagrees with the factorization's "
                             f"n_concepts={factorization.n_concepts}")
        return copy.deepcopy(factorization)
    if factorization not in FACTORIZATIONS:
        raise ValueError(f"factorization must be one of {tuple(FACTORIZATIONS)} or a "
                         f"ConceptFactorization instance; got {factorization!r}")
    return FACTORIZATIONS[factorization](n_concepts, seed=seed)


class _ImplicitEncode(torch.autograd.Function):
    """``U = transform(A)`` forward; implicit differentiation on the active set backward."""

    @staticmethod
    def forward(ctx, activations, factorization):
        u = factorization.transform(activations.detach().cpu().numpy())
        u = torch.as_tensor(u, dtype=activations.dtype, device=activations.device)
        ctx.factorization = factorization
        ctx.save_for_backward(u)
        return u

    @staticmethod
    def backward(ctx, grad_u):
        factorization = ctx.factorization
        if not factorization.differentiable:
            raise RuntimeError(
                f"{factorization.name} concept coefficients are piecewise constant in the "
                f"activations (zero gradient almost everywhere); use a black-box explainer "
                f"(Occlusion, Rise, Sobol) on the concept model instead of a gradient method.")
        (u,) = ctx.saved_tensors
        w = torch.as_tensor(factorization.components_, dtype=torch.float64, device=u.device)
        active = factorization.support(u).to(torch.float64)                      # (B, R)
        # Gram matrix of the active atoms, identity on the inactive ones: (B, R, R)
        gram = active[:, :, None] * (w @ w.T)[None] * active[:, None, :]
        gram = gram + torch.diag_embed(1 - active)
        y = torch.linalg.pinv(gram) @ (active * grad_u.to(torch.float64))[:, :, None]
        return (y[:, :, 0] @ w).to(grad_u.dtype), None


def encode_differentiable(activations: torch.Tensor,
                          factorization: ConceptFactorization) -> torch.Tensor:
    """Coefficients ``(B, n_concepts)`` of activations ``(B, C)``, differentiable by
    implicit differentiation (see the module docstring)."""
    return _ImplicitEncode.apply(activations, factorization)
