"""Import FLAME (MPI for Intelligent Systems; free for non-commercial research after
registration) into a :class:`FaceModel`: FLAME 2020 ``generic_model.pkl`` (also the 2017/2019
``generic_model.pkl``, ``female_model.pkl``, ``male_model.pkl``) and FLAME 2023
``flame2023.pkl``, with an optional landmark embedding.

UNTESTED ON THE REAL FILES. No FLAME file is available here (they need registration): this
reader is written from the format as FLAME's own loaders (FLAME_PyTorch, TF_FLAME, DECA) read
it, and tested only on small synthetic files with that structure (tests/test_import_flame.py).

The file is a Python 2 era pickle (read with ``encoding="latin1"``) of a dict whose arrays may
be chumpy objects (``chumpy.ch.Ch``). It is read WITHOUT chumpy, by a restricted unpickler
(:func:`load_pickle`) that never imports or calls what the pickle names: numpy's array and
dtype reconstruction and a few builtins are allowed, chumpy classes become a shim that keeps
their state (the array is its ``x`` attribute, or else the first array in that state), scipy
sparse matrices a shim rebuilt from their ``data``/``indices``/``indptr``, torch objects inert
placeholders (``landmark_embedding.npy`` may hold torch tensors in fields not read here);
a pickle naming anything else (``os.system``, ...) is refused with a one-line InputError.

Fields read (V = 5,023 vertices, F = 9,976 triangles, J = 5 joints):

* ``v_template`` [V, 3]: the mean head, metres (converted to mm).
* ``shapedirs`` [V, 3, 400]: columns 0-299 identity, 300-399 expression (as FLAME_PyTorch
  slices them; FLAME 2023 has 400 too, as far as we know; the split at 300 is assumed).
  FLAME's shape coefficients (betas) have the prior N(0, 1), as far as we know (FLAME's example
  scripts sample them with ``randn`` and its fitting regularises ``||beta||^2``, as SMPL's betas
  are in units of standard deviations), so the identity columns are already std-scaled modes
  like FaceModel's ``id_basis`` and are kept as they are (x 1000). On a real file, the modes'
  sizes in ``meta["checks"]["id_mode_rms_mm"]`` tell (first mode a few mm RMS, then falling). The
  expression columns are PCA modes with N(0, 1) coefficients, named ``exp_pca_000`` ...,
  with no AU map: ``--expression``/``--au`` cannot drive them, and the fitter, which bounds
  expression coefficients to [0, 1], uses only their positive halves.
* ``f`` [F, 3]: triangles, 0-based (wound counter-clockwise from outside by the geometry,
  :func:`~._common.outward_triangles`, whatever the file's winding).
* ``posedirs`` [V, 3, 9 (J - 1)], ``J_regressor`` [J, V] (scipy sparse), ``weights`` [V, J],
  ``kintree_table`` [2, J] (parents, ids; joints: global, neck, jaw, left eye, right eye):
  used only to bake :data:`FLAME_AU26_JAW_DEG` of jaw opening into an ``AU26`` shape (below).
* not read: ``J``, ``bs_style``, ``bs_type``, and any other key.

Our model is linear: FLAME's articulation is dropped (neck and eye rotations, and the pose
correctives but the one of the baked jaw shape). FLAME opens the mouth by rotating the jaw
joint, not with a blendshape, so the jaw is baked into one shape: linear blend skinning of the
mean head with the jaw joint alone rotated about +x (which, with +y up and the face along +z,
drops the chin) by :data:`FLAME_AU26_JAW_DEG`, its pose corrective (``posedirs``) included,
minus the mean head. It is named ``AU26`` (jaw drop) so the expression targets drive it. It is
a linearisation: activation a moves every vertex a times along the chord of the full rotation,
and it is the mean head's jaw, whatever identity the fitter finds. Files whose jaw joint moves
nothing (``flame2023_no_jaw.pkl``, presumably) get no ``AU26``.

Axes: FLAME is taken to be right-handed, +y up, the face looking along +z, +x the subject's
left, as ours (only the unit changes); not checked. The eyeballs (part of FLAME's mesh) are
not separated: every triangle is skin. No albedo (FLAME's texture space is a separate file).

Landmark embeddings (``landmarks=``), each a barycentric point in a triangle of ``f``:

* ``flame_static_embedding.pkl`` (FLAME_PyTorch, TF_FLAME): a pickled dict with
  ``lmk_face_idx`` [51] and ``lmk_b_coords`` [51, 3]: iBUG points 17-67 (the face contour,
  points 0-16, is FLAME's "dynamic" part and is marked invalid in the ``ibug68`` map). A
  68-point file (``lmk_face_idx`` [68]) fills the whole map.
* ``landmark_embedding.npy`` (DECA): a pickled dict with ``static_lmk_faces_idx`` [51],
  ``static_lmk_bary_coords`` [51, 3], ``full_lmk_faces_idx`` [1, 68] and
  ``full_lmk_bary_coords`` [1, 68, 3] (the full 68 are used when present; the ``dynamic_*``
  fields are not read).
* ``mediapipe_landmark_embedding.npz`` (MICA / metrical-tracker): ``lmk_face_idx`` [105],
  ``lmk_b_coords`` [105, 3] and ``landmark_indices`` [105], the MediaPipe mesh points they
  are: an ``mp478`` map with those points valid. These field names are from memory of that
  code, less sure than the others.
"""

