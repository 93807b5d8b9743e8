"""Deform: the fitted face with its own expression removed and the target's applied.

Identity and pose stay those of the fit; only the expression coefficients change, so the
source and target meshes share topology and camera and differ only where the face moves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .fit import FitResult
from .model import FaceModel, blend_shapes

__all__ = ["Deformation", "retarget"]


@dataclass(frozen=True)
class Deformation:
    """Source and target geometry of B faces, in model space and in the image.

    Attributes:
        source: [B, V, 3] the fitted face (fitted identity and expression), mm.
        target: [B, V, 3] the same identity with the target expression, mm.
        source_image: [B, V, 3] ``source`` in image space (u px, v px, depth px).
        target_image: [B, V, 3] ``target`` in image space.
        exp_source / exp_target: [B, E] the expression activations of each.
        px_per_mm: [B] the image scale (the fit's camera scale), the same before and after.
    """

    source: torch.Tensor
    target: torch.Tensor
    source_image: torch.Tensor
    target_image: torch.Tensor
    exp_source: torch.Tensor
    exp_target: torch.Tensor
    px_per_mm: torch.Tensor


def retarget(model: FaceModel, fit: FitResult, exp_target: torch.Tensor) -> Deformation:
    """Replace each fitted face's expression by ``exp_target`` [B, E] (activations in [0, 1]).

    The input's own expression is removed entirely (not added to): a smiling photo asked for
    sadness becomes sad, not a sad smile.
    """
    if exp_target.shape != fit.exp_coeffs.shape:
        raise ValueError(f"exp_target must be {list(fit.exp_coeffs.shape)}, got {list(exp_target.shape)}")
    exp_target = exp_target.to(fit.exp_coeffs)
    b, vertices = exp_target.shape[0], model.mean.shape[0]
    # Both expressions on the one identity ([B, 2, V, 3]): one product blends them, and one
    # projection (the fit's own camera, each face's two meshes as one row of 2V points) maps them.
    identity = model.mean + blend_shapes(fit.id_coeffs, model.id_basis)                    # [B, V, 3]
    expressions = blend_shapes(torch.stack((fit.exp_coeffs, exp_target), 1).view(2 * b, -1), model.exp_basis)
    both = identity[:, None] + expressions.view(b, 2, vertices, 3)
    source, target = both.unbind(1)
    source_image, target_image = fit.image_points(both.view(b, 2 * vertices, 3)).view(b, 2, vertices, 3).unbind(1)
    return Deformation(source=source, target=target, source_image=source_image, target_image=target_image,
                       exp_source=fit.exp_coeffs, exp_target=exp_target, px_per_mm=fit.scale)
