"""CRAFT: Concept Recursive Activation FacTorization (Fel et al., 2023), with the other
factorizations and importance estimators of Fel et al. (2023), "A Holistic Approach to
Unifying Automatic Concept Extraction and Concept Importance Estimation".

The model is split into ``g`` (input -> activations, non-negative for NMF, e.g. after a ReLU)
and ``h`` (activations -> logits):

1. ``fit(images)``: random crops of images of one class, resized to the input size;
   ``A = mean_space g(crops)`` ``(n_crops, C)``; factorize ``A ~ U W (+ offset)``.
   ``W`` = ``concepts_`` ``(n_concepts, C)``.
2. ``transform(images)``: ``U`` of the spatially averaged activations, ``(N, n_concepts)``.
3. ``estimate_importance(images)``: each spatial activation vector is encoded, concept ``k``
   is scaled by ``m_k`` at every position and ``h(U W + offset)`` is attributed to the masks
   (total Sobol indices, occlusion or gradient x input; see ``importance``; or any pellucid
   Explainer on ``concept_space``, which pellucid's Deletion / Insertion / MuFidelity also
   score: C-Deletion, C-Insertion, C-muFidelity).
4. ``concept_maps(images)``: ``U`` of each spatial activation vector, upsampled (bilinear) to
   the input size, ``(N, n_concepts, H, W)``; ``concept_attributions(images)``: gradient x
   input (or any pellucid Explainer) of each concept coefficient w.r.t. the input pixels.
5. ``concept_metrics(images)``: reconstruction error, sparsity, bottleneck fidelity.

ViT token activations ``(N, T, D)`` (``g`` ending at a transformer block) are read as the CAMs
read them (``vit_reshape``; ``modules.token_layout``): an optional class token, then the
``h x w`` patch tokens row by row. The crop activation in 1-2 is the mean patch token (token
activations averaged; the class token is no spatial position); maps in 4 are the patch tokens'
``U`` on their grid. In 3 every token, the class token
included, is encoded and concept ``k`` scaled by ``m_k`` at every token before ``h`` runs on
them: a head that reads the class token sees the concepts removed there too, and with an exact
factorization masks of ones give back ``f(x)``. Tokens of a block are signed: use ``"pca"``,
``"ica"``, ``"kmeans"`` or ``"dictionary"`` (NMF needs a non-negative layer, e.g. after ReLU).
"""
from __future__ import annotations

import numbers
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..._imaging import upsample
from ..._batching import input_gradient, iter_slices, predict_batched
from ..._runner import ModelRunner, keeps_model_state
from ..._validation import check_choice, check_class_indices, check_positive_int
from ...models import as_model, has_stochastic_training_layers, warn_training_mode
from ..perturbation.sobol_estimators import check_power_of_two
from .factorization import NotFittedError, check_non_negative_activations, make_factorization
from .importance import IMPORTANCE_METHODS
from .metrics import ConceptScores
from ..cam.reshape import vit_reshape
from .modules import (ConceptHead, ConceptMaskModel, ConceptModel, activation_layout,
                      pool_activations, split_sequential, token_layout, tokens_to_grid)
from .split import layer_name, split_model