from __future__ import annotations

import builtins
import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError
from ...landmarks import SCHEMES
from ..face_model import FaceModel, LandmarkMap
from ._common import outward_triangles, rms_mm

__all__ = ["import_flame", "load_pickle", "jaw_open_shape", "FLAME_UNIT_MM", "FLAME_AU26_JAW_DEG"]

#: Millimetres per FLAME unit (metres).
FLAME_UNIT_MM = 1000.0
#: shapedirs columns before this are identity, from it expression (FLAME_PyTorch's split).
FLAME_NUM_SHAPE = 300
FLAME_NUM_JOINTS = 5
#: Index of the jaw joint (FLAME's pose order: global, neck, jaw, left eye, right eye).
FLAME_JAW_JOINT = 2
#: Jaw rotation baked into the AU26 shape, degrees: about the rotation of the default model's
#: AU26 (its mandible turns ~10 degrees to drop the chin the 12 mm of affect/facs.py's table).
FLAME_AU26_JAW_DEG = 10.0
#: A baked jaw shape moving no vertex more than this (mm) means the file has no jaw: no AU26.
MIN_JAW_MOTION_MM = 1e-3
#: iBUG 68 points of FLAME's 51-point static embedding: all but the face contour.
IBUG_STATIC = np.arange(17, 68)
FIELDS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")

UNTESTED = ("UNTESTED on the real files (none were available): written from the format as FLAME's own "
            "loaders read it, tested on synthetic files of that structure only")


# ------------------------------------------------------------------------------ restricted unpickling
class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global the restricted unpickler does not load."""


class _Shim:
    """Stands for an object of a class we do not import: keeps the reconstruction arguments and state."""

    qualified_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def _state_dict(self) -> dict:
        state = self.state
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        return state if isinstance(state, dict) else {}


class ChumpyShim(_Shim):
    """A chumpy object (``chumpy.ch.Ch`` and the like): :meth:`array` is its data."""

    def array(self) -> np.ndarray:
        state = self._state_dict()
        x = state.get("x")
        if isinstance(x, ChumpyShim):
            return x.array()
        if isinstance(x, np.ndarray):
            return x
        for value in list(state.values()) + list(self.args):
            if isinstance(value, np.ndarray) and value.dtype != object:
                return value
        raise ValueError(f"a {self.qualified_name} object holds no array (a derived chumpy expression?)")


class SparseShim(_Shim):
    """A pickled scipy.sparse matrix: :meth:`matrix` rebuilds it from its arrays."""

    def matrix(self):
        import scipy.sparse

        state = self._state_dict()
        shape = tuple(int(s) for s in state.get("_shape", state.get("shape", ())))
        fmt = self.qualified_name.rsplit(".", 1)[-1][:3]
        if fmt in ("csc", "csr"):
            cls = scipy.sparse.csc_matrix if fmt == "csc" else scipy.sparse.csr_matrix
            return cls((state["data"], state["indices"], state["indptr"]), shape=shape)
        row, col = state["coords"] if "coords" in state else (state["row"], state["col"])
        return scipy.sparse.coo_matrix((state["data"], (row, col)), shape=shape)


class Dropped:
    """An inert placeholder for a torch object of the pickle (never built)."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args, **kwargs):
        return self

    def __setstate__(self, state):
        pass


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise RefusedGlobal(f"numpy _reconstruct of {getattr(subtype, '__name__', subtype)!r}")
    return np.core.multiarray._reconstruct(np.ndarray, shape, dtype)


