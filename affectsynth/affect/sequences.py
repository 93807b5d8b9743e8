"""Input of the 4D affect-model builder: sequences of expression meshes and their labels.

A *sequence* is one folder of frames in the base model's topology: one mesh file per frame
(``.obj``, ``.ply``, ``.wrl``; frames sorted by name, the frame's name is the file stem) or one
``.npy``/``.npz`` array [F, V, 3] (the frame's name is its index). The first frame is taken to be
the person's neutral face (the onset of a posed sequence).

Layouts (where the sequence folders are below ``--meshes DIR``; the sequence name is the folder's
path relative to DIR, with ``/``; the person is its first component for the dataset layouts):

* ``flat``: ``DIR/<sequence>/`` (the person from the labels' ``person`` column, else the sequence);
* ``4dfab``: ``DIR/<subject>/<session>/<expression>/<frame>.obj`` (4DFAB, Cheng et al., CVPR 2018);
* ``bu4dfe``: ``DIR/<subject>/<expression>/<frame>.wrl`` (BU-4DFE, Yin et al., FG 2008: subjects
  F001/M001, expressions Angry, Disgust, Fear, Happy, Sad, Surprise, VRML 2.0 frames ``000.wrl``...);
* ``coma``: ``DIR/<subject>/<expression>/<expression>.<frame>.ply`` (CoMA, Ranjan et al., ECCV
  2018: 12 extreme expressions per subject in FLAME's 5,023-vertex topology, metres).

The dataset readers are written from the layouts and file formats their papers and websites
document; **no real file of these datasets was available, so they are untested on real data**
(tests/test_sequences.py checks them on small synthetic files of that structure). For the
dataset layouts the expression folder's name is the sequence's category unless the labels say
otherwise. Meshes in another topology than the base model's need a correspondence: a vertex map
(for each base vertex, the index of a source vertex). Raw scans (BU-4DFE's and 4DFAB's
unregistered frames, whose vertex count changes from frame to frame) need registration to the
base topology first, which is **not supported** here.

Labels (``labels.csv``, with a header): ``sequence`` (required), ``frame`` (empty: a row for the
whole sequence), ``category``, ``valence`` and ``arousal`` (both or neither, in [-1, 1]) and
``person``, all but ``sequence`` optional. A frame row labels that frame; a sequence row's
category is the sequence's class (else the most frequent category of its frame rows), its
valence-arousal labels its apex frame. A frame is matched by name, numerically when both are
integers ("12" matches ``000012.obj``).
"""

from __future__ import annotations

import csv
import math
import re
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from .targets import emfacs_table

__all__ = ["LAYOUTS", "LAYOUT_UNITS_MM", "MESH_SUFFIXES", "SequenceSource", "FrameLabel", "SequenceLabels",
           "discover_sequences", "read_labels", "match_frames", "read_mesh_vertices", "read_vertex_map", "load_sequence",
           "canonical_category"]

#: Folder depth of the sequences below DIR, per layout.
LAYOUTS: Mapping[str, int] = {"flat": 1, "4dfab": 3, "bu4dfe": 2, "coma": 2}
#: Millimetres per mesh unit each layout's files use by default (CoMA is registered to FLAME: metres).
LAYOUT_UNITS_MM: Mapping[str, float] = {"flat": 1.0, "4dfab": 1.0, "bu4dfe": 1.0, "coma": 1000.0}
MESH_SUFFIXES = (".obj", ".ply", ".wrl")
ARRAY_SUFFIXES = (".npy", ".npz")


@dataclass(frozen=True)
class SequenceSource:
    """Where one sequence's frames are.

    Attributes:
        name: the folder's path relative to DIR, with "/" (the key of the labels).
        folder: the folder.
        files: one array file, or the mesh files of the frames sorted by name.
        person: whose face it is (the layout's subject folder, or the name; labels may override).
        layout_category: the expression folder's category for a dataset layout, else None.
    """

    name: str
    folder: Path
    files: tuple[Path, ...]
    person: str
    layout_category: str | None = None

    @property
    def is_array(self) -> bool:
        return len(self.files) == 1 and self.files[0].suffix.lower() in ARRAY_SUFFIXES

    def frame_names(self, num_frames: int) -> tuple[str, ...]:
        return tuple(str(i) for i in range(num_frames)) if self.is_array else tuple(f.stem for f in self.files)


@dataclass(frozen=True)
class FrameLabel:
    """One frame's label (a row of labels.csv with a frame): category and/or valence-arousal."""

    category: str | None = None
    va: tuple[float, float] | None = None


@dataclass
class SequenceLabels:
    """All labels of one sequence.

    Attributes:
        category: the sequence row's class, or None.
        va: the sequence row's (valence, arousal), given to its apex frame, or None.
        person: the person column, or None.
        frames: frame name as written in the CSV -> its label.
    """

    category: str | None = None
    va: tuple[float, float] | None = None
    person: str | None = None
    frames: dict[str, FrameLabel] = field(default_factory=dict)

    def sequence_category(self) -> str | None:
        """The sequence row's class, else the most frequent non-neutral class of its frames (first seen on ties)."""
        if self.category is not None:
            return self.category
        counts = Counter(label.category for label in self.frames.values() if label.category not in (None, "neutral"))
        return counts.most_common(1)[0][0] if counts else None


