"""Import the Surrey Face Model (SFM; CVSSP, University of Surrey) as the eos fitting library
ships it, in its ``share/`` folder, into a :class:`FaceModel`.

The files are read here, without eos (so the runtime does not need it; eos-py, a dev dependency,
is the tests' reference, which this import matches to 2e-5 mm): eos writes them with the
cereal C++ library's binary archive, a plain little-endian layout. What this reader relies on
(eos 1.x's ``MorphableModel``/``PcaModel``/``Blendshape`` serialisers and eos's Eigen
serialiser), checked on every read:

* ``sfm_shape_3448.bin``: uint32 class version (1: shape model, colour model, texture
  coordinates; later versions add an expression model and landmark definitions and are refused
  here), then per PCA model (shape, then colour) the mean, orthonormal basis and eigenvalues as
  Eigen matrices (int32 rows, int32 cols, float32 column-major) and a triangle list (uint64 count,
  int32 triples), then the texture coordinates (uint64 count, float64 pairs). The shape model
  holds 3,448 vertices (point-wise xyz), 63 modes and 6,736 triangles; the colour model is empty.
* ``expression_blendshapes_3448.bin``: uint64 count, then per blendshape its name (uint64
  length, bytes) and its deformation from the mean (an Eigen [3V, 1] matrix).
* ``ibug_to_sfm.txt``: TOML; ``[landmark_mappings]`` maps 1-based iBUG points to SFM vertices.
  50 of the 68 are mapped: the jaw contour (1-8, 10-17) is not, since eos fits it to whichever
  vertex of ``sfm_model_contours.json`` is on the silhouette at the fitted pose, nor are the
  inner mouth corners 61 and 65.

Facts the import relies on (measured on the files, checked by tests/test_import_sfm.py): SFM
coordinates are millimetres (outer eye corners 92 mm apart, the mesh 149 mm wide), +y up, the
face looks along +z (the area vectors sum to +0.99 z) and +x is the subject's left (the iBUG
right eye and mouth corners lie at -x): our frame, so nothing is converted. eos's
``PcaModel::draw_sample`` adds ``basis * sqrt(eigenvalue) * alpha`` with alpha ~ N(0, 1), so a
mode here is the orthonormal column scaled by the square root of its eigenvalue. Texture
coordinates have v down (the chin at v 0.93, the brows at 0.31), so v is flipped to ours (up).
Triangles go through :func:`~._common.outward_triangles`; the file's winding is already
counter-clockwise from outside, so none are swapped (``meta["checks"]`` records it).

The six blendshapes are named by emotion (anger, disgust, fear, happiness, sadness, surprise),
not by action unit: ``meta["emotion_map"]`` ties each to its EMFACS category, and a target's
soft label drives them (:func:`affectsynth.affect.targets.stack_model_coeffs`); AU-only
targets cannot. MediaPipe's 478-point map (its 10 iris points invalid: the SFM has no eyeballs)
and the lip and lid regions are registered from the default model (:mod:`.mp478`). Not
imported: the contour vertices, the 845-vertex reference mesh and its symmetry list (a
lower-resolution level, not this model's vertices), the empty colour model.
"""

from __future__ import annotations

import hashlib
import struct
import tomllib
from pathlib import Path

import numpy as np
import torch

from ...affect.targets import emfacs_table
from ...errors import InputError
from ..face_model import FaceModel, LandmarkMap
from ._common import check_orthonormal, facing, outward_triangles
from .mp478 import register_mediapipe

__all__ = ["import_sfm", "SFM_UNIT_MM", "SHAPE_FILE", "BLENDSHAPES_FILE", "LANDMARKS_FILE"]

#: Millimetres per SFM unit (millimetres).
SFM_UNIT_MM = 1.0
SHAPE_FILE = "sfm_shape_3448.bin"
BLENDSHAPES_FILE = "expression_blendshapes_3448.bin"
LANDMARKS_FILE = "ibug_to_sfm.txt"
#: The ``MorphableModel`` class version this reader parses (eos's shape-only SFM files).
SHAPE_FILE_VERSION = 1
#: iBUG 68-point markup: points per face.
IBUG_POINTS = 68
LICENCE = ("the Surrey Face Model's own terms (University of Surrey, CVSSP, http://www.cvssp.org/facemodel): "
           "free for non-commercial research; check them before redistributing a file made from it. The eos code "
           "that ships it is Apache-2.0")


