"""Benchmark detection and fitting speed, and landmark accuracy, against the eos library.

Run by hand on the machine whose figures you mean to cite, with nothing else busy on it:

    .venv/bin/python scripts/bench_fit.py [--threads N]

Everything runs on the CPU. It takes well under two minutes. Progress goes to stdout, and the
last line is a single line of space-separated ``key=value`` figures that notes can quote.
Times are medians over repeated runs after warm-up calls. "na" means the figure could not be
measured here: ../shared is absent, or eos or dlib is not installed, or the default model has
no "ibug68" landmark map.

Figures
    cpu, threads, torch   CPU model (spaces -> "_"), torch.set_num_threads (set explicitly;
                          default 1, because eos is single-threaded and a one-face fit is too
                          small to gain from more threads), torch version.
    load1                 the 1-minute load average at the start: other work on the machine
                          inflates every time (on a 2-core machine, load1 above ~0.5 shows).
    model                 name of the default model (load_default_model()).
    id_modes, exp_modes   its numbers of identity modes and expression blendshapes (the fit's
                          unknowns besides the 7 pose parameters).
    fit_image             the photo the fit and accuracy figures use: image_0010 (300-W,
                          1280x1024, from ../shared/models/eos-sfm/examples/data), or
                          astronaut640 when ../shared is absent.
    detect_ms             ms per call of the default MediaPipe detector (create_detector("mediapipe"),
                          the one FaceFitter uses) on skimage.data.astronaut() resized to 640 px.
    detect_ms_0010        the same detector on image_0010.png (which it downscales to 1024 px).
    detect_ms_dlib        create_detector("dlib") (HOG detector + 68-point predictor) on the astronaut.
    detect_ms_dlib_0010   the same on image_0010.png.
    fit_ms                ms per face of fitting only: the pipeline's Fitter (fit_landmarks with the
                          default FitConfig) on the MediaPipe landmarks of fit_image, computed
                          beforehand, one face per call (B = 1).
    fit_ms_batch32        ms per face when the same face is fitted 32 times in one call (B = 32) / 32.
    fit_ms_ibug68         as fit_ms, but fitting the default model to dlib's 68 points of fit_image
                          through the model's "ibug68" landmark map: the same input eos gets.
    eos_fit_ms            ms per call of eos.fitting.fit_shape_and_pose (eos-py 1.5) with its
                          defaults (5 iterations, all 63 identity modes, 6 expression blendshapes,
                          lambda_identity = lambda_expressions = 30, contour fitting from the model
                          contour and occluding edges), fitting the Surrey Face Model
                          (sfm_shape_3448.bin + expression_blendshapes_3448.bin, ibug_to_sfm.txt,
                          sfm_model_contours.json) to dlib's 68 points of image_0010. Only that
                          call is timed: the model, the edge topology and the list of eos
                          Landmarks are built once beforehand. The edge topology (eos's
                          sfm_3448_edge_topology.json is not in ../shared) is built here from the
                          model's triangles in eos's layout: per edge, its two faces 1-based
                          (0 first for a boundary edge) and its two vertices 1-based.
    eos_ratio             fit_ms / eos_fit_ms (our default pipeline's fit against eos).
    eos_ratio_ibug68      fit_ms_ibug68 / eos_fit_ms (the same 68 input points for both).
    nme                   the default pipeline on image_0010 (FaceFitter(model), MediaPipe landmarks,
                          then the fitted model's 68 landmarks, fit_record's "landmarks_68") against
                          the 68 hand-annotated points of image_0010.pts.
    dlib_nme              dlib's own 68 points against the same annotation.
    nme_ibug68            our model fitted to dlib's 68 points, its 68 fitted landmarks.
    eos_nme               eos's fitted mesh: its vertices of ibug_to_sfm.txt projected with the
                          fitted camera, over the eos_nme_points (50) points that file maps: eos
                          has no fixed vertex for the 16 jaw-line points besides the chin (it
                          matches them to the model contour anew in each iteration) nor for the
                          inner mouth corners 61 and 65 (1-based).
    eos_nme_points        how many points eos_nme averages over.
    nme_ibug68_eos_points nme_ibug68 over the same points as eos_nme: the like-for-like match.

NME = mean distance between predicted and annotated points / distance between the annotated
outer eye corners (points 37 and 46, 1-based; indices 36 and 45), over all 68 points unless said.

Pixel centres. Our image coordinates put the centre of 0-based pixel j at j + 0.5
(:mod:`affectsynth.camera`). The 300-W .pts files give 1-based pixel indices (MATLAB
convention), so a point is read as x_ours = x_pts - 1 + 0.5 = x_pts - 0.5 (same for y). eos
works in 0-based pixel indices (its examples subtract 1 from .pts values), so eos gets our
points minus 0.5 and its projections are shifted back by + 0.5.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without `pip install -e .`

from benchlib import cpu_name, median_ms  # noqa: E402

from affectsynth.detect import Detector, create_detector  # noqa: E402
from affectsynth.errors import AffectsynthError  # noqa: E402
from affectsynth.fit import fit_record  # noqa: E402
from affectsynth.io import load_image  # noqa: E402
from affectsynth.landmarks import Landmarks  # noqa: E402
from affectsynth.model.default import load_default_model  # noqa: E402
from affectsynth.pipeline import FaceFitter  # noqa: E402

SHARED = ROOT.parent / "shared"
EOS_DIR = SHARED / "models" / "eos-sfm"
IMAGE_0010 = EOS_DIR / "examples" / "data" / "image_0010.png"
#: Outer eye corners of the iBUG 68-point markup (0-based): the NME normaliser.
OUTER_EYE_CORNERS = (36, 45)
BATCH = 32




def read_pts(path: Path) -> np.ndarray:
    """A 300-W .pts file as [68, 2] points in our pixel convention (x_pts - 0.5, y_pts - 0.5)."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    body = lines[lines.index("{") + 1:lines.index("}")]
    return np.array([[float(v) for v in line.split()] for line in body]) - 0.5


