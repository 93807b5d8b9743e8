"""Readers of facial-expression datasets -> a list of :class:`FaceSample`, labels as canonical EMFACS names.

Each reader follows its dataset's documented layout (users bring their own copies; none is shipped):

* ``folders``: ``DIR/<subject>/<label>[_anything].<ext>``.
* ``csv``: a CSV ``path,label[,subject][,valence,arousal]`` (paths relative to its folder); ``--data``
  names the file, or a folder holding ``labels.csv``.
* ``rafdb``: RAF-DB basic, ``EmoLabel/list_patition_label.txt`` (``train_00001.jpg 5``, labels 1..7 =
  surprise, fear, disgust, happiness, sadness, anger, neutral) with ``Image/aligned/<stem>_aligned.jpg``
  (or ``Image/original/<name>``).
* ``affectnet``: AffectNet's ``training.csv`` / ``validation.csv`` (``subDirectory_filePath, ...,
  expression, valence, arousal``; expression 0..7 = neutral, happiness, sadness, surprise, fear, disgust,
  anger, contempt; 8..10 = none, uncertain, no face, skipped), images under ``Manually_Annotated_Images/``
  or beside the CSV.
* ``fer2013``: ``fer2013.csv`` (``emotion,pixels,Usage``; 48x48 gray pixel strings; emotion 0..6 = anger,
  disgust, fear, happiness, sadness, surprise, neutral).
* ``ckplus``: CK+ ``cohn-kanade-images/S005/001/*.png`` with ``Emotion/S005/001/*_emotion.txt`` (codes
  0..7 = neutral, anger, contempt, disgust, fear, happiness, sadness, surprise): each labelled sequence
  gives its last (peak) frame with the label and its first frame as neutral.

Datasets without subject ids (RAF-DB, AffectNet, FER2013, a CSV without ``subject``) make every image its
own subject, so subject-disjoint folds are image-disjoint there.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ..affect.classes import DATASET_CLASS_CODES
from ..affect.targets import canonical_emotion, parse_va_cell
from ..batch import IMAGE_SUFFIXES
from ..errors import InputError

__all__ = ["FaceSample", "read_dataset", "READERS", "FER2013_CLASSES", "RAFDB_CLASSES", "AFFECTNET_CLASSES",
           "CKPLUS_CLASSES"]

FER2013_CLASSES = DATASET_CLASS_CODES["fer2013"].names
RAFDB_CLASSES = DATASET_CLASS_CODES["rafdb"].names  # codes 1..7
AFFECTNET_CLASSES = DATASET_CLASS_CODES["affectnet"].names
CKPLUS_CLASSES = DATASET_CLASS_CODES["ckplus"].names
_FER2013_SIDE = 48


@dataclass(frozen=True)
class FaceSample:
    """One labelled face photo.

    Attributes:
        key: a unique name of the sample (a relative path without suffix, ``/``-separated): what the
            experiment names its working files after.
        image: the file, or the pixels as [H, W, 3] uint8 RGB (FER2013's strings).
        label: a canonical EMFACS category (``affectsynth.affect.targets.canonical_emotion``).
        subject: who it shows (folds never split a subject).
        valence, arousal: in [-1, 1], or None where the dataset has none.
    """

    key: str
    image: Path | np.ndarray
    label: str
    subject: str
    valence: float | None = None
    arousal: float | None = None


def read_dataset(data: Path, format: str = "auto") -> list[FaceSample]:
    """The samples of ``data`` in the layout ``format`` (a key of :data:`READERS`, or ``auto``: detected from
    the files present); InputError for an unknown format, a bad file or no samples."""
    if format == "auto":
        format = _detect_format(data)
    if format not in READERS:
        raise InputError(f"unknown dataset format {format!r}; choose auto or one of {', '.join(READERS)}")
    if not data.exists():
        raise InputError(f"{data}: no such folder or file")
    samples = READERS[format](data)
    if not samples:
        raise InputError(f"{data}: no labelled face photos found as {format}")
    return samples


def _detect_format(data: Path) -> str:
    if data.is_file():
        return "fer2013" if data.name == "fer2013.csv" else "csv"
    if next(data.rglob("list_patition_label.txt"), None) is not None:
        return "rafdb"
    if (data / "fer2013.csv").is_file():
        return "fer2013"
    if (data / "training.csv").is_file() or (data / "validation.csv").is_file():
        return "affectnet"
    if (data / "Emotion").is_dir():
        return "ckplus"
    if (data / "labels.csv").is_file():
        return "csv"
    return "folders"


def _label(text: str, where: str) -> str:
    try:
        return canonical_emotion(text)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig")))
        rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: cannot read: {e}") from None
    return [name.strip() for name in reader.fieldnames or ()], rows


def _key(relative: PurePosixPath) -> str:
    return str(relative.with_suffix(""))


# ------------------------------------------------------------------------ readers
def read_folders(root: Path) -> list[FaceSample]:
    """``root/<subject>/<label>[_anything].<ext>``, sorted by path."""
    samples = []
    for path in sorted(root.glob("*/*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith(".") or not path.is_file():
            continue
        relative = PurePosixPath(path.relative_to(root).as_posix())
        label = _label(path.stem.split("_")[0], str(path))
        samples.append(FaceSample(_key(relative), path, label, subject=path.parent.name))
    return samples


def read_csv(data: Path) -> list[FaceSample]:
    """A CSV ``path,label[,subject][,valence,arousal]`` (``data``, or ``data/labels.csv``); a row without a
    subject is its own subject."""
    path = data / "labels.csv" if data.is_dir() else data
    columns, rows = _read_csv(path)
    if not {"path", "label"} <= set(columns):
        raise InputError(f"{path}: needs a header with 'path' and 'label' columns (and optionally subject, "
                         "valence, arousal)")
    samples = []
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        relative = PurePosixPath((row.get("path") or "").strip().replace("\\", "/"))
        if not relative.name or relative.is_absolute() or ".." in relative.parts:
            raise InputError(f"{where}: path {str(relative)!r} must be a file relative to the CSV's folder, inside it")
        valence, arousal = (parse_va_cell(row.get(k), k, where) for k in ("valence", "arousal"))
        if (valence is None) != (arousal is None):
            raise InputError(f"{where}: give both valence and arousal or neither")
        key = _key(relative)
        samples.append(FaceSample(key, path.parent / relative, _label(row.get("label") or "", where),
                                  subject=(row.get("subject") or "").strip() or key, valence=valence, arousal=arousal))
    return samples


def read_rafdb(root: Path) -> list[FaceSample]:
    """RAF-DB basic: the label list and the aligned images (or the originals) beside it."""
    list_file = next(iter(sorted(root.rglob("list_patition_label.txt"))), None)
    if list_file is None:
        raise InputError(f"{root}: no EmoLabel/list_patition_label.txt (RAF-DB basic)")
    images = list_file.parent.parent / "Image"
    samples = []
    for line_number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{list_file}:{line_number}"
        parts = line.split()
        if len(parts) != 2:
            raise InputError(f"{where}: expected 'NAME LABEL', got {line!r}")
        name, code = parts
        label = DATASET_CLASS_CODES["rafdb"].read(code, where)
        if label is None:
            raise InputError(f"{where}: RAF-DB basic labels are 1..7, got {code}")
        stem = PurePosixPath(name).stem
        candidates = [images / "aligned" / f"{stem}_aligned.jpg", images / "original" / name]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise InputError(f"{where}: neither {candidates[0]} nor {candidates[1]} exists")
        samples.append(FaceSample(stem, path, label, subject=stem))
    return samples


def read_affectnet(root: Path) -> list[FaceSample]:
    """AffectNet's annotation CSVs (training.csv, validation.csv, whichever exist); classes 8..10 skipped,
    VA of -2 (AffectNet's "not annotated") read as none."""
    samples = []
    for csv_path in (root / "training.csv", root / "validation.csv"):
        if not csv_path.is_file():
            continue
        columns, rows = _read_csv(csv_path)
        if not {"subDirectory_filePath", "expression"} <= set(columns):
            raise InputError(f"{csv_path}: needs AffectNet's columns subDirectory_filePath and expression")
        for line, row in enumerate(rows, start=2):
            where = f"{csv_path}:{line}"
            label = DATASET_CLASS_CODES["affectnet"].read(row["expression"], where)
            if label is None:  # none, uncertain, no face
                continue
            relative = PurePosixPath(row["subDirectory_filePath"].strip())
            path = next((p for p in (root / "Manually_Annotated_Images" / relative, root / relative) if p.is_file()),
                        None)
            if path is None:
                raise InputError(f"{where}: image {relative} not found under {root}/Manually_Annotated_Images or {root}")
            valence, arousal = (None if (row.get(k) or "").strip() in ("", "-2") else parse_va_cell(row[k], k, where)
                                for k in ("valence", "arousal"))
            if (valence is None) != (arousal is None):
                raise InputError(f"{where}: give both valence and arousal or neither")
            key = _key(relative)
            samples.append(FaceSample(key, path, label, subject=key, valence=valence, arousal=arousal))
    return samples


def read_fer2013(data: Path) -> list[FaceSample]:
    """``fer2013.csv``: 48x48 gray pixel strings, as RGB arrays; every row its own subject."""
    path = data / "fer2013.csv" if data.is_dir() else data
    columns, rows = _read_csv(path)
    if not {"emotion", "pixels"} <= set(columns):
        raise InputError(f"{path}: needs FER2013's columns emotion and pixels")
    samples = []
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        label = DATASET_CLASS_CODES["fer2013"].read(row["emotion"], where)
        if label is None:
            raise InputError(f"{where}: FER2013 emotions are 0..6, got {row['emotion']}")
        try:
            gray = np.array(row["pixels"].split(), dtype=np.int64)
        except ValueError:
            raise InputError(f"{where}: pixels must be whole numbers separated by spaces") from None
        if gray.size != _FER2013_SIDE ** 2 or gray.min(initial=0) < 0 or gray.max(initial=0) > 255:
            raise InputError(f"{where}: pixels must be {_FER2013_SIDE ** 2} values in 0..255, got {gray.size}")
        pixels = np.repeat(gray.astype(np.uint8).reshape(_FER2013_SIDE, _FER2013_SIDE, 1), 3, axis=2)
        key = f"fer2013/{line - 2:05d}"
        samples.append(FaceSample(key, pixels, label, subject=key))
    return samples


def read_ckplus(root: Path) -> list[FaceSample]:
    """CK+: per labelled sequence, the last frame with its emotion and the first frame as neutral."""
    frames_root = root / "cohn-kanade-images"
    if not frames_root.is_dir():
        raise InputError(f"{root}: no cohn-kanade-images/ folder beside Emotion/ (CK+)")
    samples = []
    for label_file in sorted((root / "Emotion").glob("*/*/*_emotion.txt")):
        subject, sequence = label_file.parent.parent.name, label_file.parent.name
        text = label_file.read_text().strip()
        label = DATASET_CLASS_CODES["ckplus"].read(text, str(label_file)) if text else None
        if label is None:
            raise InputError(f"{label_file}: CK+ emotion codes are 0..7, got {text!r}")
        frames = sorted(p for p in (frames_root / subject / sequence).glob("*")
                        if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(frames) < 2:
            raise InputError(f"{frames_root / subject / sequence}: a labelled sequence needs at least 2 frames")
        for frame, frame_label in ((frames[0], "neutral"), (frames[-1], label)):
            key = f"{subject}/{sequence}/{frame.stem}"
            samples.append(FaceSample(key, frame, frame_label, subject=subject))
    return samples


#: Dataset readers by ``--format`` name.
READERS: dict[str, Callable[[Path], list[FaceSample]]] = {
    "folders": read_folders, "csv": read_csv, "rafdb": read_rafdb, "affectnet": read_affectnet,
    "fer2013": read_fer2013, "ckplus": read_ckplus}