def _np_frombuffer(buffer, dtype, shape, order):
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order).copy()


def _copyreg_reconstructor(cls, base, state):
    if not (isinstance(cls, type) and issubclass(cls, _Shim)) or base is not object:
        raise RefusedGlobal(f"copyreg._reconstructor of {getattr(cls, '__name__', cls)!r}")
    return cls.__new__(cls)


def _latin1_encode(text, encoding="latin1", errors="strict"):  # how Python 3 pickles bytes at protocol < 3
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedGlobal("_codecs.encode other than of a str to latin1")
    return text.encode("latin1")


_NUMPY = {"_reconstruct": _np_reconstruct, "scalar": np.core.multiarray.scalar, "_frombuffer": _np_frombuffer}
_ALLOWED = {
    **{(m, "_reconstructor"): _copyreg_reconstructor for m in ("copy_reg", "copyreg")},
    **{(m, n): getattr(builtins, n) for m in ("__builtin__", "builtins")
       for n in ("object", "set", "frozenset", "complex", "bytearray")},
    ("_codecs", "encode"): _latin1_encode,
    ("collections", "OrderedDict"): OrderedDict,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"numpy.{core}.{module}", name): _NUMPY[name] for core in ("core", "_core")
       for module, names in (("multiarray", ("_reconstruct", "scalar")), ("numeric", ("_frombuffer",)))
       for name in names},
}
_SPARSE = ("csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array")


class _RestrictedUnpickler(pickle.Unpickler):
    """Loads only what :data:`_ALLOWED` lists; chumpy, scipy.sparse and torch names become shims."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._shims: dict[str, type] = {}  # one shim class per name, per file

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        qualified = f"{module}.{name}"
        if module == "chumpy" or module.startswith("chumpy."):
            base = ChumpyShim
        elif (module == "scipy.sparse" or module.startswith("scipy.sparse.")) and name in _SPARSE:
            base = SparseShim
        elif module == "torch" or module.startswith("torch."):
            return Dropped(qualified)
        else:
            raise RefusedGlobal(qualified)
        if qualified not in self._shims:
            self._shims[qualified] = type(name, (base,), {"qualified_name": qualified})
        return self._shims[qualified]


def load_pickle(path: Path, data: bytes | None = None):
    """The object of a pickle file (or of ``data``), through the restricted unpickler, with
    chumpy and sparse shims left in place (see :func:`_value`). InputError (one line) when the
    pickle names a global that is not allowed, or is not a pickle."""
    try:
        stream = io.BytesIO(data) if data is not None else Path(path).open("rb")
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    try:
        with stream:
            return _RestrictedUnpickler(stream, encoding="latin1").load()
    except RefusedGlobal as e:
        raise InputError(f"{path}: the pickle names {e}, which this reader does not load (only numpy arrays, "
                         "scipy sparse matrices and chumpy arrays): not a FLAME file, or an unsafe one") from None
    except Exception as e:  # UnpicklingError, EOFError, ValueError ... on a file that is not such a pickle
        raise InputError(f"{path}: not a readable pickle ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:120]})") from None


def _value(path: Path, name: str, value, dense: bool = True) -> np.ndarray:
    """A field's numpy array (chumpy data, a sparse matrix densified)."""
    try:
        if isinstance(value, ChumpyShim):
            value = value.array()
        if isinstance(value, SparseShim):
            value = value.matrix()
        if hasattr(value, "toarray") and dense:
            value = value.toarray()
        if isinstance(value, Dropped) or not isinstance(value, np.ndarray) or value.dtype == object:
            raise ValueError(f"a {type(value).__name__}, not a numeric array")
        return value
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise InputError(f"{path}: {name} is unreadable ({' '.join(str(e).split())[:120]})") from None


