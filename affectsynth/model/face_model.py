"""A linear 3D morphable face model: mean + identity basis + named expression blendshapes.

Conventions: model space as in :mod:`affectsynth.camera` (right-handed, millimetres,
+y up, face looking along +z, +x = subject's left).

    vertices = mean + sum_k id_coeffs[k] * id_basis[k] + sum_e exp_coeffs[e] * exp_basis[e]

Identity coefficients are in units of the mode's standard deviation (prior N(0, 1));
expression coefficients are activations in [0, 1] (0 = rest, 1 = full intensity).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ModelFormatError
from ..landmarks import SCHEMES

__all__ = ["FaceModel", "FaceModelOutput", "LandmarkMap", "blend_shapes", "mouth_opening", "FORMAT_VERSION", "MATERIALS"]

#: Version of the .npz layout written by :meth:`FaceModel.save`.
FORMAT_VERSION = 1

#: What a triangle is made of, which says how the renderer shades it: "skin" takes the
#: photo's texture; the mouth interior and the eyeballs are shaded by
#: :mod:`affectsynth.render.materials` where the photo does not show them.
MATERIALS = ("skin", "mouth_socket", "teeth", "gums", "tongue", "eyeball")


def mouth_opening(vertices: torch.Tensor, lip_midline: torch.Tensor) -> torch.Tensor:
    """[B] mm between the lips' inner edges at the midline of B meshes ``vertices`` [B, V, 3] (mm;
    ``lip_midline``: :attr:`FaceModel.lip_midline`)."""
    return (vertices[:, lip_midline[0]] - vertices[:, lip_midline[1]]).norm(dim=-1)


def blend_shapes(coeffs: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Linear blend of displacement fields.

    Args:
        coeffs: [B, K] weights.
        basis: [K, V, 3] displacement per unit weight.
    Returns:
        [B, V, 3] summed displacement.
    """
    if basis.shape[0] == 0:
        return coeffs.new_zeros(coeffs.shape[0], basis.shape[1], 3)
    # one matrix product over the flattened basis (what einsum("bk,kvc->bvc") runs, without its planning)
    return torch.mm(coeffs, basis.reshape(basis.shape[0], -1)).view(coeffs.shape[0], basis.shape[1], 3)


@dataclass(frozen=True)
class LandmarkMap:
    """Where each landmark of a scheme lies on the mesh: a barycentric point of 3 vertices.

    Attributes:
        vertices: [L, 3] int64 vertex indices.
        weights: [L, 3] float barycentric weights (rows sum to 1; a landmark at a vertex is
            (1, 0, 0)).
        valid: [L] bool, False for landmarks the model has no point for (they are ignored
            by the fitter).
    """

    vertices: torch.Tensor
    weights: torch.Tensor
    valid: torch.Tensor

    @staticmethod
    def from_vertex_ids(ids: list[int] | np.ndarray) -> LandmarkMap:
        """One vertex per landmark; -1 marks a landmark with no model point."""
        ids = torch.as_tensor(np.asarray(ids), dtype=torch.int64)
        vertices = torch.stack((ids.clamp(min=0), ids.clamp(min=0), ids.clamp(min=0)), 1)
        weights = torch.zeros(len(ids), 3)
        weights[:, 0] = 1.0
        return LandmarkMap(vertices, weights, ids >= 0)

    def gather(self, points: torch.Tensor) -> torch.Tensor:
        """Landmark positions [B, L, C] from per-vertex values [B, V, C]."""
        return (points[:, self.vertices] * self.weights[None, :, :, None].to(points.dtype)).sum(2)

    def to(self, device=None, dtype=None) -> LandmarkMap:
        return LandmarkMap(self.vertices.to(device), self.weights.to(device=device, dtype=dtype),
                           self.valid.to(device))


@dataclass(frozen=True)
class FaceModelOutput:
    """Output of :meth:`FaceModel.forward`.

    Attributes:
        vertices: [B, V, 3] model-space vertices, mm.
        identity_vertices: [B, V, 3] the same face with no expression (mean + identity).
    """

    vertices: torch.Tensor
    identity_vertices: torch.Tensor


