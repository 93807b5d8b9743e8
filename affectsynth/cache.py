"""A content-addressed cache of face fits, so that each source photo is detected and fitted once.

An entry holds a :class:`~affectsynth.pipeline.FaceFit` (landmarks, :class:`~affectsynth.fit.FitResult`,
faces found) or a :class:`FitFailure` (no face, several faces of similar size), in
``ROOT/<key[:2]>/<key>.npz``. The key is the sha256 of

* the cache format version (:data:`CACHE_VERSION`),
* the fitter's identity (:func:`fitter_id`): a hash of the model's arrays and meta (computed once per
  model), the detector's class and settings, the :class:`~affectsynth.fit.FitConfig` and ``all_faces``,
* the decoded upright RGB pixels and their shape,

so the same pixels under another file name hit, and another model, detector or setting misses.
Every tensor is stored with its dtype and read back bit for bit, so a render from a cached fit is
byte-identical to one from a fresh fit. Entries are written atomically
(:func:`affectsynth.io.write_atomic`); a corrupt, truncated or foreign entry reads as a miss and the
next :meth:`FitCache.put` replaces it. Several processes may share one cache folder: two writers
of one key write the same content, and the rename makes one of them win whole.

Bump :data:`CACHE_VERSION` when fitting or the entry layout changes: old entries then miss.

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
from .io import load_npz, save_npz
from .landmarks import Landmarks
from .model import FaceModel
from .pipeline import FaceFit, FaceFitter

__all__ = ["CACHE_VERSION", "FitCache", "FitFailure", "fitter_id", "model_fingerprint"]

log = logging.getLogger("affectsynth")

#: Format version of the entries and of the key (part of every key).
CACHE_VERSION = 1
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

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def get(self, key: str) -> FaceFit | FitFailure | None:
        """The entry of ``key``, or None when there is none or it cannot be read (a miss)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            data = load_npz(path, "fit cache entry", CACHE_VERSION)
            fields = json.loads(str(data.pop("fields_json")))
            if fields.pop("key") != key:
                raise ValueError("the entry is of another key")
            if "failure" in fields:
                return FitFailure(**fields["failure"])
            return FaceFit(landmarks=_decode(Landmarks, "landmarks", data, fields, torch.device("cpu")),
                           fit=_decode(FitResult, "fit", data, fields, self.device), faces_found=fields["faces_found"])
        except (InputError, KeyError, TypeError, ValueError) as e:
            log.warning("fit cache: unreadable entry %s, refitting (%s)", path, " ".join(str(e).split()))
            return None

    def put(self, key: str, entry: FaceFit | FitFailure) -> None:
        """Store ``entry`` under ``key`` atomically (replacing what was there)."""
        arrays: dict[str, np.ndarray] = {}
        fields: dict = {"key": key}
        if isinstance(entry, FitFailure):
            fields["failure"] = dataclasses.asdict(entry)
        else:
            _encode(entry.landmarks, "landmarks", arrays, fields)
            _encode(entry.fit, "fit", arrays, fields)
            fields["faces_found"] = entry.faces_found
        save_npz(self.path(key), {"fields_json": np.array(json.dumps(fields)), **arrays}, CACHE_VERSION)

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