def canonical_category(text: str) -> str:
    """A category as stored: lower case, an EMFACS alias ("Happy", "angry") as its emotion's name;
    other names (CoMA's "bareteeth") kept as they are in lower case."""
    name = " ".join(str(text).split()).lower()
    table = emfacs_table()
    return table.aliases.get(name, name)


# ------------------------------------------------------------------------ discovery
def discover_sequences(root: Path, layout: str = "flat") -> list[SequenceSource]:
    """The sequences below ``root`` in ``layout`` (module docstring), sorted by name.

    A folder at the layout's depth is a sequence when it holds mesh files or exactly one array
    file; InputError when ``root`` is not a folder or holds none.
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder of sequences")
    folders = [root]
    for _ in range(LAYOUTS[layout]):
        folders = sorted(child for folder in folders for child in folder.iterdir() if child.is_dir())
    sources = []
    for folder in folders:
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in MESH_SUFFIXES + ARRAY_SUFFIXES)
        arrays = [f for f in files if f.suffix.lower() in ARRAY_SUFFIXES]
        if not files:
            continue
        name = folder.relative_to(root).as_posix()
        parts = name.split("/")
        sources.append(SequenceSource(
            name=name, folder=folder, files=tuple(arrays if arrays else files),
            person=parts[0], layout_category=None if layout == "flat" else canonical_category(parts[-1])))
    if not sources:
        raise InputError(f"{root}: no sequence folders with frames ({', '.join(MESH_SUFFIXES + ARRAY_SUFFIXES)}) "
                         f"at the depth of the {layout!r} layout")
    return sources


# ------------------------------------------------------------------------ labels
def read_labels(path: Path) -> dict[str, SequenceLabels]:
    """labels.csv (module docstring) -> sequence name -> its labels. InputError (one line, with the
    row number) for a missing column, a bad number, valence-arousal outside [-1, 1], half a VA
    pair, or a row given twice."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            columns = set(rows[0]) if rows else set()
    except FileNotFoundError:
        raise InputError(f"{path}: no such labels file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: cannot read the labels ({e})") from None
    if "sequence" not in columns:
        raise InputError(f"{path}: the labels need a header with a 'sequence' column "
                         "(and frame, category, valence, arousal, person as needed)")
    labels: dict[str, SequenceLabels] = {}
    for number, row in enumerate(rows, start=2):
        where = f"{path}:{number}"
        sequence = (row.get("sequence") or "").strip().strip("/")
        if not sequence:
            raise InputError(f"{where}: empty sequence")
        category = (row.get("category") or "").strip()
        category = canonical_category(category) if category else None
        va = _read_va(row, where)
        entry = labels.setdefault(sequence, SequenceLabels())
        person = (row.get("person") or "").strip()
        if person:
            entry.person = person
        frame = (row.get("frame") or "").strip()
        if frame:
            if frame in entry.frames:
                raise InputError(f"{where}: frame {frame} of {sequence} is labelled twice")
            entry.frames[frame] = FrameLabel(category, va)
        else:
            if entry.category is not None or entry.va is not None:
                raise InputError(f"{where}: sequence {sequence} has two sequence rows")
            entry.category, entry.va = category, va
    return labels


def _read_va(row: Mapping[str, str | None], where: str) -> tuple[float, float] | None:
    given = {name: (row.get(name) or "").strip() for name in ("valence", "arousal")}
    if not any(given.values()):
        return None
    if not all(given.values()):
        raise InputError(f"{where}: give both valence and arousal, or neither")
    try:
        va = tuple(float(given[name]) for name in ("valence", "arousal"))
    except ValueError:
        raise InputError(f"{where}: valence/arousal {given['valence']!r}, {given['arousal']!r} are not numbers") from None
    if not all(math.isfinite(x) and -1.0 <= x <= 1.0 for x in va):
        raise InputError(f"{where}: valence/arousal {va[0]}, {va[1]} must lie in [-1, 1]")
    return va


def match_frames(labels: SequenceLabels, frame_names: tuple[str, ...]) -> dict[int, FrameLabel]:
    """Frame index -> label for each frame row; InputError naming the rows that match no frame."""
    exact = {name: i for i, name in enumerate(frame_names)}
    numeric = {int(name): i for i, name in enumerate(frame_names) if name.isdigit()}
    matched, missing = {}, []
    for name, label in labels.frames.items():
        index = exact.get(name, numeric.get(int(name)) if name.isdigit() else None)
        if index is None:
            missing.append(name)
        else:
            matched[index] = label
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise InputError(f"labels refer to frames the sequence does not have ({shown}; it has {len(frame_names)} frames)")
    return matched


# ------------------------------------------------------------------------ meshes
_FLOAT = rb"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_WRL_POINTS = re.compile(rb"Coordinate\s*\{\s*point\s*\[([^\]]*)\]", re.DOTALL)


