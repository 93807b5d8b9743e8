"""Face detection and landmarks, offline: MediaPipe's face mesh (default) or dlib.

Both detectors take an RGB image [H, W, 3] uint8 and return
:class:`~affectsynth.landmarks.Landmarks` for every face found, largest (box area) first,
in the input's pixel frame (:mod:`affectsynth.camera`: pixel (i, j) spans
[j, j+1) x [i, i+1)). Large photos are downscaled to ``max_side`` on the long side for
detection and the coordinates mapped back with the exact per-axis size ratios. dlib needs
the faces upright; MediaPipe's detector turns a photo upright first where its face detector
finds the face lying on its side (:meth:`MediaPipeDetector._upright_detections`).

Pixel conventions of the backends (measured, see below):
    MediaPipe's normalised coordinates times the image size are *pixel-index*
    coordinates (centre of pixel j at j, as in the OpenCV warps MediaPipe crops with),
    so ``u = x_norm * W + 0.5`` in our convention. Measured on the astronaut photo and
    the seven dev neutral photos resized by 0.5-4x: the landmarks' mean shift under
    resizing fits ``u = x_norm * W + c / 2`` with c = 0.96 (c = 1 is pixel-index,
    c = 0 would be image-extent).
    dlib's part coordinates are integer pixel indices: ``u = part.x + 0.5``.
Detectors hold native graphs: not thread-safe; use one per thread and :meth:`close` it
(or use it as a context manager).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from .errors import AffectsynthError, InputError
from .landmarks import SCHEMES, Landmarks

__all__ = ["Detector", "MediaPipeDetector", "DlibDetector", "create_detector", "DETECTORS"]

#: MediaPipe face-mesh crop: a square of this many detection-box sides around the box centre.
#: The mesh's own (short-range) face detector misses faces that fill less than ~1/5 of its
#: input (a second, smaller face; a face on a large canvas), so it runs on such crops.
_CROP_SIDES = 2.0
#: Crops smaller than this (px, long side) are upscaled (bicubic) before the mesh: its landmark
#: network reads a 192-px face region, and on a 128-px astronaut photo upscaling the crop
#: cuts the landmark error from 4.7 % to 1.5 % of the outer-eye-corner distance.
_MIN_MESH_SIDE = 256
#: Mesh box = landmark extent grown by this fraction of its size on each side.
_BOX_MARGIN = 0.05
_DLIB_INSTALL_HINT = "the dlib detector needs dlib and its models: pip install affectsynth[dlib]"


@runtime_checkable
class Detector(Protocol):
    """Finds faces and their landmarks in an upright RGB image.

    Attributes:
        scheme: the landmark scheme of the results, a key of :data:`~affectsynth.landmarks.SCHEMES`.
    """

    scheme: str

    def __call__(self, image: np.ndarray) -> Landmarks:
        """Landmarks of every face in ``image`` ([H, W, 3] uint8 RGB), largest first; B = 0 if none."""
        ...

    def close(self) -> None:
        """Release the native resources; the detector cannot be used afterwards."""
        ...

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _check_image(image: np.ndarray) -> np.ndarray:
    """The image as a C-contiguous [H, W, 3] uint8 array, or an :class:`InputError`."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {list(image.shape)}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(f"a detector needs an [H, W, 3] uint8 RGB image, got {got}")
    if min(image.shape[:2]) < 1:
        raise InputError(f"empty image {list(image.shape)}")
    return np.ascontiguousarray(image)


