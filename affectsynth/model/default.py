"""The embedded default face model, "affectsynth-default-facs", and the code that builds it.

What it is: MediaPipe's canonical face mesh (Apache-2.0) with its eye openings and mouth
slit cut open and subdivided once, plus blendshapes authored here from the FACS table in
:mod:`affectsynth.affect.facs` and a smooth, authored identity basis. What it is not: a
statistical model of faces. No scan went into it; its identity modes are a smoothness
prior and its expression magnitudes are design choices scaled to anatomical limits.

Topology. The MediaPipe mesh (468 vertices, 898 triangles, open only along the face oval)
triangulates the eye openings and the mouth slit; those 46 triangles are removed so the
lips can part and the lids can move over an eyeball. One step of midpoint subdivision
follows: vertex i < 468 is MediaPipe's landmark i (so the "mp478" map is the identity on
them), the 1322 edge midpoints come after.

Rest shape. The canonical mesh is not where MediaPipe's landmarks lie on neutral faces: its
lips are 5.8 mm apart (on a closed mouth the detector's inner-lip points coincide), and the
ring of points above the upper lid sits up to 5.6 mm lower than the detector puts it. The
identity basis cannot express such local offsets, so a fit explained them with action units
(AU5 at 1 on every neutral photo, AU15 and AU23 up to 1), which synthesis then removed. So
the 468 points are first moved by a calibration, :data:`REST_OFFSETS_FILE`: what an
identity-only fit leaves unexplained, on average, on photos bundled with our dependencies
(see scripts/derive_rest_shape.py), in x and y. With it the lips are 0.7 mm apart
vertically at the midline (2 mm in all, mostly in depth; AU24 closes them) and the
palpebral fissures 9.7 mm high (AU43 closes them); ``canonical_rig(calibrated=False)`` is
the plain canonical mesh.

Fields. Every blendshape is a displacement field in mm at full intensity (FACS intensity
E), built with the toolkit of :mod:`affectsynth.model.mesh_ops`:

* :meth:`FaceRig.move`: a *handle* set of vertices gets prescribed displacements, an
  *anchor* set stays still, and in between the field is ``smoothstep(w) * e`` where ``w``
  solves the Laplace equation (1 on handles, 0 on anchors) and ``e`` is the harmonic
  extension of the handle displacements. Because the fields live on the mesh with the
  mouth and eyes cut open, motion prescribed on the lower lip does not leak into the
  upper lip, nor the lower lid's into the upper lid.
* :meth:`FaceRig.bump`: a Wendland C2 radial falloff for local bulges and dents (cheek
  mass, dimple) away from the holes.
* the mandible (AU26, AU27): its rigid motion ``(R(theta) - I)(x - pivot) + glide`` times
  a harmonic jaw weight (1 on the lower lip, chin and lower jaw line, 0 on the upper lip,
  nose, the cheeks above the lines from the alar creases to the face oval, and the face
  oval above the joint).

Each action unit's recipe (:data:`_RECIPES`) says which vertices are handles and anchors;
its primary magnitude comes from the FACS table. Lateral action units are built
bilaterally and split with a logistic partition of unity in x (:func:`split_lateral`), so
``AU<n>_L + AU<n>_R`` equals the bilateral field exactly.

Identity. The first :data:`IDENTITY_EIGENFUNCTIONS` non-constant eigenfunctions of the
cotangent Laplacian of the mesh with its openings filled (the removed triangles, subdivided
like the rest), each used along x, y and z, with the 7 similarity fields (the camera
explains those) projected out (by smooth corrections, see :func:`identity_basis`), then
orthonormalised (Gram-Schmidt in order of frequency),
all in the inner product <a, b> = sum over the 468 MediaPipe vertices of a_i . b_i (the
points the fitter sees). Mode k (from 1) is scaled to an RMS displacement over those
vertices of :data:`IDENTITY_SIGMA_MM` / sqrt(k): a design prior that favours smooth,
low-frequency shape change, not measured statistics. The identity basis is deliberately
*not* made orthogonal to the expression basis: that removed 27 directions of ordinary
face-shape variation (the height of the mouth, of its corners, of the lids), and the fitter
then explained a person's shape with action units (neutral photos got AU12 ~ 0.9). Which
of the two explains a displacement is left to the fitter's priors: smooth identity modes
with a Gaussian prior against sparse, bounded expression activations. The eigenfunctions
come from the filled mesh so that a mode moves the upper and lower lip (and lid) alike: on
the cut mesh two modes opened the lips 3.5 mm per standard deviation (6 mm RMS over all
modes; the fissure 4.6 mm), and the fitter took an opened jaw or widened eyes for identity.
Filled: 0.3 mm and 1.3 mm.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.interpolate
import scipy.optimize
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import torch

from ..affect.facs import ACTION_UNITS, ActionUnit
from . import mesh_ops as mo
from .eyes import eyeballs
from .face_model import FaceModel, LandmarkMap
from .mouth import mouth_interior
from .parts import ModelArrays

__all__ = ["build_default_model", "load_default_model", "asset_file", "canonical_rig", "FaceRig", "bilateral_fields",
           "split_lateral", "expression_basis", "similarity_fields", "identity_basis", "jaw_weight", "rest_offsets",
           "MODEL_FILE", "REST_OFFSETS_FILE", "NUM_MEDIAPIPE_VERTICES"]

MODEL_FILE = "default_model.npz"
CANONICAL_FILE = "mediapipe_canonical_face.npz"
IBUG68_FILE = "mp468_to_ibug68.json"
#: The rest-shape calibration: an (x, y, z) offset in mm per MediaPipe point, added to the
#: canonical mesh (written by scripts/derive_rest_shape.py; see the module docstring).
REST_OFFSETS_FILE = "mp468_rest_offsets.json"
MODEL_NAME = "affectsynth-default-facs"
MODEL_VERSION = "1.1.0"
#: The first this many model vertices are MediaPipe's mesh points, in MediaPipe's order.
NUM_MEDIAPIPE_VERTICES = 468
#: MediaPipe's 478-point output adds 10 iris points the mesh has no vertex for.
NUM_MEDIAPIPE_LANDMARKS = 478

#: Width (mm) of the logistic L/R partition of unity: weight_L = 1 / (1 + exp(-x / width)).
#: At the mouth corners (|x| = 25 mm) the far side keeps 4 % of the motion.
SPLIT_WIDTH_MM = 8.0

#: Temporomandibular rotation axis (the line through both condyles, parallel to x), as its
#: (y, z) in mm. The condyles sit just in front of the tragus, ~10 mm behind the
#: pre-auricular edge of the mesh's face oval (z = -24 at MediaPipe 234/454), at about the
#: height of the tragus, which in this mesh is ~5 mm below the oval's lateral point
#: (y = 6.7) and a little above the eye-to-mouth midline (y = -8). Only y and z matter for
#: a rotation about x; the condyles are at about x = +-50 mm.
JAW_PIVOT_YZ_MM = (-5.0, -34.0)
#: AU27's condylar glide (y, z) in mm: forward onto the articular eminence and down its
#: slope, which wide opening needs beyond the first ~20-25 mm of pure rotation.
JAW_GLIDE_YZ_MM = (-6.0, 12.0)

#: AU43: where the closed lids meet, as the fraction of the fissure the lower lid rises,
#: given at points of the lower margin's arc parameter (0 = lateral canthus, 1 = medial):
#: mostly the upper lid descends, but at the medial canthus the upper margin runs steeply
#: into the corner and the lower lid has to rise to meet it or the skin there folds over.
LID_CLOSURE_LOWER_SHARE = ((0.0, 0.6, 1.0), (0.15, 0.15, 0.9))

#: Eyeball radius (mm): the adult globe is ~24 mm long.
EYEBALL_RADIUS_MM = 12.0
#: How far the corneal apex sits in front of the centre of the lid opening (mean of the 16
#: MediaPipe lid-contour points), mm. With 1 mm the central lid margins lie 0.4-1 mm
#: outside the sphere of EYEBALL_RADIUS_MM through the apex, and the lids stay outside it
#: in every lid action unit (tests/test_default_model.py), as lids resting on a globe should.
CORNEA_AHEAD_OF_LID_OPENING_MM = 1.0

#: Identity basis: non-constant Laplacian eigenfunctions used (x 3 axes) and the RMS
#: displacement (mm) of mode 1; mode k gets IDENTITY_SIGMA_MM / sqrt(k).
IDENTITY_EIGENFUNCTIONS = 18
IDENTITY_SIGMA_MM = 4.0
#: The first this many Laplacian eigenfunctions (x 3 axes) span the smooth space in which
#: the identity modes' corrections (orthogonality to the similarity fields) are made.
IDENTITY_SMOOTH_SPACE = 60
#: A candidate identity field that keeps less than this fraction of its norm after the
#: similarity span is projected out is dropped (it was mostly that).
IDENTITY_MIN_RESIDUAL = 0.2

# MediaPipe vertex ids the construction needs beyond the named contours of
# mediapipe.python.solutions.face_mesh_connections, chosen by eye on the canonical mesh.
# Lateral features are given for the subject's right side (-x); the left side is their
# mirror image.
_TOP_OF_FOREHEAD = 10
_NOSE_OUTLINE = (168, 417, 465, 343, 355, 358, 327, 2, 98, 129, 126, 114, 245, 193)  # nasion, left, subnasale, right
_LOWER_LID_OUTLINE_R = (226, 31, 228, 229, 230, 231, 232, 233, 244)  # the 3rd vertex ring below the eye
_CHEEK_LINE_R = (129, 93)  # alar crease -> face oval: the upper edge of the jaw's territory
_INFRAORBITAL_CHEEK_R = (118, 119)
_LATERAL_CANTHUS_SKIN_R = (226, 35)
_CHEEK_MASS_R = 50  # the malar fat pad above the nasolabial fold
_NASOLABIAL_FOLD_R = (203, 206, 216, 212)  # beside the ala, down and out past the mouth corner
#: How far AU6 lifts the lower-lid margin at its centre (mm): the cheek bagged up under the eye
#: closes about 40 % of the 10.1 mm fissure, the narrowed "smiling eyes" of a Duchenne smile
#: (2.5 mm, a quarter, did not read as such on the judge's crops of dev-face renders).
_AU6_LOWER_LID_MM = 4.0
#: Skin within this distance (mm) of a mouth corner moves with it in AU12 (the modiolus).
_MODIOLUS_RADIUS_MM = 11.0
_CHIN_BOSS = (199, 200)
_UPPER_LIP_PARAMEDIAN_R = 39  # where AU10 lifts the upper lip most


# ------------------------------------------------------------------------ loading
def asset_file(name: str):
    """A file of the packaged assets/ folder (an importlib.resources Traversable or a Path)."""
    try:
        return importlib.resources.files("affectsynth.assets") / name
    except ModuleNotFoundError:  # a source checkout that is not pip-installed: assets/ is beside the package
        return Path(__file__).resolve().parents[2] / "assets" / name


def load_default_model(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> FaceModel:
    """The embedded default model (assets/default_model.npz, written by scripts/build_default_model.py)."""
    with importlib.resources.as_file(asset_file(MODEL_FILE)) as path:
        return FaceModel.load(path, device=device, dtype=dtype)


def rest_offsets() -> tuple[np.ndarray, str] | None:
    """The rest-shape calibration (assets/mp468_rest_offsets.json): offsets [468, 3] in mm,
    and where they come from; None when the file is absent."""
    path = asset_file(REST_OFFSETS_FILE)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return np.asarray(data["offsets_mm"], dtype=np.float64).reshape(NUM_MEDIAPIPE_VERTICES, 3), data["source"]


# ------------------------------------------------------------------------ the rig
@dataclass
class FaceRig:
    """The cut and subdivided canonical mesh, its named parts and the field toolkit.

    Arrays are float64 numpy; ids index the subdivided mesh (MediaPipe's for ids < 468).

    Attributes:
        vertices: [V, 3] neutral positions, mm.
        triangles: [F, 3].
        uv: [V, 2].
        laplacian: [V, V] cotangent Laplacian.
        mirror: [V] id of each vertex's mirror image (x -> -x).
        removed_triangles: [46, 3] MediaPipe triangles cut out (mouth slit, eye openings).
        loops: ordered vertex paths. ``lip_inner_upper`` / ``lip_inner_lower`` and
            ``lip_outer_upper`` / ``lip_outer_lower`` run from the subject's right mouth
            corner to the left one; ``upper_margin_<s>`` / ``lower_margin_<s>`` from the
            lateral canthus to the medial one; ``eye_<s>`` is the closed lid loop from the
            lateral canthus along the upper margin; ``brow_upper_<s>`` / ``brow_lower_<s>``
            run from the medial end; ``face_oval`` is the mesh boundary from the top of the
            forehead (MediaPipe 10), counter-clockwise seen from the front; ``cheek_line_<s>``
            runs from the alar crease to the face oval.
        parts: vertex id sets: ``lips`` (vermilion, both contours included), ``nose``,
            ``brow_<s>``, ``upper_lid_<s>`` (margin to the brow's lower edge),
            ``lower_lid_<s>`` (margin to the third vertex ring below it), ``chin_boss``,
            ``infraorbital_<s>``, ``canthus_skin_<s>`` (handle patches).
        lip_upper: [V] harmonic, 1 on the upper lip's contours, 0 on the lower lip's (~0.5
            at the commissures).
        lip_depth: [V] harmonic, 0 on the inner lip contour, 1 on the outer one.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    uv: np.ndarray
    laplacian: sp.csr_matrix
    mirror: np.ndarray
    removed_triangles: np.ndarray
    loops: dict[str, list[int]] = field(default_factory=dict)
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    lip_upper: np.ndarray | None = None
    lip_depth: np.ndarray | None = None

    # -------------------------------------------------------------- queries
    @property
    def x(self) -> np.ndarray:
        return self.vertices[:, 0]

    @property
    def corner_x(self) -> float:
        """|x| of the outer mouth corners, mm."""
        return float(abs(self.x[self.loops["lip_outer_upper"][0]]))

    def side(self, ids: np.ndarray) -> np.ndarray:
        """[N] +1 for vertices on the subject's left (x > 0), -1 on the right, 0 on the midline."""
        return np.sign(np.round(self.x[ids], 6))

    def union(self, *names: str) -> np.ndarray:
        """Sorted vertex ids of the named parts and loops."""
        return np.unique(np.concatenate([np.asarray(self.parts[n] if n in self.parts else self.loops[n])
                                         for n in names]).astype(np.int64))

    def both(self, name: str) -> np.ndarray:
        return self.union(name + "_L", name + "_R")

    def arc_parameter(self, loop: str) -> np.ndarray:
        """[N] normalised arc length (0 .. 1) along an open path of ``loops``."""
        p = self.vertices[self.loops[loop]]
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
        return s / s[-1]

    def margin_profile(self, loop: str) -> np.ndarray:
        """[N] sin(pi s) along a lid margin (s its arc parameter): 0 at the canthi, 1 mid-lid."""
        return np.sin(np.pi * self.arc_parameter(loop))

    def surface_frame(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Orthonormal tangent directions [N, 3] at vertices: ``up`` (+y projected on the
        tangent plane) and ``medial`` (toward the midline, orthogonal to ``up``)."""
        n = mo.vertex_normals(self.vertices, self.triangles)[ids]
        up = np.array([0.0, 1.0, 0.0]) - n[:, 1:2] * n
        up /= np.linalg.norm(up, axis=1, keepdims=True)
        medial = -self.side(ids)[:, None] * np.array([1.0, 0.0, 0.0])
        medial = medial - (medial * n).sum(1, keepdims=True) * n - (medial * up).sum(1, keepdims=True) * up
        return up, medial / np.maximum(np.linalg.norm(medial, axis=1, keepdims=True), 1e-12)

    def filled(self) -> tuple[np.ndarray, np.ndarray]:
        """The mesh with its openings closed again: (vertices [V + X, 3], triangles [F', 3]).

        The removed triangles come back subdivided like the rest; their edges on an opening's
        rim already have a midpoint (the rim loops alternate MediaPipe vertices and
        midpoints), the X edges inside an opening get a new vertex after the rig's own."""
        v = self.vertices
        mid: dict[tuple[int, int], int] = {}
        mouth = self.loops["lip_inner_upper"] + self.loops["lip_inner_lower"][-2:0:-1]
        for loop in (mouth, self.loops["eye_L"], self.loops["eye_R"]):
            for i in range(0, len(loop), 2):
                a, b = loop[i], loop[(i + 2) % len(loop)]
                mid[min(a, b), max(a, b)] = loop[i + 1]
        inside: list[np.ndarray] = []

        def midpoint(a: int, b: int) -> int:
            key = (min(a, b), max(a, b))
            if key not in mid:
                mid[key] = len(v) + len(inside)
                inside.append(0.5 * (v[a] + v[b]))
            return mid[key]

        triangles = []
        for a, b, c in self.removed_triangles.tolist():
            ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
            triangles += [(a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca)]
        return np.concatenate([v, np.reshape(inside, (-1, 3))]), np.concatenate([self.triangles, triangles])

    def mirrored(self, ids: np.ndarray, left: tuple[float, float, float]) -> np.ndarray:
        """[N, 3] copies of a vector given for the subject's left side, x mirrored on the right."""
        out = np.tile(np.asarray(left, dtype=np.float64), (len(ids), 1))
        out[:, 0] *= self.side(ids)
        return out

    # -------------------------------------------------------------- field toolkit
    def move(self, handles: np.ndarray, values: np.ndarray, anchors: np.ndarray,
             carried: np.ndarray = np.zeros(0, np.int64)) -> np.ndarray:
        """[V, 3] field equal to ``values`` [N, 3] on ``handles`` [N] (distinct ids), 0 on
        ``anchors`` (those not among the handles), ``smoothstep(w) * e`` elsewhere (see
        the module docstring). ``carried`` ids (not handles or anchors) get w = 1: they move
        fully with ``e`` without fixing it, which widens a small handle (a harmonic weight
        falls off steeply next to one, so the skin there would be crushed)."""
        handles = np.asarray(handles, dtype=np.int64)
        carried = np.setdiff1d(carried, handles)
        anchors = np.setdiff1d(anchors, np.r_[handles, carried])
        w = mo.harmonic_fill(self.laplacian, np.concatenate([handles, carried, anchors]),
                             np.concatenate([np.ones(len(handles) + len(carried)), np.zeros(len(anchors))]))
        e = mo.harmonic_fill(self.laplacian, handles, values)
        return mo.smoothstep(w)[:, None] * e

    def bump(self, centre: int, radius: float, vector) -> np.ndarray:
        """[V, 3] Wendland C2 bump of Euclidean ``radius`` (mm) around vertex ``centre``,
        equal to ``vector`` [3] there."""
        r = np.linalg.norm(self.vertices - self.vertices[centre], axis=1)
        return mo.wendland_c2(r, radius)[:, None] * np.asarray(vector, dtype=np.float64)

    def crease(self, path: Sequence[int], radius: float, depth: float) -> np.ndarray:
        """[V, 3] a groove along the polyline through vertices ``path``: each vertex moves
        ``depth`` mm into the surface (against its normal) times the Wendland C2 bump of its
        distance to the polyline, 0 from ``radius`` mm on."""
        ends = self.vertices[np.asarray(path)]
        a, b = ends[:-1], ends[1:]                                                  # [S, 3] segments
        d = self.vertices[:, None] - a[None]                                        # [V, S, 3]
        t = np.clip((d * (b - a)).sum(-1) / ((b - a) ** 2).sum(-1), 0.0, 1.0)
        distance = np.linalg.norm(d - t[..., None] * (b - a), axis=-1).min(1)      # [V]
        normals = mo.vertex_normals(self.vertices, self.triangles)
        return -depth * mo.wendland_c2(distance, radius)[:, None] * normals

    def lip_values(self, upper: _LipMotion, lower: _LipMotion) -> tuple[np.ndarray, np.ndarray]:
        """Handle values on the whole vermilion: ``upper`` and ``lower`` give the upper and
        lower lip's displacement, blended by ``lip_upper`` so the commissures get a smooth
        mixture. Returns (ids [N], values [N, 3])."""
        ids = self.parts["lips"]
        t = np.clip(np.abs(self.x[ids]) / self.corner_x, 0.0, 1.0)
        a = self.lip_upper[ids, None]
        return ids, a * upper(self, ids, t) + (1.0 - a) * lower(self, ids, t)

    def move_lips(self, upper: _LipMotion, lower: _LipMotion, anchors: tuple[str, ...] = (),
                  carried: np.ndarray = np.zeros(0, np.int64)) -> np.ndarray:
        """:meth:`move` with :meth:`lip_values` as handles; anchored: the lid margins, nose,
        face oval and the named ``anchors``; ``carried`` as in :meth:`move`."""
        ids, values = self.lip_values(upper, lower)
        return self.move(ids, values, self.union("eye_L", "eye_R", "nose", "face_oval", *anchors), carried)

    @property
    def mouth_corners(self) -> tuple[int, int]:
        """The outer lip corners' vertex ids (subject's right, left)."""
        return self.loops["lip_outer_upper"][0], self.loops["lip_outer_upper"][-1]

    def near_mouth_corners(self, radius: float) -> np.ndarray:
        """Ids of the vertices within ``radius`` mm (Euclidean) of either outer lip corner."""
        corners = self.vertices[list(self.mouth_corners)]
        return np.flatnonzero((np.linalg.norm(self.vertices[:, None] - corners[None], axis=2) < radius).any(1))


#: Lip displacement [N, 3] of lip vertices ``ids`` [N] given t = |x| / corner |x| [N].
_LipMotion = Callable[[FaceRig, np.ndarray, np.ndarray], np.ndarray]


def _still(rig: FaceRig, ids: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.zeros((len(ids), 3))


def _profile(t: np.ndarray, knots: tuple[float, ...], values: tuple[float, ...]) -> np.ndarray:
    """A smooth (C1, monotone between knots) even function of t through (knot, value) pairs
    given for t >= 0 (the first knot is 0, where the curve is flat); constant beyond the
    last knot."""
    k = np.asarray(knots, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    curve = scipy.interpolate.PchipInterpolator(np.concatenate([-k[:0:-1], k]), np.concatenate([v[:0:-1], v]))
    return curve(np.clip(np.abs(t), 0.0, k[-1]))


# ------------------------------------------------------------------------ building the rig
def _mediapipe_contours() -> dict[str, np.ndarray]:
    """MediaPipe's named contours as [N, 2] edge arrays. MediaPipe's LEFT_* are the
    subject's left, +x in the canonical mesh (checked in :func:`canonical_rig`)."""
    from mediapipe.python.solutions import face_mesh_connections as fmc

    def edges(s):
        return np.array(sorted(s), dtype=np.int64)

    return {"lips": edges(fmc.FACEMESH_LIPS), "eye_L": edges(fmc.FACEMESH_LEFT_EYE),
            "eye_R": edges(fmc.FACEMESH_RIGHT_EYE), "brow_L": edges(fmc.FACEMESH_LEFT_EYEBROW),
            "brow_R": edges(fmc.FACEMESH_RIGHT_EYEBROW), "face_oval": edges(fmc.FACEMESH_FACE_OVAL)}


def _components(edges: np.ndarray) -> list[np.ndarray]:
    """An edge set [N, 2] split into its connected components (edge arrays)."""
    ids, index = np.unique(edges, return_inverse=True)
    index = index.reshape(edges.shape)
    g = sp.coo_matrix((np.ones(len(edges)), (index[:, 0], index[:, 1])), shape=(len(ids),) * 2)
    labels = csgraph.connected_components(g, directed=False)[1]
    return [edges[labels[index[:, 0]] == c] for c in range(labels.max() + 1)]


def _upper_neighbour(vertices: np.ndarray, edges: np.ndarray, v: int) -> int:
    nb = [q if p == v else p for p, q in edges.tolist() if v in (p, q)]
    return max(nb, key=lambda n: vertices[n, 1])


def _two_halves(cycle: list[int], end: int) -> tuple[list[int], list[int]]:
    """A cycle split at ``end`` into two paths from its first vertex to ``end``."""
    k = cycle.index(end)
    return cycle[:k + 1], [cycle[0]] + cycle[:k - 1:-1]


def _closed_path_edges(path: list[int]) -> np.ndarray:
    return np.array(list(zip(path, path[1:] + path[:1])), dtype=np.int64)


def _outside_label(triangles: np.ndarray, labels: np.ndarray) -> int:
    return labels[np.flatnonzero((triangles == _TOP_OF_FOREHEAD).any(1))[0]]


def _enclosed(triangles: np.ndarray, loop: list[int]) -> np.ndarray:
    """Vertex ids of the triangles a closed vertex path encloses (the path included)."""
    labels = mo.cut_components(triangles, _closed_path_edges(loop))
    if labels.max() != 1:
        raise ValueError("the path does not cut the mesh in two")
    return np.unique(triangles[labels != _outside_label(triangles, labels)])


def canonical_rig(calibrated: bool = True) -> FaceRig:
    """Cut, subdivide and label assets/mediapipe_canonical_face.npz (see :class:`FaceRig`),
    its points first moved by the rest-shape calibration (:func:`rest_offsets`) when
    ``calibrated`` and the calibration exists."""
    with importlib.resources.as_file(asset_file(CANONICAL_FILE)) as path, np.load(path) as z:
        v0 = z["vertices"].astype(np.float64)
        tri0 = z["triangles"].astype(np.int64)
        uv0 = z["uv"].astype(np.float64)
    calibration = rest_offsets() if calibrated else None
    if calibration is not None:
        v0 = v0 + calibration[0]
    contours = _mediapipe_contours()
    for s, sign in (("L", 1), ("R", -1)):
        if np.sign(v0[np.unique(contours["eye_" + s]), 0].mean()) != sign:
            raise ValueError(f"MediaPipe's eye_{s} contour is not on the subject's {s} side")
    m0 = np.array([int(np.argmin(np.linalg.norm(v0 - p * [-1, 1, 1], axis=1))) for p in v0])
    if np.abs(v0[m0] * [-1, 1, 1] - v0).max() > 1e-3:
        raise ValueError("the canonical mesh is not mirror-symmetric")

    def sided(ids_right: tuple[int, ...], s: str) -> list[int]:
        return [int(i) for i in (m0[list(ids_right)] if s == "L" else ids_right)]

    # ---- ordered contours on the MediaPipe mesh
    loops0: dict[str, list[int]] = {}
    lip_cycles = sorted(_components(contours["lips"]), key=lambda e: np.ptp(v0[np.unique(e), 1]))
    for name, edges in zip(("lip_inner", "lip_outer"), lip_cycles):  # the inner loop is the flatter one
        ids = np.unique(edges)
        right, left = int(ids[np.argmin(v0[ids, 0])]), int(ids[np.argmax(v0[ids, 0])])
        cycle = mo.order_cycle(edges, right, _upper_neighbour(v0, edges, right))
        loops0[name + "_upper"], loops0[name + "_lower"] = _two_halves(cycle, left)
    for s in ("L", "R"):
        edges = contours["eye_" + s]
        ids = np.unique(edges)
        lateral, medial = int(ids[np.argmax(np.abs(v0[ids, 0]))]), int(ids[np.argmin(np.abs(v0[ids, 0]))])
        loops0["eye_" + s] = mo.order_cycle(edges, lateral, _upper_neighbour(v0, edges, lateral))
        loops0["upper_margin_" + s], loops0["lower_margin_" + s] = _two_halves(loops0["eye_" + s], medial)
        chains = sorted(_components(contours["brow_" + s]), key=lambda e: -v0[np.unique(e), 1].mean())
        for name, edges in zip(("brow_upper_", "brow_lower_"), chains):
            ids = np.unique(edges)
            loops0[name + s] = mo.order_chain(edges, int(ids[np.argmin(np.abs(v0[ids, 0]))]))

    # ---- cut the mouth slit and the eye openings out
    mouth = loops0["lip_inner_upper"] + loops0["lip_inner_lower"][-2:0:-1]
    cut = np.concatenate([_closed_path_edges(p) for p in (mouth, loops0["eye_L"], loops0["eye_R"])])
    labels = mo.cut_components(tri0, cut)
    keep = labels == _outside_label(tri0, labels)

    # ---- subdivide once; the mirror map follows the edges to the midpoints
    v, tri, (uv,), edges = mo.subdivide_midpoint(v0, tri0[keep], (uv0,))
    mid = mo.edge_midpoint_ids(edges, len(v0))
    rig = FaceRig(vertices=v, triangles=tri, uv=uv, laplacian=mo.cotangent_laplacian(v, tri),
                  mirror=np.concatenate([m0, [mid[(m0[a], m0[b])] for a, b in edges.tolist()]]),
                  removed_triangles=tri0[~keep])
    loops = rig.loops
    loops.update({k: mo.refine_path(p, mid, closed=k.startswith("eye_")) for k, p in loops0.items()})
    (oval,) = [b for b in mo.boundary_loops(tri) if _TOP_OF_FOREHEAD in b]
    k = oval.index(_TOP_OF_FOREHEAD)
    loops["face_oval"] = oval[k:] + oval[:k]
    if not set(np.unique(contours["face_oval"]).tolist()) <= set(oval):
        raise ValueError("MediaPipe's face oval is not the mesh boundary")

    # ---- regions
    graph = mo.edge_graph(v, tri)
    parts = rig.parts
    parts["lips"] = _enclosed(tri, loops["lip_outer_upper"] + loops["lip_outer_lower"][-2:0:-1])
    parts["nose"] = _enclosed(tri, mo.edge_path(graph, list(_NOSE_OUTLINE), closed=True))
    parts["chin_boss"] = np.flatnonzero(mo.edge_distance(graph, np.array(_CHIN_BOSS)) <= 8.0)
    for s in ("L", "R"):
        up, lo = loops["upper_margin_" + s], loops["lower_margin_" + s]
        bu, bl = loops["brow_upper_" + s], loops["brow_lower_" + s]
        parts["brow_" + s] = _enclosed(tri, bu[:-1] + mo.edge_path(graph, [bu[-1], bl[-1]]) + bl[-2:0:-1]
                                       + mo.edge_path(graph, [bl[0], bu[0]])[:-1])
        parts["upper_lid_" + s] = _enclosed(tri, up[:-1] + mo.edge_path(graph, [up[-1], bl[0]]) + bl[1:-1]
                                            + mo.edge_path(graph, [bl[-1], up[0]])[:-1])
        parts["lower_lid_" + s] = _enclosed(
            tri, lo[:-1] + mo.edge_path(graph, [lo[-1]] + sided(_LOWER_LID_OUTLINE_R, s)[::-1] + [lo[0]])[:-1])
        loops["cheek_line_" + s] = mo.edge_path(graph, sided(_CHEEK_LINE_R, s))
        for name, seeds in (("infraorbital_", _INFRAORBITAL_CHEEK_R), ("canthus_skin_", _LATERAL_CANTHUS_SKIN_R)):
            parts[name + s] = np.flatnonzero(mo.edge_distance(graph, np.array(sided(seeds, s))) <= 4.0)

    # ---- lip coordinates
    iu, il = loops["lip_inner_upper"][1:-1], loops["lip_inner_lower"][1:-1]
    ou, ol = loops["lip_outer_upper"][1:-1], loops["lip_outer_lower"][1:-1]
    rig.lip_upper = mo.harmonic_fill(rig.laplacian, np.array(iu + ou + il + ol),
                                     np.r_[np.ones(len(iu) + len(ou)), np.zeros(len(il) + len(ol))])
    inner = np.unique(loops["lip_inner_upper"] + loops["lip_inner_lower"])
    outer = np.unique(loops["lip_outer_upper"] + loops["lip_outer_lower"])
    rig.lip_depth = mo.harmonic_fill(rig.laplacian, np.r_[inner, outer],
                                     np.r_[np.zeros(len(inner)), np.ones(len(outer))])
    return rig


# ------------------------------------------------------------------------ action-unit recipes
def _brows(rig: FaceRig, up: Callable, medial: Callable | None = None) -> np.ndarray:
    """Brows as handles, moved ``up(|x|)`` mm along the surface toward +y and
    ``medial(|x|)`` mm along it toward the midline; lid margins, nose, face oval anchored."""
    ids = rig.both("brow")
    ax = np.abs(rig.x[ids])
    up_dir, medial_dir = rig.surface_frame(ids)
    values = up_dir * up(ax)[:, None] + (0.0 if medial is None else medial_dir * medial(ax)[:, None])
    return rig.move(ids, values, rig.union("eye_L", "eye_R", "nose", "face_oval"))


def _au1(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    return _brows(rig, lambda a: au.magnitude_mm * _profile(a, (0, 14, 50), (1, 1, 0.25)))


def _au2(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    return _brows(rig, lambda a: au.magnitude_mm * _profile(a, (0, 20, 50, 60), (0.1, 0.1, 1, 1)))


def _au4(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    # inner and middle brow: 7 mm down and 2 mm medial (mostly down: posed brows barely converge
    # in the image); posed anger lowers the middle brow as far as the inner one, the outer half
    # as far (facs.py), so the descent holds to |x| = 30 mm. Together with AU1, whose rise is
    # medial, this leaves the inner ends above the middle: the oblique brow of 1+4.
    down, medial = np.array([7.0, 2.0]) / np.hypot(7.0, 2.0) * au.magnitude_mm
    return _brows(rig, lambda a: -down * _profile(a, (0, 14, 30, 50), (1, 1, 1, 0.5)),
                  lambda a: medial * _profile(a, (0, 14, 50), (1, 1, 1 / 3)))


def _lids(rig: FaceRig, margins: dict[str, Callable], anchors: np.ndarray) -> np.ndarray:
    """Lid margins as handles: ``margins[loop_prefix](s)`` gives [N, 3] displacements along
    that margin on side s (both sides); the canthi stay, and so do the brows, nose, lips,
    face oval and ``anchors``."""
    handles, values = [], []
    for s in ("L", "R"):
        canthi = [rig.loops["eye_" + s][0], rig.loops["upper_margin_" + s][-1]]
        handles.append(canthi)
        values.append(np.zeros((2, 3)))
        for prefix, motion in margins.items():
            handles.append(rig.loops[prefix + s][1:-1])
            values.append(motion(s)[1:-1])
    return rig.move(np.concatenate(handles), np.concatenate(values),
                    np.r_[anchors, rig.union("brow_L", "brow_R", "nose", "lips", "face_oval")])


def _au5(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    return _lids(rig, {"upper_margin_": lambda s: np.outer(rig.margin_profile("upper_margin_" + s),
                                                           [0.0, au.magnitude_mm, -0.4 * au.magnitude_mm])},
                 rig.both("lower_margin"))


def _au7(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    return _lids(rig, {"lower_margin_": lambda s: np.outer(rig.margin_profile("lower_margin_" + s),
                                                           [0.0, au.magnitude_mm, 0.0]),
                       "upper_margin_": lambda s: np.outer(rig.margin_profile("upper_margin_" + s),
                                                           [0.0, -0.25 * au.magnitude_mm, 0.0])},
                 np.zeros(0, np.int64))


def _au43(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    """Each upper-margin vertex and its lower-margin partner meet (exact closure)."""
    def share(s):  # how far the lower margin rises, as a fraction of the gap
        return scipy.interpolate.PchipInterpolator(*LID_CLOSURE_LOWER_SHARE)(rig.arc_parameter("lower_margin_" + s))

    def gap(s):
        return rig.vertices[rig.loops["upper_margin_" + s]] - rig.vertices[rig.loops["lower_margin_" + s]]
    return _lids(rig, {"upper_margin_": lambda s: -(1.0 - share(s))[:, None] * gap(s),
                       "lower_margin_": lambda s: share(s)[:, None] * gap(s)}, np.zeros(0, np.int64))


def _au6(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    cheek, canthus, brow = rig.both("infraorbital"), rig.both("canthus_skin"), rig.both("brow")
    lower_margin = [np.array(rig.loops["lower_margin_" + s]) for s in ("L", "R")]
    handles = np.concatenate([cheek, canthus, brow] + lower_margin)
    values = np.concatenate(
        [rig.mirrored(cheek, (0.0, au.magnitude_mm, 1.0)),           # infraorbital cheek up, bunching forward
         rig.mirrored(canthus, (-2.0, 1.0, 0.0)),                   # crow's-feet skin drawn medially
         np.outer(-_profile(np.abs(rig.x[brow]), (0, 30, 50), (0, 0, 1.0)), [0, 1, 0])]  # lateral brow down
        + [np.outer(rig.margin_profile("lower_margin_" + s), [0.0, _AU6_LOWER_LID_MM, 0.0]) for s in ("L", "R")])
    return rig.move(handles, values, rig.union("upper_margin_L", "upper_margin_R", "nose", "lips", "face_oval"))


def _au9(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    v = rig.vertices
    nose, brow = rig.parts["nose"], rig.both("brow")
    # the nose skin rises fully up to 12 mm above the nose's lowest point, 0.5 mm at the root;
    # the wings the full magnitude, the tip and columella on the midline less than half of it
    lateral = _profile(v[nose, 0], (0, 3, 12), (0.45, 0.45, 1.0))
    nose_up = 0.5 + (au.magnitude_mm - 0.5) * lateral * _profile(v[nose, 1] - v[nose, 1].min(), (0, 12, 40), (1, 1, 0))
    # the upper lip goes up with the wings (7.5 mm at the midline, 5 at the corners), and so does
    # the infraorbital cheek (4 mm); the brows come down medially
    lips, lip_values = rig.lip_values(lambda r, ids, t: np.outer(7.5 - 2.5 * t ** 2, [0, 1, 0]), _still)
    cheek = rig.both("infraorbital")
    handles = np.r_[nose, brow, lips, cheek]
    values = np.r_[np.outer(nose_up, [0, 1, 0]),
                   np.outer(-_profile(np.abs(v[brow, 0]), (0, 14, 40), (4.0, 4.0, 0.0)), [0, 1, 0]),
                   lip_values, rig.mirrored(cheek, (0.0, 4.0, 1.0))]
    # the infraorbital skin pushed up narrows the eye from below (FACS: the lower lid may rise)
    lower_lids = _lids(rig, {"lower_margin_": lambda s: np.outer(rig.margin_profile("lower_margin_" + s),
                                                                 [0.0, 1.5, 0.0])}, rig.both("upper_margin"))
    return rig.move(handles, values, rig.union("eye_L", "eye_R", "face_oval")) + lower_lids


def _au10(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    t_peak = abs(rig.x[_UPPER_LIP_PARAMEDIAN_R]) / rig.corner_x

    def upper(r, ids, t):
        up = au.magnitude_mm * _profile(t, (0, t_peak, 1), (0.625, 1.0, 0.25))
        return np.stack([0 * t, up, np.full(len(t), 0.25 * au.magnitude_mm)], 1)  # slightly everted
    return rig.move_lips(upper, _still)


def _corner_pull(corner_left, middle_upper=(0.0, 0.0, 0.0), middle_lower=(0.0, 0.0, 0.0), power: float = 2.0):
    """(upper, lower) lip motions led by the corners: the corner moves by ``corner_left``
    [3] (x mirrored on the right), the lips between blend toward the midline motions
    ``middle_*``: the lateral part as sin(pi t / 2) (odd and smooth across the midline),
    up/down as t^power (t = |x| / corner x; a lower power carries more of the lip along), and
    back/forth as t^2 (the lips slide over the dental arch, they cannot go into it)."""
    c = np.asarray(corner_left, dtype=np.float64)

    def motion(middle):
        def f(rig, ids, t):
            share = np.stack([t ** 2, t ** power, t ** 2], 1)
            out = share * c + (1.0 - share) * middle
            out[:, 0] = c[0] * np.sin(0.5 * np.pi * t) * rig.side(ids)
            return out
        return f
    return motion(np.asarray(middle_upper, dtype=np.float64)), motion(np.asarray(middle_lower, dtype=np.float64))


def _along(direction, length: float) -> np.ndarray:
    d = np.asarray(direction, dtype=np.float64)
    return d / np.linalg.norm(d) * length


def _au12(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    # corner up, lateral and back toward the zygoma; the upper lip follows the corners up (its
    # midline 3 mm: posed smiles raise it ~4 mm, MediaPipe landmarks against the same person's
    # neutral, of which lips parting gives ~1 mm)
    upper, lower = _corner_pull(_along((7.0, 7.0, -5.0), au.magnitude_mm), (0, 3.0, 0), (0, 0.5, 0), power=1.3)
    cheek = (0.0, 3.5, 2.0)  # the cheek mass above the nasolabial fold bunches up and forward
    bumps = sum(rig.bump(c, 22.0, cheek) for c in (_CHEEK_MASS_R, rig.mirror[_CHEEK_MASS_R]))
    # ... against the nasolabial fold, which deepens (a groove the renderer's re-shading shows)
    folds = sum(rig.crease(path, 6.0, 1.5) for path in (_NASOLABIAL_FOLD_R, rig.mirror[list(_NASOLABIAL_FOLD_R)]))
    # the modiolus, the knot of muscle ~1 cm lateral to the corner where zygomaticus major
    # inserts, moves with the corner; without it the pull crushes the skin next to the corner
    return rig.move_lips(upper, lower, ("chin_boss",), carried=rig.near_mouth_corners(_MODIOLUS_RADIUS_MM)) + bumps + folds


def _au14(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    upper, lower = _corner_pull(_along((-1.5, 0.5, -3.0), au.magnitude_mm), (0, 0, -0.5), (0, 0, -0.5))
    field_ = rig.move_lips(upper, lower)
    normals = mo.vertex_normals(rig.vertices, rig.triangles)
    for corner in rig.mouth_corners:
        # the dimple: a 1.5 mm dent 7 mm lateral to the corner, slightly above and behind it
        target = rig.vertices[corner] + [np.sign(rig.x[corner]) * 7.0, 1.0, -2.0]
        centre = int(np.argmin(np.linalg.norm(rig.vertices - target, axis=1)))
        field_ += rig.bump(centre, 7.0, -1.5 * normals[centre])
    return field_


def _au15(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    return rig.move_lips(*_corner_pull((0.25 * au.magnitude_mm, -au.magnitude_mm, 0.0), (0, 0, 0), (0, -0.5, 0)))


def _au16(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    def lower(r, ids, t):  # the outer contour drops the full magnitude, the inner one 1 mm less: eversion
        g = _profile(t, (0, 0.45, 1.0), (1, 1, 0))
        return np.stack([0 * t, -g * (au.magnitude_mm - 1.0 + r.lip_depth[ids]), 1.5 * g], 1)
    return rig.move_lips(_still, lower)


def _au17(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    lips, lip_values = rig.lip_values(
        _still, lambda r, ids, t: np.outer(_profile(t, (0, 0.5, 1.0), (1, 1, 0.2)), [0, 2.5, 2.0]))
    chin = rig.parts["chin_boss"]
    return rig.move(np.r_[lips, chin], np.r_[lip_values, np.outer(np.ones(len(chin)), [0, au.magnitude_mm, 1.5])],
                    rig.union("eye_L", "eye_R", "nose", "face_oval"))


def _au20(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    return rig.move_lips(*_corner_pull(_along((6.7, -3.0, -6.9), au.magnitude_mm)))  # back around the dental arch


def _au23(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    upper, lower = _corner_pull(_along((-2.0, 0.0, 0.5), au.magnitude_mm), (0, 0, 0.5), (0, 0, 0.5))

    def thinned(motion, sign):  # the outer (vermilion) border moves 1.5 mm toward the slit
        return lambda r, ids, t: motion(r, ids, t) + np.outer(sign * 1.5 * r.lip_depth[ids] * (1.0 - t ** 2), [0, 1, 0])
    return rig.move_lips(thinned(upper, -1.0), thinned(lower, 1.0))


def _au24(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    """The inner contours meet: the upper one goes 40 % of the gap, the lower one 60 %."""
    v = rig.vertices
    iu, il = rig.loops["lip_inner_upper"], rig.loops["lip_inner_lower"]
    order = np.argsort(v[iu, 0])  # the gap (lower - upper inner contour) as a function of x
    gap = np.stack([np.interp(v[:, 0], v[iu, 0][order], (v[il] - v[iu])[order, k]) for k in range(3)], 1)

    def lip(share, sign):  # plus 1 mm narrowing of the vermilion and 1 mm back
        return lambda r, ids, t: (share * gap[ids] + np.outer(sign * r.lip_depth[ids] * (1.0 - t ** 2), [0, 1, 0])
                                  + [0, 0, -1.0])
    return rig.move_lips(lip(0.4, -1.0), lip(-0.6, 1.0))


def _au25(rig: FaceRig, au: ActionUnit) -> np.ndarray:
    """The lips part without the jaw: the chin boss stays."""
    return rig.move_lips(lambda r, ids, t: np.outer(1.0 - t ** 2, [0, au.magnitude_mm / 3.0, 0]),
                         lambda r, ids, t: np.outer(1.0 - t ** 2, [0, -au.magnitude_mm, 0]), ("chin_boss",))


def jaw_weight(rig: FaceRig) -> np.ndarray:
    """[V] how much each vertex follows the mandible: smoothstep of a harmonic field, 1 on
    the lower lip and on the face oval below the mouth corners, 0 on the upper lip, nose,
    the alar-crease-to-oval cheek lines and the oval above the joint. Toward the commissures
    the lower lip gets less and the upper lip a little, so the mouth opens as an oval."""
    lips = rig.parts["lips"]
    t = np.clip(np.abs(rig.x[lips]) / rig.corner_x, 0.0, 1.0)
    lower = 1.0 - 0.55 * mo.smoothstep((t - 0.3) / 0.7)
    upper = 0.2 * mo.smoothstep((t - 0.5) / 0.5)
    a = rig.lip_upper[lips]
    oval = np.array(rig.loops["face_oval"])
    low = oval[rig.vertices[oval, 1] < rig.vertices[rig.loops["lip_outer_upper"][0], 1]]
    high = oval[rig.vertices[oval, 1] > JAW_PIVOT_YZ_MM[0]]
    zero = np.setdiff1d(np.r_[high, rig.parts["nose"], rig.both("cheek_line")], lips)
    values = np.r_[a * upper + (1.0 - a) * lower, np.ones(len(low)), np.zeros(len(zero))]
    return mo.smoothstep(mo.harmonic_fill(rig.laplacian, np.r_[lips, low, zero], values))


def _jaw_motion(theta: float, glide_yz: tuple[float, float], points: np.ndarray) -> np.ndarray:
    """[N, 3] displacement of points [N, 3] under the mandible's rigid motion: rotation by
    ``theta`` (rad, > 0 opens) about the x-parallel axis through the pivot, then a glide."""
    c, s = np.cos(theta), np.sin(theta)
    y = points[:, 1] - JAW_PIVOT_YZ_MM[0]
    z = points[:, 2] - JAW_PIVOT_YZ_MM[1]
    return np.stack([np.zeros(len(points)), (c - 1) * y - s * z + glide_yz[0], s * y + (c - 1) * z + glide_yz[1]], 1)


def _jaw(rig: FaceRig, au: ActionUnit, glide_yz: tuple[float, float]) -> np.ndarray:
    """The jaw opened until the chin (the table's measuring vertex) drops ``magnitude_mm``."""
    chin = rig.vertices[[au.measured_at[0][0]]]
    theta = scipy.optimize.brentq(lambda a: -_jaw_motion(a, glide_yz, chin)[0, 1] - au.magnitude_mm,
                                  0.0, 0.6, xtol=1e-12)  # the chin's drop peaks near 0.75 rad
    return jaw_weight(rig)[:, None] * _jaw_motion(theta, glide_yz, rig.vertices)


_RECIPES: dict[int, Callable[[FaceRig, ActionUnit], np.ndarray]] = {
    1: _au1, 2: _au2, 4: _au4, 5: _au5, 6: _au6, 7: _au7, 9: _au9, 10: _au10, 12: _au12, 14: _au14,
    15: _au15, 16: _au16, 17: _au17, 20: _au20, 23: _au23, 24: _au24, 25: _au25,
    26: lambda rig, au: _jaw(rig, au, (0.0, 0.0)), 27: lambda rig, au: _jaw(rig, au, JAW_GLIDE_YZ_MM),
    43: _au43,
}


def bilateral_fields(rig: FaceRig) -> dict[str, np.ndarray]:
    """Every action unit of the FACS table as one bilateral field [V, 3] (mm, full
    intensity), keyed ``AU<n>``."""
    return {f"AU{au.number}": _RECIPES[au.number](rig, au) for au in ACTION_UNITS}


def split_lateral(field_: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) parts [V, 3] of a field [V, 3] by the logistic partition of unity in x [V]."""
    left = 1.0 / (1.0 + np.exp(-x / SPLIT_WIDTH_MM))
    return field_ * left[:, None], field_ * (1.0 - left)[:, None]


def expression_basis(rig: FaceRig) -> tuple[list[str], np.ndarray]:
    """(names, fields [E, V, 3]): the table's action units, lateral ones split into L and R."""
    names, fields = [], []
    bilateral = bilateral_fields(rig)
    for au in ACTION_UNITS:
        f = bilateral[f"AU{au.number}"]
        names += list(au.names)
        fields += list(split_lateral(f, rig.x)) if au.lateral else [f]
    return names, np.stack(fields)


# ------------------------------------------------------------------------ identity
def similarity_fields(vertices: np.ndarray) -> np.ndarray:
    """[7, V, 3]: translations along x, y, z, infinitesimal rotations about x, y, z, scale."""
    p = vertices - vertices[:NUM_MEDIAPIPE_VERTICES].mean(0)
    out = [np.broadcast_to(e, p.shape) for e in np.eye(3)] + [np.cross(e, p) for e in np.eye(3)]
    return np.stack(out + [p])


def identity_basis(rig: FaceRig) -> np.ndarray:
    """[K, V, 3] identity modes (see the module docstring).

    The similarity fields are removed by an oblique projection whose
    correction lies in the span of the first :data:`IDENTITY_SMOOTH_SPACE` eigenfunctions:
    the result is exactly orthogonal to them in the mp inner product, yet smooth (an
    orthogonal projection would subtract the sharp, local AU fields themselves and leave
    dents where the fields are not smooth).
    """
    n = NUM_MEDIAPIPE_VERTICES
    vertices, triangles = rig.filled()  # the openings closed: a mode moves both lips alike
    mass = mo.lumped_mass(vertices, triangles)
    _, phi = mo.laplacian_eigenfunctions(mo.cotangent_laplacian(vertices, triangles), mass, IDENTITY_SMOOTH_SPACE)

    def ip(a, b):
        return float(np.sum(a[:n] * b[:n]))

    # an orthonormal basis q (mp inner product) of the similarity span ...
    span = []
    for f in similarity_fields(vertices):
        for q in span:
            f = f - ip(f, q) * q
        if np.sqrt(ip(f, f)) > 1e-9:
            span.append(f / np.sqrt(ip(f, f)))
    q = np.stack(span)
    # ... and its M-orthogonal projection on the smooth space (phi is M-orthonormal)
    smooth = np.einsum("vk,cka->cva", phi, np.einsum("vk,cva->cka", phi * mass[:, None], q))
    coupling = np.einsum("cva,dva->cd", q[:, :n], smooth[:, :n])
    modes = []
    for j in range(1, IDENTITY_EIGENFUNCTIONS + 1):
        for axis in np.eye(3):
            c = np.outer(phi[:, j], axis)
            beta = np.linalg.solve(coupling, np.einsum("cva,va->c", q[:, :n], c[:n]))
            r = c - np.einsum("c,cva->va", beta, smooth)
            for _ in range(2):  # Gram-Schmidt, twice for numerical orthogonality
                for m in modes:
                    r = r - ip(r, m) * m
            if np.sqrt(ip(r, r)) >= IDENTITY_MIN_RESIDUAL * np.sqrt(ip(c, c)):
                modes.append(r / np.sqrt(ip(r, r)))
    # a unit mp norm is an RMS per-vertex displacement of 1 / sqrt(n): rescale to sigma_k
    scale = IDENTITY_SIGMA_MM / np.sqrt(np.arange(1, len(modes) + 1)) * np.sqrt(n)
    return np.stack(modes)[:, :len(rig.vertices)] * scale[:, None, None]


# ------------------------------------------------------------------------ assembly
def _eyeballs(rig: FaceRig) -> dict:
    out = {}
    for s in ("L", "R"):
        lid_points = [i for i in rig.loops["eye_" + s] if i < NUM_MEDIAPIPE_VERTICES]
        apex = rig.vertices[lid_points].mean(0) + [0.0, 0.0, CORNEA_AHEAD_OF_LID_OPENING_MM]
        centre = apex - [0.0, 0.0, EYEBALL_RADIUS_MM]
        out[s] = {"centre_mm": [round(float(c), 4) for c in centre], "radius_mm": EYEBALL_RADIUS_MM,
                  "corneal_apex_mm": [round(float(c), 4) for c in apex]}
    return out


def _ibug68_map() -> LandmarkMap | None:
    path = asset_file(IBUG68_FILE)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    vertices = torch.tensor(data["vertices"], dtype=torch.int64)
    return LandmarkMap(vertices, torch.tensor(data["weights"], dtype=torch.float32),
                       torch.ones(len(vertices), dtype=torch.bool))


def build_default_model(calibrated: bool = True) -> FaceModel:
    """Build the default model from the canonical mesh (deterministic, ~2 s). Includes the
    "ibug68" landmark map when assets/mp468_to_ibug68.json exists; ``calibrated``: see
    :func:`canonical_rig`."""
    rig = canonical_rig(calibrated)
    calibration = rest_offsets() if calibrated else None
    names, expression = expression_basis(rig)
    identity = identity_basis(rig)
    regions = {
        "skin": np.arange(len(rig.vertices)),
        "lips": rig.parts["lips"],
        "lip_inner_upper": rig.loops["lip_inner_upper"],
        "lip_inner_lower": rig.loops["lip_inner_lower"],
        "nose": rig.parts["nose"],
        "face_oval": rig.loops["face_oval"],
        "jaw": np.flatnonzero(jaw_weight(rig) >= 0.5),
    }
    for s in ("L", "R"):
        regions["eye_" + s] = rig.loops["eye_" + s]
        for name in ("upper_lid_", "lower_lid_", "brow_"):
            regions[name + s] = rig.parts[name + s]
    maps = {"mp478": LandmarkMap.from_vertex_ids(
        list(range(NUM_MEDIAPIPE_VERTICES)) + [-1] * (NUM_MEDIAPIPE_LANDMARKS - NUM_MEDIAPIPE_VERTICES))}
    ibug = _ibug68_map()
    if ibug is not None:
        maps["ibug68"] = ibug
    meta = {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "units": "mm",
        "source": "MediaPipe canonical face mesh (assets/mediapipe_canonical_face.npz) with the eye openings "
                  "and mouth slit cut out and one midpoint subdivision; FACS blendshapes and identity basis "
                  "authored by affectsynth.model.default (scripts/build_default_model.py)",
        "licence": "mesh: MediaPipe canonical face mesh, Apache-2.0; fields: authored by affectsynth, MIT",
        "what_it_is": "a generic adult face mesh with hand-authored FACS action-unit blendshapes (displacements "
                      "in mm at FACS intensity E; magnitudes and their sources in affectsynth.affect.facs) and "
                      "a smooth, low-frequency identity prior",
        "what_it_is_not": "a statistical model learned from scans: identity modes are Laplacian eigenfunctions "
                          "scaled by a design prior, not measured shape variation; expression fields are "
                          "designed, not captured; the eyeballs, teeth, gums, tongue and mouth socket are designed from "
                          "typical adult dimensions, not measured from any face. Its neutral has the eyes open.",
        "mediapipe_vertices": NUM_MEDIAPIPE_VERTICES,
        "rest_shape": "MediaPipe canonical mesh" if calibration is None else
                      f"MediaPipe canonical mesh moved by assets/{REST_OFFSETS_FILE}: {calibration[1]}",
        "eyeballs": _eyeballs(rig),
        "mouth_corners": {s: {"outer_vertex": int(rig.loops["lip_outer_upper"][k]),
                              "inner_vertex": int(rig.loops["lip_inner_upper"][k])} for s, k in (("L", -1), ("R", 0))},
        "jaw": {"pivot_yz_mm": list(JAW_PIVOT_YZ_MM), "au27_glide_yz_mm": list(JAW_GLIDE_YZ_MM),
                "region": "vertices whose jaw weight is >= 0.5"},
        "lateral_split_width_mm": SPLIT_WIDTH_MM,
        "identity": {"modes": len(identity), "eigenfunctions": IDENTITY_EIGENFUNCTIONS,
                     "laplacian": "cotangent Laplacian of the mesh with its mouth and eye openings filled",
                     "rms_mm": f"{IDENTITY_SIGMA_MM} / sqrt(k) for mode k = 1..K, over the 468 MediaPipe vertices",
                     "orthogonal_to": "similarity transforms (not the expression basis), in the inner product "
                                      "sum_i a_i . b_i over the 468 MediaPipe vertices"},
    }
    arrays = ModelArrays(mean=rig.vertices, id_basis=identity, exp_basis=expression, triangles=rig.triangles,
                         uv=rig.uv, regions=regions)
    arrays.append(eyeballs(rig, names, expression, identity, first=len(arrays.mean)))
    arrays.append(mouth_interior(rig, names, expression, identity, first=len(arrays.mean)))
    # Interior parts go after the skin, so skin vertex i stays MediaPipe landmark i (i < 468).
    return FaceModel(
        mean=torch.from_numpy(arrays.mean).float(),
        id_basis=torch.from_numpy(arrays.id_basis).float(),
        exp_basis=torch.from_numpy(arrays.exp_basis).float(),
        exp_names=tuple(names),
        triangles=torch.from_numpy(arrays.triangles).long(),
        uv=torch.from_numpy(arrays.uv).float(),
        landmark_maps=maps,
        regions={k: torch.as_tensor(np.asarray(r), dtype=torch.int64) for k, r in arrays.regions.items()},
        materials={k: torch.as_tensor(np.asarray(r), dtype=torch.int64) for k, r in arrays.materials.items()},
        meta=meta,
    )
