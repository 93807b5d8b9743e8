"""A content-addressed cache of face fits, so that each source photo is detected and fitted once.

An entry holds a :class:`~affectsynth.pipeline.FaceFit` (landmarks, :class:`~affectsynth.fit.FitResult`,
faces found) or a :class:`FitFailure` (no face, several faces of similar size), in
``ROOT/<key[:2]>/<key>.fit``. The key is the sha256 of

* the cache format version (:data:`CACHE_VERSION`),
* the fitter's identity (:func:`fitter_id`): a hash of the model's arrays and meta (computed once per
  model), the detector's class and settings, the :class:`~affectsynth.fit.FitConfig` and ``all_faces``,
* the decoded upright RGB pixels and their shape,

so the same pixels under another file name hit, and another model, detector or setting misses.
Every tensor is stored with its dtype and read back bit for bit, so a render from a cached fit is
byte-identical to one from a fresh fit. An entry file is a line naming the format, a line of JSON
(the key, the plain fields, and each array's name, dtype, shape and place) and the arrays' bytes
side by side: one read and no parsing per array (as an ``.npz`` of twenty small arrays it took
~1 ms to read, a sixth of a 224^2 render). Entries are written atomically
(:func:`affectsynth.io.write_atomic`); a corrupt, truncated or foreign entry reads as a miss and the
next :meth:`FitCache.put` replaces it. Several processes may share one cache folder: two writers
of one key write the same content, and the rename makes one of them win whole.

Bump :data:`CACHE_VERSION` when fitting or the entry layout changes: old entries then miss.

Beside an entry, ``<key>.appearance`` may hold what the renderer measured of the photo's eyes and
mouth under that fit (:meth:`FitCache.appearance`), stamped with the version of the code that
measured it: a training hook whose fits come from disk then skips measuring it again (~2 ms at
224^2), and a render from it stays byte-identical to one that measures afresh. (Files of older
versions, ``<key>.npz`` of version 1, are left where they are, unread.)

    cache = FitCache.for_fitter("fits/", synthesizer.face_fitter)      # the model is hashed here, once
    fitted = cache.fit(image, synthesizer.face_fitter, name="a.jpg")   # detects and fits only on a miss
    results = synthesizer.render_many(image, targets, fitted=fitted)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .detect import Detector
from .errors import InputError, NoFaceError, SeveralFacesError
from .fit import FitConfig, FitResult
from .io import write_atomic
from .landmarks import Landmarks
from .model import FaceModel
from .pipeline import FaceFit, FaceFitter, Synthesizer
from .render.eyes import EyeAppearance
from .render.grain import Grain
from .render.materials import MouthAppearance

__all__ = ["CACHE_VERSION", "FitCache", "FitFailure", "fitter_id", "model_fingerprint"]

log = logging.getLogger("affectsynth")

#: Format version of the entries and of the key (part of every key).
CACHE_VERSION = 3
#: The first line of every cache file (:meth:`FitCache._write`): what it is and its format version.
_MAGIC = f"affectsynth fit cache {CACHE_VERSION}\n".encode()
#: The parts of an appearance (:meth:`~affectsynth.pipeline.Synthesizer.appearance`) by name.
_APPEARANCE_PARTS = {"eyes": EyeAppearance, "mouth": MouthAppearance, "grain": Grain}
#: The failures worth remembering: they depend on the pixels alone, so a rerun would find them again.
_CACHED_FAILURES: dict[str, type[InputError]] = {"no_face": NoFaceError, "several_faces": SeveralFacesError}


@dataclass(frozen=True)
class FitFailure:
    """A photo that cannot be fitted, remembered: ``kind`` is "no_face" or "several_faces";
    ``message`` says why, without the file name (the same pixels may come under several names)."""

    kind: str
    message: str

    def error(self, name: str = "image") -> InputError:
        """The exception fitting raised, for the photo called ``name``."""
        return _CACHED_FAILURES[self.kind](f"{name}: {self.message}")


def model_fingerprint(model: FaceModel) -> str:
    """sha256 (hex) of everything in a model that a fit depends on: its arrays (with dtype and
    shape), expression names, landmark maps, regions, materials and meta. Reads every array once
    (about 0.1 s per 100 MB): compute it once per model."""
    digest = hashlib.sha256()

    def add(name: str, tensor: torch.Tensor | None) -> None:
        if tensor is not None:
            array = np.ascontiguousarray(tensor.detach().cpu().numpy())
            digest.update(f"{name}:{array.dtype.str}:{array.shape}:".encode())
            digest.update(array.tobytes())

    for name in ("mean", "id_basis", "exp_basis", "triangles", "uv"):
        add(name, getattr(model, name))
    for scheme, lmap in sorted(model.landmark_maps.items()):
        add(f"landmarks/{scheme}/vertices", lmap.vertices)
        add(f"landmarks/{scheme}/weights", lmap.weights)
        add(f"landmarks/{scheme}/valid", lmap.valid)
    for kind, parts in (("regions", model.regions), ("materials", model.materials)):
        for name, ids in sorted(parts.items()):
            add(f"{kind}/{name}", ids)
    digest.update(json.dumps({"exp_names": model.exp_names, "meta": model.meta}, sort_keys=True).encode())
    return digest.hexdigest()


def fitter_id(model_id: str, detector: Detector, config: FitConfig, all_faces: bool) -> str:
    """The identity of a fitting set-up, for :class:`FitCache`: ``model_id`` (:func:`model_fingerprint`),
    the detector's class and its plain settings (numbers, strings), the fit options and ``all_faces``."""
    settings = {k: v for k, v in sorted(vars(detector).items())
                if not k.startswith("_") and isinstance(v, (bool, int, float, str))}
    return json.dumps({"model": model_id, "detector": f"{type(detector).__module__}.{type(detector).__qualname__}",
                       "detector_settings": settings, "fit_config": dataclasses.asdict(config),
                       "all_faces": all_faces}, sort_keys=True)