class Craft(ModelRunner):
    """CRAFT concept extraction and importance (Fel et al., 2023); see the module docstring.

    Parameters:
        model: a model to split at ``target_layer`` (an ``nn.Sequential``, or any model
            ``torch.fx`` can trace, see ``split``), or ``g`` itself.
        h: the rest of the model (activations -> logits) when ``model`` is ``g``.
        target_layer: where to split ``model``: a submodule, its dotted name (``"features.3"``)
            or an index into an ``nn.Sequential``; ``g`` ends with this layer. Outside an
            ``nn.Sequential`` the layer must be one every path to the output goes through
            (a whole residual or transformer block).
        n_concepts: concepts extracted.
        factorization: ``"nmf"`` (CRAFT), ``"pca"``, ``"ica"``, ``"kmeans"``, ``"dictionary"``
            or an unfitted :class:`ConceptFactorization`.
        patch_size: side of the random crops, in pixels (int) or as a fraction of the image
            side (float in (0, 1]).
        crops_per_image: random crops drawn from each image in ``fit``.
        importance: ``"sobol"`` (CRAFT), ``"occlusion"`` or ``"gradient_input"``.
        nb_design: Sobol design size (a power of 2); ``nb_design * (n_concepts + 2)`` passes
            of ``h`` per image.
        reshape: for token activations ``(N, T, D)``: ``None`` to read ``1 + h*w`` tokens as a
            class token and a patch grid, ``h*w`` tokens as a grid (the images' aspect ratio),
            or ``vit_reshape(h, w, drop_class_token)`` (``pellucid.explain.cam``).
        batch_size, seed, device, progress: as for every runner
            (:class:`~pellucid._runner.ModelRunner`).

    Attributes after ``fit``: ``concepts_`` ``(n_concepts, C)``, ``factorization_``,
    ``class_id_``, ``crops_u_`` ``(n_crops, n_concepts)``, ``crop_boxes_`` ``(n_crops, 3)``
    (image index, top, left; crops are ``crop_size_`` pixels). After
    ``estimate_importance``: ``importances_`` ``(n_concepts,)`` (mean over the images) and
    ``sample_importances_`` ``(N, n_concepts)``.
    """

    _model_arguments = ("model", "h")
    input_kinds = ("images",)

    def __init__(self, model: nn.Module, h: nn.Module | None = None, *,
                 target_layer: Any = None, n_concepts: int = 10, factorization: Any = "nmf",
                 patch_size: Any = 0.5, crops_per_image: int = 16, importance: str = "sobol",
                 nb_design: int = 32, reshape: vit_reshape | None = None, **common: Any):
        super().__init__(model, **common)
        self._g, self._h = _split_model(model, h, target_layer)
        self.h = h
        self.target_layer = target_layer
        self._model = as_model(nn.Sequential(self._g, self._h), device=self.device)
        self.n_concepts = check_positive_int("n_concepts", n_concepts)
        self.factorization = factorization
        self._factorization = make_factorization(factorization, self.n_concepts, self.seed)
        self.patch_size = _check_patch_size(patch_size)
        self.crops_per_image = check_positive_int("crops_per_image", crops_per_image)
        self.importance = check_choice("importance", importance, tuple(IMPORTANCE_METHODS))
        self.nb_design = check_power_of_two("nb_design", nb_design)
        if reshape is not None and not isinstance(reshape, vit_reshape):
            raise TypeError(f"reshape must be None or a vit_reshape(h, w, drop_class_token) for "
                            f"token activations; got {type(reshape).__name__}")
        self.reshape = reshape
        self._device = self._model.device

    # -- fit / transform -----------------------------------------------------------------
    @keeps_model_state
    def fit(self, images: Any, targets: Any = None) -> "Craft":
        """Extract ``n_concepts`` concepts from random crops of ``images`` (one class).

        ``targets``: the class the images belong to (an int, or one int per image, all
        equal); ``None`` = the class the model predicts most often on them.
        """
        x = self._check_images(images)
        class_id, n_outputs = self._resolve_class(x, targets)
        factorization = make_factorization(self._factorization, self.n_concepts, self.seed)
        first = self._activations(x[:1])  # channels and token layout checked before the crops
        factorization.check_channels(first.shape[-1] if first.ndim == 3 else first.shape[1])
        activation_layout(first, x, self.reshape)
        if len(x) * self.crops_per_image < self.n_concepts:
            raise ValueError(f"{len(x)} images x crops_per_image={self.crops_per_image} crops "
                             f"are fewer than n_concepts={self.n_concepts}; pass more images "
                             f"or raise crops_per_image")
        crop_size = _crop_size(self.patch_size, x.shape[2:])
        boxes = _random_boxes(len(x), self.crops_per_image, x.shape[2:], crop_size, self.seed)
        activations = torch.cat([
            self._pooled(_crops(x, boxes[s], crop_size))
            for s in iter_slices(len(boxes), self.batch_size, self.progress, "CRAFT crops")])
        crops_u = factorization.fit(activations.numpy())
        self.factorization_, self.class_id_, self.n_outputs_ = factorization, class_id, n_outputs
        self.concepts_ = torch.as_tensor(factorization.components_, dtype=torch.float32)
        self.crops_u_ = torch.as_tensor(crops_u, dtype=torch.float32)
        self.crop_boxes_, self.crop_size_ = torch.as_tensor(boxes), crop_size
        return self

    @keeps_model_state
    def transform(self, images: Any) -> torch.Tensor:
        """Concept coefficients ``U`` ``(N, n_concepts)`` of the spatially averaged
        activations (the mean patch token for tokens; as the crops in ``fit``)."""
        x = self._check_fitted_images(images)
        return torch.cat([self._encode(self._pooled(x[s]))
                          for s in iter_slices(len(x), self.batch_size, self.progress,
                                               "CRAFT transform")])

    def fit_transform(self, images: Any, targets: Any = None) -> torch.Tensor:
        """``fit(images, targets)`` then ``transform(images)``."""
        return self.fit(images, targets).transform(images)

    @keeps_model_state
    def spatial_coefficients(self, images: Any) -> torch.Tensor:
        """``U`` of every spatial activation vector: ``(N, n_concepts, h, w)`` at the
        layer's resolution (of the patch tokens on their grid for tokens; ``(N, n_concepts)``
        when ``g`` outputs vectors)."""
        x = self._check_fitted_images(images)
        return self._on_grid(self._spatial_coefficients(x), x)

    @keeps_model_state
    def concept_maps(self, images: Any) -> torch.Tensor:
        """Where each concept is present: spatial coefficients upsampled (bilinear) to the
        input size, ``(N, n_concepts, H, W)`` float32."""
        x = self._check_fitted_images(images)
        coefficients = self._on_grid(self._spatial_coefficients(x), x)
        if coefficients.ndim != 4:
            raise ValueError("concept maps need spatial activations (N, C, h, w) from g; this "
                             "g outputs vectors. Split the model before its global pooling.")
        return upsample(coefficients, tuple(x.shape[2:])).contiguous()

    # -- importance ----------------------------------------------------------------------
    @keeps_model_state
    def estimate_importance(self, images: Any, targets: Any = None,
                            explainer: Callable | None = None) -> torch.Tensor:
        """Importance of each concept for ``targets`` (default: the fitted class), averaged
        over ``images``: ``importances_`` ``(n_concepts,)``; per image in
        ``sample_importances_`` ``(N, n_concepts)``.

        ``explainer``: ``None`` for ``importance`` (Sobol, occlusion, gradient x input), or a
        callable mapping the concept-mask model (:meth:`concept_space`) to any pellucid
        Explainer, e.g. ``lambda m: IntegratedGradients(m)``, ``Rise``, ``SmoothGrad``,
        ``Occlusion`` or ``SobolAttribution``: its attribution of the masks (all ones,
        baseline 0) is the importance (Fel et al., 2023, holistic paper, section 4)."""
        x = self._check_fitted_images(images)
        t = (torch.full((len(x),), self.class_id_, dtype=torch.long) if targets is None
             else check_class_indices("targets", targets, len(x), self.n_outputs_)[:, 0])
        coefficients = self._spatial_coefficients(x)
        if explainer is not None:
            model, masks, kwargs = self._concept_space(coefficients)
            sample_importances = explainer(model).explain(masks, t, forward_kwargs=kwargs)
        else:
            head = as_model(self.concept_head(), device=self._device)
            options = {"batch_size": self.batch_size, "progress": self.progress}
            if self.importance == "sobol":
                options.update(nb_design=self.nb_design, seed=self.seed)
            sample_importances = IMPORTANCE_METHODS[self.importance](head, coefficients, t,
                                                                     **options)
        self.sample_importances_ = sample_importances.float()
        self.importances_ = self.sample_importances_.mean(0)
        return self.importances_

    # -- where concepts come from in the input ---------------------------------------------
    def concept_model(self) -> ConceptModel:
        """``x -> U (N, n_concepts)`` as an ``nn.Module``: explain concept ``k`` with any
        pellucid Explainer and ``targets=k``."""
        self._check_fitted()
        return ConceptModel(self._g, self.factorization_, self.reshape)

    @keeps_model_state
    def concept_space(self, images: Any) -> tuple[ConceptMaskModel, torch.Tensor, dict]:
        """``(model, masks, forward_kwargs)``: the model of concept masks
        (:class:`~.modules.ConceptMaskModel`), masks of ones ``(N, n_concepts)`` and the
        images' spatial coefficients as ``{"coefficients": u}`` (``(N, n_concepts, T)`` per
        token, the class token included, for token activations). Pellucid metrics on it are
        concept metrics (Fel et al., 2023): ``Deletion(model, baseline=0)(masks, importances,
        targets, forward_kwargs=forward_kwargs)`` is C-Deletion; ``Insertion`` (substrate 0)
        C-Insertion; ``MuFidelity`` C-muFidelity."""
        return self._concept_space(self._spatial_coefficients(self._check_fitted_images(images)))

    def _concept_space(self, coefficients: torch.Tensor):
        masks = torch.ones(len(coefficients), self.n_concepts)
        return ConceptMaskModel(self.concept_head()), masks, {"coefficients": coefficients}

    def concept_head(self) -> ConceptHead:
        """``u -> h(u W + offset)`` as an ``nn.Module`` (coefficients ``(N, R)``,
        ``(N, R, h, w)`` or per token ``(N, R, T)``)."""
        self._check_fitted()
        return ConceptHead(self._h, self.factorization_)

    @keeps_model_state
    def concept_attributions(self, images: Any, explainer: Callable | None = None
                             ) -> torch.Tensor:
        """Attribution of each concept coefficient to the input pixels,
        ``(N, n_concepts, H, W)``.

        ``explainer``: ``None`` for gradient x input summed over channels (implicit
        differentiation through the factorization), or a callable mapping the concept model
        to a pellucid Explainer, e.g. ``lambda m: Rise(m, nb_samples=500)`` or a class.
        """
        x = self._check_fitted_images(images)
        model = self.concept_model()
        if explainer is not None:  # every concept is a target of one call: (N, n_concepts)
            every_concept = torch.arange(self.n_concepts).expand(len(x), -1)
            return explainer(model).explain(x, every_concept)
        n, concept_model = self.n_concepts, as_model(model, device=self._device)
        maps = []  # reduced over channels batch by batch: memory bounded by batch_size
        for s in iter_slices(len(x) * n, self.batch_size, self.progress, "CRAFT gradients"):
            index = torch.arange(s.start, s.stop)
            grads, _ = input_gradient(concept_model, x[index // n], index % n)
            maps.append((grads * x[index // n]).sum(1))
        return torch.cat(maps).view(len(x), n, *x.shape[2:])

    # -- scores ----------------------------------------------------------------------------
    @keeps_model_state
    def concept_metrics(self, images: Any) -> dict[str, float]:
        """Reconstruction error, sparsity (near-zero fraction and Hoyer) of the spatial
        activation vectors of ``images``, and the bottleneck fidelity
        ``mean(argmax h(U W + offset) == argmax h(A))``; see ``metrics``."""
        x = self._check_fitted_images(images)
        h_model = as_model(self._h, device=self._device)
        head = as_model(self.concept_head(), device=self._device)
        scores = ConceptScores()
        for s in iter_slices(len(x), self.batch_size, self.progress, "CRAFT metrics"):
            activations = self._activations(x[s])
            coefficients = self._encode_per_position(activations)
            vectors = _as_rows(activations, -1 if activations.ndim == 3 else 1)
            u = _as_rows(coefficients)
            scores.update_reconstruction(vectors, self.factorization_.inverse_transform(u))
            scores.update_coefficients(u)
            scores.update_predictions(h_model.predict(activations), head.predict(coefficients))
        return scores.result()

    # -- internals -------------------------------------------------------------------------
    def _check_images(self, images: Any) -> torch.Tensor:
        return self._validate(images)

    def _check_fitted(self) -> None:
        if not hasattr(self, "factorization_"):
            raise NotFittedError("this Craft is not fitted yet; call fit(images) first")

    def _check_fitted_images(self, images: Any) -> torch.Tensor:
        self._check_fitted()
        return self._check_images(images)

    def _activations(self, x: torch.Tensor) -> torch.Tensor:
        """``g(x)`` on the CPU as float32, under inference mode (one batch)."""
        if has_stochastic_training_layers(self._g):
            warn_training_mode(self._g)
        with torch.inference_mode():
            activations = self._g(x.to(self._device)).float().cpu()
        activations = activations.clone()  # a normal tensor outside inference mode
        if self._factorization.requires_non_negative:
            check_non_negative_activations(activations, self._factorization.name + (
                " on token activations (N, T, D): the tokens out of a transformer block are "
                "signed, so it" if activations.ndim == 3 else ""))
        return activations

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Spatially averaged ``g(x)`` (the mean patch token for tokens), one batch."""
        activations = self._activations(x)
        return pool_activations(activations, activation_layout(activations, x, self.reshape))

    def _on_grid(self, coefficients: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-token coefficients ``(N, R, T)`` of the patch tokens on their grid; others as
        they are."""
        if coefficients.ndim != 3:
            return coefficients
        layout = token_layout(coefficients.shape[2], tuple(x.shape[2:]), self.reshape)
        return tokens_to_grid(coefficients, layout)

    def _spatial_coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`spatial_coefficients` of already checked images."""
        return torch.cat([self._encode_per_position(self._activations(x[s]))
                          for s in iter_slices(len(x), self.batch_size, self.progress,
                                               "CRAFT coefficients")])

    def _encode(self, activations: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.factorization_.transform(activations.numpy()),
                               dtype=torch.float32)

    def _encode_per_position(self, activations: torch.Tensor) -> torch.Tensor:
        """``U`` per row: ``(N, C) -> (N, R)``, ``(N, C, h, w) -> (N, R, h, w)``, tokens
        ``(N, T, D) -> (N, R, T)``."""
        if activations.ndim == 2:
            return self._encode(activations)
        if activations.ndim == 3:
            u = self._encode(_as_rows(activations, -1))
            return u.view(*activations.shape[:2], -1).transpose(1, 2).contiguous()
        if activations.ndim != 4:
            raise ValueError(f"g must output (N, C, h, w), tokens (N, T, D) or (N, C); got "
                             f"shape {tuple(activations.shape)}")
        n, _, height, width = activations.shape
        u = self._encode(_as_rows(activations))
        return u.view(n, height, width, -1).permute(0, 3, 1, 2).contiguous()

    def _resolve_class(self, x: torch.Tensor, targets: Any) -> tuple[int, int]:
        full = self._model
        if targets is None:
            scores = predict_batched(full, x, batch_size=self.batch_size)
            return int(torch.bincount(scores.argmax(1)).argmax()), scores.shape[1]
        n_outputs = full.predict(x[:1]).shape[1]
        t = check_class_indices("targets", targets, len(x), n_outputs)[:, 0]
        if (t != t[0]).any():
            raise ValueError("CRAFT extracts the concepts of one class: fit on images of one "
                             f"class; got targets {sorted(set(t.tolist()))}")
        return int(t[0]), n_outputs


def _as_rows(tensor: torch.Tensor, channels: int = 1) -> torch.Tensor:
    """One row per position, the dimension ``channels`` last: ``(N, C, h, w) -> (N h w, C)``,
    ``(N, R, T) -> (N T, R)``, tokens ``(N, T, D)`` with ``channels=-1`` ``-> (N T, D)``;
    ``(N, C)`` as is."""
    return tensor.movedim(channels, -1).reshape(-1, tensor.shape[channels])


def _split_model(model: Any, h: Any, target_layer: Any) -> tuple[nn.Module, nn.Module]:
    if h is None:
        if target_layer is None:
            raise ValueError("pass either the two parts Craft(g, h) or a model with "
                             "target_layer=<module, name or index> to split it after that layer")
        if isinstance(model, nn.Sequential):
            # a submodule becomes its dotted name; names and indices pass as they are
            return split_sequential(model, layer_name(model, target_layer) if isinstance(
                target_layer, nn.Module) else target_layer)
        return split_model(model, target_layer)  # torch.fx, see split.py
    if target_layer is not None:
        raise ValueError("pass either h or target_layer, not both: target_layer splits a model, "
                         "h is the second part of an already split one")
    for name, part in (("g", model), ("h", h)):
        if not isinstance(part, nn.Module):
            raise TypeError(f"CRAFT needs torch modules; {name} is a {type(part).__name__}")
    return model, h


def _check_patch_size(patch_size: Any) -> Any:
    if isinstance(patch_size, bool) or not isinstance(patch_size, numbers.Real):
        raise ValueError(f"patch_size must be pixels (int >= 1) or a fraction in (0, 1]; "
                         f"got {patch_size!r}")
    if isinstance(patch_size, numbers.Integral):
        return check_positive_int("patch_size", patch_size)
    if not 0 < patch_size <= 1:
        raise ValueError(f"patch_size as a fraction of the image side must be in (0, 1]; "
                         f"got {patch_size!r}")
    return float(patch_size)


def _crop_size(patch_size: int | float, image_size) -> tuple[int, int]:
    height, width = int(image_size[0]), int(image_size[1])
    if isinstance(patch_size, float):
        return max(1, round(patch_size * height)), max(1, round(patch_size * width))
    if patch_size > min(height, width):
        raise ValueError(f"patch_size={patch_size} pixels exceeds the images "
                         f"({height} x {width})")
    return patch_size, patch_size


def _random_boxes(n_images: int, per_image: int, image_size, crop_size, seed) -> np.ndarray:
    """``(n_images * per_image, 3)``: image index, top, left of each crop (seeded)."""
    rng = np.random.default_rng(seed)
    n = n_images * per_image
    tops = rng.integers(0, int(image_size[0]) - crop_size[0] + 1, n)
    lefts = rng.integers(0, int(image_size[1]) - crop_size[1] + 1, n)
    return np.stack([np.repeat(np.arange(n_images), per_image), tops, lefts], axis=1)


def _crops(x: torch.Tensor, boxes: np.ndarray, crop_size) -> torch.Tensor:
    """The crops in ``boxes``, resized (bilinear) to the images' size."""
    height, width = crop_size
    crops = torch.stack([x[i, :, top:top + height, left:left + width] for i, top, left in boxes])
    if (height, width) == tuple(x.shape[2:]):
        return crops
    return upsample(crops, tuple(x.shape[2:]))