def nme(predicted: np.ndarray, truth: np.ndarray, subset: list[int] | None = None) -> float:
    """Mean point error over the outer-eye-corner distance of ``truth``; both [68, 2] px."""
    rows = slice(None) if subset is None else subset
    errors = np.linalg.norm(predicted[rows] - truth[rows], axis=1)
    a, b = OUTER_EYE_CORNERS
    return float(errors.mean() / np.linalg.norm(truth[a] - truth[b]))




@dataclass(frozen=True)
class EosSfm:
    """eos's standard fit of the Surrey Face Model, set up once from ../shared/models/eos-sfm."""

    model: object            # eos.morphablemodel.MorphableModel with the 6 expression blendshapes
    mapper: object           # eos.core.LandmarkMapper from ibug_to_sfm.txt
    edge_topology: object    # eos.morphablemodel.EdgeTopology
    contour_landmarks: object
    model_contour: object
    vertex_of_point: dict[int, int]  # 0-based iBUG point -> SFM vertex, for the 50 mapped points

    @staticmethod
    def load(share: Path) -> EosSfm:
        import eos

        shape = eos.morphablemodel.load_model(str(share / "sfm_shape_3448.bin"))
        blendshapes = eos.morphablemodel.load_blendshapes(str(share / "expression_blendshapes_3448.bin"))
        model = eos.morphablemodel.MorphableModel(
            shape.get_shape_model(), blendshapes, color_model=eos.morphablemodel.PcaModel(),
            vertex_definitions=None, texture_coordinates=shape.get_texture_coordinates())
        mapper = eos.core.LandmarkMapper(str(share / "ibug_to_sfm.txt"))
        return EosSfm(
            model=model, mapper=mapper,
            edge_topology=edge_topology(np.asarray(shape.get_shape_model().get_triangle_list())),
            contour_landmarks=eos.fitting.ContourLandmarks.load(str(share / "ibug_to_sfm.txt")),
            model_contour=eos.fitting.ModelContour.load(str(share / "sfm_model_contours.json")),
            vertex_of_point={int(k) - 1: int(v) for k, v in mapper.get_mappings().items()})

    def fitter(self, points: np.ndarray, image_hw: tuple[int, int]) -> Callable[[], np.ndarray]:
        """A call that fits eos to ``points`` ([68, 2] px, our convention, iBUG order) and returns
        the fitted mesh's landmark vertices projected to the image, [68, 2] px in our convention,
        NaN for the points eos has no vertex for. The returned call is the eos fit plus the
        projection of the 50 mapped vertices (microseconds)."""
        import eos

        h, w = image_hw
        landmarks = [eos.core.Landmark(str(i + 1), (p - 0.5).astype(np.float32)) for i, p in enumerate(points)]
        ids = sorted(self.vertex_of_point)
        vertex_ids = [self.vertex_of_point[i] for i in ids]

        def fit() -> np.ndarray:
            mesh, pose, _, _ = eos.fitting.fit_shape_and_pose(
                self.model, landmarks, self.mapper, w, h, self.edge_topology, self.contour_landmarks,
                self.model_contour)
            camera = eos.fitting.get_3x4_affine_camera_matrix(pose, w, h)       # [3, 4], to eos pixels
            vertices = np.asarray(mesh.vertices, dtype=np.float64)[vertex_ids]  # [50, 3]
            out = np.full((len(points), 2), np.nan)
            out[ids] = (vertices @ camera[:2, :3].T + camera[:2, 3]) + 0.5
            return out

        return fit


