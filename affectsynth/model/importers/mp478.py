"""MediaPipe's 478-point landmark map for an imported model, by mesh-to-mesh registration.

An imported model comes with a 68-point (iBUG) vertex map, but MediaPipe, the default
detector, gives 478 points. The default model's first 468 vertices *are* MediaPipe's
canonical landmarks (:mod:`affectsynth.model.default`; in mm and in our frame, with the
rest-shape calibration that puts them where the detector finds them on neutral faces), and
it has its own iBUG-68 map. So the 468 points are carried onto the imported mean by a
deterministic registration, no photos involved:

1. a similarity transform (Umeyama, least squares) from the default model's 68 iBUG points
   to the imported model's, over the points both have;
2. a thin-plate-spline warp that takes the aligned points exactly onto the imported ones,
   which bends the default face onto the imported one's proportions (jaw line, mouth width,
   eye spacing) between the 68 pairs (no triangle of the warped default mesh flips:
   ``meta["warp_min_normal_cosine"]``);
3. each warped point projected to its closest point on the imported face surface (the
   triangles the caller names), stored as that triangle's vertex ids and barycentric weights;
   the points of the lips' inner edges keep to their own lip (:data:`LIP_INNER_FACING_Y`),
   since on a closed mouth the other lip may be nearer.

The iris points (468-477) come from the caller's eyeball geometry, when it has some: the
centre at the eyeball's front pole, the four rim points where the globe lies
:data:`~affectsynth.render.eyes.IRIS_RADIUS_MM` to the side of it, up and down (a human iris
looking straight ahead); otherwise they are marked invalid (the fitter ignores them anyway:
MediaPipe's iris points follow the gaze, the model's eyeballs do not). The regions the renderer needs are
carried the same way, from the warped default model: loops (lid openings, the lips' inner
edges) by the nearest surface vertex of each loop vertex, areas (the lips) by the label of the
nearest warped default vertex. ``meta`` records the method and the residuals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.interpolate import RBFInterpolator
from scipy.spatial import cKDTree

from ...render.eyes import IRIS_RADIUS_MM
from ..face_model import LandmarkMap
from ..mesh_ops import face_normals, vertex_normals

__all__ = ["MediaPipeRegistration", "register_mediapipe", "closest_points_on_triangles", "IRIS_ORDER",
           "REGION_MAX_DISTANCE_MM", "LOOP_REGIONS", "AREA_REGIONS", "LIP_INNER_FACING_Y"]

#: MediaPipe's iris points: 468-472 the subject's right eye, 473-477 the left; each the
#: centre, then the rim to the image's right, up, left and down.
IRIS_ORDER = {"R": 468, "L": 473}
#: ... and the directions of the rim points from the centre, in model space (+x is the image's
#: right on a frontal face, +y up).
IRIS_RIM_DIRECTIONS = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
#: An imported vertex takes an area region's label only within this distance of the warped
#: default surface (mm): farther ones (ears, scalp, neck) lie beyond the part of the face the
#: default model covers.
REGION_MAX_DISTANCE_MM = 4.0
#: The default model's regions carried over: loops (ordered vertex paths) and areas.
LOOP_REGIONS = ("lip_inner_upper", "lip_inner_lower", "eye_L", "eye_R")
AREA_REGIONS = ("lips",)
#: Which way (the sign of the normal's y) the surface under the inner points of each lip's
#: inner edge faces: the underside of the upper lip, the top of the lower one.
LIP_INNER_FACING_Y = {"lip_inner_upper": -1.0, "lip_inner_lower": 1.0}
#: Points per chunk of the brute-force closest-point search (memory: chunk x F x 3 x 3 floats).
_CHUNK = 16


@dataclass(frozen=True)
class MediaPipeRegistration:
    """What :func:`register_mediapipe` derives for one imported model.

    Attributes:
        landmark_map: the "mp478" map, 478 points: 468 on the face surface, then the 10 iris
            points (valid only when eyeballs were given).
        regions: name -> int64 vertex ids of the imported mesh (:data:`LOOP_REGIONS`, ordered;
            :data:`AREA_REGIONS`, sorted).
        meta: JSON-serialisable method and residuals (mm).
    """

    landmark_map: LandmarkMap
    regions: dict[str, np.ndarray]
    meta: dict


def _similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (scale, rotation [3, 3], translation [3]) with
    ``target ~ scale * source @ rotation.T + translation`` for [N, 3] pairs (Umeyama 1991)."""
    source_mean, target_mean = source.mean(0), target.mean(0)
    a, b = source - source_mean, target - target_mean
    u, s, vt = np.linalg.svd(b.T @ a)
    reflect = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])  # a rotation, never a mirror
    rotation = u @ reflect @ vt
    scale = float((s * np.diag(reflect)).sum() / (a ** 2).sum())
    return scale, rotation, target_mean - scale * source_mean @ rotation.T