class _CerealReader:
    """Sequential little-endian reads from a cereal binary archive held in memory; every read
    that runs past the end is an InputError (one line) naming the file and what was read."""

    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.offset = 0

    def _take(self, size: int, what: str) -> bytes:
        if self.offset + size > len(self.data):
            raise InputError(f"{self.path}: ends inside {what} (at byte {self.offset} of {len(self.data)}; "
                             "not an eos model file, or a truncated one)")
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def scalar(self, fmt: str, what: str) -> int:
        """One ``struct`` scalar: "I" uint32, "i" int32, "Q" uint64."""
        return struct.unpack("<" + fmt, self._take(struct.calcsize(fmt), what))[0]

    def matrix(self, what: str) -> np.ndarray:
        """An Eigen float32 matrix as [rows, cols] float32 (cereal stores it column-major)."""
        rows, cols = self.scalar("i", what), self.scalar("i", what)
        if rows < 0 or cols < 0:
            raise InputError(f"{self.path}: {what} has {rows} x {cols} values (not an eos model file)")
        values = np.frombuffer(self._take(4 * rows * cols, what), dtype="<f4")
        return values.reshape(cols, rows).T

    def array(self, dtype: str, width: int, what: str) -> np.ndarray:
        """A std::vector of fixed-size arrays: uint64 count, then count x width values -> [count, width]."""
        count = self.scalar("Q", what)
        values = np.frombuffer(self._take(count * np.dtype(dtype).itemsize * width, what), dtype=dtype)
        return values.reshape(count, width)

    def string(self, what: str) -> str:
        """A std::string: uint64 length, then UTF-8 bytes."""
        length = self.scalar("Q", what)
        try:
            return self._take(length, what).decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{self.path}: {what} is not text (not an eos blendshapes file)") from None

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise InputError(f"{self.path}: {len(self.data) - self.offset} bytes left after the model "
                             "(not the eos file layout this reader knows)")


