"""Helpers the importers share: triangle winding from the geometry, and checks on PCA bases."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import InputError


def outward_triangles(vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, bool]:
    """``triangles`` [F, 3] wound counter-clockwise seen from outside, and whether they were flipped.

    "Outside" is away from the centroid of the used vertices: the area-weighted normals'
    component along (triangle centre - centroid), summed, must be positive. That holds for a
    closed head and for an open face mask alike (a mask's centroid lies on its concave side).
    When it does not, every triangle's last two corners are swapped.
    """
    v = vertices[triangles]                                                  # [F, 3, 3]
    normals = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    centroid = vertices[np.unique(triangles)].mean(0)
    if float((normals * (v.mean(1) - centroid)).sum()) < 0:
        return triangles[:, [0, 2, 1]], True
    return triangles, False


def facing(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """[3] unit sum of the triangles' area vectors: the direction an open face mask looks along."""
    v = vertices[triangles]
    total = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]).sum(0)
    return total / max(float(np.linalg.norm(total)), 1e-30)


def check_orthonormal(path: Path, name: str, basis: np.ndarray, tol: float = 1e-2) -> tuple[float, float]:
    """(min, max) column norm of ``basis`` [3N, K]; InputError (one line) unless every column
    has unit norm within ``tol`` and the first columns are mutually orthogonal (the readers scale
    orthonormal principal components by their standard deviations, which is only right then)."""
    norms = np.sqrt(np.einsum("ik,ik->k", basis, basis, dtype=np.float64))
    head = basis[:, :8].astype(np.float64)
    off = np.abs(head.T @ head - np.diag(norms[:8] ** 2)).max() if basis.shape[1] > 1 else 0.0
    if norms.size and (np.abs(norms - 1).max() > tol or off > tol):
        raise InputError(f"{path}: {name} columns are not orthonormal (norms {norms.min():.4g} to {norms.max():.4g}, "
                         f"largest dot product of two of the first 8 {off:.3g}); this reader assumes "
                         "orthonormal principal components")
    return (float(norms.min()), float(norms.max())) if norms.size else (1.0, 1.0)


def rms_mm(displacement: np.ndarray) -> float:
    """Root mean square of per-vertex lengths of a [V, 3] field."""
    return float(np.sqrt((displacement ** 2).sum(-1).mean()))