def closest_points_on_triangles(points: np.ndarray, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest point of each query point on a set of triangles (exact, brute force).

    Args:
        points: [N, 3] query points.
        corners: [F, 3, 3] triangle corners.
    Returns:
        triangle [N] int64 index of the nearest triangle, weights [N, 3] barycentric
        coordinates of the closest point in it, distance [N].
    """
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    ab, ac = b - a, c - a
    triangle, weights, distance = [], [], []
    for chunk in np.array_split(points, max(1, -(-len(points) // _CHUNK))):
        w = _barycentric_of_closest(chunk[:, None] - a, ab, ac)                  # [n, F, 3]
        closest = w[..., :1] * a + w[..., 1:2] * b + w[..., 2:] * c
        d = np.linalg.norm(closest - chunk[:, None], axis=-1)                    # [n, F]
        best = d.argmin(1)
        rows = np.arange(len(chunk))
        triangle.append(best)
        weights.append(w[rows, best])
        distance.append(d[rows, best])
    return np.concatenate(triangle), np.concatenate(weights), np.concatenate(distance)


def _barycentric_of_closest(ap: np.ndarray, ab: np.ndarray, ac: np.ndarray) -> np.ndarray:
    """Barycentric weights [..., 3] of the point of each triangle (a, a + ab, a + ac) closest
    to a + ap: the Voronoi-region case analysis of Ericson, *Real-Time Collision Detection*,
    5.1.5, evaluated for every case and selected (so it vectorises)."""
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp, cp = ap - ab, ap - ac
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2

    def safe(x: np.ndarray) -> np.ndarray:
        return np.where(np.abs(x) > 1e-30, x, 1e-30)

    one, zero = np.ones_like(d1), np.zeros_like(d1)
    # Inside the face: the barycentrics proper.
    denom = safe(va + vb + vc)
    v_face, w_face = vb / denom, vc / denom
    out = np.stack((1 - v_face - w_face, v_face, w_face), -1)
    # The edges (t along the edge), then the corners; later cases win where earlier ones hold too.
    t_bc = np.clip((d4 - d3) / safe((d4 - d3) + (d5 - d6)), 0, 1)
    t_ac = np.clip(d2 / safe(d2 - d6), 0, 1)
    t_ab = np.clip(d1 / safe(d1 - d3), 0, 1)
    cases = (
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), (zero, 1 - t_bc, t_bc)),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), (1 - t_ac, zero, t_ac)),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), (1 - t_ab, t_ab, zero)),
        ((d6 >= 0) & (d5 <= d6), (zero, zero, one)),
        ((d3 >= 0) & (d4 <= d3), (zero, one, zero)),
        ((d1 <= 0) & (d2 <= 0), (one, zero, zero)),
    )
    for condition, case in cases:
        out = np.where(condition[..., None], np.stack(case, -1), out)
    return out


def _distance_stats(distance: np.ndarray) -> dict[str, float]:
    return {"mean": round(float(distance.mean()), 3), "max": round(float(distance.max()), 3)}


def _closest_facing(points: np.ndarray, facing: np.ndarray, corners: np.ndarray,
                    corner_facing: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`closest_points_on_triangles` of points [N, 3] on the triangles [F, 3, 3] whose
    facing [F] (sign of the normal's y) equals the point's ``facing`` [N] (0: any triangle)."""
    triangle, weights, distance = np.zeros(len(points), np.int64), np.zeros((len(points), 3)), np.zeros(len(points))
    for sign in np.unique(facing):
        rows = np.flatnonzero(facing == sign)
        allowed = np.flatnonzero((corner_facing == sign) | (sign == 0))
        t, weights[rows], distance[rows] = closest_points_on_triangles(points[rows], corners[allowed])
        triangle[rows] = allowed[t]
    return triangle, weights, distance


def _loop_on(points: np.ndarray, facing: np.ndarray, candidates: np.ndarray, candidate_facing: np.ndarray,
             candidate_ids: np.ndarray, closed: bool) -> np.ndarray:
    """Vertex ids nearest to an ordered path of points [P, 3], each among the candidates
    (positions [S, 3], facing [S], ids [S]) whose facing equals its own ``facing`` [P] (0: any);
    consecutive repeats (and, for a closed loop, a last vertex equal to the first) dropped."""
    ids = np.zeros(len(points), np.int64)
    for sign in np.unique(facing):
        rows = np.flatnonzero(facing == sign)
        allowed = np.flatnonzero((candidate_facing == sign) | (sign == 0))
        ids[rows] = candidate_ids[allowed[cKDTree(candidates[allowed]).query(points[rows])[1]]]
    ids = ids[np.r_[True, ids[1:] != ids[:-1]]]
    if closed and len(ids) > 1 and ids[-1] == ids[0]:
        ids = ids[:-1]
    return ids


def _iris_points(vertices: np.ndarray, globe: np.ndarray, front_pole: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One eye's 5 iris points: vertex ids [5, 3], barycentric weights [5, 3] and the rim
    points' distance [4] from where they were aimed (mm). The centre is the front pole; each
    rim point is the globe's closest point to the pole moved by the iris radius."""
    aims = vertices[front_pole] + IRIS_RADIUS_MM * IRIS_RIM_DIRECTIONS
    triangle, weights, distance = closest_points_on_triangles(aims, vertices[globe])
    centre_ids, centre_weights = np.full((1, 3), front_pole), np.array([[1.0, 0.0, 0.0]])
    return np.r_[centre_ids, globe[triangle]], np.r_[centre_weights, weights], distance


def register_mediapipe(vertices: np.ndarray, surface: np.ndarray, ibug68: LandmarkMap,
                       eyeballs: dict[str, tuple[np.ndarray, int]] | None = None) -> MediaPipeRegistration:
    """Register MediaPipe's canonical landmarks onto an imported mean shape.

    Args:
        vertices: [V, 3] the imported model's mean, mm, in our frame.
        surface: [F, 3] int64 triangles of the face skin the points may lie on (not the
            mouth interior, eyeballs or the back of the head).
        ibug68: the imported model's iBUG-68 map (its invalid points are ignored).
        eyeballs: per side ("L", "R"): the triangles [G, 3] of the eyeball surface that shows
            the iris and the vertex id of its front pole; None marks the iris points invalid.
    Returns:
        :class:`MediaPipeRegistration`.
    """
    from ..default import NUM_MEDIAPIPE_VERTICES, load_default_model

    default = load_default_model(dtype=torch.float64)
    default_skin = default.skin()
    default_vertices = default_skin.mean.numpy()
    default_ibug = default.landmarks(default.mean[None], "ibug68")[0].numpy()
    ibug = ibug68.gather(torch.from_numpy(vertices)[None])[0].numpy()
    valid = ibug68.valid.numpy() & default.landmark_map("ibug68").valid.numpy()

    scale, rotation, translation = _similarity(default_ibug[valid], ibug[valid])

    def aligned(points: np.ndarray) -> np.ndarray:
        return scale * points @ rotation.T + translation

    anchors = aligned(default_ibug[valid])
    warp = RBFInterpolator(anchors, ibug[valid] - anchors, kernel="thin_plate_spline")

    def warped(points: np.ndarray) -> np.ndarray:
        moved = aligned(points)
        return moved + warp(moved)

    default_warped = warped(default_vertices)                                        # [V_default, 3]
    default_triangles = default_skin.triangles.numpy()
    turn = (face_normals(aligned(default_vertices), default_triangles)
            * face_normals(default_warped, default_triangles)).sum(1)                 # [F_default] cosines
    # The side of the mouth each default vertex belongs to: on a closed mouth the lips touch,
    # and the surface nearest to an upper-lip point of the inner edge may be the lower lip,
    # which a jaw drop carries away from it. So those points keep to surface facing down (the
    # upper lip's underside), the lower ones to surface facing up; the corners are both lips'.
    lip_side = np.zeros(len(default_vertices))                                       # [V_default]
    for name, facing_y in LIP_INNER_FACING_Y.items():
        lip_side[default.regions[name].numpy()[1:-1]] = facing_y
    triangle_facing = np.sign(face_normals(vertices, surface)[:, 1])                 # [F]
    triangle, weights, distance = _closest_facing(default_warped[:NUM_MEDIAPIPE_VERTICES],
                                                  lip_side[:NUM_MEDIAPIPE_VERTICES], vertices[surface], triangle_facing)
    triangle_ids = surface[triangle]

    num_iris = 2 * 5
    iris_vertices = np.zeros((num_iris, 3), dtype=np.int64)
    iris_weights = np.zeros((num_iris, 3))
    iris_weights[:, 0] = 1.0
    iris_aim_error = np.zeros(0)  # [8] with eyeballs: how far each rim point is from where it was aimed
    for side, first in IRIS_ORDER.items() if eyeballs is not None else ():
        rows = slice(first - NUM_MEDIAPIPE_VERTICES, first - NUM_MEDIAPIPE_VERTICES + 5)
        iris_vertices[rows], iris_weights[rows], aim_error = _iris_points(vertices, *eyeballs[side])
        iris_aim_error = np.r_[iris_aim_error, aim_error]
    landmark_map = LandmarkMap(
        vertices=torch.from_numpy(np.concatenate((triangle_ids, iris_vertices))),
        weights=torch.from_numpy(np.concatenate((weights, iris_weights))).float(),
        valid=torch.from_numpy(np.r_[np.ones(NUM_MEDIAPIPE_VERTICES, bool), np.full(num_iris, eyeballs is not None)]))

    surface_vertices = np.unique(surface)
    vertex_facing = np.sign(vertex_normals(vertices, surface)[surface_vertices, 1])  # [S]
    regions = {}
    for name in LOOP_REGIONS:
        path = default.regions[name].numpy()
        regions[name] = _loop_on(default_warped[path], lip_side[path], vertices[surface_vertices], vertex_facing,
                                 surface_vertices, closed=name.startswith("eye_"))
    gap, nearest_default = cKDTree(default_warped).query(vertices[surface_vertices])
    near = gap <= REGION_MAX_DISTANCE_MM
    for name in AREA_REGIONS:
        member = np.zeros(len(default_warped), dtype=bool)
        member[default.regions[name].numpy()] = True
        regions[name] = surface_vertices[near & member[nearest_default]]

    ibug_rigid = np.linalg.norm(anchors - ibug[valid], axis=1)
    meta = {
        "method": "mesh-to-mesh registration of the default model (its first 468 vertices are MediaPipe's "
                  "canonical landmarks) onto this mean: a similarity transform (Umeyama) on the iBUG-68 points "
                  f"both models map ({int(valid.sum())}), a thin-plate-spline warp that takes them exactly onto this "
                  "model's, then each point's closest point on the face surface "
                  f"({len(surface)} triangles; the inner points of the lips' inner edges only on triangles facing "
                  "down for the upper lip, up for the lower), as barycentric weights; affectsynth.model.importers.mp478",
        "iris": f"468-477: each eyeball's front pole and the globe's closest points to the pole moved "
                f"{IRIS_RADIUS_MM} mm along +x, +y, -x, -y" if eyeballs is not None
                else "468-477 invalid: the model has no eyeballs",
        "similarity_scale": round(scale, 5),
        "ibug68_after_similarity_mm": _distance_stats(ibug_rigid),
        "warp_min_normal_cosine": round(float(turn.min()), 3),
        "projection_to_surface_mm": _distance_stats(distance),
        **({"iris_rim_from_aim_mm": _distance_stats(iris_aim_error)} if eyeballs is not None else {}),
        "regions": f"{', '.join(LOOP_REGIONS)}: the nearest surface vertex of each of the warped default model's "
                   f"loop vertices (facing as the landmarks); {', '.join(AREA_REGIONS)}: surface vertices within {REGION_MAX_DISTANCE_MM:g} mm "
                   "of the warped default model whose nearest default vertex is in the region",
    }
    return MediaPipeRegistration(landmark_map=landmark_map, regions=regions, meta=meta)
