"""Rigid eyeballs for the default face model: the lids move over them, they never stretch.

Each eye is one rigid surface around the eyeball centre of ``meta["eyeballs"]``
(:func:`affectsynth.model.default.build_default_model`), over the directions within
:data:`COVERED_POLAR_DEG` of +z (the front 2/3 of a sphere: all that can ever be seen
through the lids), meshed as a cut icosphere:

* the globe: within :data:`GLOBE_POLAR_DEG` of +z (wherever the iris can be) it is the
  sphere of the meta radius; the lids stay outside that sphere in every action unit
  (tests/test_default_model.py; checked again when building);
* the conjunctival fornix: toward the canthi the lid loop lies up to 7.7 mm outside the
  sphere (medial canthus), and a sphere alone leaves the corners of the eye opening empty
  (9 mm^2 per eye seen frontally, up to 42 mm^2 with AU5 at 30 degrees of yaw). Beyond
  :data:`GLOBE_POLAR_DEG` the surface bulges out (fully from :data:`FORNIX_POLAR_DEG`, at
  most :data:`MAX_FORNIX_MM`) to follow the inside of the skin: it stays a clearance inside
  the nearest skin that any direction of its triangles meets, in the rest pose, at every
  expression at full intensity and at every pair of those that move the eye region. The
  clearance is :data:`CLEARANCE_MM` at the lid loop and grows with the skin's distance from
  it (:data:`CLEARANCE_PER_MM`), because an identity moves the skin relative to the ball
  more the farther it is from the lids. (A vertex takes the least room over all of its
  triangles' directions, not just its own: the distance from the centre is convex on a flat
  triangle, largest at a corner, so the triangles stay behind the skin too.)

Expressions do not move it (zero expression displacement). An identity moves it by a
translation, so it stays rigid: per identity mode, the least-squares fit to the radial
displacement of the lid vertices, with the lids open (rest) and closed (AU43), each vertex
weighted by exp(-gap / :data:`IDENTITY_GAP_SCALE_MM`) (its distance outside the sphere): the
ball follows the lids where they are nearest to it. (The mean displacement of the lid loop,
the simpler choice, lets the lids of 6 % of random identities at 0.3 sd per mode sink up to
0.36 mm into the ball, at rest or with AU43; this choice keeps them all >= 0.25 mm
outside.) A translation cannot follow everything an identity does to the lids' shape,
though: the squint (AU6 + AU7) of some fitted faces, and the fornix under a cheek an
identity brought in, still come up to ~1 mm into the skin. A renderer hides that by testing
eyeball depth :data:`RENDER_DEPTH_MARGIN_MM` behind its true depth against the skin (with it,
no eyeball pixel outside the eye openings on the 40 fitted dev photos, in any of rest, AU5,
AU43, AU6+AU7, AU4+AU7 at 0 and +-30 degrees of yaw; without it, up to 10 mm^2 on 15 % of
them). The clearance's growth and the margin were chosen on those fits and on random
identities.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations

import numba
import numpy as np

from . import mesh_ops as mo
from .parts import MeshPart

__all__ = ["eyeballs", "ray_distances", "SIDES", "COVERED_POLAR_DEG", "GLOBE_POLAR_DEG", "FORNIX_POLAR_DEG",
           "CLEARANCE_MM", "CLEARANCE_PER_MM", "MAX_FORNIX_MM", "RENDER_DEPTH_MARGIN_MM"]

#: Subject's sides, in the order of the eye index of :mod:`affectsynth.render.eyes` (0 = L).
SIDES = ("L", "R")
#: The surface covers the directions within this angle of +z (the gaze at rest):
#: (1 - cos 109.5 deg) / 2 = 2/3 of a sphere.
COVERED_POLAR_DEG = 109.5
#: How far inside the nearest skin the fornix stays: CLEARANCE_MM at the lid loop, growing
#: by CLEARANCE_PER_MM per mm that skin lies from the loop, mm.
CLEARANCE_MM = 0.75
CLEARANCE_PER_MM = 0.1
#: The fornix reaches at most this far beyond the sphere, mm.
MAX_FORNIX_MM = 12.0
#: The globe is an exact sphere within GLOBE_POLAR_DEG of +z: where the iris can be (its
#: 27-36 deg around gazes up to 25 deg, :data:`affectsynth.render.eyes.MAX_GAZE_DEG`);
#: the fornix may bulge out fully beyond FORNIX_POLAR_DEG (a smoothstep between). The
#: canthi are at 51 (medial) and 65 (lateral) deg, but the corners of the opening that the
#: sphere misses lie beyond its silhouette, in directions 75 deg and more from +z.
GLOBE_POLAR_DEG = 60.0
FORNIX_POLAR_DEG = 75.0
#: Icosphere subdivision steps of the surface (3: 642 directions on the whole sphere, 427
#: kept per eye; edges ~2.3 mm at a 12 mm radius, chord sag 0.05 mm). The room for the
#: fornix is sampled once more subdivided (the edge midpoints).
SUBDIVISIONS = 3
#: Expressions that move some skin vertex within this distance (mm) of the sphere by more
#: than :data:`EYE_REGION_MOTION_MM` are paired with each other for the fornix's room.
EYE_REGION_MM = 12.0
EYE_REGION_MOTION_MM = 0.5
#: How far behind its true depth a renderer should test eyeball depth against the skin, mm
#: (see the module docstring).
RENDER_DEPTH_MARGIN_MM = 1.0
#: The expression whose full intensity closes the lids.
LIDS_CLOSED = "AU43"
#: Length scale (mm) of the weights of the identity translation (see _identity_translation).
IDENTITY_GAP_SCALE_MM = 0.25


@lru_cache(maxsize=1)
def _direction_mesh() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The directions of the surface and where the room is sampled.

    Returns:
        directions [D, 3] unit vectors within :data:`COVERED_POLAR_DEG` of +z, triangles
        [T, 3] of them (an icosphere cut at that angle, counter-clockwise seen from
        outside), samples [S, 3] unit vectors (the directions, then the triangles' edge
        midpoints) and each triangle's samples [T, 6] (its corners and edge midpoints).
        Cached: the arrays are shared, not to be modified.
    """
    g = (1.0 + 5 ** 0.5) / 2
    v = np.array([[-1, g, 0], [1, g, 0], [-1, -g, 0], [1, -g, 0], [0, -1, g], [0, 1, g],
                  [0, -1, -g], [0, 1, -g], [g, 0, -1], [g, 0, 1], [-g, 0, -1], [-g, 0, 1]], dtype=np.float64)
    tri = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                    [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                    [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]], dtype=np.int64)
    for _ in range(SUBDIVISIONS):
        v, tri, _, _ = mo.subdivide_midpoint(v, tri)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    keep = v[:, 2] >= np.cos(np.radians(COVERED_POLAR_DEG))
    tri = tri[keep[tri].all(1)]
    used = np.unique(tri)
    index = np.full(len(v), -1)
    index[used] = np.arange(len(used))
    directions, tri = v[used], index[tri]
    fine, _, _, edges = mo.subdivide_midpoint(directions, tri)
    mid = mo.edge_midpoint_ids(edges, len(directions))
    tri_samples = np.concatenate([tri, [[mid[(a, b)], mid[(b, c)], mid[(c, a)]] for a, b, c in tri.tolist()]], 1)
    return directions, tri, fine / np.linalg.norm(fine, axis=1, keepdims=True), tri_samples


