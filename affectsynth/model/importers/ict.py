"""Import the ICT Face Model Light (ICT-FaceKit, USC Institute for Creative Technologies, MIT
licence) from a clone of its repository into a :class:`FaceModel`.

The repository's ``FaceXModel/`` folder holds one topology (26,719 vertices, quads and a few
triangles) as OBJ files: ``generic_neutral_mesh.obj``, 100 identity modes ``identityNNN.obj``
and 53 ARKit-named expression shapes, each an absolute mesh with the same vertex order, plus
``vertex_indices.json``. The OBJs are parsed here (not with a mesh library, which would split
vertices at UV seams and renumber them): the file's vertex order is kept, so ICT's documented
vertex ranges and landmark indices hold in the imported model.

Facts the import relies on (measured on the files, checked by tests/test_import_ict.py):
ICT coordinates are centimetres (outer eye corners 8.9 apart), +y up, the face looks along +z
and +x is the subject's left (ICT's "left" parts and ``_L`` shapes lie at +x), so only the unit
changes. ICT's own scripts sample identity weights from N(0, 1) and add
``w_k (identity_k - neutral)``, so the modes are already scaled by their standard deviation.

MediaPipe's 478-point map and the regions the renderer reads (the lips, the lips' inner edges,
the lid openings) are registered from the default model onto ICT's face part
(:mod:`.mp478`); the iris points lie on ICT's eyeballs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError
from ..face_model import FaceModel, LandmarkMap
from .mp478 import register_mediapipe

__all__ = ["import_ict", "ICT_UNIT_MM", "ICT_AU_MAP"]

#: Millimetres per ICT model unit (centimetres).
ICT_UNIT_MM = 10.0
NUM_VERTICES = 26_719
NUM_IDENTITY = 100
NEUTRAL_FILE = "generic_neutral_mesh.obj"
#: ICT's texture coordinates are UDIM tiles side by side: u in [0, 7) (face and head in tiles
#: 0-1, gums and tongue 2, teeth 3, lacrimal fluid 4-5, eyelashes 6; the eyeballs and eye films
#: reuse tile 0). u is divided by this so that the tiles stay apart inside [0, 1].
UV_TILES = 7

#: ICT's parts (README "Face Model Topology"): name -> (first vertex, last vertex, first face,
#: last face), inclusive, in the file's order (faces: the OBJ's polygons, before triangulation).
#: "L" is ICT's "left", which lies at +x: the subject's left.
PARTS: dict[str, tuple[int, int, int, int]] = {
    "face": (0, 9408, 0, 9229), "head_neck": (9409, 11247, 9230, 11143),
    "mouth_socket": (11248, 13293, 11144, 13225),
    "eye_socket_L": (13294, 13677, 13226, 13629), "eye_socket_R": (13678, 14061, 13630, 14033),
    "gums_tongue": (14062, 17038, 14034, 17005), "teeth": (17039, 21450, 17006, 21495),
    "eyeball_L": (21451, 23020, 21496, 23093), "eyeball_R": (23021, 24590, 23094, 24691),
    "lacrimal_fluid_L": (24591, 24794, 24692, 24854), "lacrimal_fluid_R": (24795, 24998, 24855, 25017),
    "eye_blend_L": (24999, 25022, 25018, 25032), "eye_blend_R": (25023, 25046, 25033, 25047),
    "eye_occlusion_L": (25047, 25198, 25048, 25175), "eye_occlusion_R": (25199, 25350, 25176, 25303),
    "eyelashes_L": (25351, 26034, 25304, 25843), "eyelashes_R": (26035, 26718, 25844, 26383),
}
#: Finer ranges of the README ("Face Area Details", "Eyeball Details").
SUBPARTS: dict[str, tuple[int, int]] = {
    "face_narrow": (0, 6705), "sclera_L": (21451, 22220), "iris_L": (22221, 23020),
    "sclera_R": (23021, 23790), "iris_R": (23791, 24590),
}
#: Our material of each ICT part that has one. The gums and the tongue are one connected
#: surface in ICT with no documented split, so all of it is "gums".
PART_MATERIAL = {"mouth_socket": "mouth_socket", "gums_tongue": "gums", "teeth": "teeth",
                 "eyeball_L": "eyeball", "eyeball_R": "eyeball"}
#: Parts whose triangles are left out of the model (their vertices stay, in the file's order):
#: overlay geometry for Unreal Engine's eye shaders (transparent films, eyelash strips) and the
#: eye sockets behind the eyeballs. Our renderer has no material for them, and as "skin" they
#: would be textured from the photo over the eyes.
PARTS_WITHOUT_TRIANGLES = ("eye_socket_L", "eye_socket_R", "lacrimal_fluid_L", "lacrimal_fluid_R",
                           "eye_blend_L", "eye_blend_R", "eye_occlusion_L", "eye_occlusion_R",
                           "eyelashes_L", "eyelashes_R")

#: ICT README's table "closest relation to FACS units", on our AU keys: "A + B" rows become a
#: per-side pair where the shapes are ``_L``/``_R``, a bilateral key where they are not.
#: One change: ICT lists jawOpen as AU27 (mouth stretch); ARKit's jawOpen is the jaw opening
#: alone, which is FACS AU26 (jaw drop), the code the expression prototypes use.
ICT_AU_MAP: dict[str, str] = {
    **{f"{shape}_{s}": f"AU{au}_{s}" for shape, au in (
        ("browInnerUp", 1), ("browOuterUp", 2), ("browDown", 4), ("eyeWide", 5), ("cheekSquint", 6),
        ("eyeSquint", 7), ("noseSneer", 9), ("mouthUpperUp", 11), ("mouthSmile", 12), ("mouthDimple", 14),
        ("mouthFrown", 15), ("mouthLowerDown", 16), ("mouthStretch", 20), ("mouthPress", 24),
        ("eyeBlink", 45)) for s in "LR"},
    "mouthShrugUpper": "AU10", "mouthShrugLower": "AU17", "mouthPucker": "AU18", "mouthFunnel": "AU22",
    "jawOpen": "AU26", "mouthRollLower": "AU28", "mouthRollUpper": "AU28",
}
#: Shapes ICT's table relates to codes that are not expression targets here (jaw and eye
#: positions, cheek blow: not FACS main codes), and shapes it does not relate to any AU.
ICT_UNMAPPED = {
    "jawForward": "AU29 jaw thrust (not a FACS main code here)",
    "jawLeft": "AU30 jaw sideways (not a FACS main code here)",
    "jawRight": "AU30 jaw sideways (not a FACS main code here)",
    "cheekPuff_L": "AU33 cheek blow (not a FACS main code here)",
    "cheekPuff_R": "AU33 cheek blow (not a FACS main code here)",
    **{f"eyeLook{d}_{s}": "AU61-64 eye position (not an expression target)"
       for d in ("Down", "In", "Out", "Up") for s in "LR"},
    "mouthClose": "not in ICT's FACS table", "mouthLeft": "not in ICT's FACS table",
    "mouthRight": "not in ICT's FACS table",
}


def _read_vertices(path: Path) -> np.ndarray:
    """[V, 3] float64 positions of an OBJ's ``v`` lines, which are one contiguous block in
    every ICT file (checked: the block must hold only ``v`` lines)."""
    data = path.read_bytes()
    start = data.find(b"\nv ") + 1
    end = data.find(b"\n", data.rfind(b"\nv ") + 1)
    if start == 0:
        raise InputError(f"{path}: no vertices (not an ICT FaceXModel OBJ)")
    tokens = np.array(data[start:end].split())
    if len(tokens) % 4 or not (tokens[::4] == b"v").all():
        raise InputError(f"{path}: the vertex lines are not one block of 'v x y z' (not an ICT FaceXModel OBJ)")
    return tokens.reshape(-1, 4)[:, 1:].astype(np.float64)


def _read_faces(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangles of an OBJ's faces, quads split along their first diagonal (a, b, c), (a, c, d)
    with the file's winding, and per-vertex texture coordinates.

    Returns:
        triangles [F, 3] int64 vertex ids, in the file's face order; polygon [F] int64 the
        file's face index each triangle comes from; uv [V, 2] float64: the texture coordinate
        of each vertex's first corner in the file (a vertex on a UV seam has several; one is kept).
    """
    vt, corners, polygon = [], [], []
    faces_read = 0
    with path.open() as f:
        for line in f:
            if line.startswith("vt "):
                vt.append(line.split()[1:3])
            elif line.startswith("f "):
                face = [tuple(int(i) - 1 for i in c.split("/")[:2]) for c in line.split()[1:]]
                for k in range(1, len(face) - 1):  # a fan: one triangle per triangle, two per quad
                    corners.append((face[0], face[k], face[k + 1]))
                    polygon.append(faces_read)
                faces_read += 1
    corners_arr = np.array(corners, dtype=np.int64)                                     # [F, 3, 2]
    triangles, tex = corners_arr[..., 0], corners_arr[..., 1]
    uv = np.zeros((int(triangles.max()) + 1, 2))
    vertex, first_corner = np.unique(triangles.ravel(), return_index=True)
    uv[vertex] = np.array(vt, dtype=np.float64)[tex.ravel()[first_corner]]
    return triangles, np.array(polygon, dtype=np.int64), uv


