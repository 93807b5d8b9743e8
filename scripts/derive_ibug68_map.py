"""Derive where the 68 iBUG landmarks lie on MediaPipe's 468-point face mesh.

Writes assets/mp468_to_ibug68.json: for each iBUG point (dlib's order) a triangle of mesh
vertex ids and barycentric weights. Our default face model's first 468 vertices are
MediaPipe's canonical-mesh points, so this is the model's "ibug68" landmark map.

Method (empirical, reproducible): on real frontal photos (the astronaut photo from
scikit-image, its mirror image, and every ../shared/faces/dev/*/neutral.* photo when that
folder exists) run both detectors. For each of dlib's 68 points find the front-facing
canonical triangle that contains it in the image, drawn on the 468 MediaPipe points (the
closest one, by MediaPipe depth, if several overlap), and its barycentric coordinates; a
point outside the mesh (jaw-line points can lie beyond the face oval) is snapped to the
nearest point on a front-facing triangle's edge. Each photo's choices are also mirrored
(landmark i takes its mirror landmark's triangle, mirrored; the canonical mesh is exactly
symmetric), so the map is left-right symmetric. Across these 2 x photos, per landmark: the
per-coordinate median of its positions on the canonical mesh (3D, mm), put back on the
mesh at its closest surface point. (Measured against taking the most frequent triangle
and the median barycentrics within it: in-sample 0.0191 vs 0.0207, held-out
NME 0.0399 vs 0.0418, and the most-frequent-triangle map put the midline chin point 1.6 mm
off the midline; without mirroring, jaw points 1/15 differ by 25 mm in depth because one
frontal photo barely fixes where on the silhouette a jaw point is.) image_0010.png is never
used: it is the held-out photo for the fitter's NME target.

The eight inner-lip points (60-67) are the exception: they are assigned by anatomy to
MediaPipe's inner-lip contour (:data:`INNER_LIP`). On closed-mouth photos the upper and
lower inner lip coincide, so the photos cannot say which lip a point belongs to (the
data put upper-lip point 62 and lower-lip point 66 both on the lower lip), yet the two
must part when the model opens the mouth.

The script then reports, per photo and overall, the mean distance between dlib's points
and the mapped points (as a fraction of the MediaPipe outer-eye-corner distance, mp 33-263),
and, on image_0010.png, the NME of the mapped MediaPipe points and of dlib against the
hand-annotated ground truth (mean error / distance between GT outer eye corners 36 and 45).

    python scripts/derive_ibug68_map.py [-o assets/mp468_to_ibug68.json] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import trimesh

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from affectsynth.detect import DlibDetector, MediaPipeDetector  # noqa: E402
from affectsynth.io import load_image  # noqa: E402

HELD_OUT = "models/eos-sfm/examples/data/image_0010.png"
#: iBUG-68 index of each point's mirror image (subject's left <-> right).
IBUG_MIRROR = np.array([*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
                        45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
                        54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65])
OUTER_EYE_MP = (33, 263)  # subject's right / left outer eye corner
OUTER_EYE_IBUG = (36, 45)


def photos(shared: Path) -> list[tuple[str, np.ndarray]]:
    """(name, [H, W, 3] uint8) of every photo used for the derivation."""
    from skimage import data

    astronaut = data.astronaut()
    found = [("skimage astronaut", astronaut), ("skimage astronaut, mirrored", np.ascontiguousarray(astronaut[:, ::-1]))]
    dev = sorted((shared / "faces" / "dev").glob("*/neutral.*"))
    if not dev:
        print(f"note: no photos in {shared / 'faces' / 'dev'}; deriving from the astronaut photo alone")
    found += [(str(p.relative_to(shared)), load_image(p)) for p in dev]
    return found


def signed_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """[F] twice the signed area of each triangle of ``points`` [N, 2] in image axes (y down)."""
    a, b, c = (points[triangles[:, k]] for k in range(3))
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def locate(point: np.ndarray, mesh_xy: np.ndarray, mesh_depth: np.ndarray, triangles: np.ndarray
           ) -> tuple[int, np.ndarray]:
    """The front-facing triangle holding an image point, and its barycentrics.

    Args:
        point: [2] image point.
        mesh_xy: [468, 2] detected MediaPipe points; mesh_depth: [468] their depth (larger = closer).
        triangles: [F, 3] canonical triangles, counter-clockwise seen from the front.
    Returns:
        (triangle index, [3] barycentric weights). Outside the mesh: the nearest point on a
        front-facing triangle's edge (the weight of the vertex opposite that edge is 0).
    """
    # Counter-clockwise seen from the front in model axes (y up) is clockwise in image axes (y down).
    front = np.flatnonzero(signed_areas(mesh_xy, triangles) < 0)
    tri = triangles[front]
    a, b, c = (mesh_xy[tri[:, k]] for k in range(3))
    area = signed_areas(mesh_xy, tri)
    wa = ((b[:, 0] - point[0]) * (c[:, 1] - point[1]) - (b[:, 1] - point[1]) * (c[:, 0] - point[0])) / area
    wb = ((c[:, 0] - point[0]) * (a[:, 1] - point[1]) - (c[:, 1] - point[1]) * (a[:, 0] - point[0])) / area
    bary = np.stack((wa, wb, 1.0 - wa - wb), 1)
    inside = np.flatnonzero((bary >= 0).all(1))
    if len(inside):
        nearest = inside[np.argmax((bary[inside] * mesh_depth[tri[inside]]).sum(1))]
        return int(front[nearest]), bary[nearest]
    best = (np.inf, 0, np.zeros(3))
    for k in range(3):  # edge from vertex k to vertex k+1
        p, q = mesh_xy[tri[:, k]], mesh_xy[tri[:, (k + 1) % 3]]
        t = np.clip(((point - p) * (q - p)).sum(1) / ((q - p) ** 2).sum(1), 0.0, 1.0)
        dist = np.linalg.norm(p + t[:, None] * (q - p) - point, axis=1)
        i = int(np.argmin(dist))
        if dist[i] < best[0]:
            w = np.zeros(3)
            w[k], w[(k + 1) % 3] = 1.0 - t[i], t[i]
            best = (dist[i], i, w)
    return int(front[best[1]]), best[2]


def mirror_choices(choices: list[list[tuple[int, np.ndarray]]], triangles: np.ndarray, canonical: np.ndarray
                   ) -> list[list[tuple[int, np.ndarray]]]:
    """The same choices as seen on the mirrored face: landmark i takes its mirror's triangle, mirrored.

    The canonical mesh is exactly symmetric (vertex i's mirror is the vertex at x -> -x), so
    the mirror of a triangle is a triangle.
    """
    vertex_mirror = np.linalg.norm(canonical[None] - (canonical * (-1, 1, 1))[:, None], axis=2).argmin(1)
    assert np.allclose(canonical[vertex_mirror] * (-1, 1, 1), canonical, atol=1e-3), "mesh not symmetric"
    triangle_of = {frozenset(t): f for f, t in enumerate(triangles.tolist())}

    def mirrored(t: int, w: np.ndarray) -> tuple[int, np.ndarray]:
        image = vertex_mirror[triangles[t]].tolist()
        f = triangle_of[frozenset(image)]
        return f, np.array([w[image.index(v)] for v in triangles[f]])

    return [[mirrored(*photo[j]) for j in IBUG_MIRROR] for photo in choices]


def aggregate(choices: list[list[tuple[int, np.ndarray]]], triangles: np.ndarray, canonical: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Per landmark: the per-coordinate median of its positions on the canonical mesh, put back
    on the mesh surface (its closest point).

    Args:
        choices: per photo, per landmark (triangle index, [3] barycentrics).
        triangles: [F, 3]; canonical: [468, 3] canonical mesh vertices, mm.
    Returns:
        vertices [68, 3] int, weights [68, 3] float (rows sum to 1).
    """
    on_mesh = np.array([[w @ canonical[triangles[t]] for t, w in photo] for photo in choices])  # [P, 68, 3]
    median = np.median(on_mesh, 0)  # [68, 3]
    corners = canonical[triangles]  # [F, 3, 3]
    closest = trimesh.triangles.closest_point(
        np.tile(corners, (len(median), 1, 1)), np.repeat(median, len(triangles), 0)).reshape(len(median), -1, 3)
    best = np.linalg.norm(closest - median[:, None], axis=2).argmin(1)  # [68]
    points = closest[np.arange(len(median)), best]
    weights = np.clip(trimesh.triangles.points_to_barycentric(corners[best], points), 0.0, None)
    return triangles[best], weights / weights.sum(1, keepdims=True)


def eye_distance(mesh_xy: np.ndarray) -> float:
    """Outer-eye-corner distance (mp 33-263) of detected MediaPipe points [>= 468, 2], px."""
    return float(np.linalg.norm(mesh_xy[OUTER_EYE_MP[0]] - mesh_xy[OUTER_EYE_MP[1]]))


def mapped(mesh_xy: np.ndarray, vertices: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[68, 2] iBUG points placed on the detected mesh points [>= 468, 2] by the map."""
    return (mesh_xy[vertices] * weights[..., None]).sum(1)


def read_pts(path: Path) -> np.ndarray:
    """[68, 2] points of a 300-W .pts file, shifted to our convention (pixel centres at +0.5).

    300-W annotations are 1-based pixel coordinates (pixel centre at the integer), so a
    value x is x - 1 + 0.5 in our frame.
    """
    text = path.read_text()
    rows = text[text.index("{") + 1:text.index("}")].split()
    return np.array(rows, dtype=np.float64).reshape(-1, 2) - 0.5


def largest_faces(mp_detector, dlib_detector, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(mp xy [478, 2], mp depth [478], dlib xy [68, 2]) of the largest face, or None."""
    mp, dl = mp_detector(image), dlib_detector(image)
    if mp.batch_size == 0 or dl.batch_size == 0:
        return None
    return mp.xy[0].double().numpy(), mp.depth[0].double().numpy(), dl.xy[0].double().numpy()


def write_map(path: Path, source: str, vertices: np.ndarray, weights: np.ndarray) -> None:
    """The JSON asset, one landmark per line (readable diffs); weights rounded, rows summing to 1."""
    weights = np.round(weights, 5)
    weights[:, 0] = np.round(1.0 - weights[:, 1:].sum(1), 5)

    def rows(table: list[list]) -> str:
        return "[\n" + ",\n".join(f"    {json.dumps(row)}" for row in table) + "\n  ]"

    path.write_text(f'{{\n  "source": {json.dumps(source)},\n  "vertices": {rows(vertices.tolist())},\n'
                    f'  "weights": {rows(weights.tolist())}\n}}\n')


def report_in_sample(used: list[str], detections: list, vertices: np.ndarray, weights: np.ndarray) -> None:
    print("\nmean |dlib - mapped MediaPipe| / outer-eye-corner distance (mp 33-263), in-sample:")
    errors = []
    for name, (xy, _, dlib_xy) in zip(used, detections):
        e = np.linalg.norm(mapped(xy, vertices, weights) - dlib_xy, axis=1) / eye_distance(xy)
        errors.append(e)
        print(f"  {name:40s} all 68: {e.mean():.4f}   jaw 0-16: {e[:17].mean():.4f}   inner 17-67: {e[17:].mean():.4f}")
    print(f"  {'overall':40s} all 68: {np.concatenate(errors).mean():.4f}")


def report_held_out(path: Path, faces: tuple, vertices: np.ndarray, weights: np.ndarray) -> None:
    truth = read_pts(path.with_suffix(".pts"))
    inter_ocular = np.linalg.norm(truth[OUTER_EYE_IBUG[0]] - truth[OUTER_EYE_IBUG[1]])
    xy, _, dlib_xy = faces
    on_mesh = mapped(xy, vertices, weights)
    print(f"\nheld-out {HELD_OUT} vs its ground truth (NME = mean error / GT outer-eye-corner distance "
          f"{inter_ocular:.1f} px):")
    for label, points in (("mapped MediaPipe (best the fitter can reach via this map)", on_mesh), ("dlib", dlib_xy)):
        err = np.linalg.norm(points - truth, axis=1) / inter_ocular
        print(f"  {label:58s} NME 68: {err.mean():.4f}   inner 17-67: {err[17:].mean():.4f}")
    err = np.linalg.norm(on_mesh - dlib_xy, axis=1) / eye_distance(xy)
    print(f"  {'mapped MediaPipe vs dlib (as in-sample above)':58s} mean: {err.mean():.4f}")


#: iBUG inner-lip point -> MediaPipe inner-lip contour vertex: the inner corners (60, 64 =
#: 78, 308), the upper inner lip (61-63 -> 82, 13, 312) and the lower one (65-67 -> 317, 14, 87).
INNER_LIP = {60: 78, 61: 82, 62: 13, 63: 312, 64: 308, 65: 317, 66: 14, 67: 87}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "assets" / "mp468_to_ibug68.json")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the shared data folder")
    args = ap.parse_args()

    mesh = np.load(ROOT / "assets" / "mediapipe_canonical_face.npz")
    triangles, canonical = mesh["triangles"].astype(np.int64), mesh["vertices"].astype(np.float64)
    held_out = args.shared / HELD_OUT
    used, detections, held_out_faces = [], [], None
    with MediaPipeDetector() as mp_detector, DlibDetector() as dlib_detector:
        for name, image in photos(args.shared):
            faces = largest_faces(mp_detector, dlib_detector, image)
            if faces is None:
                print(f"skipped {name}: a detector found no face")
                continue
            used.append(name)
            detections.append(faces)
        if held_out.is_file():
            held_out_faces = largest_faces(mp_detector, dlib_detector, load_image(held_out))

    choices = [[locate(p, xy[:468], depth[:468], triangles) for p in dlib_xy] for xy, depth, dlib_xy in detections]
    # Pooling every photo with its mirror image makes the map left-right symmetric: jaw points lie
    # on the silhouette, where one photo's 2D point fixes little of the 3D position.
    vertices, weights = aggregate(choices + mirror_choices(choices, triangles, canonical), triangles, canonical)
    for point, vertex in INNER_LIP.items():
        vertices[point] = (vertex, vertex, vertex)
        weights[point] = (1.0, 0.0, 0.0)
    source = (f"Derived by scripts/derive_ibug68_map.py: dlib's 68-point shape predictor and MediaPipe face mesh "
              f"(mediapipe 0.10.21) run on {len(used)} frontal photos ({'; '.join(used)}) and their mirror "
              f"images; per photo and iBUG point the front-facing canonical triangle containing it in the image "
              f"(points outside the mesh snapped to the nearest edge) and its barycentrics; per iBUG point the "
              f"median of these positions on the canonical mesh, put back at its closest surface point; the "
              f"inner-lip points 60-67 assigned by anatomy to MediaPipe's inner-lip contour vertices {INNER_LIP}. "
              f"Triangles index the 468 canonical mesh vertices (assets/mediapipe_canonical_face.npz).")
    write_map(args.output, source, vertices, weights)
    snapped = sum(int((w == 0).any()) for photo in choices for _, w in photo)
    print(f"wrote {args.output} from {len(used)} photos ({snapped} of {68 * len(used)} points snapped to the mesh edge)")

    report_in_sample(used, detections, vertices, weights)
    if held_out_faces is None:
        print(f"\n{held_out} is absent or has no face: no held-out NME")
    else:
        report_held_out(held_out, held_out_faces, vertices, weights)


if __name__ == "__main__":
    main()