@numba.njit(cache=True, parallel=True)
def _nearest_hits(origin, directions, corners, axes, cos_spans):  # pragma: no cover - jitted
    out = np.full(len(directions), np.inf)
    for i in numba.prange(len(directions)):
        dx, dy, dz = directions[i, 0], directions[i, 1], directions[i, 2]
        best = np.inf
        for k in range(len(corners)):
            if dx * axes[k, 0] + dy * axes[k, 1] + dz * axes[k, 2] < cos_spans[k]:
                continue  # outside the cone of directions the triangle spans
            a, b, c = corners[k, 0], corners[k, 1], corners[k, 2]
            ax, ay, az = a[0] - origin[0], a[1] - origin[1], a[2] - origin[2]
            e1x, e1y, e1z = b[0] - a[0], b[1] - a[1], b[2] - a[2]
            e2x, e2y, e2z = c[0] - a[0], c[1] - a[1], c[2] - a[2]
            px, py, pz = dy * e2z - dz * e2y, dz * e2x - dx * e2z, dx * e2y - dy * e2x
            det = px * e1x + py * e1y + pz * e1z
            if abs(det) < 1e-12:
                continue
            u = -(px * ax + py * ay + pz * az) / det
            if u < 0.0 or u > 1.0:
                continue
            qx, qy, qz = e1y * az - e1z * ay, e1z * ax - e1x * az, e1x * ay - e1y * ax  # (origin - a) x e1
            w = (qx * dx + qy * dy + qz * dz) / det
            if w < 0.0 or u + w > 1.0:
                continue
            t = (qx * e2x + qy * e2y + qz * e2z) / det
            if 0.0 < t < best:
                best = t
        out[i] = best
    return out