def edge_topology(triangles: np.ndarray):
    """eos's EdgeTopology of a triangle mesh [F, 3] (0-based vertices), in eos's layout: per edge,
    adjacent faces 1-based with 0 first for a boundary edge, and its two vertices 1-based."""
    import eos

    faces_of_edge: dict[tuple[int, int], list[int]] = {}
    for face, corners in enumerate(triangles.tolist()):
        for a, b in zip(corners, corners[1:] + corners[:1]):
            faces_of_edge.setdefault((min(a, b), max(a, b)), []).append(face + 1)
    if any(len(f) > 2 for f in faces_of_edge.values()):
        raise ValueError("the mesh has non-manifold edges; eos's edge topology cannot express them")
    adjacent_faces = [f if len(f) == 2 else [0, f[0]] for f in faces_of_edge.values()]
    adjacent_vertices = [[a + 1, b + 1] for a, b in faces_of_edge]
    return eos.morphablemodel.EdgeTopology(adjacent_faces, adjacent_vertices)


def landmarks_68(face_fitter: FaceFitter, landmarks: Landmarks) -> np.ndarray | None:
    """The fitted model's 68 landmarks [68, 2] px for the first face, or None without an "ibug68" map."""
    with torch.no_grad():
        record = fit_record(face_fitter.fitter(landmarks), 0, face_fitter.model)
    return np.array(record["landmarks_68"]) if "landmarks_68" in record else None


