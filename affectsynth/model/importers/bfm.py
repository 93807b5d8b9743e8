"""Import the Basel Face Model (University of Basel; free for non-commercial research after
registration) into a :class:`FaceModel`: BFM 2009 (``01_MorphableModel.mat``) and BFM 2017
(``model2017-1_bfm_nomouth.h5``, ``model2017-1_face12_nomouth.h5``).

UNTESTED ON THE REAL FILES. No BFM file is available here (they need registration): these
readers are written from the formats' documentation and the code that commonly reads them, and
tested only on small synthetic files with that structure (tests/test_import_bfm.py). The
assumptions they cannot check are listed below; those they can check are checked at import
(InputError, one line, when a file breaks them) and recorded in ``meta["checks"]``.

BFM 2009, a MATLAB v5 ``.mat`` (``scipy.io.loadmat``; a v7.3/HDF5 re-save is refused):

* ``shapeMU`` [3N, 1]: the mean shape, point-wise (x0, y0, z0, x1, ...), N = 53,490, in
  micrometres (a face ~1.5e5 wide; Deep3DFaceRecon divides by 1e5 "to decimetres").
* ``shapePC`` [3N, 199]: orthonormal principal components (checked: unit, orthogonal columns).
* ``shapeEV`` [199, 1]: their standard deviations, not variances (BFM's ``coef2object`` is
  ``shapeMU + shapePC * (alpha .* shapeEV)`` with ``alpha ~ N(0, 1)``), so a mode here is
  ``shapePC[:, k] * shapeEV[k]``, in units of its standard deviation as FaceModel wants.
* ``tl`` [106,466, 3]: triangles, 1-based (MATLAB), stored as doubles.
* ``segbin``: 4 binary per-vertex segment masks. BFM names the segments eyes, nose, mouth and
  rest; their order, and whether the array is [N, 4] or [4, N], are not verified here, so they
  become regions ``bfm_segment_0`` ... ``bfm_segment_3`` (either orientation accepted; optional).
* ``texMU``/``texPC``/``texEV`` (per-vertex RGB albedo, 0-255) and ``segMM``/``segMB`` (the
  segmented model) are not read: FaceModel holds no albedo.
* No expression basis: BFM 2009 is identity only. Guo et al.'s expression basis, which 3DDFA
  and Deep3DFaceRecon add (``Exp_Pca.bin`` + ``std_exp.txt``), is defined on 53,215 vertices,
  a subset of the 53,490 whose index list is in neither file, so it is not supported.

BFM 2017, statismo HDF5 (read with h5py, the optional extra ``affectsynth[bfm]``):

* groups ``shape/``, ``color/``, ``expression/``, each with ``model/mean`` [3N] (point-wise
  xyz), ``model/pcaBasis`` [3N, K], ``model/pcaVariance`` [K], ``model/noiseVariance`` and
  ``representer/points`` [3, N], ``representer/cells`` [3, F] (0-based); millimetres.
  N is 53,149 (bfm_nomouth) or 28,588 (face12) as far as we know (not relied on); K is 199
  for shape and 100 for expression.
* statismo stores the orthonormal basis and the variances (eigenvalues): a mode here is
  ``pcaBasis[:, k] * sqrt(pcaVariance[k])`` (orthonormality checked). ``noiseVariance`` (the
  PPCA noise) is not used; ``color/`` is not read.
* the expression model is a PCA of deformations of the neutral face: its mean (a small
  displacement) is added to the shape mean, so the model's rest shape is
  ``shape mean + expression mean`` (its size is recorded in ``meta["checks"]``).
* its expressions are PCA modes, not FACS action units: they are named ``exp_pca_000`` ...
  and have no ``au_map``, so ``--expression``/``--au`` cannot drive them; their coefficients
  are N(0, 1), while the fitter bounds expression coefficients to [0, 1] (it can use only the
  positive half of each mode). Such a model is for fitting identity unless a map is supplied.

Both: coordinates are taken to be right-handed, +y up, the face looking along +z, +x the
subject's left, as ours (only the unit changes). What can be checked is: the mesh's area
vectors sum along +z (a warning otherwise, recorded as ``meta["checks"]["facing"]``).
Triangles are wound counter-clockwise from outside by the geometry
(:func:`~._common.outward_triangles`), whatever the file's winding. Neither file has a landmark
map we read (BFM 2017's ``metadata/landmarks`` hold positions, not vertex ids), so an imported
BFM model cannot be fitted to a photo until one is added.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError
from ..face_model import FaceModel
from ._common import check_orthonormal, facing, outward_triangles, rms_mm

__all__ = ["import_bfm2009", "import_bfm2017", "BFM2009_UNIT_MM", "BFM2017_UNIT_MM"]

log = logging.getLogger("affectsynth")

#: Millimetres per BFM 2009 unit (micrometres).
BFM2009_UNIT_MM = 1e-3
#: Millimetres per BFM 2017 unit (millimetres).
BFM2017_UNIT_MM = 1.0
#: Counts of the official BFM 2009 file, for the docstring and meta (not required of a file).
BFM2009_NUM_VERTICES = 53_490
BFM2009_NUM_TRIANGLES = 106_466
BFM2009_FIELDS = ("shapeMU", "shapePC", "shapeEV", "tl")
#: A warning when the mesh's summed area vector has less than this along +z.
MIN_FACING_Z = 0.5

UNTESTED = ("UNTESTED on the real files (none were available): written from the format's documentation, "
            "tested on synthetic files of that structure only")


def _check_facing(path: Path, vertices: np.ndarray, triangles: np.ndarray) -> list[float]:
    direction = facing(vertices, triangles)
    if direction[2] < MIN_FACING_Z:
        log.warning("%s: the mesh faces (%.2f, %.2f, %.2f), not +z: its axes may not be ours (+y up, face along "
                    "+z); check the imported model", path, *direction)
    return [round(float(c), 4) for c in direction]


def _finish(mean: np.ndarray, id_basis: np.ndarray, exp_basis: np.ndarray, exp_names: tuple[str, ...],
            triangles: np.ndarray, regions: dict[str, np.ndarray], meta: dict) -> FaceModel:
    return FaceModel(
        mean=torch.from_numpy(np.ascontiguousarray(mean, dtype=np.float32)),
        id_basis=torch.from_numpy(np.ascontiguousarray(id_basis, dtype=np.float32)),
        exp_basis=torch.from_numpy(np.ascontiguousarray(exp_basis, dtype=np.float32)),
        exp_names=exp_names,
        triangles=torch.from_numpy(triangles.astype(np.int64)),
        regions={k: torch.from_numpy(v.astype(np.int64)) for k, v in regions.items()},
        meta=meta,
    )


# ------------------------------------------------------------------------------ BFM 2009
def _loadmat(path: Path) -> dict:
    import scipy.io

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return scipy.io.loadmat(str(path), variable_names=BFM2009_FIELDS + ("segbin",))
    except NotImplementedError:
        raise InputError(f"{path}: a MATLAB v7.3 (HDF5) .mat; BFM 2009's 01_MorphableModel.mat is MATLAB v5, "
                         "re-save it with -v7 or use the original file") from None
    except Exception as e:  # scipy.io raises ValueError, TypeError, zlib errors ... on other files
        raise InputError(f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:120]})") from None


def import_bfm2009(path: str | Path) -> FaceModel:
    """BFM 2009's ``01_MorphableModel.mat``: mean, 199 identity modes (std-scaled), triangles,
    no expressions, in mm (:data:`BFM2009_UNIT_MM`). Untested on the real file (see the module
    docstring). InputError (one line) when the file is not such a ``.mat``."""
    path = Path(path)
    data = _loadmat(path)
    missing = [name for name in BFM2009_FIELDS if name not in data]
    if missing:
        raise InputError(f"{path}: no {', '.join(missing)} (not BFM 2009's 01_MorphableModel.mat)")
    mu = np.asarray(data["shapeMU"], dtype=np.float64).ravel()
    pc = np.asarray(data["shapePC"])
    ev = np.asarray(data["shapeEV"], dtype=np.float64).ravel()
    tl = np.asarray(data["tl"])
    if mu.size == 0 or mu.size % 3:
        raise InputError(f"{path}: shapeMU has {mu.size} values, not 3 per vertex")
    n = mu.size // 3
    if pc.ndim != 2 or pc.shape[0] != 3 * n or pc.shape[1] != ev.size:
        raise InputError(f"{path}: shapePC is {list(pc.shape)}, expected [{3 * n}, {ev.size}] "
                         "(3 x shapeMU's vertices, one column per shapeEV value)")
    if not (np.isfinite(ev).all() and (ev > 0).all()):
        raise InputError(f"{path}: shapeEV must be positive standard deviations")
    if tl.ndim != 2 or tl.shape[1] != 3 or tl.size == 0:
        raise InputError(f"{path}: tl is {list(tl.shape)}, expected [F, 3]")
    if not (np.all(tl == np.round(tl)) and tl.min() >= 1 and tl.max() <= n):
        raise InputError(f"{path}: tl must hold 1-based vertex indices in [1, {n}]")
    norms = check_orthonormal(path, "shapePC", pc)

    mean = mu.reshape(n, 3) * BFM2009_UNIT_MM
    id_basis = (pc.astype(np.float32) * (ev * BFM2009_UNIT_MM).astype(np.float32)).T.reshape(-1, n, 3)
    triangles, flipped = outward_triangles(mean, tl.astype(np.int64) - 1)
    regions = {}
    if "segbin" in data:
        seg = np.asarray(data["segbin"])
        seg = seg.T if seg.ndim == 2 and seg.shape[0] != n and seg.shape[1] == n else seg
        if seg.ndim != 2 or seg.shape[0] != n:
            raise InputError(f"{path}: segbin is {list(seg.shape)}, expected one mask column per segment "
                             f"of {n} vertices")
        regions = {f"bfm_segment_{k}": np.flatnonzero(seg[:, k]) for k in range(seg.shape[1])}
    meta = {
        "name": "bfm2009",
        "version": "Basel Face Model 2009 (01_MorphableModel.mat), imported by affectsynth.model.importers.bfm",
        "units": "mm",
        "converted_from": "micrometres",
        "unit_conversion": f"BFM 2009 coordinates are micrometres; multiplied by {BFM2009_UNIT_MM:g}",
        "tested_on_real_files": False,
        "source": f"{path.name}, the Basel Face Model 2009, https://faces.dmi.unibas.ch/bfm/",
        "licence": "University of Basel BFM licence: non-commercial research, after registration; "
                   "do not redistribute the model or this file",
        "provenance": f"{UNTESTED}. mean = shapeMU (point-wise xyz) x {BFM2009_UNIT_MM:g}; "
                      f"id_basis[k] = shapePC[:, k] * shapeEV[k] (shapeEV are standard deviations) x "
                      f"{BFM2009_UNIT_MM:g}; triangles = tl - 1"
                      + (", last two corners swapped to face outward" if flipped else "")
                      + "; regions bfm_segment_k = segbin column k (segment names and order unverified)",
        "what_it_is": f"a PCA shape model of {n} vertices learned from 200 face scans: {ev.size} identity modes, "
                      "no expressions",
        "what_it_is_not": "an expression model (BFM 2009 has none; Guo et al.'s basis is not supported), a textured "
                          "model (the albedo model is not read), or a fittable one yet: it has no landmark map",
        "checks": {"shapePC_column_norms": [round(x, 6) for x in norms], "triangles_flipped": flipped,
                   "facing": _check_facing(path, mean, triangles),
                   "official_counts": n == BFM2009_NUM_VERTICES and len(tl) == BFM2009_NUM_TRIANGLES},
    }
    return _finish(mean, id_basis, np.zeros((0, n, 3), np.float32), (), triangles, regions, meta)


# ------------------------------------------------------------------------------ BFM 2017
def _h5_file(path: Path):
    try:
        import h5py
    except ImportError:
        raise InputError("reading BFM 2017 (.h5) needs h5py: pip install 'affectsynth[bfm]' (or h5py)") from None
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{path}: not a readable HDF5 file ({' '.join(str(e).split())[:120]})") from None


def _dataset(f, path: Path, name: str) -> np.ndarray:
    try:
        return np.asarray(f[name][()])
    except KeyError:
        raise InputError(f"{path}: no {name} (not a BFM 2017 / statismo model file)") from None
    except (OSError, TypeError, ValueError) as e:  # a truncated or damaged file fails when the data is read
        raise InputError(f"{path}: {name} is unreadable ({' '.join(str(e).split())[:120]})") from None


def _pca(f, path: Path, group: str, n: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(mean [N, 3], modes [K, N, 3] = basis * sqrt(variance), column norms), in the file's unit."""
    mean = _dataset(f, path, f"{group}/model/mean").astype(np.float64).ravel()
    basis = _dataset(f, path, f"{group}/model/pcaBasis")
    variance = _dataset(f, path, f"{group}/model/pcaVariance").astype(np.float64).ravel()
    if mean.size != 3 * n:
        raise InputError(f"{path}: {group}/model/mean has {mean.size} values, expected {3 * n} (3 per point)")
    if basis.ndim != 2 or basis.shape != (3 * n, variance.size):
        raise InputError(f"{path}: {group}/model/pcaBasis is {list(basis.shape)}, expected [{3 * n}, {variance.size}]")
    if not (np.isfinite(variance).all() and (variance >= 0).all()):
        raise InputError(f"{path}: {group}/model/pcaVariance must be non-negative variances")
    norms = check_orthonormal(path, f"{group}/model/pcaBasis", basis)
    modes = (basis.astype(np.float32) * np.sqrt(variance).astype(np.float32)).T.reshape(-1, n, 3)
    return mean.reshape(n, 3), modes, norms


