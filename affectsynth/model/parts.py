"""Interior parts of a face model: geometry appended to the skin mesh (mouth socket, teeth,
tongue, eyeballs), with its own identity and expression displacement fields.

The fitter never sees these vertices (no landmark lies on them); the renderer draws them
behind the skin, where the lips part or the lids open, and shades them by material
(:data:`affectsynth.model.face_model.MATERIALS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["MeshPart", "ModelArrays"]


@dataclass(frozen=True)
class MeshPart:
    """Geometry to append to a mesh of ``first`` vertices.

    The part's own vertices get the indices ``first .. first + P - 1``. Its triangles use
    those global indices, so they may also use vertices that exist already (a mouth socket
    whose rim is the skin's inner-lip loop is watertight with the lips and moves with them).

    Attributes:
        first: the number of vertices before this part (its first vertex's index).
        vertices: [P, 3] rest positions, mm, model space.
        triangles: [T, 3] int global vertex indices, counter-clockwise seen from where the
            surface is meant to be seen (from inside the mouth opening, from the front).
        id_basis: [K, P, 3] displacement per identity mode (the model's K modes).
        exp_basis: [E, P, 3] displacement per expression (the model's E expressions, same order).
        regions: region name -> int global vertex indices.
        materials: material name -> int indices into this part's ``triangles``.
    """

    first: int
    vertices: np.ndarray
    triangles: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    materials: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = len(self.vertices)
        if self.vertices.shape != (p, 3) or self.id_basis.shape[1:] != (p, 3) or self.exp_basis.shape[1:] != (p, 3):
            raise ValueError("part vertices [P, 3], id_basis [K, P, 3] and exp_basis [E, P, 3] disagree")
        if self.triangles.size and int(self.triangles.max()) >= self.first + p:
            raise ValueError("part triangles index vertices beyond the part")


@dataclass
class ModelArrays:
    """The arrays of a model under construction (numpy, the builder's side of :class:`FaceModel`).

    Attributes:
        mean: [V, 3]; id_basis: [K, V, 3]; exp_basis: [E, V, 3]; triangles: [F, 3];
        uv: [V, 2] or None (appended parts get uv (0, 0): they are never photo-textured by uv);
        regions: name -> vertex ids; materials: name -> triangle ids.
    """

    mean: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    triangles: np.ndarray
    uv: np.ndarray | None
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    materials: dict[str, np.ndarray] = field(default_factory=dict)

    def append(self, part: MeshPart) -> None:
        """Append ``part`` (built for ``first == len(self.mean)``)."""
        if part.first != len(self.mean):
            raise ValueError(f"part built for {part.first} vertices, the model has {len(self.mean)}")
        offset = len(self.triangles)
        self.mean = np.concatenate((self.mean, part.vertices))
        self.id_basis = np.concatenate((self.id_basis, part.id_basis), 1)
        self.exp_basis = np.concatenate((self.exp_basis, part.exp_basis), 1)
        self.triangles = np.concatenate((self.triangles, part.triangles))
        if self.uv is not None:
            self.uv = np.concatenate((self.uv, np.zeros((len(part.vertices), 2), self.uv.dtype)))
        for name, ids in part.regions.items():
            self.regions[name] = np.asarray(ids)
        for name, ids in part.materials.items():
            self.materials[name] = np.concatenate((self.materials.get(name, np.zeros(0, int)), offset + np.asarray(ids)))

