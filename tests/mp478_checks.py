"""Checks of an imported model's registered MediaPipe map (affectsynth.model.importers.mp478),
shared by the ICT and SFM import tests."""

from __future__ import annotations

import torch

from affectsynth.model import FaceModel
from affectsynth.model.default import NUM_MEDIAPIPE_VERTICES
from affectsynth.model.importers.mp478 import AREA_REGIONS, LOOP_REGIONS

#: MediaPipe point -> iBUG point at the same anatomical spot: outer and inner eye corners,
#: mouth corners, nose tip (MediaPipe 4 is the pronasale; 1 lies below it), chin, upper and
#: lower lip midline (outer edge).
ANATOMICAL_PAIRS = {33: 36, 263: 45, 133: 39, 362: 42, 61: 48, 291: 54, 4: 30, 152: 8, 0: 51, 17: 57}
#: How much farther apart such a pair may be on the imported model than on the default one
#: (mm). The warp takes the iBUG points exactly onto the imported ones, so a registered point
#: moves away from its iBUG partner only by the projection onto the surface (measured: at most
#: 0.3 mm farther, ICT and SFM); a mirrored or misaligned map is tens of mm off.
PAIR_SLACK_MM = 1.5
#: Bounds on the recorded residuals (mm). Measured on ICT / SFM: the default face's iBUG points
#: after the similarity 4.6 / 3.6 mean (12.3 / 7.9 max: the jaw line), projection to the surface
#: 1.03 / 1.04 mean, 4.2 / 5.8 max (ICT: the cheeks and chin, between iBUG points; SFM: the
#: face oval, where its jaw contour is unmapped). A wrong frame or unit is tens of mm off.
SIMILARITY_MEAN_MAX_MM = 6.0
PROJECTION_MEAN_MAX_MM, PROJECTION_MAX_MM = 1.5, 7.0


def check_registered_mp478(model: FaceModel, default_model: FaceModel, surface_vertices: torch.Tensor,
                           with_iris: bool) -> torch.Tensor:
    """Assert what every registered map must satisfy; return its 478 points on the mean [478, 3].

    ``surface_vertices``: the vertex ids the 468 points may lie on (the face skin).
    """
    mp = model.landmark_map("mp478")
    assert mp.vertices.shape == (478, 3) and mp.weights.shape == (478, 3)
    assert mp.valid[:NUM_MEDIAPIPE_VERTICES].all() and mp.valid[NUM_MEDIAPIPE_VERTICES:].tolist() == [with_iris] * 10
    assert (mp.weights >= 0).all() and torch.allclose(mp.weights.sum(1), torch.ones(478))
    assert torch.isin(mp.vertices[:NUM_MEDIAPIPE_VERTICES], surface_vertices).all()

    meta = model.meta["landmarks_mp478"]
    assert meta["ibug68_after_similarity_mm"]["mean"] < SIMILARITY_MEAN_MAX_MM
    assert meta["projection_to_surface_mm"]["mean"] < PROJECTION_MEAN_MAX_MM
    assert meta["projection_to_surface_mm"]["max"] < PROJECTION_MAX_MM
    assert meta["warp_min_normal_cosine"] > 0  # the warp folds no triangle of the default face

    def pair_distances(m: FaceModel) -> dict[int, float]:
        mean = m.mean[None].double()
        points, ibug = m.landmarks(mean, "mp478")[0], m.landmarks(mean, "ibug68")[0]
        valid = m.landmark_map("ibug68").valid
        return {a: float((points[a] - ibug[b]).norm()) for a, b in ANATOMICAL_PAIRS.items() if valid[b]}

    reference = pair_distances(default_model)
    for point, distance in pair_distances(model).items():
        assert distance < reference[point] + PAIR_SLACK_MM, (point, distance, reference[point])

    assert set(LOOP_REGIONS + AREA_REGIONS) <= set(model.regions)
    points = model.landmarks(model.mean[None].double(), "mp478")[0]
    lips = model.mean[model.regions["lips"]].double()
    corners = points[[61, 291]]
    assert len(lips) > 50 and (lips[:, 0].min() > corners[0, 0] - 3) and (lips[:, 0].max() < corners[1, 0] + 3)
    assert lips[:, 1].max() < points[2, 1] and lips[:, 1].min() > points[152, 1]  # below the nose, above the chin
    for side, sign in (("L", 1), ("R", -1)):
        loop = model.regions["eye_" + side]
        assert len(loop) >= 12 and len(loop.unique()) == len(loop)
        assert sign * model.mean[loop, 0].min() > 10  # on the subject's own side
    return points