# ------------------------------------------------------------------------------ the jaw
def _rotation_x(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def jaw_open_shape(vertices: np.ndarray, posedirs: np.ndarray, j_regressor: np.ndarray, weights: np.ndarray,
                   parents: np.ndarray, degrees: float, jaw: int = FLAME_JAW_JOINT) -> np.ndarray:
    """[V, 3] displacement of ``vertices`` [V, 3] when FLAME's jaw joint alone turns ``degrees``
    about +x: pose corrective ``posedirs`` [V, 3, 9 (J - 1)] times the pose feature (R - I of
    joints 1..J-1, row-major), then linear blend skinning with ``weights`` [V, J] about the
    joints ``j_regressor`` [J, V] @ vertices; the jaw's descendants (by ``parents`` [J], -1 for
    the root) follow it rigidly. Same units as ``vertices``."""
    rotation = _rotation_x(degrees)
    joints = j_regressor @ vertices
    feature = np.zeros((len(parents) - 1, 3, 3))
    feature[jaw - 1] = rotation - np.eye(3)
    posed = vertices + (posedirs.reshape(-1, posedirs.shape[-1]) @ feature.ravel()).reshape(-1, 3)
    moving = {jaw}
    for k in range(len(parents)):  # parents come before their children in FLAME's table
        if parents[k] in moving:
            moving.add(k)
    w = weights[:, sorted(moving)].sum(1)
    return posed + w[:, None] * ((posed - joints[jaw]) @ (rotation - np.eye(3)).T) - vertices


# ------------------------------------------------------------------------------ landmarks
def _embedding_arrays(path: Path) -> tuple[str, np.ndarray, np.ndarray, np.ndarray | None]:
    """(kind, face ids [L], barycentric coordinates [L, 3], MediaPipe ids [L] or None) of a landmark
    embedding file (kind: "ibug51", "ibug68" or "mp478")."""
    try:
        head = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    if head.startswith(b"PK"):  # .npz (no pickles)
        try:
            with np.load(io.BytesIO(head), allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            raise InputError(f"{path}: not a readable .npz ({' '.join(str(e).split())[:120]})") from None
    elif head.startswith(b"\x93NUMPY"):  # .npy of a pickled dict: read its header, unpickle the rest ourselves
        stream = io.BytesIO(head)
        try:
            version = np.lib.format.read_magic(stream)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f".npy format version {version[0]}.{version[1]} (this reader knows 1.0 and 2.0)")
            _, _, dtype = read_header(stream)
        except ValueError as e:
            raise InputError(f"{path}: not a readable .npy ({' '.join(str(e).split())[:120]})") from None
        if dtype != object:
            raise InputError(f"{path}: a .npy of {dtype} values, not a landmark embedding (a pickled dict)")
        data = load_pickle(path, head[stream.tell():])
        data = data.item() if isinstance(data, np.ndarray) and data.size == 1 else data
    else:
        data = load_pickle(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: a {type(data).__name__}, not a FLAME landmark embedding (a dict)")
    for kind, faces_key, bary_key in (("mp478", "lmk_face_idx", "lmk_b_coords"),
                                      ("ibug68", "full_lmk_faces_idx", "full_lmk_bary_coords"),
                                      ("ibug51", "static_lmk_faces_idx", "static_lmk_bary_coords"),
                                      ("ibug", "lmk_face_idx", "lmk_b_coords")):
        if faces_key in data and bary_key in data and (kind != "mp478" or "landmark_indices" in data):
            faces = _value(path, faces_key, data[faces_key]).reshape(-1)
            bary = _value(path, bary_key, data[bary_key]).reshape(-1, 3)
            ids = _value(path, "landmark_indices", data["landmark_indices"]).reshape(-1) if kind == "mp478" else None
            if kind == "ibug":
                kind = {51: "ibug51", 68: "ibug68"}.get(len(faces), "?")
                if kind == "?":
                    raise InputError(f"{path}: {len(faces)} landmarks; a FLAME iBUG embedding has 51 or 68")
            return kind, faces, bary, ids
    raise InputError(f"{path}: no lmk_face_idx/lmk_b_coords, static_lmk_*/full_lmk_* or MediaPipe embedding "
                     "fields (not a FLAME landmark embedding)")


def _landmark_map(path: Path, f: np.ndarray) -> tuple[str, LandmarkMap, str]:
    """(scheme, map, description) of an embedding file on the file's triangles ``f`` (its corner order)."""
    kind, faces, bary, ids = _embedding_arrays(path)
    expected = {"ibug51": 51, "ibug68": 68}.get(kind, len(faces))
    if len(faces) != expected or bary.shape != (len(faces), 3) or (ids is not None and ids.shape != faces.shape):
        raise InputError(f"{path}: {len(faces)} faces, {bary.shape[0]} barycentric rows"
                         + (f", {ids.size} MediaPipe ids" if ids is not None else "") + f" (expected {expected} each)")
    if faces.min() < 0 or faces.max() >= len(f):
        raise InputError(f"{path}: landmark triangle ids outside the model's {len(f)} triangles")
    if not np.allclose(bary.sum(1), 1.0, atol=1e-3):
        raise InputError(f"{path}: barycentric coordinates do not sum to 1")
    scheme = "mp478" if kind == "mp478" else "ibug68"
    rows = {"ibug51": IBUG_STATIC, "ibug68": np.arange(68)}.get(kind, ids)
    if rows.min() < 0 or rows.max() >= SCHEMES[scheme] or len(np.unique(rows)) != len(rows):
        raise InputError(f"{path}: landmark_indices must be distinct MediaPipe ids below {SCHEMES[scheme]}")
    vertices = np.zeros((SCHEMES[scheme], 3), np.int64)
    weights = np.zeros((SCHEMES[scheme], 3))
    weights[:, 0] = 1.0
    valid = np.zeros(SCHEMES[scheme], bool)
    vertices[rows], weights[rows], valid[rows] = f[faces.astype(np.int64)], bary, True
    what = {"ibug51": "iBUG points 17-67 (FLAME's static embedding; the contour 0-16 invalid)",
            "ibug68": "all 68 iBUG points", "mp478": f"{len(rows)} MediaPipe points"}[kind]
    lmap = LandmarkMap(torch.from_numpy(vertices), torch.from_numpy(weights).float(), torch.from_numpy(valid))
    return scheme, lmap, f"{path.name}: {what}, barycentric in FLAME's triangles"


# ------------------------------------------------------------------------------ the model
def import_flame(path: str | Path, landmarks: str | Path | None = None) -> FaceModel:
    """A FLAME model pickle (``generic_model.pkl``, ``flame2023.pkl``): mean, 300 identity modes,
    the expression PCA modes ``exp_pca_NNN`` and a baked ``AU26`` jaw shape, triangles, in mm
    (:data:`FLAME_UNIT_MM`), with the ``landmarks`` embedding's map when given. Untested on the
    real files (see the module docstring). InputError (one line) when a file is not what it
    should be, or a pickle names anything but arrays."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: a pickled {type(data).__name__}, not a FLAME model (a dict)")
    missing = [name for name in FIELDS if name not in data]
    if missing:
        raise InputError(f"{path}: no {', '.join(missing)} (not a FLAME model pickle)")
    fields = {name: _value(path, name, data[name]) for name in FIELDS}
    v_template, shapedirs, f = fields["v_template"], fields["shapedirs"], fields["f"]
    n = len(v_template)
    j = fields["kintree_table"].shape[-1] if fields["kintree_table"].ndim == 2 else -1
    shapes = {"v_template": (n, 3), "shapedirs": (n, 3, shapedirs.shape[-1]), "f": (len(f), 3),
              "posedirs": (n, 3, 9 * (FLAME_NUM_JOINTS - 1)), "J_regressor": (FLAME_NUM_JOINTS, n),
              "weights": (n, FLAME_NUM_JOINTS), "kintree_table": (2, FLAME_NUM_JOINTS)}
    for name, shape in shapes.items():
        if fields[name].shape != shape or fields[name].size == 0:
            joints = f" (FLAME has {FLAME_NUM_JOINTS} joints, this file {j})" if name == "kintree_table" else ""
            raise InputError(f"{path}: {name} is {list(fields[name].shape)}, expected {list(shape)}{joints}")
    if shapedirs.shape[-1] < FLAME_NUM_SHAPE:
        raise InputError(f"{path}: shapedirs has {shapedirs.shape[-1]} columns; FLAME's first {FLAME_NUM_SHAPE} "
                         "are identity, the rest expression")
    if f.min() < 0 or f.max() >= n:
        raise InputError(f"{path}: f must hold 0-based vertex indices below {n}")
    f = f.astype(np.int64)
    parents = fields["kintree_table"][0].astype(np.int64)
    parents[0] = -1  # the root's parent is stored as -1 or 2^32 - 1

    mean = v_template.astype(np.float64) * FLAME_UNIT_MM
    id_basis = np.moveaxis(shapedirs[..., :FLAME_NUM_SHAPE], -1, 0).astype(np.float32) * FLAME_UNIT_MM
    exp_basis = np.moveaxis(shapedirs[..., FLAME_NUM_SHAPE:], -1, 0).astype(np.float32) * FLAME_UNIT_MM
    exp_names = [f"exp_pca_{k:03d}" for k in range(len(exp_basis))]
    jaw = jaw_open_shape(mean, fields["posedirs"].astype(np.float64) * FLAME_UNIT_MM,
                         fields["J_regressor"].astype(np.float64), fields["weights"].astype(np.float64),
                         parents, FLAME_AU26_JAW_DEG)
    jaw_moves = float(np.linalg.norm(jaw, axis=1).max()) > MIN_JAW_MOTION_MM
    if jaw_moves:
        exp_basis = np.concatenate((exp_basis, jaw[None].astype(np.float32)))
        exp_names.append("AU26")
    triangles, flipped = outward_triangles(mean, f)
    landmark_maps, landmark_note = {}, "none (no --landmarks embedding given)"
    if landmarks is not None:
        scheme, lmap, landmark_note = _landmark_map(Path(landmarks), f)
        landmark_maps[scheme] = lmap
    name = "flame2023" if "2023" in path.name else "flame"
    meta = {
        "name": name,
        "version": f"FLAME ({path.name}), imported by affectsynth.model.importers.flame",
        "units": "mm",
        "converted_from": "metres",
        "unit_conversion": f"FLAME coordinates are metres; multiplied by {FLAME_UNIT_MM:g}",
        "tested_on_real_files": False,
        "source": f"{path.name}, FLAME, https://flame.is.tue.mpg.de/",
        "licence": "FLAME licence (Max Planck Institute for Intelligent Systems): non-commercial scientific "
                   "research, after registration; do not redistribute the model or this file",
        "provenance": f"{UNTESTED}. mean = v_template; id_basis[k] = shapedirs[:, :, k], k < {FLAME_NUM_SHAPE} "
                      f"(betas ~ N(0, 1): already std-scaled); exp_pca_NNN = shapedirs[:, :, {FLAME_NUM_SHAPE} + NNN]"
                      + (f"; AU26 = the mean head with the jaw joint turned {FLAME_AU26_JAW_DEG:g} degrees about +x "
                         "(pose corrective and linear blend skinning) minus the mean head" if jaw_moves else
                         "; no AU26: the jaw joint moves no vertex")
                      + f"; all x {FLAME_UNIT_MM:g}; triangles = f"
                      + (", last two corners swapped to face outward" if flipped else "")
                      + f"; landmarks: {landmark_note}",
        "what_it_is": f"a linear head model of {n} vertices learned from scans: {len(id_basis)} identity modes, "
                      f"{len(exp_basis) - jaw_moves} expression PCA modes" + (" and a baked jaw drop (AU26)"
                                                                               if jaw_moves else ""),
        "what_it_is_not": "articulated: the neck, eye and jaw joints and the pose correctives are dropped (the jaw "
                          "survives only as the linear AU26 shape of the mean head); a FACS model: exp_pca_NNN are "
                          "PCA modes with N(0, 1) coefficients and no au_map (the fitter, expression coefficients in "
                          "[0, 1], uses only their positive halves); textured; the eyeballs are not separated (skin)",
        "au_map_note": "exp_pca_NNN implement no action unit; AU26 is named as one",
        "checks": {"triangles_flipped": flipped,
                   "id_mode_rms_mm": [round(rms_mm(id_basis[0]), 4), round(rms_mm(id_basis[-1]), 4)],
                   "au26_rms_mm": round(rms_mm(jaw), 4) if jaw_moves else 0.0,
                   "au26_jaw_deg": FLAME_AU26_JAW_DEG if jaw_moves else 0.0},
    }
    return FaceModel(
        mean=torch.from_numpy(mean.astype(np.float32)),
        id_basis=torch.from_numpy(np.ascontiguousarray(id_basis)),
        exp_basis=torch.from_numpy(np.ascontiguousarray(exp_basis)),
        exp_names=tuple(exp_names),
        triangles=torch.from_numpy(triangles),
        landmark_maps=landmark_maps,
        meta=meta,
    )