def import_bfm2017(path: str | Path) -> FaceModel:
    """A BFM 2017 statismo ``.h5`` (``model2017-1_bfm_nomouth.h5`` or ``..._face12_nomouth.h5``):
    mean (shape + expression mean), identity modes, expression PCA modes ``exp_pca_NNN``,
    triangles, in mm. Untested on the real files (see the module docstring). InputError (one
    line) when the file is not such an HDF5 file, or h5py is not installed."""
    path = Path(path)
    with _h5_file(path) as f:
        points = _dataset(f, path, "shape/representer/points")
        cells = _dataset(f, path, "shape/representer/cells")
        if points.ndim != 2 or points.shape[0] != 3 or points.shape[1] == 0:
            raise InputError(f"{path}: shape/representer/points is {list(points.shape)}, expected [3, N]")
        n = points.shape[1]
        if cells.ndim != 2 or cells.shape[0] != 3 or cells.shape[1] == 0:
            raise InputError(f"{path}: shape/representer/cells is {list(cells.shape)}, expected [3, F]")
        if cells.min() < 0 or cells.max() >= n:
            raise InputError(f"{path}: shape/representer/cells must hold 0-based point indices below {n}")
        shape_mean, id_modes, id_norms = _pca(f, path, "shape", n)
        exp_mean, exp_modes, exp_norms = _pca(f, path, "expression", n)
    unit = BFM2017_UNIT_MM
    mean = (shape_mean + exp_mean) * unit
    triangles, flipped = outward_triangles(mean, cells.T.astype(np.int64))
    exp_names = tuple(f"exp_pca_{k:03d}" for k in range(len(exp_modes)))
    meta = {
        "name": "bfm2017-" + ("face12" if "face12" in path.name else "bfm"),
        "version": f"Basel Face Model 2017 ({path.name}), imported by affectsynth.model.importers.bfm",
        "units": "mm",
        "converted_from": "millimetres",
        "unit_conversion": "BFM 2017 coordinates are millimetres; kept as they are",
        "tested_on_real_files": False,
        "source": f"{path.name}, the Basel Face Model 2017, https://faces.dmi.unibas.ch/bfm/bfm2017.html",
        "licence": "University of Basel BFM licence: non-commercial research, after registration; "
                   "do not redistribute the model or this file",
        "provenance": f"{UNTESTED}. mean = shape/model/mean + expression/model/mean (point-wise xyz); "
                      "id_basis[k] = shape/model/pcaBasis[:, k] * sqrt(pcaVariance[k]) (orthonormal basis, "
                      "variances); exp_basis[k] (exp_pca_NNN) likewise from expression/model; triangles = "
                      "shape/representer/cells transposed"
                      + (", last two corners swapped to face outward" if flipped else "")
                      + "; color/ and noiseVariance not read",
        "what_it_is": f"a Gaussian-process / PCA face model of {n} vertices: {len(id_modes)} identity modes and "
                      f"{len(exp_modes)} expression PCA modes",
        "what_it_is_not": "a FACS model: exp_pca_NNN are PCA modes with N(0, 1) coefficients and no au_map, so "
                          "--expression/--au cannot drive them and the fitter (expression coefficients in [0, 1]) "
                          "uses only their positive halves; it has no albedo and no landmark map (not fittable yet)",
        "checks": {"shape_pcaBasis_column_norms": [round(x, 6) for x in id_norms],
                   "expression_pcaBasis_column_norms": [round(x, 6) for x in exp_norms],
                   "expression_mean_rms_mm": round(rms_mm(exp_mean * unit), 4),
                   "triangles_flipped": flipped, "facing": _check_facing(path, mean, triangles)},
    }
    return _finish(mean, id_modes * unit, exp_modes * unit, exp_names, triangles, {}, meta)