def read_mesh_vertices(path: Path) -> np.ndarray:
    """[V, 3] float64 vertex positions of one mesh file, in the file's vertex order.

    OBJ: the ``v`` lines (parsed here: mesh libraries split vertices at UV seams, which would
    renumber them). PLY (ASCII or binary): trimesh with processing off (keeps the order).
    VRML 2.0 (``.wrl``, BU-4DFE): the points of the first ``Coordinate { point [...] }`` node.
    InputError (one line) for a file that cannot be read or holds no vertices.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".obj":
            vertices = _obj_vertices(path.read_bytes())
        elif suffix == ".wrl":
            match = _WRL_POINTS.search(path.read_bytes())
            if match is None:
                raise ValueError("no 'Coordinate { point [ ... ] }' node")
            values = np.array(re.findall(_FLOAT, match[1]), dtype=np.float64)
            if values.size % 3:
                raise ValueError(f"{values.size} coordinates, not a multiple of 3")
            vertices = values.reshape(-1, 3)
        elif suffix == ".ply":
            import trimesh

            mesh = trimesh.load(path, process=False, force="mesh")
            vertices = np.asarray(mesh.vertices, dtype=np.float64)
        else:
            raise ValueError(f"unsupported mesh type {suffix!r} (use {', '.join(MESH_SUFFIXES)})")
    except InputError:
        raise
    except Exception as e:  # parser errors of every kind: a corrupt or truncated file
        raise InputError(f"{path.name}: corrupt mesh ({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    if vertices.ndim != 2 or vertices.shape[0] == 0 or not np.isfinite(vertices).all():
        raise InputError(f"{path.name}: corrupt mesh (no vertices, or non-finite coordinates)")
    return vertices


def _obj_vertices(data: bytes) -> np.ndarray:
    lines = [line.split()[1:4] for line in data.splitlines() if line.startswith(b"v ")]
    if any(len(xyz) != 3 for xyz in lines):
        raise ValueError("a 'v' line without three coordinates")
    return np.array(lines, dtype=np.float64).reshape(-1, 3)


def read_vertex_map(path: Path, num_vertices: int) -> np.ndarray:
    """[V] int64 source vertex index for each base vertex, from a text file (one integer per line
    or whitespace-separated) or a ``.npy``; InputError unless it has exactly V non-negative entries."""
    path = Path(path)
    try:
        ids = np.load(path) if path.suffix.lower() == ".npy" else np.loadtxt(path, dtype=np.int64, ndmin=1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such vertex map") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a vertex map ({' '.join(str(e).split())[:120]})") from None
    ids = np.asarray(ids).reshape(-1)
    if ids.shape != (num_vertices,) or not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0:
        raise InputError(f"{path}: a vertex map needs {num_vertices} non-negative integer source indices, "
                         f"one per base vertex (got {ids.size} of type {ids.dtype})")
    return ids.astype(np.int64)


def load_sequence(source: SequenceSource, num_vertices: int, *, vertex_map: np.ndarray | None = None,
                  unit_mm: float = 1.0) -> np.ndarray:
    """[F, V, 3] float64 vertices of one sequence in mm, in the base topology (V = ``num_vertices``).

    ``vertex_map`` [V] picks each base vertex from the source meshes. InputError (one line) for a
    corrupt file, a topology that is not the base's (vertex count, or a map index beyond it), frames
    of different sizes, or fewer than two frames.
    """
    frames = _read_frames(source)
    if frames.ndim != 3 or frames.shape[2] != 3:
        raise InputError(f"frames must be [F, V, 3], got {list(frames.shape)}")
    if frames.shape[0] < 2:
        raise InputError(f"{frames.shape[0]} frame(s): a sequence needs a neutral first frame and more")
    if vertex_map is not None:
        if int(vertex_map.max()) >= frames.shape[1]:
            raise InputError(f"wrong topology: the vertex map names source vertex {int(vertex_map.max())}, the meshes "
                             f"have {frames.shape[1]} vertices")
        frames = frames[:, vertex_map]
    elif frames.shape[1] != num_vertices:
        raise InputError(f"wrong topology: {frames.shape[1]} vertices, the base model has {num_vertices} "
                         "(give --vertex-map for meshes in another topology; raw scans need registration first)")
    return frames.astype(np.float64) * unit_mm


def _read_frames(source: SequenceSource) -> np.ndarray:
    if source.is_array:
        path = source.files[0]
        try:
            if path.suffix.lower() == ".npy":
                return np.load(path, allow_pickle=False)
            with np.load(path, allow_pickle=False) as z:
                if len(z.files) != 1:
                    raise ValueError(f"{len(z.files)} arrays; one [F, V, 3] array expected")
                return z[z.files[0]]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise InputError(f"{path.name}: corrupt array ({' '.join(str(e).split())[:120]})") from None
    frames = [read_mesh_vertices(f) for f in source.files]
    sizes = sorted({len(v) for v in frames})
    if len(sizes) > 1:
        raise InputError(f"frames of different vertex counts ({sizes[0]} to {sizes[-1]}): unregistered scans; "
                         "register them to the base topology first (not supported here)")
    return np.stack(frames)
