"""The mouth interior of the default face model: socket, teeth, gums and tongue.

:func:`mouth_interior` builds it as a :class:`~affectsynth.model.parts.MeshPart` to append
after the skin (:func:`affectsynth.model.default.build_default_model`), so that where the
lips part the renderer draws a mouth, not the photo's old lips or a hole.

* The socket (material ``mouth_socket``): a pouch whose rim *is* the skin's inner-lip loop
  (its triangles use those skin vertices, so it is watertight with the lips and follows
  them under every blendshape and identity), closed at the back :data:`SOCKET_DEPTH_MM`
  behind the upper lip. It is a loft of rings (:data:`SOCKET_RINGS`), each a superellipse
  seen from the front whose depth grows from the midline to the corners, as the lips and
  the dental arch do. Its triangles face into the cavity (front-facing seen through the
  mouth opening).
* Teeth (``teeth``): two arches of 10 crowns (incisors, canines, premolars), each crown a
  closed lofted superellipse with the typical adult crown size of its kind
  (:data:`UPPER_TEETH`, :data:`LOWER_TEETH`), laid side by side along a dental arch
  (:data:`ARCH_MM`). The upper central incisors' edges sit :data:`UPPER_INCISAL_BELOW_LIP_MM`
  below the upper lip's inner edge and :data:`INCISOR_BEHIND_LIP_MM` behind it; the lower
  arch follows the upper one :data:`OVERJET_MM` inside it with :data:`OVERBITE_MM` of
  vertical overlap.
* Gums (``gums``): a band along each arch over the crowns' necks, its margin scalloped
  (high over each crown, down between crowns).
* Tongue (``tongue``): an ellipsoid filling the floor of the mouth inside the lower arch, its
  tip low behind the lower incisors and its dorsum rising backward to
  :data:`TONGUE_DORSUM_ABOVE_LOWER_INCISORS_MM` above the lower incisal edges, as a tongue at
  rest lies (its back near the palate): a mouth that opens shows it behind the lower teeth.

Motion. The upper teeth and gums are fixed to the skull: no expression moves them. The
lower teeth, gums and the tongue move rigidly with the mandible: exactly the rigid motion
of the skin's jaw in :data:`JAW_EXPRESSIONS` (read off those blendshapes where the jaw
weight is 1), nothing in the others. A socket vertex moves with a blend of the rim's
displacement, fading with depth, and, toward the floor, the mandible's motion.

Identity. A dental-arch vertex at x moves as its own lip's inner loop does where it passes
x (the corner's motion beyond the corners) across and up/down, and front/back as the mean of
both lips there: the arches keep their occlusion, follow the mouth's width and shape, and
stay behind both lips when an identity moves one lip back relative to the other. Socket
vertices: the same blend as for expressions, with the lips' identity motion as the deep field.

Everything here is a design, sized from typical adult dental dimensions (crowns as in the
usual dental-anatomy tables; ~2 mm of overbite and overjet), not measured from any face.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.interpolate

from . import mesh_ops as mo
from .parts import MeshPart

__all__ = ["mouth_interior", "JAW_EXPRESSIONS", "Tooth", "UPPER_TEETH", "LOWER_TEETH", "ARCH_MM", "SOCKET_RINGS",
           "SOCKET_DEPTH_MM", "UPPER_INCISAL_BELOW_LIP_MM", "INCISOR_BEHIND_LIP_MM", "OVERBITE_MM", "OVERJET_MM",
           "TONGUE_DORSUM_ABOVE_LOWER_INCISORS_MM", "TONGUE_HALF_SIZE_MM"]

#: The expressions that move the mandible; the lower parts follow their rigid jaw motion.
JAW_EXPRESSIONS = ("AU26", "AU27")

#: The upper central incisors' edges lie this far below the upper lip's inner edge at the
#: midline (1-3 mm of incisor shows between relaxed, just-parted lips)...
UPPER_INCISAL_BELOW_LIP_MM = 2.0
#: ... and their labial faces this far behind it (the lip rests on them).
INCISOR_BEHIND_LIP_MM = 3.2
#: Vertical overlap of the lower incisors behind the upper ones.
OVERBITE_MM = 2.0
#: Horizontal distance from the upper arch's labial line to the lower one's (top view).
OVERJET_MM = 2.5
#: The tongue's highest point (its dorsum, :data:`TONGUE_HALF_SIZE_MM` behind its tip) lies this
#: far above the lower incisal edges.
TONGUE_DORSUM_ABOVE_LOWER_INCISORS_MM = 1.0
#: The tongue ellipsoid's half length (front to back), half width and half height, mm: the oral
#: tongue of an adult is ~5 cm long and, inside the lower arch, ~3 cm wide at the premolars.
TONGUE_HALF_SIZE_MM = (20.0, 13.0, 10.0)
#: How far the gum covers each crown's neck, and how far the band reaches beyond the crown.
GUM_OVERLAP_MM = 1.0
GUM_HEIGHT_MM = 3.0


@dataclass(frozen=True)
class Tooth:
    """A crown's shape, in mm.

    Attributes:
        width: mesio-distal width.
        height: from the incisal edge (cusp tip) to the neck.
        thickness: labio-lingual thickness at the edge (the occlusal table for premolars)
            and at the neck.
        cusp: how far the crown's incisal corners rise above its tip (rounded corners of an
            incisor, the slopes of a canine's cusp).
        cusp_power: the edge's shape |u|^p across the crown (4: straight with rounded
            corners, ~1.3: a pointed cusp).
        recess: how far the tip lies from the arch's edge level, away from the other arch.
        tilt_deg: labial inclination: the crown's axis leans this far from vertical, the
            edge ahead of the neck.
    """

    width: float
    height: float
    thickness: tuple[float, float]
    cusp: float
    cusp_power: float
    recess: float
    tilt_deg: float


# Crown sizes: typical adult values (central, lateral incisor, canine, first and second
# premolar, from the midline back), as in the usual dental-anatomy tables.
UPPER_TEETH = (
    Tooth(8.5, 10.5, (1.0, 7.0), 1.0, 4.0, 0.0, 15.0),
    Tooth(6.5, 9.0, (1.0, 6.0), 1.2, 3.0, 0.7, 15.0),
    Tooth(7.5, 10.0, (1.5, 8.0), 2.5, 1.3, 0.2, 10.0),
    Tooth(7.0, 8.5, (6.0, 9.0), 1.8, 1.5, 0.5, 5.0),
    Tooth(6.5, 8.5, (6.0, 9.0), 1.5, 1.5, 0.8, 5.0),
)
LOWER_TEETH = (
    Tooth(5.0, 9.0, (1.0, 6.0), 0.5, 4.0, 0.0, 10.0),
    Tooth(5.5, 9.5, (1.0, 6.0), 0.7, 4.0, 0.0, 10.0),
    Tooth(7.0, 11.0, (1.5, 7.5), 2.3, 1.3, -0.3, 5.0),
    Tooth(7.0, 8.5, (5.0, 7.5), 1.8, 1.5, 0.5, 0.0),
    Tooth(7.0, 8.0, (5.5, 8.0), 1.5, 1.5, 0.8, 0.0),
)

#: The upper arch's labial / buccal line at the incisal level seen from above: (|x|, depth
#: behind the central incisors' labial face) control points, mm, interpolated by a spline
#: with zero slope at the midline. Intercanine width ~34 mm, as in adults.
ARCH_MM = ((0.0, 0.0), (4.25, 0.5), (8.5, 1.9), (12.5, 4.3), (16.0, 8.2), (18.5, 12.5), (20.5, 18.0),
           (22.5, 24.5), (24.5, 32.0))

#: Socket rings behind the rim, front to back: (half-width beyond the mouth corner, height
#: above and below the lips' mid-height, depth behind the upper lip's inner edge at the
#: top, bottom and corners, superellipse exponent of the front view (1: an ellipse,
#: smaller: boxier)), mm. Ring 1 is the lips' inner face, ring 2 the vestibule over the
#: gums, rings 3-4 the roof, floor and cheeks, ring 5 the back.
SOCKET_RINGS = (
    (1.5, 7.0, 9.0, 1.2, 0.7, 14.7, 1.0),
    (4.5, 15.0, 15.0, 1.2, 3.0, 19.0, 0.8),
    (6.5, 18.0, 17.0, 10.0, 10.0, 25.0, 0.6),
    (6.5, 19.0, 17.0, 22.0, 22.0, 31.0, 0.6),
    (1.0, 19.0, 15.0, 31.0, 31.0, 34.0, 0.7),
)
#: The pouch's back pole, behind the upper lip's inner edge.
SOCKET_DEPTH_MM = 36.0

# Mesh resolution: points around a crown, rings along it (edge to neck); tongue rings and
# points around them.
_CROWN_AROUND = 8
_GUM_COLUMNS = 4
_CROWN_RINGS = (0.0, 0.15, 0.4, 0.7, 1.0)
_TONGUE_RINGS = 7
_TONGUE_AROUND = 12


# ------------------------------------------------------------------------ the part
#: A displacement field: points [P, 3] -> [C, P, 3] (C expressions or identity modes).
_Field = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class _Piece:
    """Vertices [P, 3] and triangles [T, 3] of one piece: ids >= 0 are its own vertices,
    id -1 - i is rim vertex i."""

    vertices: np.ndarray
    triangles: np.ndarray


def mouth_interior(rig, exp_names: Sequence[str], expression: np.ndarray, identity: np.ndarray,
                   first: int) -> MeshPart:
    """The mouth interior of a :class:`~affectsynth.model.default.FaceRig`.

    Args:
        rig: the skin rig (its ``loops["lip_inner_upper"/"lip_inner_lower"]`` are the rim).
        exp_names: E expression names, in the order of ``expression``.
        expression: [E, Vs, 3] the skin's expression fields (Vs skin vertices), mm.
        identity: [K, Vs, 3] the skin's identity modes, mm.
        first: the number of model vertices before this part.
    Returns:
        a :class:`MeshPart` with regions "mouth_socket", "teeth_upper", "teeth_lower",
        "gums", "tongue" (its own vertices, global ids) and materials "mouth_socket",
        "teeth", "gums", "tongue".
    """
    from .default import jaw_weight  # default imports this module

    upper_lip, lower_lip = rig.loops["lip_inner_upper"], rig.loops["lip_inner_lower"]
    rim = np.array(upper_lip + lower_lip[-2:0:-1])
    jaw_rotation, jaw_shift = _mandible_motions(rig.vertices, jaw_weight(rig), exp_names, expression)

    def jaw(points: np.ndarray) -> np.ndarray:  # [E, P, 3] the mandible's displacement of points [P, 3]
        return np.einsum("eab,pb->epa", jaw_rotation - np.eye(3), points) + jaw_shift[:, None]

    def lip_identity(loop: list[int], points: np.ndarray) -> np.ndarray:
        """[K, P, 3] the identity displacement of a lip loop where it passes the x of points
        [P, 3] (its corner's beyond the corners)."""
        at = np.interp(points[:, 0], rig.vertices[loop, 0], np.arange(len(loop)))  # x increases along the loop
        i = np.minimum(at.astype(np.int64), len(loop) - 2)
        w = (at - i)[:, None]
        ids = np.asarray(loop)
        return (1.0 - w) * identity[:, ids[i]] + w * identity[:, ids[i + 1]]

    def upper_identity(points: np.ndarray) -> np.ndarray:
        return lip_identity(upper_lip, points)

    def lower_identity(points: np.ndarray) -> np.ndarray:
        return lip_identity(lower_lip, points)

    def dental_identity(own_lip: _Field) -> _Field:
        """An arch's identity field: across and up/down as its own lip, front/back as the
        mean of both lips, so the arches keep their occlusion and stay behind both lips."""
        def field(points: np.ndarray) -> np.ndarray:
            out = own_lip(points)
            out[..., 2] = 0.5 * (upper_identity(points)[..., 2] + lower_identity(points)[..., 2])
            return out
        return field

    v = rig.vertices
    lip_top, lip_bottom = v[upper_lip[len(upper_lip) // 2]], v[lower_lip[len(lower_lip) // 2]]
    edge_y = lip_top[1] - UPPER_INCISAL_BELOW_LIP_MM
    labial_z = lip_top[2] - INCISOR_BEHIND_LIP_MM
    upper_arch = _Arch.from_control_points(ARCH_MM, labial_z)
    lower_arch = upper_arch.offset(-OVERJET_MM)

    pieces: list[_Piece] = []
    socket, socket_exp, socket_id = _socket(v, rim, 0.5 * (lip_top[1] + lip_bottom[1]), lip_top[2], expression,
                                            identity, jaw, upper_identity, lower_identity)
    pieces.append(socket)
    upper_teeth = _arch_crowns(upper_arch, UPPER_TEETH, edge_y, +1.0)
    lower_teeth = _arch_crowns(lower_arch, LOWER_TEETH, edge_y + OVERBITE_MM, -1.0)
    upper_gum = _gum_band(upper_arch, UPPER_TEETH, edge_y, +1.0)
    lower_gum = _gum_band(lower_arch, LOWER_TEETH, edge_y + OVERBITE_MM, -1.0)
    tongue = _tongue(lower_arch, LOWER_TEETH, edge_y + OVERBITE_MM)
    pieces += [upper_teeth, upper_gum, lower_teeth, lower_gum, tongue]

    # assemble: local vertex offsets, global triangle ids (the socket's rim ids are skin ids)
    offsets = np.cumsum([0] + [len(p.vertices) for p in pieces])
    vertices = np.concatenate([p.vertices for p in pieces])
    e = len(exp_names)
    exp_basis = np.concatenate([socket_exp] + [np.zeros((e, len(p.vertices), 3)) for p in (upper_teeth, upper_gum)]
                               + [jaw(p.vertices) for p in (lower_teeth, lower_gum, tongue)], 1)
    upper_dental, lower_dental = dental_identity(upper_identity), dental_identity(lower_identity)
    id_basis = np.concatenate([socket_id] + [upper_dental(p.vertices) for p in (upper_teeth, upper_gum)]
                              + [lower_dental(p.vertices) for p in (lower_teeth, lower_gum, tongue)], 1)
    triangles, tri_ranges = [], []
    count = 0
    for piece, offset in zip(pieces, offsets):
        local = piece.triangles
        glob = np.where(local >= 0, first + offset + local, rim[np.clip(-local - 1, 0, None)])
        triangles.append(glob)
        tri_ranges.append(np.arange(count, count + len(glob)))
        count += len(glob)

    def ids(*which: int) -> np.ndarray:
        return np.concatenate([first + np.arange(offsets[i], offsets[i + 1]) for i in which])

    return MeshPart(
        first=first, vertices=vertices, triangles=np.concatenate(triangles).astype(np.int64),
        id_basis=np.ascontiguousarray(id_basis), exp_basis=exp_basis,
        regions={"mouth_socket": ids(0), "teeth_upper": ids(1), "teeth_lower": ids(3), "gums": ids(2, 4),
                 "tongue": ids(5)},
        materials={"mouth_socket": tri_ranges[0], "teeth": np.r_[tri_ranges[1], tri_ranges[3]],
                   "gums": np.r_[tri_ranges[2], tri_ranges[4]], "tongue": tri_ranges[5]})


def _mandible_motions(vertices: np.ndarray, weight: np.ndarray, exp_names: Sequence[str], expression: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Each expression's rigid mandible motion p -> R p + t: (R [E, 3, 3], t [E, 3]),
    the identity for expressions not in :data:`JAW_EXPRESSIONS`. For those, fitted
    (Kabsch) to the field on the skin vertices whose jaw weight ``weight`` [Vs] is 1, which
    move exactly rigidly."""
    rotation = np.tile(np.eye(3), (len(exp_names), 1, 1))
    shift = np.zeros((len(exp_names), 3))
    rigid = np.flatnonzero(weight >= 1.0 - 1e-9)
    src = vertices[rigid]
    for e, name in enumerate(exp_names):
        if name not in JAW_EXPRESSIONS:
            continue
        dst = src + expression[e, rigid]
        cs, cd = src.mean(0), dst.mean(0)
        u, _, vt = np.linalg.svd((src - cs).T @ (dst - cd))
        r = vt.T @ np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))]) @ u.T
        rotation[e], shift[e] = r, cd - r @ cs
        if np.abs(src @ r.T + shift[e] - dst).max() > 1e-6:
            raise ValueError(f"{name} does not move the jaw rigidly where the jaw weight is 1")
    return rotation, shift


# ------------------------------------------------------------------------ meshing helpers
def _strips(rings: np.ndarray) -> np.ndarray:
    """Triangles [T, 3] joining consecutive rows of ``rings`` [R, M] (vertex ids), each row
    a closed loop."""
    nxt = np.roll(np.arange(rings.shape[1]), -1)
    out = []
    for a, b in zip(rings[:-1], rings[1:]):
        out += [np.stack([a, b, b[nxt]], 1), np.stack([a, b[nxt], a[nxt]], 1)]
    return np.concatenate(out)


def _fan(centre: int, ring: np.ndarray) -> np.ndarray:
    """Triangles [M, 3] from ``centre`` to each edge of the closed loop ``ring`` [M]."""
    return np.stack([np.full(len(ring), centre), ring, np.roll(ring, -1)], 1)


def _signed_volume(vertices: np.ndarray, triangles: np.ndarray, origin: np.ndarray) -> float:
    p = vertices[triangles] - origin
    return float(np.einsum("ti,ti->t", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6.0)


def _closed_loft(rings: np.ndarray) -> _Piece:
    """A closed surface through ``rings`` [R, M, 3] (each a closed loop), capped at both
    ends by the rings' centroids, its triangles facing outward."""
    r, m = rings.shape[:2]
    vertices = np.concatenate([rings.reshape(-1, 3), rings[[0, -1]].mean(1)])
    ids = np.arange(r * m).reshape(r, m)
    tri = np.concatenate([_strips(ids), _fan(r * m, ids[0]), _fan(r * m + 1, ids[-1])[:, [0, 2, 1]]])
    if _signed_volume(vertices, tri, vertices.mean(0)) < 0:
        tri = tri[:, [0, 2, 1]]
    return _Piece(vertices, tri)


def _spow(x: np.ndarray, p: float) -> np.ndarray:
    return np.sign(x) * np.abs(x) ** p


# ------------------------------------------------------------------------ socket
def _socket(v: np.ndarray, rim: np.ndarray, mid_y: float, lip_z: float, expression: np.ndarray,
            identity: np.ndarray, jaw: _Field, upper_identity: _Field, lower_identity: _Field
            ) -> tuple[_Piece, np.ndarray, np.ndarray]:
    """The pouch behind the lips and its (expression [E, P, 3], identity [K, P, 3]) fields.

    A rim vertex at x gets the angle-like coordinates c = x / corner_x and s = +-sqrt(1 -
    c^2) (+ on the upper lip); ring j puts its vertex i at the point (c_i, s_i) of its own
    superellipse, so the rings' vertices correspond one to one."""
    corner_x = np.abs(v[rim, 0]).max()
    n_upper = int(np.argmax(v[rim, 0]))  # the rim runs along the upper lip to the left corner, then back
    c = np.clip(v[rim, 0] / corner_x, -1.0, 1.0)
    s = np.sqrt(1.0 - c ** 2) * np.where(np.arange(len(rim)) <= n_upper, 1.0, -1.0)
    s[[0, n_upper]] = 0.0
    rings = []
    for widen, up, down, back_top, back_bottom, back_corner, power in SOCKET_RINGS:
        x = (corner_x + widen) * _spow(c, power)
        y = mid_y + np.where(s > 0, up, down) * _spow(s, power)
        back = back_corner + (np.where(s > 0, back_top, back_bottom) - back_corner) * s ** 2
        rings.append(np.stack([x, y, lip_z - back], 1))
    rings = np.stack(rings)  # [J, N, 3]
    n_rings, n = rings.shape[:2]
    pole = np.array([[0.0, mid_y, lip_z - SOCKET_DEPTH_MM]])
    vertices = np.concatenate([rings.reshape(-1, 3), pole])
    ids = np.concatenate([-1 - np.arange(n)[None], np.arange(n_rings * n).reshape(n_rings, n)])  # rim first
    tri = np.concatenate([_strips(ids), _fan(n_rings * n, ids[-1])[:, [0, 2, 1]]])
    # the inside faces the opening: the surface, closed by the lip opening, has negative volume
    every = np.concatenate([vertices, v[rim]])
    lookup = np.where(tri >= 0, tri, len(vertices) - 1 - tri)
    if _signed_volume(every, lookup, v[rim].mean(0)) > 0:
        tri = tri[:, [0, 2, 1]]

    # fields: the deep motion (toward the floor the mandible's) plus the rim's departure from
    # it, fading with depth; on the lower lip's middle, which moves with the jaw, the pouch
    # moves rigidly with the jaw
    depth = (np.arange(1, n_rings + 1) / (n_rings + 1))[:, None, None]  # [J, 1, 1]
    rim_share = (1.0 - depth) ** 2
    low = mo.smoothstep(0.5 * (1.0 - s))[:, None]  # [N, 1] 0 on the roof, 1 on the floor

    def blend(rim_field: np.ndarray, deep: _Field) -> np.ndarray:
        """[C, P, 3] from the rim's field [C, N, 3] and the deep field of points [Q, 3] (in
        the rings' order) -> [C, Q, 3]."""
        departure = rim_field - deep(v[rim])
        f = deep(rings.reshape(-1, 3)).reshape(len(rim_field), n_rings, n, 3) + rim_share * departure[:, None]
        return np.concatenate([f.reshape(len(f), -1, 3), f[:, -1].mean(1, keepdims=True)], 1)

    def deep_identity(points: np.ndarray) -> np.ndarray:
        share = np.tile(low, (len(points) // n, 1))
        return share * lower_identity(points) + (1.0 - share) * upper_identity(points)

    def deep_expression(points: np.ndarray) -> np.ndarray:
        return np.tile(low, (len(points) // n, 1)) * jaw(points)

    return _Piece(vertices, tri), blend(expression[:, rim], deep_expression), blend(identity[:, rim], deep_identity)


# ------------------------------------------------------------------------ dental arches
@dataclass(frozen=True)
class _Arch:
    """A dental arch's labial line at the edge level, seen from above, sampled densely on
    the subject's left half (x >= 0): points [S, 2] as (x, z) and their arc length [S]."""

    points: np.ndarray
    arc: np.ndarray

    @staticmethod
    def from_control_points(control, labial_z: float) -> _Arch:
        p = np.asarray(control, dtype=np.float64)
        chord = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))]
        spline = scipy.interpolate.CubicSpline(chord, p, bc_type=((1, (1.0, 0.0)), "natural"))
        dense = spline(np.linspace(0.0, chord[-1], 600))
        return _Arch.from_points(np.stack([dense[:, 0], labial_z - dense[:, 1]], 1))

    @staticmethod
    def from_points(points: np.ndarray) -> _Arch:
        return _Arch(points, np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])

    def frame(self, arc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """At signed arc lengths [A] from the midline (< 0 on the subject's right): points
        [A, 2], tangents [A, 2] (toward +x) and outward (labial) normals [A, 2], as (x, z)."""
        a = np.abs(arc)
        p = np.stack([np.interp(a, self.arc, self.points[:, k]) for k in range(2)], 1)
        d = np.gradient(self.points, self.arc, axis=0)
        t = np.stack([np.interp(a, self.arc, d[:, k]) for k in range(2)], 1)
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        right = arc < 0
        p[right, 0] *= -1.0
        t[right, 1] *= -1.0
        return p, t, np.stack([-t[:, 1], t[:, 0]], 1)

    def offset(self, distance: float) -> _Arch:
        """The arch ``distance`` mm outward (labially; < 0: inward)."""
        _, _, n = self.frame(self.arc)
        return _Arch.from_points(self.points + distance * n)


def _tooth_slots(teeth: tuple[Tooth, ...]) -> tuple[list[Tooth], np.ndarray, np.ndarray]:
    """Both sides' crowns from the subject's right back tooth to the left one: the teeth,
    their mesial and distal signed arc lengths [2N] each (mesial nearer the midline)."""
    ends = np.cumsum([t.width for t in teeth])
    starts = ends - [t.width for t in teeth]
    order = list(teeth[::-1]) + list(teeth)
    return order, np.r_[-starts[::-1], starts], np.r_[-ends[::-1], ends]


def _to_3d(xz: np.ndarray, y) -> np.ndarray:
    return np.stack([xz[..., 0], np.broadcast_to(y, xz.shape[:-1]), xz[..., 1]], -1)


def _arch_crowns(arch: _Arch, teeth: tuple[Tooth, ...], edge_y: float, up: float) -> _Piece:
    """The crowns of one arch, their edges at ``edge_y`` (plus each tooth's recess) and
    their necks toward ``up`` (+1: upper arch, -1: lower)."""
    order, mesial, distal = _tooth_slots(teeth)
    pieces = []
    for tooth, a0, a1 in zip(order, mesial, distal):
        (p0, p1), _, _ = arch.frame(np.array([a0, a1]))
        centre_xz, _, normal = arch.frame(np.array([0.5 * (a0 + a1)]))
        tangent = (p1 - p0) / np.linalg.norm(p1 - p0)
        pieces.append(_crown(tooth, _to_3d(centre_xz[0], edge_y + up * tooth.recess), _to_3d(tangent, 0.0),
                             _to_3d(normal[0], 0.0), up))
    return _merge(pieces)


def _crown(tooth: Tooth, tip: np.ndarray, tangent: np.ndarray, labial: np.ndarray, up: float) -> _Piece:
    """One crown: rings from the edge to the neck, each a superellipse across (width) and
    through (thickness), the labial face through ``tip`` [3] (the edge's labial point),
    leaning back by the tooth's tilt. ``tangent``, ``labial``: horizontal unit vectors."""
    tilt = np.radians(tooth.tilt_deg)
    axis = np.cos(tilt) * np.array([0.0, up, 0.0]) - np.sin(tilt) * labial
    theta = 2.0 * np.pi * (np.arange(_CROWN_AROUND) + 0.5) / _CROWN_AROUND
    across, through = _spow(np.cos(theta), 0.6), _spow(np.sin(theta), 0.6)
    rings = []
    for eta in _CROWN_RINGS:
        half_width = 0.5 * tooth.width * (1.0 - 0.3 * eta ** 2)
        half_thick = 0.5 * (tooth.thickness[0] + (tooth.thickness[1] - tooth.thickness[0]) * eta)
        u = half_width * across
        # the edge's outline (rounded corners or a cusp) fades toward the neck
        along = (1.0 - eta) * tooth.cusp * np.abs(across) ** tooth.cusp_power + eta * tooth.height
        w = half_thick * (through - 1.0)
        rings.append(tip + np.outer(u, tangent) + np.outer(along, axis) + np.outer(w, labial))
    return _closed_loft(np.stack(rings))


def _gum_band(arch: _Arch, teeth: tuple[Tooth, ...], edge_y: float, up: float) -> _Piece:
    """The gum over one arch's necks: a closed band along the arch, at each crown's middle
    its margin :data:`GUM_OVERLAP_MM` over the neck, between crowns (the papillae) lower by
    a quarter of the crown height, along a parabola across each crown (:data:`_GUM_COLUMNS`
    columns a crown): a rounded arch over the crown, pointed between two. With a column at
    the middle and one between, the margin zigzagged and the crowns showed as fangs.
    Cross-section: labial margin, labial top, ridge, lingual top, lingual margin."""
    order, mesial, distal = _tooth_slots(teeth)
    columns = []  # (signed arc length, the crown there, |2t - 1| across it) from the right end
    for tooth, a0, a1 in zip(order, mesial, distal):
        start, end = min(a0, a1), max(a0, a1)
        columns += [(start + t * (end - start), tooth, abs(2.0 * t - 1.0))
                    for t in np.arange(_GUM_COLUMNS) / _GUM_COLUMNS]
    columns.append((distal[-1], order[-1], 1.0))
    rings = []
    for arc, tooth, off_middle in columns:
        p, _, n = arch.frame(np.array([arc]))
        tilt = np.tan(np.radians(tooth.tilt_deg))
        neck = tooth.height - GUM_OVERLAP_MM
        margin = tooth.recess + neck - 0.25 * tooth.height * off_middle ** 2
        top = tooth.recess + tooth.height + GUM_HEIGHT_MM
        thick = tooth.thickness[1]
        section = np.array([  # (outward from the labial face, height above the edge level)
            (0.4 - tilt * margin, margin),
            (1.0 - tilt * top, top),
            (-0.5 * thick - tilt * top, top + 1.5),
            (-thick - 1.0 - tilt * top, top),
            (-thick - 0.4 - tilt * margin, margin + 1.0),
        ])
        xz = p[0] + np.outer(section[:, 0], n[0])
        rings.append(_to_3d(xz, edge_y + up * section[:, 1]))
    return _closed_loft(np.stack(rings))


def _tongue(lower_arch: _Arch, teeth: tuple[Tooth, ...], lower_edge_y: float) -> _Piece:
    """An ellipsoid resting on the floor of the mouth: its tip behind the lower incisors'
    necks, its top :data:`TONGUE_DORSUM_ABOVE_LOWER_INCISORS_MM` above their edges, its bottom
    flattened."""
    incisor = teeth[0]
    labial_z = lower_arch.points[0, 1]
    neck_lingual_z = labial_z - np.tan(np.radians(incisor.tilt_deg)) * incisor.height - incisor.thickness[1]
    tip_z = neck_lingual_z - 1.5  # clear of the incisors and their gum
    half_length, half_width, half_height = TONGUE_HALF_SIZE_MM
    centre = np.array([0.0, lower_edge_y + TONGUE_DORSUM_ABOVE_LOWER_INCISORS_MM - half_height, tip_z - half_length])
    beta = np.pi * np.arange(1, _TONGUE_RINGS + 1) / (_TONGUE_RINGS + 1)  # from the tip back
    gamma = 2.0 * np.pi * np.arange(_TONGUE_AROUND) / _TONGUE_AROUND
    ring = np.sin(beta)[:, None]
    x = half_width * ring * np.cos(gamma)
    y = np.maximum(half_height * ring * np.sin(gamma), -0.7 * half_height)
    z = np.broadcast_to(half_length * np.cos(beta)[:, None], x.shape)
    return _closed_loft(centre + np.stack([x, y, z], -1))


def _merge(pieces: list[_Piece]) -> _Piece:
    offsets = np.cumsum([0] + [len(p.vertices) for p in pieces])
    return _Piece(np.concatenate([p.vertices for p in pieces]),
                  np.concatenate([p.triangles + o for p, o in zip(pieces, offsets)]))