@dataclass(eq=False)
class FaceModel:
    """A linear 3DMM (a plain container of tensors; call it like a module). Build one from arrays, :meth:`load` a ``.npz``, or use
    :func:`affectsynth.model.load_default_model`.

    Attributes:
        mean: [V, 3] mean shape, mm.
        id_basis: [K, V, 3] identity modes scaled by their standard deviation (K may be 0).
        exp_basis: [E, V, 3] expression displacement at full intensity.
        exp_names: E names; FACS action units are named ``AU<n>`` or ``AU<n>_L``/``AU<n>_R``.
        triangles: [F, 3] int64 vertex indices, counter-clockwise seen from outside.
        uv: [V, 2] texture coordinates in [0, 1] (u right, v up), or None.
        landmark_maps: scheme name -> :class:`LandmarkMap`.
        regions: region name -> int64 vertex indices (e.g. "skin", "lips", "eye_L").
        materials: material name (one of :data:`MATERIALS`) -> int64 triangle indices;
            triangles in none of them are "skin". A model with no interior parts has none.
        meta: JSON-serialisable provenance (name, source, units, licence, ...).
    """

    mean: torch.Tensor
    id_basis: torch.Tensor
    exp_basis: torch.Tensor
    exp_names: tuple[str, ...]
    triangles: torch.Tensor
    uv: torch.Tensor | None = None
    landmark_maps: dict[str, LandmarkMap] = field(default_factory=dict)
    regions: dict[str, torch.Tensor] = field(default_factory=dict)
    materials: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = self.mean.shape[0]
        if self.mean.shape != (v, 3):
            raise ModelFormatError(f"mean must be [V, 3], got {list(self.mean.shape)}")
        for name in ("id_basis", "exp_basis"):
            t = getattr(self, name)
            if t.ndim != 3 or t.shape[1:] != (v, 3):
                raise ModelFormatError(f"{name} must be [K, {v}, 3], got {list(t.shape)}")
        self.exp_names = tuple(self.exp_names)
        if len(self.exp_names) != self.exp_basis.shape[0]:
            raise ModelFormatError(f"{len(self.exp_names)} expression names for {self.exp_basis.shape[0]} shapes")
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3 or int(self.triangles.max()) >= v:
            raise ModelFormatError("triangles must be [F, 3] indices into the vertices")
        for scheme in self.landmark_maps:
            if scheme not in SCHEMES:
                raise ModelFormatError(f"unknown landmark scheme {scheme!r}")
        for material, ids in self.materials.items():
            if material not in MATERIALS or material == "skin":
                raise ModelFormatError(f"unknown material {material!r} (known: {', '.join(MATERIALS[1:])})")
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.triangles.shape[0]):
                raise ModelFormatError(f"material {material!r} names triangles outside [0, F)")

    # ---------------------------------------------------------------- properties
    @property
    def num_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def num_identity(self) -> int:
        return self.id_basis.shape[0]

    @property
    def num_expressions(self) -> int:
        return self.exp_basis.shape[0]

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mean.dtype

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "unnamed"))

    # ---------------------------------------------------------------- evaluation
    def forward(self, id_coeffs: torch.Tensor | None = None, exp_coeffs: torch.Tensor | None = None,
                batch_size: int | None = None) -> FaceModelOutput:
        """Vertices for a batch of coefficient vectors.

        Args:
            id_coeffs: [B, K] identity coefficients, or None for the mean identity.
            exp_coeffs: [B, E] expression activations, or None for no expression.
            batch_size: B when both coefficient tensors are None (default 1).
        Returns:
            :class:`FaceModelOutput` with [B, V, 3] tensors.
        """
        b = next((c.shape[0] for c in (id_coeffs, exp_coeffs) if c is not None), batch_size or 1)
        if id_coeffs is None:
            id_coeffs = self.mean.new_zeros(b, self.num_identity)
        if exp_coeffs is None:
            exp_coeffs = self.mean.new_zeros(b, self.num_expressions)
        identity = self.mean + blend_shapes(id_coeffs, self.id_basis)
        return FaceModelOutput(vertices=identity + blend_shapes(exp_coeffs, self.exp_basis),
                               identity_vertices=identity)

    __call__ = forward

    def landmarks(self, vertices: torch.Tensor, scheme: str) -> torch.Tensor:
        """Landmark points [B, L, 3] of a scheme from vertices [B, V, 3]."""
        return self.landmark_map(scheme).gather(vertices)

    def landmark_map(self, scheme: str) -> LandmarkMap:
        try:
            return self.landmark_maps[scheme]
        except KeyError:
            raise ModelFormatError(f"model {self.name!r} has no {scheme!r} landmark map "
                                   f"(it has: {sorted(self.landmark_maps) or 'none'})") from None

    @property
    def lip_midline(self) -> torch.Tensor | None:
        """[2] int64, the upper and the lower inner-lip vertex nearest the midline (x = 0 in the mean
        shape), where :func:`mouth_opening` is measured; None for a model that does not name its
        lips' inner edges (regions "lip_inner_upper", "lip_inner_lower")."""
        if "lip_inner_upper" not in self.regions or "lip_inner_lower" not in self.regions:
            return None
        return torch.stack([ids[self.mean[ids, 0].abs().argmin()]
                            for ids in (self.regions["lip_inner_upper"], self.regions["lip_inner_lower"])])

    def triangle_materials(self) -> torch.Tensor:
        """[F] int64 index into :data:`MATERIALS` of each triangle's material."""
        out = torch.zeros(self.triangles.shape[0], dtype=torch.int64, device=self.triangles.device)
        for material, ids in self.materials.items():
            out[ids] = MATERIALS.index(material)
        return out

    def skin(self) -> FaceModel:
        """The skin surface alone: its triangles, and the vertices before the first interior
        part (interior parts are appended after the skin, and may share its rim vertices, never
        the other way round). A model with no interior parts is returned as it is."""
        if not self.materials:
            return self
        skin_triangles = self.triangles[self.triangle_materials() == MATERIALS.index("skin")]
        n = int(skin_triangles.max()) + 1
        return FaceModel(mean=self.mean[:n], id_basis=self.id_basis[:, :n], exp_basis=self.exp_basis[:, :n],
                         exp_names=self.exp_names, triangles=skin_triangles,
                         uv=None if self.uv is None else self.uv[:n],
                         landmark_maps={k: m for k, m in self.landmark_maps.items() if int(m.vertices.max()) < n},
                         regions={k: r for k, r in self.regions.items() if r.numel() == 0 or int(r.max()) < n},
                         meta=dict(self.meta))

    def exp_index(self, name: str) -> int:
        return self.exp_names.index(name)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> FaceModel:
        """A copy on ``device`` with floating-point arrays in ``dtype``."""
        def f(t):
            return None if t is None else t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        return FaceModel(mean=f(self.mean), id_basis=f(self.id_basis), exp_basis=f(self.exp_basis),
                         exp_names=self.exp_names, triangles=f(self.triangles), uv=f(self.uv),
                         landmark_maps={k: m.to(device, dtype) for k, m in self.landmark_maps.items()},
                         regions={k: f(r) for k, r in self.regions.items()},
                         materials={k: f(r) for k, r in self.materials.items()}, meta=dict(self.meta))

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> None:
        """Write one ``.npz`` (float32, format version :data:`FORMAT_VERSION`), atomically."""
        from ..io import save_npz

        arrays: dict[str, np.ndarray] = {
            "mean": self.mean.detach().cpu().float().numpy(),
            "id_basis": self.id_basis.detach().cpu().float().numpy(),
            "exp_basis": self.exp_basis.detach().cpu().float().numpy(),
            "exp_names": np.array(self.exp_names, dtype=str),
            "triangles": self.triangles.cpu().numpy().astype(np.int32),
            "meta_json": np.array(json.dumps(self.meta, sort_keys=True)),
        }
        if self.uv is not None:
            arrays["uv"] = self.uv.detach().cpu().float().numpy()
        for scheme, m in self.landmark_maps.items():
            arrays[f"landmarks/{scheme}/vertices"] = m.vertices.cpu().numpy().astype(np.int32)
            arrays[f"landmarks/{scheme}/weights"] = m.weights.cpu().float().numpy()
            arrays[f"landmarks/{scheme}/valid"] = m.valid.cpu().numpy()
        for region, ids in self.regions.items():
            arrays[f"regions/{region}"] = ids.cpu().numpy().astype(np.int32)
        for material, ids in self.materials.items():
            arrays[f"materials/{material}"] = ids.cpu().numpy().astype(np.int32)
        save_npz(path, arrays, FORMAT_VERSION)

    @staticmethod
    def load(path: str | os.PathLike, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> FaceModel:
        """Read a ``.npz`` written by :meth:`save`."""
        from ..io import load_npz

        data = load_npz(path, "model", FORMAT_VERSION, error=ModelFormatError)

        def t(a, floating=True):
            return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype if floating else torch.int64)

        maps = {}
        for scheme in SCHEMES:
            key = f"landmarks/{scheme}/"
            if key + "vertices" in data:
                maps[scheme] = LandmarkMap(t(data[key + "vertices"], False), t(data[key + "weights"]),
                                           torch.from_numpy(data[key + "valid"]).to(device))
        regions = {k.split("/", 1)[1]: t(v, False) for k, v in data.items() if k.startswith("regions/")}
        materials = {k.split("/", 1)[1]: t(v, False) for k, v in data.items() if k.startswith("materials/")}
        return FaceModel(mean=t(data["mean"]), id_basis=t(data["id_basis"]), exp_basis=t(data["exp_basis"]),
                         exp_names=tuple(str(n) for n in data["exp_names"]), triangles=t(data["triangles"], False),
                         uv=t(data["uv"]) if "uv" in data else None, landmark_maps=maps, regions=regions,
                         materials=materials, meta=json.loads(str(data["meta_json"])))