def eos_fitter(points: Landmarks | None, image_hw: tuple[int, int]) -> Callable[[], np.ndarray] | None:
    """:meth:`EosSfm.fitter` for the first face of ``points`` (iBUG 68), or None (with the reason
    printed) when there are no points, no ../shared or no eos."""
    if points is None or not EOS_DIR.is_dir():
        return None
    try:
        sfm = EosSfm.load(EOS_DIR / "share")
    except ImportError as e:
        print(f"eos unavailable ({e}): eos figures are 'na'")
        return None
    return sfm.fitter(points.xy[0].double().numpy(), image_hw)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    fig: dict[str, str | float | None] = {
        "cpu": cpu_name().replace(" ", "_"), "threads": str(torch.get_num_threads()), "torch": torch.__version__,
        "load1": f"{os.getloadavg()[0]:.2f}"}

    def put(key: str, value: str | float | None) -> float | str | None:
        fig[key] = value
        print(f"{key:>22} = {_format(key, value)}", flush=True)
        return value

    have_shared = IMAGE_0010.is_file()
    if not have_shared:
        print(f"{SHARED} not found: the image_0010 and eos figures are 'na'")
    astronaut = _astronaut_640()
    photo = load_image(IMAGE_0010) if have_shared else None
    fit_image = photo if have_shared else astronaut
    put("fit_image", "image_0010" if have_shared else "astronaut640")
    model = load_default_model()
    put("model", model.name.replace(" ", "_"))
    put("id_modes", str(model.num_identity))
    put("exp_modes", str(model.num_expressions))
    has_ibug68 = "ibug68" in model.landmark_maps
    face_fitter = FaceFitter(model)
    try:
        dlib: Detector | None = create_detector("dlib")
    except (AffectsynthError, ImportError) as e:
        print(f"dlib unavailable ({e}): dlib figures are 'na'")
        dlib = None
    try:
        # 1. Detection.
        put("detect_ms", median_ms(lambda: face_fitter.detector(astronaut), repeats=20, warmup=3))
        put("detect_ms_0010", median_ms(lambda: face_fitter.detector(photo), repeats=10) if have_shared else None)
        put("detect_ms_dlib", median_ms(lambda: dlib(astronaut), repeats=7) if dlib else None)
        put("detect_ms_dlib_0010",
            median_ms(lambda: dlib(photo), repeats=5, warmup=1) if dlib and have_shared else None)

        # 2. Our fit on precomputed landmarks.
        fitter = face_fitter.fitter
        mp_points = face_fitter(fit_image).landmarks.to(model.device)
        dlib_points = dlib(fit_image)[0].to(model.device) if dlib else None
        with torch.no_grad():
            fit_ms = put("fit_ms", median_ms(lambda: fitter(mp_points), repeats=30, warmup=3))
            batch = Landmarks.cat([mp_points] * BATCH)
            put(f"fit_ms_batch{BATCH}", median_ms(lambda: fitter(batch), repeats=10) / BATCH)
            fit_ms_ibug68 = put("fit_ms_ibug68", median_ms(lambda: fitter(dlib_points), repeats=30, warmup=3)
                                if dlib_points is not None and has_ibug68 else None)

        # 3. eos on the same dlib 68 points of image_0010.
        eos_fit = eos_fitter(dlib_points, photo.shape[:2]) if have_shared else None
        eos_ms = put("eos_fit_ms", median_ms(eos_fit, repeats=15) if eos_fit else None)
        put("eos_ratio", ratio(fit_ms, eos_ms))
        put("eos_ratio_ibug68", ratio(fit_ms_ibug68, eos_ms))

        # 4. Accuracy against the annotation of image_0010.
        truth = read_pts(IMAGE_0010.with_suffix(".pts")) if have_shared else None
        ours = landmarks_68(face_fitter, mp_points) if have_shared else None
        ours_ibug68 = landmarks_68(face_fitter, dlib_points) \
            if have_shared and dlib_points is not None and has_ibug68 else None
        eos_points = eos_fit() if eos_fit else None
        eos_ids = None if eos_points is None else np.flatnonzero(np.isfinite(eos_points[:, 0])).tolist()
        put("nme", nme(ours, truth) if ours is not None else None)
        put("dlib_nme", nme(dlib_points.xy[0].double().numpy(), truth)
            if have_shared and dlib_points is not None else None)
        put("nme_ibug68", nme(ours_ibug68, truth) if ours_ibug68 is not None else None)
        put("eos_nme", nme(eos_points, truth, eos_ids) if eos_ids else None)
        put("eos_nme_points", str(len(eos_ids)) if eos_ids else None)
        put("nme_ibug68_eos_points",
            nme(ours_ibug68, truth, eos_ids) if eos_ids and ours_ibug68 is not None else None)
    finally:
        face_fitter.close()
        if dlib:
            dlib.close()
    print(" ".join(f"{k}={_format(k, v)}" for k, v in fig.items()))


def _format(key: str, value: str | float | None) -> str:
    """A figure as text: "na" for None; 4 decimals for NMEs, 3 for ratios, 2 for ms."""
    if value is None:
        return "na"
    if isinstance(value, str):
        return value
    return f"{value:.{4 if 'nme' in key else 3 if 'ratio' in key else 2}f}"


def _astronaut_640() -> np.ndarray:
    """skimage's astronaut photo (512 x 512 RGB, bundled with scikit-image) resized to 640 x 640."""
    from skimage import data

    return cv2.resize(data.astronaut(), (640, 640), interpolation=cv2.INTER_CUBIC)


if __name__ == "__main__":
    main()