def _resize(image: np.ndarray, *, max_side: int, min_side: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Resize so that the long side is at most ``max_side`` and at least ``min_side``.

    Returns:
        the resized image [h, w, 3] (the input itself when no resize is needed) and
        [2] float64 (W / w, H / h): multiply continuous coordinates in the resized image by
        it to get coordinates in the input (both resizes map image extent to image extent).
    """
    h, w = image.shape[:2]
    long_side = max(h, w)
    if long_side > max_side:
        factor, interpolation = max_side / long_side, cv2.INTER_AREA
    elif long_side < min_side:
        factor, interpolation = min_side / long_side, cv2.INTER_CUBIC
    else:
        return image, np.ones(2)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(image, size, interpolation=interpolation), np.array([w / size[0], h / size[1]])


def _pack(xy: list[np.ndarray], depth: list[np.ndarray], box: list[np.ndarray], score: list[float],
          image_hw: tuple[int, int], scheme: str) -> Landmarks:
    """Faces as :class:`Landmarks`, sorted by box area, largest first; B = 0 for no faces.

    Args:
        xy: per face [N, 2] pixel coordinates.
        depth: per face [N] relative depth, px (NaN where unknown).
        box: per face [4] (x0, y0, x1, y1), px.
        score: per face confidence in [0, 1].
    """
    n = SCHEMES[scheme]
    order = sorted(range(len(box)), key=lambda i: -float((box[i][2] - box[i][0]) * (box[i][3] - box[i][1])))

    def stack(items: list[np.ndarray], shape: tuple[int, ...]) -> torch.Tensor:
        arr = np.stack([items[i] for i in order]) if order else np.zeros((0, *shape))
        return torch.as_tensor(arr, dtype=torch.float32)

    return Landmarks(
        xy=stack(xy, (n, 2)), depth=stack(depth, (n,)), box=stack(box, (4,)),
        score=torch.tensor([score[i] for i in order], dtype=torch.float32),
        image_size=torch.tensor([image_hw] * len(order), dtype=torch.int64).reshape(-1, 2),
        scheme=scheme)


class MediaPipeDetector(Detector):
    """MediaPipe face mesh with iris refinement: 478 landmarks (scheme "mp478") and depth.

    Per call: MediaPipe's full-range face detector (``face_detection``, model 1) finds the
    faces and their scores in the (downscaled) image; the face mesh then runs on a square
    crop (2 box sides) around each detection, largest first, until ``max_faces`` faces have
    a mesh, which keeps small faces and several faces working. A detection whose crop yields
    no mesh, or a mesh centred outside the detection box, is dropped (a false detection, or
    a neighbour's face). If the detector finds nothing at all, the mesh runs once on the
    whole image, because the full-range detector misses faces that fill the whole frame
    (tight crops); such a face gets ``score = min_confidence`` (the mesh's own detector
    passed that threshold but does not expose its score).

    Output: ``xy`` [B, 478, 2] px, ``depth`` [B, 478] = -z * W in px (MediaPipe's z is
    relative depth scaled like x, smaller = closer), ``box`` = mesh extent grown by 5 % a
    side and clipped to the image, ``score`` = the detection's confidence.

    Args:
        max_faces: at most this many faces (the largest) are returned.
        min_confidence: detection threshold in [0, 1] of both MediaPipe face detectors.
        max_side: long side (px) images are downscaled to for detection.
    """

    scheme = "mp478"

    def __init__(self, max_faces: int = 4, min_confidence: float = 0.5, max_side: int = 1024) -> None:
        if max_faces < 1 or not 0.0 <= min_confidence <= 1.0 or max_side < _MIN_MESH_SIDE:
            raise InputError(f"bad MediaPipeDetector settings: max_faces={max_faces} (>= 1), min_confidence="
                             f"{min_confidence} (in [0, 1]), max_side={max_side} (>= {_MIN_MESH_SIDE})")
        import mediapipe as mp

        self.max_faces, self.min_confidence, self.max_side = max_faces, min_confidence, max_side
        self._face_detection = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=min_confidence)
        self._face_mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, refine_landmarks=True, max_num_faces=1,
            min_detection_confidence=min_confidence)

    def close(self) -> None:
        if self._face_mesh is not None:
            self._face_mesh.close()
            self._face_detection.close()
            self._face_mesh = self._face_detection = None

    def __call__(self, image: np.ndarray) -> Landmarks:
        if self._face_mesh is None:
            raise AffectsynthError("this MediaPipeDetector is closed")
        image = _check_image(image)
        work, to_input = _resize(image, max_side=self.max_side)
        unturned_hw = work.shape[:2]
        turns, detections = self._upright_detections(work)
        work = np.ascontiguousarray(np.rot90(work, turns))
        h, w = work.shape[:2]
        boxes = [_mp_box(d, w, h) for d in detections]
        scores = [float(d.score[0]) for d in detections]
        largest = sorted(range(len(boxes)), key=lambda i: -float(np.prod(boxes[i][2:] - boxes[i][:2])))
        faces = []  # (xy [478, 2] and depth [478] in the working image, score)
        for i in largest:
            if len(faces) == self.max_faces:
                break
            mesh = self._mesh_in_region(work, _square_around(boxes[i], _CROP_SIDES, w, h))
            if mesh is not None and _centre_inside(mesh[0], boxes[i]):
                faces.append((*mesh, scores[i]))
        if not detections:
            mesh = self._mesh_in_region(work, (0, 0, w, h))
            if mesh is not None:
                faces.append((*mesh, self.min_confidence))

        in_h, in_w = image.shape[:2]
        xy = [_unturn(f[0], turns, unturned_hw) * to_input for f in faces]
        depth = [f[1] * to_input[0] for f in faces]
        box = [_grown_box(p, _BOX_MARGIN, in_w, in_h) for p in xy]
        return _pack(xy, depth, box, [f[2] for f in faces], (in_h, in_w), self.scheme)

    def _upright_detections(self, image: np.ndarray) -> tuple[int, list]:
        """(turns, detections): MediaPipe's face detections in ``np.rot90(image, turns)`` (quarter
        turns anticlockwise). Turns 0 unless every face the detector finds there lies on its side
        or upside down by its eye and mouth keypoints (:func:`_upright`); then the turns whose
        most confident face the right way up is the most confident (0 if none is).

        The face mesh reads faces within about 45 degrees of upright: on a photo on its side (no
        EXIF orientation to undo it) it put the eyes' landmarks between the eyes, and the fit
        passed as reliable. Only the keypoints of a face found are trusted for this: where the
        detector finds none, or calls one upright, the photo is not turned. On 640 crops of
        upright faces (the astronaut and the 40 dev photos, 1.1-3 face sizes, 48-224 px) no
        detection lay on its side. Searching the other turns also where none was found at 0, or
        where the upright one scored under 0.75, turned 8 of 360 such crops wrongly (5 of the
        120 tightest): the detector can score a turned face above the upright one.
        """
        found = self._face_detection.process(image).detections or []
        if not found or any(_upright(d, image.shape) for d in found):
            return 0, found
        best, best_score = (0, found), 0.0
        for turns in (1, 2, 3):
            turned = np.ascontiguousarray(np.rot90(image, turns))
            detections = self._face_detection.process(turned).detections or []
            score = max((float(d.score[0]) for d in detections if _upright(d, turned.shape)), default=0.0)
            if score > best_score:
                best, best_score = (turns, detections), score
        return best

    def _mesh_in_region(self, image: np.ndarray, region: tuple[int, int, int, int]
                        ) -> tuple[np.ndarray, np.ndarray] | None:
        """The face mesh of the most confident face in ``image[y0:y1, x0:x1]``.

        Returns:
            ([478, 2] xy, [478] depth) in ``image``'s pixel frame, or None if no face.
        """
        x0, y0, x1, y1 = region
        crop, to_image = _resize(image[y0:y1, x0:x1], max_side=self.max_side, min_side=_MIN_MESH_SIDE)
        found = self._face_mesh.process(np.ascontiguousarray(crop)).multi_face_landmarks
        if not found:
            return None
        h, w = crop.shape[:2]
        xyz = np.array([(p.x, p.y, p.z) for p in found[0].landmark], dtype=np.float64)
        xy = (xyz[:, :2] * (w, h) + 0.5) * to_image + (x0, y0)  # pixel-index -> our convention
        depth = -xyz[:, 2] * w * to_image[0]
        return xy, depth


def _upright(detection, hw: tuple[int, ...]) -> bool:
    """Whether a MediaPipe detection in an image of size ``hw`` (h, w, ...) is a face the right
    way up: its mouth keypoint lies below the midpoint of its eyes, within 45 degrees of straight down."""
    right_eye, left_eye, _, mouth = detection.location_data.relative_keypoints[:4]
    down_x = (mouth.x - (right_eye.x + left_eye.x) / 2) * hw[1]
    down_y = (mouth.y - (right_eye.y + left_eye.y) / 2) * hw[0]
    return down_y > abs(down_x)


def _unturn(xy: np.ndarray, turns: int, hw: tuple[int, int]) -> np.ndarray:
    """Points [N, 2] (continuous px) of ``np.rot90(image, turns)`` as points of ``image`` [h, w]."""
    h, w = hw
    x, y = xy[:, 0], xy[:, 1]
    turns %= 4
    if turns == 1:
        return np.stack((w - y, x), 1)
    if turns == 2:
        return np.stack((w - x, h - y), 1)
    if turns == 3:
        return np.stack((y, h - x), 1)
    return xy


def _mp_box(detection, w: int, h: int) -> np.ndarray:
    """A MediaPipe detection's relative box as [4] (x0, y0, x1, y1) px, our convention."""
    b = detection.location_data.relative_bounding_box
    return np.array([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h]) + 0.5


def _square_around(box: np.ndarray, sides: float, w: int, h: int) -> tuple[int, int, int, int]:
    """Integer region (x0, y0, x1, y1): a square of ``sides`` box sides centred on ``box``, clipped."""
    cx, cy = (box[:2] + box[2:]) / 2
    half = sides * float(max(box[2:] - box[:2])) / 2
    x0, y0 = max(0, math.floor(cx - half)), max(0, math.floor(cy - half))
    x1, y1 = min(w, math.ceil(cx + half)), min(h, math.ceil(cy + half))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def _centre_inside(points: np.ndarray, box: np.ndarray) -> bool:
    """Whether the centre of the points' extent ([N, 2]) lies in ``box`` [4]."""
    centre = (points.min(0) + points.max(0)) / 2
    return bool((centre >= box[:2]).all() and (centre <= box[2:]).all())


def _grown_box(points: np.ndarray, margin: float, w: int, h: int) -> np.ndarray:
    """[4] extent of ``points`` [N, 2] grown by ``margin`` of its size per side, clipped to the image."""
    lo, hi = points.min(0), points.max(0)
    grow = margin * (hi - lo)
    return np.clip(np.concatenate((lo - grow, hi + grow)), 0, [w, h, w, h])


class DlibDetector(Detector):
    """dlib's HOG frontal face detector and 68-point shape predictor (scheme "ibug68").

    The predictor is the one shipped by the ``face-recognition-models`` package. No depth
    (NaN). ``score`` = logistic(margin) of the detector's SVM margin, a monotone map to
    [0, 1] that gives 0.5 at dlib's default threshold (margin 0). ``box`` is dlib's
    detection rectangle.

    Args:
        upsample: times the image is upsampled before detecting (each finds faces half as
            large; dlib's smallest face is ~80 px without upsampling).
        min_confidence: keep detections with ``score`` at least this. 0.6 (margin 0.4) is
            above dlib's own threshold (0.5, margin 0): real faces in the dev photos score
            >= 0.69, while with ``upsample=1`` dlib also finds a false "face" of score 0.53
            in the astronaut photo.
        max_side: long side (px) images are downscaled to for detection and landmarks.
    """

    scheme = "ibug68"

    def __init__(self, upsample: int = 1, min_confidence: float = 0.6, max_side: int = 1024) -> None:
        if upsample < 0 or not 0.0 < min_confidence < 1.0 or max_side < 1:
            raise InputError(f"bad DlibDetector settings: upsample={upsample} (>= 0), min_confidence="
                             f"{min_confidence} (in (0, 1)), max_side={max_side} (>= 1)")
        try:
            import dlib
        except ImportError as e:
            raise AffectsynthError(_DLIB_INSTALL_HINT) from e
        # face_recognition_models' own import needs pkg_resources; only its data file is needed.
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise AffectsynthError(_DLIB_INSTALL_HINT)
        model = Path(spec.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
        if not model.is_file():
            raise AffectsynthError(f"{_DLIB_INSTALL_HINT} ({model} is missing)")
        self.upsample, self.min_confidence, self.max_side = upsample, min_confidence, max_side
        self._min_margin = math.log(min_confidence / (1.0 - min_confidence))  # inverse of the score map
        self._face_detector = dlib.get_frontal_face_detector()
        self._shape_predictor = dlib.shape_predictor(str(model))

    def close(self) -> None:
        self._face_detector = self._shape_predictor = None

    def __call__(self, image: np.ndarray) -> Landmarks:
        if self._shape_predictor is None:
            raise AffectsynthError("this DlibDetector is closed")
        image = _check_image(image)
        work, to_input = _resize(image, max_side=self.max_side)
        rects, margins, _ = self._face_detector.run(work, self.upsample, self._min_margin)
        in_h, in_w = image.shape[:2]
        xy, box = [], []
        for rect in rects:
            shape = self._shape_predictor(work, rect)
            parts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            xy.append((parts + 0.5) * to_input)  # pixel index -> our convention
            # dlib's rectangle corners are inclusive pixel indices.
            corners = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float64)
            box.append(np.clip(corners * np.tile(to_input, 2), 0, [in_w, in_h, in_w, in_h]))
        depth = [np.full(len(p), np.nan) for p in xy]
        score = [1.0 / (1.0 + math.exp(-m)) for m in margins]
        return _pack(xy, depth, box, score, (in_h, in_w), self.scheme)


#: Detector names accepted by :func:`create_detector`.
DETECTORS = {"mediapipe": MediaPipeDetector, "dlib": DlibDetector}


def create_detector(name: str = "mediapipe", **kwargs) -> Detector:
    """A detector by name ("mediapipe" | "dlib"), with its constructor's keyword arguments."""
    if name not in DETECTORS:
        raise InputError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    return DETECTORS[name](**kwargs)