def ray_distances(origin: np.ndarray, directions: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Distance [D] from ``origin`` [3] along unit ``directions`` [D, 3] to the nearest of
    the triangles ``corners`` [N, 3, 3] (hit from either side), inf where none is hit
    (Moeller-Trumbore; a triangle is only tried for the directions within the cone around
    its corners' mean direction that holds its corners, which holds the whole triangle)."""
    to_corners = corners - origin
    to_corners /= np.linalg.norm(to_corners, axis=-1, keepdims=True)
    axes = to_corners.mean(1)
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    cos_spans = np.einsum("nkc,nc->nk", to_corners, axes).min(1) - 1e-9
    return _nearest_hits(np.asarray(origin, np.float64), np.ascontiguousarray(directions, np.float64),
                         np.ascontiguousarray(corners, np.float64), axes, cos_spans)


def _poses(expression: np.ndarray, near: np.ndarray) -> np.ndarray:
    """Expression displacements [P, V, 3] the fornix keeps clear of: none, every expression
    at full intensity, and every pair of those that move the ``near`` vertices."""
    moving = [e for e in range(len(expression))
              if np.linalg.norm(expression[e][near], axis=1).max() > EYE_REGION_MOTION_MM]
    pairs = [expression[a] + expression[b] for a, b in combinations(moving, 2)]
    return np.concatenate([np.zeros((1,) + expression.shape[1:]), expression] + ([np.stack(pairs)] if pairs else []))


def _surface_distances(rig, expression: np.ndarray, centre: np.ndarray, radius: float,
                       loop: list[int]) -> np.ndarray:
    """[D] distance from ``centre`` [3] of the surface along each of the directions of
    :func:`_direction_mesh` (see the module docstring); ``expression`` [E, Vs, 3] the skin's
    fields, ``loop`` the eye's lid loop (vertex ids)."""
    directions, triangles, samples, tri_samples = _direction_mesh()
    polar = np.degrees(np.arccos(np.clip(directions[:, 2], -1.0, 1.0)))
    taper = mo.smoothstep(np.clip((polar - GLOBE_POLAR_DEG) / (FORNIX_POLAR_DEG - GLOBE_POLAR_DEG), 0.0, 1.0))
    reach = radius + MAX_FORNIX_MM
    skin = rig.vertices
    near = np.flatnonzero(np.linalg.norm(skin - centre, axis=1) < radius + EYE_REGION_MM)
    poses = _poses(expression, near)
    # skin triangles any pose brings within reach (+ a margin for the triangle's extent)
    corners = skin[rig.triangles] + poses[:, rig.triangles]                              # [P, F, 3, 3]
    close = (np.linalg.norm(corners - centre, axis=-1) < reach + 5.0).any(-1).any(0)
    room = ray_distances(centre, samples, corners[:, close].reshape(-1, 3, 3))
    per_triangle = room[tri_samples].min(1)
    per_vertex = np.full(len(directions), np.inf)
    np.minimum.at(per_vertex, triangles.reshape(-1), np.repeat(per_triangle, 3))
    # identities move the skin relative to the ball more the farther it is from the lid loop
    skin_point = centre + np.minimum(per_vertex, 2.0 * reach)[:, None] * directions
    from_loop = np.linalg.norm(skin_point[:, None] - skin[loop][None], axis=-1).min(1)
    clearance = CLEARANCE_MM + CLEARANCE_PER_MM * from_loop
    return radius + np.clip(per_vertex - clearance - radius, 0.0, MAX_FORNIX_MM * taper)


def _identity_translation(rig, identity: np.ndarray, closed: np.ndarray, lids: np.ndarray, centre: np.ndarray,
                          radius: float) -> np.ndarray:
    """[K, 3] the eyeball's translation per identity mode: the least-squares fit to the
    radial displacement the mode gives the lid vertices ``lids``, with the lids open (rest)
    and closed (``closed`` [Vs, 3], the lid-closing field), each vertex weighted by
    exp(-gap / IDENTITY_GAP_SCALE_MM) (gap: its distance outside the sphere)."""
    rows, targets = [], []
    for pose in (0.0, closed):
        offset = (rig.vertices + pose)[lids] - centre
        distance = np.linalg.norm(offset, axis=1)
        normal = offset / distance[:, None]
        weight = np.exp(-0.5 * (distance - radius) / IDENTITY_GAP_SCALE_MM)[:, None]        # sqrt of the weight
        rows.append(normal * weight)
        targets.append(np.einsum("kvc,vc->vk", identity[:, lids], normal) * weight)
    return np.linalg.lstsq(np.concatenate(rows), np.concatenate(targets), rcond=None)[0].T


def eyeballs(rig, exp_names: list[str], expression: np.ndarray, identity: np.ndarray, first: int) -> MeshPart:
    """Both eyeballs as one :class:`MeshPart` (see the module docstring).

    Args:
        rig: the :class:`~affectsynth.model.default.FaceRig` (its skin, lid loops and parts).
        exp_names: E expression names (one is :data:`LIDS_CLOSED`).
        expression: [E, Vs, 3] the skin's expression fields.
        identity: [K, Vs, 3] the skin's identity fields.
        first: number of vertices before the part.
    Returns:
        The part: 427 vertices and 808 triangles per eye, left eye first; regions
        ``eyeball_L`` / ``eyeball_R``; every triangle of material ``eyeball``.
    Raises:
        ValueError: if a lid vertex comes inside a sphere in the rest pose or at full
            intensity of an expression (the fields and the eyeball placement disagree).
    """
    from .default import _eyeballs  # the meta's eyeball placement (default imports this module)

    directions, dir_triangles, _, _ = _direction_mesh()
    placement = _eyeballs(rig)
    closed = expression[list(exp_names).index(LIDS_CLOSED)]
    vertices, triangles, id_basis, regions = [], [], [], {}
    for side in SIDES:
        centre = np.asarray(placement[side]["centre_mm"], dtype=np.float64)
        radius = float(placement[side]["radius_mm"])
        lids = np.union1d(rig.parts["upper_lid_" + side], rig.parts["lower_lid_" + side])
        for name, pose in zip(("rest", *exp_names), np.concatenate([np.zeros_like(expression[:1]), expression])):
            inside = np.linalg.norm((rig.vertices + pose)[lids] - centre, axis=1) < radius
            if inside.any():
                raise ValueError(f"{inside.sum()} {side} lid vertices come inside the eyeball ({name})")
        offset = first + len(directions) * len(vertices)
        distance = _surface_distances(rig, expression, centre, radius, rig.loops["eye_" + side])
        vertices.append(centre + distance[:, None] * directions)
        triangles.append(offset + dir_triangles)
        regions["eyeball_" + side] = offset + np.arange(len(directions))
        shift = _identity_translation(rig, identity, closed, lids, centre, radius)               # [K, 3]
        id_basis.append(np.repeat(shift[:, None], len(directions), 1))
    vertices = np.concatenate(vertices)
    triangles = np.concatenate(triangles)
    return MeshPart(first=first, vertices=vertices, triangles=triangles, id_basis=np.concatenate(id_basis, 1),
                    exp_basis=np.zeros((len(expression), len(vertices), 3)), regions=regions,
                    materials={"eyeball": np.arange(len(triangles))})