def _read_shape_model(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The shape PCA model and texture coordinates of an eos ``MorphableModel`` file (version 1).

    Returns:
        mean [V, 3] float64, orthonormal basis [3V, K] float32 (point-wise xyz rows), eigenvalues
        [K] float64 (variances), triangles [F, 3] int64 (0-based, the file's winding), uv [V, 2]
        float64 as stored (v down).
    """
    reader = _CerealReader(path)
    version = reader.scalar("I", "the class version")
    if version != SHAPE_FILE_VERSION:
        raise InputError(f"{path}: eos MorphableModel file version {version}; this reader knows version "
                         f"{SHAPE_FILE_VERSION} (eos's shape-only {SHAPE_FILE})")
    mean = reader.matrix("the shape mean").astype(np.float64).ravel()
    basis = reader.matrix("the shape basis")
    eigenvalues = reader.matrix("the shape eigenvalues").astype(np.float64).ravel()
    triangles = reader.array("<i4", 3, "the triangle list").astype(np.int64)
    for part in ("mean", "basis", "eigenvalues"):  # a shape-only file: its colour model is empty
        if reader.matrix(f"the colour {part}").size:
            raise InputError(f"{path}: has a colour model; this reader knows the shape-only SFM")
    reader.array("<i4", 3, "the colour triangle list")
    uv = reader.array("<f8", 2, "the texture coordinates").astype(np.float64)
    reader.finish()

    if mean.size == 0 or mean.size % 3:
        raise InputError(f"{path}: the shape mean has {mean.size} values, not 3 per vertex")
    n = mean.size // 3
    if basis.shape != (3 * n, eigenvalues.size):
        raise InputError(f"{path}: the shape basis is {list(basis.shape)}, expected [{3 * n}, {eigenvalues.size}]")
    if not (np.isfinite(eigenvalues).all() and (eigenvalues > 0).all()):
        raise InputError(f"{path}: the shape eigenvalues must be positive variances")
    if triangles.size == 0 or triangles.min() < 0 or triangles.max() >= n:
        raise InputError(f"{path}: the triangle list must hold 0-based vertex indices below {n}")
    if uv.shape != (n, 2):
        raise InputError(f"{path}: {len(uv)} texture coordinates for {n} vertices")
    return mean.reshape(n, 3), basis, eigenvalues, triangles, uv


def _read_blendshapes(path: Path, num_vertices: int) -> tuple[tuple[str, ...], np.ndarray]:
    """(names, deformations [E, V, 3] float32, displacement from the mean at weight 1) of an eos
    blendshapes file."""
    reader = _CerealReader(path)
    names, deformations = [], []
    for k in range(reader.scalar("Q", "the blendshape count")):
        names.append(reader.string(f"blendshape {k}'s name"))
        deformation = reader.matrix(f"blendshape {names[-1]!r}")
        if deformation.shape != (3 * num_vertices, 1):
            raise InputError(f"{path}: blendshape {names[-1]!r} is {list(deformation.shape)}, expected "
                             f"[{3 * num_vertices}, 1] (not the blendshapes of this shape model)")
        deformations.append(deformation.reshape(num_vertices, 3))
    reader.finish()
    if not names:
        raise InputError(f"{path}: no blendshapes")
    return tuple(names), np.stack(deformations)


def _emotion_map(path: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Each blendshape name -> its EMFACS category ("happy" and "happiness" alike, through the
    table's aliases); InputError for a name that is no emotion of the table."""
    table = emfacs_table()
    emotions = {}
    for name in names:
        category = table.aliases.get(name.lower(), name.lower())
        if category not in table.categories or category == "neutral":
            raise InputError(f"{path}: blendshape {name!r} is not an emotion of the EMFACS table "
                             f"({', '.join(c for c in table.categories if c != 'neutral')})")
        emotions[name] = category
    return emotions


def _read_ibug_map(path: Path, num_vertices: int) -> np.ndarray:
    """[68] int64 SFM vertex of each iBUG point (0-based point order), -1 where the file maps none."""
    try:
        mappings = tomllib.loads(path.read_text(encoding="utf-8"))["landmark_mappings"]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError) as e:
        raise InputError(f"{path}: not eos's ibug_to_sfm.txt ({type(e).__name__})") from None
    vertices = np.full(IBUG_POINTS, -1, dtype=np.int64)
    for point, vertex in mappings.items():
        if not (point.isdigit() and 1 <= int(point) <= IBUG_POINTS and isinstance(vertex, int)
                and 0 <= vertex < num_vertices):
            raise InputError(f"{path}: mapping {point} = {vertex!r} is not an iBUG point 1-{IBUG_POINTS} to a "
                             f"vertex below {num_vertices}")
        vertices[int(point) - 1] = vertex
    return vertices


def _file_record(path: Path) -> dict:
    """Name, size and sha256 of a source file, for provenance."""
    data = path.read_bytes()
    return {"file": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def import_sfm(path: str | Path) -> FaceModel:
    """The Surrey Face Model of eos's ``share/`` folder, or of its ``sfm_shape_3448.bin`` with
    ``expression_blendshapes_3448.bin`` and ``ibug_to_sfm.txt`` beside it.

    The model: mean [3448, 3] mm, 63 identity modes (orthonormal basis x sqrt(eigenvalue), so
    coefficients are N(0, 1) as eos's own), the 6 emotion blendshapes, 6,736 triangles wound
    outward, uv, the 68-point iBUG map (50 points mapped, the others marked invalid), and the
    registered MediaPipe map and regions (:func:`~.mp478.register_mediapipe`).
    InputError (one line) when a file is missing or is not what eos writes.
    """
    path = Path(path)
    shape_path = path / SHAPE_FILE if path.is_dir() else path
    if not shape_path.is_file():
        raise InputError(f"{path}: not eos's share folder or an SFM shape file (no {SHAPE_FILE})")
    folder = shape_path.parent
    side_files = {name: folder / name for name in (BLENDSHAPES_FILE, LANDMARKS_FILE)}
    for side_path in side_files.values():
        if not side_path.is_file():
            raise InputError(f"{side_path}: missing (it lies beside {SHAPE_FILE} in eos's share folder)")

    mean, basis, eigenvalues, file_triangles, file_uv = _read_shape_model(shape_path)
    n = len(mean)
    norms = check_orthonormal(shape_path, "the shape basis", basis)
    exp_names, exp_basis = _read_blendshapes(side_files[BLENDSHAPES_FILE], n)
    emotions = _emotion_map(side_files[BLENDSHAPES_FILE], exp_names)
    ibug = _read_ibug_map(side_files[LANDMARKS_FILE], n)

    mean = mean * SFM_UNIT_MM
    id_basis = (basis * (np.sqrt(eigenvalues) * SFM_UNIT_MM).astype(np.float32)).T.reshape(-1, n, 3)
    triangles, flipped = outward_triangles(mean, file_triangles)
    uv = np.stack((file_uv[:, 0], 1.0 - file_uv[:, 1]), 1)
    mapped = np.flatnonzero(ibug >= 0)
    ibug68 = LandmarkMap.from_vertex_ids(ibug)
    mediapipe = register_mediapipe(mean, triangles, ibug68)
    meta = {
        "name": f"sfm-shape-{n}",
        "version": f"the Surrey Face Model, shape-only, {n} vertices ({shape_path.name}, eos share/), imported by "
                   "affectsynth.model.importers.sfm",
        "units": "mm",
        "unit_conversion": "SFM coordinates are millimetres, +y up, the face along +z, +x the subject's left; "
                           "kept as they are",
        "source": "the eos library's share/ folder, https://github.com/patrikhuber/eos; P. Huber et al., "
                  "A Multiresolution 3D Morphable Face Model and Fitting Framework, VISAPP 2016",
        "source_files": [_file_record(p) for p in (shape_path, *side_files.values())],
        "licence": LICENCE,
        "provenance": f"read without eos (cereal binary layout, MorphableModel version {SHAPE_FILE_VERSION}). "
                      f"mean = the shape model's mean; id_basis[k] = orthonormal basis column k * "
                      f"sqrt(eigenvalue k) (eos's rescaled basis: coefficients N(0, 1)); exp_basis[e] = blendshape "
                      f"e's deformation (offset from the mean at weight 1); triangles = the triangle list"
                      + (", last two corners swapped to face outward" if flipped else "")
                      + "; uv = (u, 1 - v) of the texture coordinates (stored v down); ibug68 = "
                      f"{LANDMARKS_FILE} [landmark_mappings], 1-based points, one vertex each",
        "what_it_is": f"a PCA shape model of {n} vertices learned by CVSSP from 3D face scans: {len(eigenvalues)} "
                      f"identity modes and {len(exp_names)} emotion blendshapes ({', '.join(exp_names)}), "
                      "a face mask without mouth interior or eyeballs",
        "what_it_is_not": "a FACS model: its expressions are whole emotions, driven by a target's soft label "
                          "(--expression, --va), so --au targets cannot drive them; it has no albedo (the "
                          "shape-only SFM), no eyeballs or mouth interior (so no iris points), no jaw contour landmarks; its "
                          "MediaPipe 478-point map is registered from the default model, not measured on photos",
        "emotion_map": emotions,
        "landmarks_ibug68": f"{len(mapped)}/{IBUG_POINTS} iBUG points mapped ({LANDMARKS_FILE}); unmapped (valid "
                            f"False, ignored by the fitter): 1-based "
                            + ", ".join(str(i + 1) for i in np.flatnonzero(ibug < 0)),
        "landmarks_mp478": mediapipe.meta,
        "dropped": "sfm_model_contours.json (eos's pose-dependent jaw contour), sfm_reference.obj and "
                   "sfm_reference_symmetry.txt (the 845-vertex reference level), the empty colour model",
        "checks": {"basis_column_norms": [round(x, 6) for x in norms], "triangles_flipped": flipped,
                   "facing": [round(float(c), 4) for c in facing(mean, triangles)]},
    }
    return FaceModel(
        mean=torch.from_numpy(mean).float(),
        id_basis=torch.from_numpy(np.ascontiguousarray(id_basis, dtype=np.float32)),
        exp_basis=torch.from_numpy(np.ascontiguousarray(exp_basis * SFM_UNIT_MM, dtype=np.float32)),
        exp_names=exp_names,
        triangles=torch.from_numpy(triangles),
        uv=torch.from_numpy(uv).float(),
        landmark_maps={"ibug68": ibug68, "mp478": mediapipe.landmark_map},
        regions={k: torch.from_numpy(v) for k, v in mediapipe.regions.items()},
        meta=meta,
    )
