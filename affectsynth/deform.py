"""Deform: the fitted face with its own expression removed and the target's applied.

Identity and pose stay those of the fit; only the expression coefficients change, so the
source and target meshes share topology and camera and differ only where the face moves.

The fit is a compromise between landmarks and priors, and a model's shapes cannot follow every
face: on open mouths the fitted upper lip's inner edge lay on the teeth, 1-4 % of the eye distance
below the detected one (median 1.8 % on 14 open-mouth photos), so the renderer took a band of
teeth for lip skin and a closed target mouth showed a row of teeth between its lips. A
:class:`ResidualField` moves the fitted mesh's image positions by what the fit left of the
landmarks, spread over the mesh, so the photo is sampled where the face really is; the target
keeps each vertex's offset, so an unchanged expression still re-renders the photo unchanged, except
the part that holds the lips apart, kept as far as the target keeps the mouth open.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from .fit import FitResult
from .model import FaceModel, blend_shapes, mouth_opening

__all__ = ["Deformation", "ResidualField", "retarget"]

#: A landmark's residual counts for at most this many mm: beyond, it is more likely a detector's
#: mistake (an occluded mouth, a lid under glasses) than a face the model misses. The fitted upper
#: lips of the open-mouth photos above were at most 3.7 mm off.
RESIDUAL_MAX_MM = 5.0
#: Facing points of the lips' inner edges per scheme, (upper, lower), the midline pair first: what
#: they leave apart is how much more open the photo's mouth is than the fitted one.
LIP_PAIRS = {"mp478": ((13, 14), (82, 87), (81, 178), (80, 88), (191, 95), (312, 317), (311, 402), (310, 318),
                       (415, 324)),
             "ibug68": ((62, 66), (61, 67), (63, 65))}
#: The landmarks each vertex takes its offset from: those of the largest weights in the harmonic
#: interpolation (over 90 % of the weight for the median skin vertex of the default model).
RESIDUAL_NEIGHBOURS = 8


@dataclass(frozen=True)
class ResidualField:
    """Spreads B fits' landmark residuals (:attr:`~affectsynth.fit.FitResult.landmark_residual`)
    over a model's vertices as image offsets.

    The field is harmonic over the mesh's edges (each vertex's offset the mean of its neighbours')
    and takes the residual at each landmark: it follows the surface, so the lips, which the mouth
    opening separates, move apart while the mesh around them moves less, and it never exceeds the
    residuals (no overshoot, so no fold where there was none). Parts without landmarks (teeth,
    tongue, eyeballs) stay where the fit puts them; a part sharing vertices with the skin (the mouth
    socket's rim) follows it. Each vertex keeps its :data:`RESIDUAL_NEIGHBOURS` strongest
    landmarks, their weights rescaled to the full sum.

    The lips' residuals have a common part, which moves both lips, and an opening part (:data:`LIP_PAIRS`
    apart), which the target keeps only as far as it keeps the mouth open: a lip stretched thin over
    the teeth of a smile is not thin once the mouth closes (:meth:`narrowed`).

    Attributes:
        weights: [V, L] sparse CSR, row v the weights of the landmarks (the scheme's L, in its order)
            vertex v's offset is taken from (a sparse product costs 0.1 ms a face, a gather 1.2).
        lip_pairs: [P, 2] int64 :data:`LIP_PAIRS` of the scheme.
        lip_midline: the model's :attr:`~affectsynth.model.FaceModel.lip_midline` (None: the lips'
            opening part is always kept).
        scheme: the landmark scheme.
    """

    weights: torch.Tensor
    lip_pairs: torch.Tensor
    lip_midline: torch.Tensor | None
    scheme: str

    @staticmethod
    def build(model: FaceModel, scheme: str) -> ResidualField:
        """The field of ``model``'s mesh and its ``scheme`` landmark map (0.15 s for the default model)."""
        from .fit import LandmarkModel

        count = model.mean.shape[0]
        corners = model.triangles.cpu().numpy()
        rows = np.concatenate([corners[:, a] for a in (0, 1, 2, 1, 2, 0)])
        cols = np.concatenate([corners[:, a] for a in (1, 2, 0, 0, 1, 2)])
        adjacency = scipy.sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(count, count)).tocsr()
        adjacency.data[:] = 1.0                                    # an edge of two triangles counts once
        laplacian = scipy.sparse.diags(np.asarray(adjacency.sum(1)).ravel()) - adjacency
        used = LandmarkModel.build(model, scheme).index.cpu().numpy()   # the landmarks the fit uses
        lmap = model.landmark_map(scheme)
        vertices, weights = lmap.vertices[used].cpu().numpy(), lmap.weights[used].cpu().numpy().astype(np.float64)
        sample = scipy.sparse.coo_matrix((weights.ravel(), (np.repeat(np.arange(len(used)), vertices.shape[1]),
                                                             vertices.ravel())), shape=(len(used), count)).tocsc()
        # min f'Lf + 100 |Sf - r|^2 + 1e-4 |f|^2: near-interpolating (100 >> a vertex's degree); the
        # last term pins parts no landmark reaches to 0 (and makes the system definite).
        system = (laplacian + 100.0 * (sample.T @ sample) + 1e-4 * scipy.sparse.eye(count)).tocsc()
        dense = scipy.sparse.linalg.splu(system).solve(100.0 * sample.T.toarray())          # [V, U]
        strongest = np.argsort(-np.abs(dense), 1)[:, :RESIDUAL_NEIGHBOURS]
        kept = np.take_along_axis(dense, strongest, 1)
        # rescaled to the row's full sum (0 for a part no landmark reaches)
        kept = kept * np.divide(dense.sum(1), kept.sum(1), out=np.zeros(count), where=np.abs(kept.sum(1)) > 1e-12)[:, None]
        columns = used[strongest]                                                            # [V, K]
        order = np.argsort(columns, 1)                                 # CSR: each row's columns ascending
        with warnings.catch_warnings():   # torch calls sparse CSR "beta"; its product is all this uses
            warnings.filterwarnings("ignore", message="Sparse", category=UserWarning)
            weights = torch.sparse_csr_tensor(torch.arange(0, columns.size + 1, columns.shape[1]),
                                              torch.from_numpy(np.take_along_axis(columns, order, 1).ravel()),
                                              torch.from_numpy(np.take_along_axis(kept, order, 1).ravel()),
                                              (count, lmap.vertices.shape[0]), dtype=model.dtype).to(model.device)
        return ResidualField(weights=weights, lip_pairs=torch.tensor(LIP_PAIRS[scheme], device=model.device),
                             lip_midline=model.lip_midline, scheme=scheme)

    def offsets(self, fit: FitResult) -> torch.Tensor:
        """[B, V, 2] image offsets (px) of ``fit``'s B faces: :meth:`spread` of :meth:`residual`."""
        return self.spread(self.residual(fit))

    def residual(self, fit: FitResult) -> torch.Tensor:
        """[B, L, 2] ``fit``'s residuals, px, each capped at :data:`RESIDUAL_MAX_MM` (0 for a landmark
        not used)."""
        if fit.scheme != self.scheme:
            raise ValueError(f"residual field of {self.scheme} landmarks, fit of {fit.scheme}")
        residual = fit.landmark_residual.nan_to_num(0.0)
        cap = (RESIDUAL_MAX_MM * fit.scale)[:, None, None]
        return residual * (cap / residual.norm(dim=-1, keepdim=True).clamp(min=1e-9)).clamp(max=1.0)

    def narrowed(self, residual: torch.Tensor, opening: torch.Tensor) -> torch.Tensor:
        """[B, L, 2] ``residual`` with the part that holds the lips apart (:data:`LIP_PAIRS`) scaled by
        ``opening`` [B] (:meth:`opening`)."""
        upper, lower = self.lip_pairs.T
        shrink = (opening.to(residual)[:, None, None] - 1) * (residual[:, upper] - residual[:, lower]) / 2   # [B, P, 2]
        return residual.index_add(1, upper, shrink).index_add(1, lower, -shrink)

    def spread(self, residual: torch.Tensor) -> torch.Tensor:
        """[N, L, 2] landmark residuals -> [N, V, 2] vertex offsets."""
        n, count = residual.shape[0], self.weights.shape[0]
        out = self.weights.to(residual.dtype) @ residual.transpose(0, 1).reshape(residual.shape[1], 2 * n)
        return out.view(count, n, 2).transpose(0, 1)

    def opening(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """[B] how much of the lips' opening residual the target keeps: the target's
        :func:`~affectsynth.model.mouth_opening` over the source's (model-space [B, V, 3] meshes), at most 1."""
        if self.lip_midline is None:
            return source.new_ones(source.shape[0])
        return (mouth_opening(target, self.lip_midline) / mouth_opening(source, self.lip_midline).clamp(min=1e-6)
                ).clamp(max=1.0)


def fitted_image_points(model: FaceModel, fit: FitResult, field: ResidualField | None) -> torch.Tensor:
    """[B, V, 3] the fitted faces' vertices in the image (u px, v px, depth px), moved by ``field``'s
    offsets where given: where the photo shows each vertex."""
    points = fit.image_points(fit.vertices(model))
    return points if field is None else _moved(points, field.offsets(fit))


def _moved(points: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Image points [B, V, 3] (u, v, depth px) moved by image offsets [B, V, 2] (depth unchanged)."""
    return points + torch.nn.functional.pad(offsets, (0, 1))


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


def retarget(model: FaceModel, fit: FitResult, exp_target: torch.Tensor,
             field: ResidualField | None = None) -> Deformation:
    """Replace each fitted face's expression by ``exp_target`` [B, E] (activations in [0, 1]).

    The input's own expression is removed entirely (not added to): a smiling photo asked for
    sadness becomes sad, not a sad smile. ``field``: the model's :class:`ResidualField` for the
    fit's scheme, whose offsets move both image meshes (each vertex by its own), or None for none.
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
    if field is not None:
        residual = field.residual(fit)
        opening = field.opening(source, target)
        offsets = field.spread(torch.cat((residual, field.narrowed(residual, opening))))      # [2B, V, 2]
        source_image, target_image = (_moved(points, moved) for points, moved in zip((source_image, target_image),
                                                                                     offsets.split(b)))
    return Deformation(source=source, target=target, source_image=source_image, target_image=target_image,
                       exp_source=fit.exp_coeffs, exp_target=exp_target, px_per_mm=fit.scale)