class FitCache:
    """Face fits by content hash (module docstring).

    Args:
        root: the cache folder (created on the first :meth:`put`).
        fitter: what the entries are fits of: :func:`fitter_id`.
        device: where the tensors of a fit that is read go (the model's device).
    """

    def __init__(self, root: Path | str, fitter: str, device: torch.device | str = "cpu"):
        self.root = Path(root)
        self.device = torch.device(device)
        self._key_prefix = f"affectsynth.fitcache:{CACHE_VERSION}:{fitter}:".encode()
        self._told_unwritable = False

    @staticmethod
    def for_fitter(root: Path | str, face_fitter: FaceFitter, all_faces: bool = False,
                   model_id: str | None = None) -> FitCache:
        """A cache of ``face_fitter``'s fits; pass ``model_id`` when the model's fingerprint is known."""
        model = face_fitter.model
        model_id = model_fingerprint(model) if model_id is None else model_id
        return FitCache(root, fitter_id(model_id, face_fitter.detector, face_fitter.fitter.config, all_faces),
                        model.device)

    def key(self, image: np.ndarray) -> str:
        """The key of an upright [H, W, 3] uint8 RGB image (64 hex digits)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"FitCache.key needs an [H, W, 3] uint8 array, got {image.shape} {image.dtype}")
        digest = hashlib.sha256(self._key_prefix)
        digest.update(f"{image.shape}:".encode())
        digest.update(np.ascontiguousarray(image).data)
        return digest.hexdigest()

    def path(self, key: str, kind: str = "fit") -> Path:
        """The file of ``key``'s entry (``kind`` "fit") or of its appearance ("appearance")."""
        return self.root / key[:2] / f"{key}.{kind}"

    def get(self, key: str) -> FaceFit | FitFailure | None:
        """The entry of ``key``, or None when there is none or it cannot be read (a miss)."""
        read = self._read(key, "fit")
        if read is None:
            return None
        fields, arrays = read
        try:
            if "failure" in fields:
                return FitFailure(**fields["failure"])
            return FaceFit(landmarks=_decode(Landmarks, "landmarks", arrays, fields, torch.device("cpu")),
                           fit=_decode(FitResult, "fit", arrays, fields, self.device), faces_found=fields["faces_found"])
        except (KeyError, TypeError, ValueError) as e:
            log.warning("fit cache: unreadable entry %s, refitting (%s)", self.path(key), " ".join(str(e).split()))
            return None

    def put(self, key: str, entry: FaceFit | FitFailure) -> None:
        """Store ``entry`` under ``key`` atomically (replacing what was there)."""
        arrays: dict[str, np.ndarray] = {}
        fields: dict = {}
        if isinstance(entry, FitFailure):
            fields["failure"] = dataclasses.asdict(entry)
        else:
            _encode(entry.landmarks, "landmarks", arrays, fields)
            _encode(entry.fit, "fit", arrays, fields)
            fields["faces_found"] = entry.faces_found
        self._write(key, "fit", fields, arrays)

    def appearance(self, key: str, image: np.ndarray, fitted: FaceFit, synthesizer: Synthesizer) -> dict:
        """What ``synthesizer`` measures of ``image``'s eyes and mouth under ``fitted``, the fit of
        ``key`` (:meth:`~affectsynth.pipeline.Synthesizer.appearance`): as stored beside the entry
        when the same code measured it (:meth:`~affectsynth.pipeline.Synthesizer.appearance_version`),
        else measured now and stored."""
        version = synthesizer.appearance_version()
        read = self._read(key, "appearance")
        if read is not None and read[0].get("version") == version:
            fields, arrays = read
            try:
                return {name: _decode(_APPEARANCE_PARTS[name], name, arrays, fields, self.device)
                        for name in fields["parts"]}
            except (KeyError, TypeError, ValueError) as e:
                log.warning("fit cache: unreadable appearance %s (%s)", self.path(key, "appearance"),
                            " ".join(str(e).split()))
        measured = synthesizer.appearance(image, fitted)
        arrays: dict[str, np.ndarray] = {}
        fields = {"version": version, "parts": list(measured)}
        for name, part in measured.items():
            _encode(part, name, arrays, fields)
        try:
            self._write(key, "appearance", fields, arrays)
        except InputError as e:  # e.g. a read-only cache of fits made earlier: they still serve
            if not self._told_unwritable:
                log.warning("fit cache: cannot store appearances, measuring them each time (%s)", e)
                self._told_unwritable = True
        return measured

    def _write(self, key: str, kind: str, fields: dict, arrays: dict[str, np.ndarray]) -> None:
        """The file of ``key`` and ``kind``: the format line, the JSON line (``fields``, the key and
        the arrays' layout) and the arrays' bytes."""
        layout, chunks, offset = [], [], 0
        for name, array in arrays.items():
            array = np.ascontiguousarray(array)
            layout.append([name, array.dtype.str, list(array.shape), offset])
            chunks.append(array.tobytes())
            offset += array.nbytes
        header = json.dumps({**fields, "key": key, "arrays": layout}).encode()   # one line: JSON escapes newlines
        write_atomic(self.path(key, kind), lambda file: file.write(b"".join((_MAGIC, header, b"\n", *chunks))))

    def _read(self, key: str, kind: str) -> tuple[dict, dict[str, np.ndarray]] | None:
        """(fields, arrays) of the file of ``key`` and ``kind``, or None when there is none or it is not
        a file :meth:`_write` made for ``key`` (logged)."""
        path = self.path(key, kind)
        try:
            data = path.read_bytes()
        except OSError:  # none (or unreadable): a miss
            return None
        try:
            if not data.startswith(_MAGIC):
                raise ValueError("not a fit cache file of this version")
            end = data.index(b"\n", len(_MAGIC))
            fields = json.loads(data[len(_MAGIC):end])
            if fields.pop("key") != key:
                raise ValueError("the entry is of another key")
            payload, arrays = memoryview(data)[end + 1:], {}
            for name, dtype, shape, offset in fields.pop("arrays"):
                dtype = np.dtype(dtype)
                size = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
                if dtype.hasobject or not 0 <= offset <= offset + size <= len(payload):
                    raise ValueError(f"array {name!r} is not plain data within the file")
                # a copy: aligned and writable, as torch.from_numpy wants
                arrays[name] = np.frombuffer(payload[offset:offset + size], dtype).reshape(shape).copy()
            return fields, arrays
        except (AttributeError, KeyError, TypeError, ValueError) as e:   # (a JSON line that is not an object)
            log.warning("fit cache: unreadable %s %s (%s)", kind, path, " ".join(str(e).split()))
            return None

    def fit(self, image: np.ndarray, face_fitter: FaceFitter, all_faces: bool = False, name: str = "image",
            key: str | None = None) -> FaceFit:
        """The fit of ``image``: from the cache, or by ``face_fitter`` (which must be the fitter this
        cache was made for) and then stored. A remembered failure raises its error again, as a
        fresh one is raised and remembered (NoFaceError, SeveralFacesError)."""
        key = self.key(image) if key is None else key
        entry = self.get(key)
        if entry is None:
            try:
                entry = face_fitter(image, all_faces=all_faces, name=name)
            except (NoFaceError, SeveralFacesError) as e:
                kind = next(k for k, cls in _CACHED_FAILURES.items() if type(e) is cls)
                self.put(key, FitFailure(kind, str(e).removeprefix(f"{name}: ")))
                raise
            self.put(key, entry)
        if isinstance(entry, FitFailure):
            raise entry.error(name)
        return entry


def _encode(record, prefix: str, arrays: dict[str, np.ndarray], fields: dict) -> None:
    """A dataclass of tensors and plain values -> ``arrays`` (tensors, dtype kept) and ``fields`` (JSON)."""
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if isinstance(value, torch.Tensor):
            arrays[f"{prefix}/{field.name}"] = value.detach().cpu().numpy()
        else:
            fields[f"{prefix}/{field.name}"] = value


def _decode(cls, prefix: str, arrays: dict[str, np.ndarray], fields: dict, device: torch.device):
    """The inverse of :func:`_encode`: JSON lists come back as the tuples they were."""
    values = {}
    for field in dataclasses.fields(cls):
        name = f"{prefix}/{field.name}"
        values[field.name] = torch.from_numpy(arrays[name]).to(device) if name in arrays else _tuples(fields[name])
    return cls(**values)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