def _sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere (centre [3], radius) through [N, 3] points."""
    a = np.c_[2 * points, np.ones(len(points))]
    solution = np.linalg.lstsq(a, (points ** 2).sum(1), rcond=None)[0]
    centre = solution[:3]
    return centre, float(np.sqrt(solution[3] + centre @ centre))


def import_ict(root: Path) -> FaceModel:
    """The ICT Face Model Light of a repository clone ``root`` (holding ``FaceXModel/``).

    Vertices keep the file's order; positions are converted to mm (:data:`ICT_UNIT_MM`).
    InputError (one line) when ``root`` is not such a folder or a file is missing or malformed.
    """
    folder = Path(root) / "FaceXModel"
    if not (folder / NEUTRAL_FILE).is_file():
        raise InputError(f"{root}: not an ICT-FaceKit folder (no FaceXModel/{NEUTRAL_FILE})")
    try:
        indices = json.loads((folder / "vertex_indices.json").read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{folder / 'vertex_indices.json'}: unreadable ({type(e).__name__})") from None
    exp_names = tuple(indices["expressions"])

    def shape(name: str) -> np.ndarray:
        path = folder / f"{name}.obj"
        if not path.is_file():
            raise InputError(f"{path}: missing (an incomplete ICT-FaceKit clone)")
        vertices = _read_vertices(path)
        if vertices.shape != (NUM_VERTICES, 3):
            raise InputError(f"{path}: {len(vertices)} vertices, expected {NUM_VERTICES}")
        return vertices * ICT_UNIT_MM

    neutral = shape(NEUTRAL_FILE[:-4])
    id_basis = np.stack([shape(f"identity{k:03d}") - neutral for k in range(NUM_IDENTITY)])
    exp_basis = np.stack([shape(name) - neutral for name in exp_names])
    triangles, polygon, uv = _read_faces(folder / NEUTRAL_FILE)
    uv[:, 0] /= UV_TILES

    part_of_polygon = np.empty(polygon[-1] + 1, dtype=object)
    for name, (_, _, first, last) in PARTS.items():
        part_of_polygon[first:last + 1] = name
    triangle_part = part_of_polygon[polygon]
    keep = ~np.isin(triangle_part, PARTS_WITHOUT_TRIANGLES)
    triangles, triangle_part = triangles[keep], triangle_part[keep]
    materials: dict[str, np.ndarray] = {}
    for part, material in PART_MATERIAL.items():
        materials[material] = np.concatenate((materials.get(material, np.zeros(0, np.int64)),
                                              np.flatnonzero(triangle_part == part)))

    regions = {name: np.arange(ids[0], ids[1] + 1) for name, ids in {**PARTS, **SUBPARTS}.items()}
    regions["skin"] = np.arange(PARTS["head_neck"][1] + 1)
    regions["fitting"] = np.asarray(indices["idx_to_fitting_verts"])
    regions["rigid"] = np.asarray(indices["idx_to_rigid_verts"])
    ibug68 = LandmarkMap.from_vertex_ids(np.asarray(indices["idx_to_landmark_verts"]))

    eyeballs, iris_globes = {}, {}
    for s in "LR":
        centre, radius = _sphere(neutral[regions["sclera_" + s]])
        iris = regions["iris_" + s]
        apex = int(iris[np.argmax((neutral[iris] - centre) @ np.array([0.0, 0.0, 1.0]))])
        # ICT's "iris" part is an inner globe (12-15.8 mm from the centre) whose front is the
        # iris, its front pole the apex; the "sclera" part is a shell around it (to 16.7 mm).
        eyeball_triangles = triangles[triangle_part == "eyeball_" + s]
        iris_globes[s] = (eyeball_triangles[np.isin(eyeball_triangles, iris).all(1)], apex)
        eyeballs[s] = {"centre_mm": [round(float(c), 4) for c in centre], "radius_mm": round(radius, 4),
                       "corneal_apex_mm": [round(float(c), 4) for c in neutral[apex]]}
    mediapipe = register_mediapipe(neutral, triangles[triangle_part == "face"], ibug68, iris_globes)
    regions.update(mediapipe.regions)
    meta = {
        "name": "ict-facekit-light",
        "version": "ICT Face Model Light (FaceXModel), imported by affectsynth.model.importers.ict",
        "units": "mm",
        "unit_conversion": f"ICT coordinates are centimetres; multiplied by {ICT_UNIT_MM:g}",
        "source": "ICT-FaceKit, https://github.com/ICT-VGL/ICT-FaceKit, FaceXModel/",
        "licence": "MIT, Copyright (c) 2020 USC Institute for Creative Technologies",
        "provenance": "mean = generic_neutral_mesh.obj; id_basis[k] = identity{k:03d}.obj - neutral (ICT samples "
                      "identity weights from N(0, 1), so the modes are already std-scaled and kept as they are); "
                      "exp_basis[e] = <exp_names[e]>.obj - neutral; vertices in the files' order; quads split "
                      "(a, b, c), (a, c, d) with the files' counter-clockwise winding; uv: each vertex's first "
                      "texture coordinate in the file (UV seams keep one side), "
                      f"its UDIM u in [0, {UV_TILES}) divided by {UV_TILES}",
        "what_it_is": "a linear morphable model learned by ICT from light-stage scans registered to one topology: "
                      "100 identity PCA modes and 53 ARKit-style expression blendshapes on a full head with "
                      "mouth socket, gums and tongue, teeth and eyeballs",
        "what_it_is_not": "a FACS model: its expressions are ARKit shapes, tied to action units by ICT's "
                          "'closest relation' table (au_map), not measured at FACS intensities; it has no albedo "
                          "and its MediaPipe 478-point map is registered from the default model, not measured on photos",
        "au_map": ICT_AU_MAP,
        "au_map_note": "from ICT's README table; jawOpen -> AU26 (ICT: AU27), since ARKit jawOpen is the jaw drop",
        "unmapped_expressions": {name: ICT_UNMAPPED[name] for name in exp_names if name not in ICT_AU_MAP},
        "parts_without_triangles": list(PARTS_WITHOUT_TRIANGLES),
        "materials_note": "gums and tongue are one surface in ICT; all of it is material 'gums'",
        "eyeballs": eyeballs,
        "landmarks_ibug68": "vertex_indices.json idx_to_landmark_verts (ICT: Multi-PIE 68 points), one vertex each",
        "landmarks_mp478": mediapipe.meta,
    }
    return FaceModel(
        mean=torch.from_numpy(neutral).float(),
        id_basis=torch.from_numpy(id_basis).float(),
        exp_basis=torch.from_numpy(exp_basis).float(),
        exp_names=exp_names,
        triangles=torch.from_numpy(triangles),
        uv=torch.from_numpy(uv).float(),
        landmark_maps={"ibug68": ibug68, "mp478": mediapipe.landmark_map},
        regions={k: torch.as_tensor(v, dtype=torch.int64) for k, v in regions.items()},
        materials={k: torch.from_numpy(v) for k, v in materials.items()},
        meta=meta,
    )
