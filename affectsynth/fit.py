"""Fit a linear 3DMM to 2D (and optionally depth) landmarks: pose, identity and expression.

Batched Gauss-Newton in torch over all parameters at once:

    E = sum_i w_i ||r_i / s||^2 / sigma^2          (data: landmark residuals in model mm)
        + ||id||^2                                 (identity prior, coefficients ~ N(0, 1))
        + lambda_exp ||exp||^2 + mu_exp sum(exp)   (expression prior: small and sparse)
    subject to 0 <= exp <= 1

r_i stacks the image residual (u, v) of landmark i and, when the detector gives depth, its
depth residual weighted by ``depth_weight``. w_i are iteratively re-weighted robust (Huber)
weights, so a few bad landmarks do not drag the fit, times a density factor that counts the
landmarks as at most ``independent_landmarks`` measurements (see :class:`FitConfig`). The
bounds on expression activations are kept with an active set: a coefficient at a bound whose
gradient pushes it outward is frozen for that iteration. The camera is weak perspective (see
:mod:`affectsynth.camera`); rotation updates are left-multiplied axis-angle steps.

Dividing residuals by the scale s makes the energy independent of the image resolution, so
one set of weights serves a 100-pixel face and a 4000-pixel one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from .camera import euler_angles_deg, skew, to_image_space
from .landmarks import Landmarks
from .model.face_model import FaceModel

__all__ = ["FitConfig", "FitResult", "Fitter", "LandmarkModel", "fit_landmarks", "fit_record", "EYE_CORNERS"]

#: Outer eye corners (subject's right, subject's left) per scheme: the NME normaliser.
EYE_CORNERS = {"mp478": (33, 263), "ibug68": (36, 45)}

#: MediaPipe's 10 iris points move with gaze, not with the face: never fitted.
_IRIS = slice(468, 478)


@dataclass(frozen=True)
class FitConfig:
    """Fitting options. Defaults suit MediaPipe landmarks on photos.

    Attributes:
        iterations: most Gauss-Newton iterations.
        tolerance: stop once no coefficient moves more than this in one iteration and the
            pose moves less than this many (radians, relative scale, px over s).
        sigma_mm: landmark noise, in model millimetres, that balances data against priors.
        independent_landmarks: the landmarks of a face count as at most this many
            independent measurements: each one's data weight is scaled by
            min(1, independent_landmarks / landmarks used). Neighbouring points are not
            independent: what a face's shape leaves unexplained (brow height, lip thickness)
            is smooth over a feature and moves them together. Counting MediaPipe's 468 points
            as independent made the data so confident that such person-specific shape
            outweighed the priors and was fitted as action units (AU1, AU4, AU23 at 0.3-0.6
            on neutral photos). At 30, MediaPipe's points weigh as if their noise were
            1.5 * sqrt(468 / 30) = 5.9 mm; iBUG's 68 as 2.3 mm.
        depth_weight: weight of a depth residual relative to an image residual (MediaPipe's
            depth is a network's guess, less precise than its x, y).
        huber_mm: residual (mm) beyond which a landmark's weight falls off as huber/|r|.
        exp_l2: lambda_exp, quadratic penalty on expression activations. Keep it > 0: it
            also damps the Newton step along nearly unconstrained directions (with 0, a fit
            of a closed mouth could jump to AU27 = 1 and stay there, its mouth landmarks
            then down-weighted as outliers).
        exp_l1: mu_exp, linear (sparsity) penalty on expression activations: an action unit
            stays exactly 0 until the evidence for it exceeds this, so a neutral face gets
            none and a neutral target re-renders it unchanged.
        fit_identity / fit_expression: switch parameter groups off (e.g. pose only).
        max_yaw_deg / max_pitch_deg: beyond these a fit is flagged unreliable.
        max_nme: mean landmark error over the outer-eye-corner distance beyond which a fit
            is flagged unreliable.
        min_inside: least fraction of landmarks inside the image for a reliable fit.
        min_landmarks: least number of usable landmarks for a reliable fit.
    """

    iterations: int = 15
    tolerance: float = 1e-3
    sigma_mm: float = 1.5
    independent_landmarks: float = 30.0
    depth_weight: float = 0.3
    huber_mm: float = 3.0
    exp_l2: float = 1.0
    exp_l1: float = 3.0
    fit_identity: bool = True
    fit_expression: bool = True
    max_yaw_deg: float = 60.0
    max_pitch_deg: float = 45.0
    max_nme: float = 0.06
    min_inside: float = 0.85
    min_landmarks: int = 30


@dataclass(frozen=True)
class FitResult:
    """A fitted face per batch element; camera as in :mod:`affectsynth.camera` (weak perspective).

    Attributes:
        rotation: [B, 3, 3] model -> camera rotation.
        scale: [B] pixels per millimetre.
        translation: [B, 2] image position of the model origin, px.
        depth_offset: [B] depth of the model origin, px, in the detector's depth frame.
        id_coeffs: [B, K] identity coefficients (prior N(0, 1)).
        exp_coeffs: [B, E] expression activations in [0, 1], named by ``exp_names``.
        exp_names: E names, the model's expression names.
        landmark_residual: [B, L, 2] detected minus fitted position of each landmark, px (NaN
            for landmarks not used): what the model's shapes could not follow, which
            :class:`affectsynth.deform.ResidualField` spreads over the mesh.
        error_px: [B] mean of :attr:`landmark_error` over used landmarks.
        nme: [B] ``error_px`` over the detected outer-eye-corner distance.
        reliable: [B] bool.
        reasons: per face, why it is unreliable (empty when reliable).
        scheme: landmark scheme that was fitted.
        image_size: [B, 2] (H, W).
        model_name: the model's name.
    """

    rotation: torch.Tensor
    scale: torch.Tensor
    translation: torch.Tensor
    depth_offset: torch.Tensor
    id_coeffs: torch.Tensor
    exp_coeffs: torch.Tensor
    exp_names: tuple[str, ...]
    landmark_residual: torch.Tensor
    error_px: torch.Tensor
    nme: torch.Tensor
    reliable: torch.Tensor
    reasons: tuple[tuple[str, ...], ...]
    scheme: str
    image_size: torch.Tensor
    model_name: str

    camera = "weak_perspective"

    @property
    def batch_size(self) -> int:
        return self.scale.shape[0]

    @property
    def landmark_error(self) -> torch.Tensor:
        """[B, L] distance in px between each fitted and detected landmark (NaN for landmarks not used)."""
        return self.landmark_residual.norm(dim=-1)

    @property
    def angles_deg(self) -> torch.Tensor:
        """[B, 3] (yaw, pitch, roll) in degrees; signs in :mod:`affectsynth.camera`."""
        return euler_angles_deg(self.rotation)

    def vertices(self, model: FaceModel) -> torch.Tensor:
        """Fitted model-space vertices [B, V, 3], mm."""
        return model(self.id_coeffs, self.exp_coeffs).vertices

    def image_points(self, points: torch.Tensor) -> torch.Tensor:
        """Model-space points [B, N, 3] to image space [B, N, 3] (u px, v px, depth px)."""
        return to_image_space(points, self.rotation, self.scale, self.translation)

    @staticmethod
    def cat(fits: Sequence[FitResult]) -> FitResult:
        """The faces of several fits by one model and scheme as one batch, in order."""
        first = fits[0]
        if any((f.exp_names, f.scheme, f.model_name) != (first.exp_names, first.scheme, first.model_name)
               for f in fits):
            raise ValueError("FitResult.cat needs fits by one model and landmark scheme")
        out = {}
        for f in fields(FitResult):
            values = [getattr(fit, f.name) for fit in fits]
            if isinstance(values[0], torch.Tensor):
                out[f.name] = torch.cat(values)
            else:
                out[f.name] = sum(values, ()) if f.name == "reasons" else values[0]
        return FitResult(**out)

    def __getitem__(self, index: int) -> FitResult:
        """The fit of one face, as a batch of one."""
        sl = slice(index, index + 1 if index != -1 else None)
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v[sl] if isinstance(v, torch.Tensor) or f.name == "reasons" else v
        return FitResult(**out)


@dataclass(frozen=True)
class LandmarkModel:
    """The model restricted to the landmarks it fits: what every Gauss-Newton step reads.

    Attributes:
        index: [U] positions, in the scheme's landmark order, of the landmarks used.
        mean: [U, 3] their mean-shape positions, mm.
        basis: [K + E, U, 3] identity then expression displacements at them.
        scheme: the landmark scheme.
    """

    index: torch.Tensor
    mean: torch.Tensor
    basis: torch.Tensor
    scheme: str

    @staticmethod
    def build(model: FaceModel, scheme: str, dtype: torch.dtype = torch.float64) -> LandmarkModel:
        lmap = model.landmark_map(scheme)
        used = lmap.valid.clone()
        if scheme == "mp478":
            used[_IRIS] = False
        index = used.nonzero()[:, 0]
        sub = type(lmap)(lmap.vertices[index], lmap.weights[index], lmap.valid[index])
        bases = torch.cat((model.id_basis, model.exp_basis)).to(dtype)
        return LandmarkModel(index=index, mean=sub.gather(model.mean[None].to(dtype))[0],
                             basis=sub.gather(bases), scheme=scheme)


def _initial_pose(points: torch.Tensor, target: torch.Tensor, weight: torch.Tensor):
    """Weak-perspective pose from an affine camera fit, per face.

    points: [B, L, 3] model points; target: [B, L, 2] px; weight: [B, L].
    Returns rotation [B,3,3], scale [B], translation [B,2].
    """
    b = points.shape[0]
    x = torch.cat((points, points.new_ones(b, points.shape[1], 1)), -1)          # [B, L, 4]
    xw = x * weight[..., None]
    affine = torch.linalg.solve(xw.transpose(1, 2) @ x + 1e-6 * torch.eye(4, dtype=x.dtype),
                                xw.transpose(1, 2) @ target)                   # [B, 4, 2]
    rows = torch.stack((affine[:, :3, 0], -affine[:, :3, 1]), 1)                # [B, 2, 3] ~ s R[:2]
    u, sv, vh = torch.linalg.svd(rows, full_matrices=False)
    r12 = u @ vh
    rotation = torch.cat((r12, torch.linalg.cross(r12[:, 0], r12[:, 1])[:, None]), 1)
    return rotation, sv.mean(-1), affine[:, 3, :]


def _axis_angle(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [B,3,3] from axis-angle vectors [B,3] (Rodrigues)."""
    theta = w.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    k = skew(w / theta)
    t = theta[..., None]
    eye = torch.eye(3, dtype=w.dtype, device=w.device)
    return eye + t.sin() * k + (1 - t.cos()) * (k @ k)


def _bounded_newton_step(hess: torch.Tensor, grad: torch.Tensor, free: torch.Tensor, exp: torch.Tensor,
                         exp_slice: slice, rounds: int = 4) -> torch.Tensor:
    """Minimise the local quadratic 0.5 d'Hd + g'd over the free parameters, keeping the
    expression activations ``exp`` [B, E] inside [0, 1] (primal active set, a few rounds).

    hess [B, P, P], grad [B, P], free [B, P] bool. Returns the step d [B, P]. Clamping an
    unconstrained Newton step instead makes Gauss-Newton cycle when activations couple.
    """
    b, n = grad.shape
    eye = torch.eye(n, dtype=grad.dtype, device=grad.device)
    # Start with the activations that sit on a bound and are pushed outward fixed there.
    fixed = ~free
    fixed[:, exp_slice] |= ((exp <= 0) & (grad[:, exp_slice] > 0)) | ((exp >= 1) & (grad[:, exp_slice] < 0))
    forced = torch.zeros_like(grad)  # prescribed steps of fixed parameters
    for _ in range(rounds):
        mask = (~fixed).to(grad.dtype)
        rhs = -(grad + (hess @ forced[..., None])[..., 0]) * mask
        h = hess * mask[:, :, None] * mask[:, None, :] + eye * (1 - mask)[:, None, :] + 1e-6 * eye
        delta = forced + torch.linalg.solve(h, rhs[..., None])[..., 0] * mask
        new = exp + delta[:, exp_slice]
        below, above = (new < 0) & ~fixed[:, exp_slice], (new > 1) & ~fixed[:, exp_slice]
        if not bool((below | above).any()):
            break
        # Pin the violators to the bound they crossed and solve again for the rest.
        fixed[:, exp_slice] |= below | above
        forced[:, exp_slice] = torch.where(below, -exp, torch.where(above, 1 - exp, forced[:, exp_slice]))
    return delta


def fit_landmarks(model: FaceModel, landmarks: Landmarks, config: FitConfig = FitConfig(),
                  dtype: torch.dtype = torch.float64, landmark_model: LandmarkModel | None = None) -> FitResult:
    """Fit ``model`` to a batch of detected faces.

    Args:
        model: a :class:`FaceModel` with a landmark map for ``landmarks.scheme``.
        landmarks: B faces (any images).
        config: :class:`FitConfig`.
        dtype: working precision (float64 keeps the normal equations well conditioned; the
            result tensors are returned in the model's dtype).
        landmark_model: ``LandmarkModel.build(model, landmarks.scheme, dtype)``, to reuse
            across calls (:class:`Fitter` does).
    Returns:
        :class:`FitResult` with batch size B.
    """
    device = model.device
    scheme = landmarks.scheme
    lm = landmark_model or LandmarkModel.build(model, scheme, dtype)
    if lm.scheme != scheme:
        raise ValueError(f"landmark model is for {lm.scheme}, landmarks are {scheme}")
    b, n_all = landmarks.xy.shape[:2]
    n_lm = lm.index.shape[0]
    k, e = model.num_identity, model.num_expressions
    m = k + e
    target_xy = landmarks.xy.to(device, dtype)[:, lm.index]
    finite = torch.isfinite(target_xy).all(-1)
    use_depth = landmarks.has_depth and config.depth_weight > 0
    target_d = landmarks.depth.to(device, dtype)[:, lm.index] if use_depth else None
    valid = finite.to(dtype)
    density = (config.independent_landmarks / valid.sum(1).clamp(min=1)).clamp(max=1.0)  # [B]
    target_xy = torch.where(finite[..., None], target_xy, torch.zeros_like(target_xy))

    rotation, scale, translation = _initial_pose(lm.mean.expand(b, -1, -1), target_xy, valid)
    if use_depth:
        depth_offset = ((target_d - scale[:, None] * (lm.mean @ rotation.transpose(1, 2))[..., 2]) * valid).sum(1) \
            / valid.sum(1).clamp(min=1)
    else:
        depth_offset = torch.zeros(b, dtype=dtype, device=device)
    coeffs = torch.zeros(b, m, dtype=dtype, device=device)

    n_pose = 7  # rotation (3), scale (1), translation (2), depth offset (1)
    n_par = n_pose + m
    free = torch.ones(b, n_par, dtype=torch.bool, device=device)
    if not config.fit_identity:
        free[:, n_pose:n_pose + k] = False
    if not config.fit_expression:
        free[:, n_pose + k:] = False
    if not use_depth:
        free[:, 6] = False
    # Prior: quadratic weights per parameter (pose unregularised) and a linear term (L1 on exp).
    prior_w = torch.zeros(n_par, dtype=dtype, device=device)
    prior_w[n_pose:n_pose + k] = 1.0
    prior_w[n_pose + k:] = config.exp_l2
    prior_lin = torch.zeros(n_par, dtype=dtype, device=device)
    prior_lin[n_pose + k:] = config.exp_l1
    rows = 3 if use_depth else 2
    row_w = torch.tensor([1.0, 1.0, config.depth_weight][:rows], dtype=dtype, device=device)
    flip = torch.tensor([1.0, -1.0, 1.0][:rows], dtype=dtype, device=device)  # image v = -camera y
    target = target_xy if not use_depth else torch.cat((target_xy, target_d[..., None]), -1)
    # d(pred)/d(translation, depth offset): identity on the rows that exist.
    unit_t = torch.eye(3, dtype=dtype, device=device)[:rows].expand(b, n_lm, rows, 3)

    for _ in range(config.iterations):
        shape = lm.mean + torch.einsum("bm,mlc->blc", coeffs, lm.basis)          # [B, L, 3]
        p = shape @ rotation.transpose(1, 2)                                     # camera axes
        s = scale[:, None, None]
        pred = torch.cat((translation[:, None, :], depth_offset[:, None, None]), -1)[..., :rows] \
            + s * p[..., :rows] * flip
        resid_mm = (pred - target) / s                                           # [B, L, rows]
        # Robust weights from the image-plane residual, per landmark.
        err = resid_mm[..., :2].norm(dim=-1)
        robust = torch.where(err > config.huber_mm, config.huber_mm / err.clamp(min=1e-9), torch.ones_like(err))
        w = (valid * robust * density[:, None])[..., None] * row_w / config.sigma_mm ** 2  # [B, L, rows]

        # Jacobian of resid_mm, [B, L, rows, n_par]: d(pred)/d(param) / s.
        j_rot = -(skew(p)[..., :rows, :]) * flip[:, None]                        # dp = w x p
        j_scale = (p[..., :rows] * flip / s)[..., None]
        j_t = unit_t / s[..., None]
        j_coef = torch.einsum("bij,mlj->blim", rotation[:, :rows], lm.basis) * flip[:, None]
        jac = torch.cat((j_rot, j_scale, j_t, j_coef), -1).reshape(b, n_lm * rows, n_par)
        r = resid_mm.reshape(b, -1)
        wf = w.reshape(b, -1)
        x_par = torch.cat((torch.zeros(b, n_pose, dtype=dtype, device=device), coeffs), -1)

        jtw = jac.transpose(1, 2) * wf[:, None]
        hess = jtw @ jac + torch.diag_embed(prior_w.expand(b, -1))
        grad = (jtw @ r[..., None])[..., 0] + prior_w * x_par + prior_lin
        delta = _bounded_newton_step(hess, grad, free, coeffs[:, k:], slice(n_pose + k, n_par))

        rotation = _axis_angle(delta[:, :3]) @ rotation
        scale = scale + delta[:, 3]
        translation = translation + delta[:, 4:6]
        depth_offset = depth_offset + delta[:, 6]
        coeffs = coeffs + delta[:, n_pose:]
        coeffs[:, k:] = coeffs[:, k:].clamp(0.0, 1.0)
        moved = torch.cat((delta[:, :3], delta[:, 3:4] / scale[:, None], delta[:, 4:7] / scale[:, None],
                           delta[:, n_pose:]), 1)
        if float(moved.abs().max()) < config.tolerance:
            break

    out_dtype = model.dtype
    shape = lm.mean + torch.einsum("bm,mlc->blc", coeffs, lm.basis)
    pred_xy = to_image_space(shape, rotation, scale, translation)[..., :2]
    used_residual = torch.where(finite[..., None], target_xy - pred_xy, float("nan"))      # [B, U, 2]
    residual = torch.full((b, n_all, 2), float("nan"), dtype=dtype, device=device)
    residual[:, lm.index] = used_residual
    error_px = used_residual.norm(dim=-1).nanmean(-1)
    a, c = EYE_CORNERS[scheme]
    eyes = landmarks.xy.to(device, dtype)
    iod = (eyes[:, a] - eyes[:, c]).norm(dim=-1).clamp(min=1e-6)
    nme = error_px / iod
    angles = euler_angles_deg(rotation)
    used = torch.zeros(b, n_all, dtype=torch.bool, device=device)
    used[:, lm.index] = finite
    reasons = _reliability(config, landmarks, used, nme, angles)
    return FitResult(
        rotation=rotation.to(out_dtype), scale=scale.to(out_dtype), translation=translation.to(out_dtype),
        depth_offset=depth_offset.to(out_dtype), id_coeffs=coeffs[:, :k].to(out_dtype),
        exp_coeffs=coeffs[:, k:].to(out_dtype), exp_names=model.exp_names,
        landmark_residual=residual.to(out_dtype), error_px=error_px.to(out_dtype), nme=nme.to(out_dtype),
        reliable=torch.tensor([not r for r in reasons], dtype=torch.bool, device=device),
        reasons=reasons, scheme=scheme, image_size=landmarks.image_size.to(device), model_name=model.name)


def _reliability(config: FitConfig, landmarks: Landmarks, used: torch.Tensor, nme: torch.Tensor,
                 angles: torch.Tensor) -> tuple[tuple[str, ...], ...]:
    """Why each fit is unreliable: extreme pose, too few (visible) landmarks, large error."""
    xy = landmarks.xy.to(used.device)
    hw = landmarks.image_size.to(used.device).to(xy.dtype)
    inside = ((xy >= 0) & (xy <= hw.flip(-1)[:, None])).all(-1) & used
    frac_inside = inside.sum(-1) / used.sum(-1).clamp(min=1)
    out = []
    for i in range(landmarks.batch_size):
        why = []
        yaw, pitch, _ = angles[i].tolist()
        if abs(yaw) > config.max_yaw_deg:
            why.append(f"extreme yaw {yaw:.0f} deg (limit {config.max_yaw_deg:.0f})")
        if abs(pitch) > config.max_pitch_deg:
            why.append(f"extreme pitch {pitch:.0f} deg (limit {config.max_pitch_deg:.0f})")
        if int(used[i].sum()) < config.min_landmarks:
            why.append(f"too few landmarks ({int(used[i].sum())} < {config.min_landmarks})")
        if float(frac_inside[i]) < config.min_inside:
            why.append(f"face partly outside the image ({float(frac_inside[i]):.0%} of landmarks inside)")
        if not float(nme[i]) <= config.max_nme:
            why.append(f"landmark error {float(nme[i]):.3f} of the eye distance (limit {config.max_nme})")
        out.append(tuple(why))
    return tuple(out)


class Fitter:
    """Fits a model to landmarks; holds the model and config (a thin wrapper of :func:`fit_landmarks`)."""

    def __init__(self, model: FaceModel, config: FitConfig = FitConfig(), dtype: torch.dtype = torch.float64):
        self.model = model
        self.config = config
        self.dtype = dtype
        self._landmark_models: dict[str, LandmarkModel] = {}

    def __call__(self, landmarks: Landmarks) -> FitResult:
        scheme = landmarks.scheme
        if scheme not in self._landmark_models:
            self._landmark_models[scheme] = LandmarkModel.build(self.model, scheme, self.dtype)
        return fit_landmarks(self.model, landmarks, self.config, self.dtype, self._landmark_models[scheme])


def fit_record(fit: FitResult, index: int, model: FaceModel) -> dict:
    """A JSON-ready description of face ``index`` of a fit: pose, coefficients, errors and,
    when the model has an iBUG-68 map, the fitted model's 68 landmarks in image pixels (None for
    the points the map has none for)."""
    yaw, pitch, roll = fit.angles_deg[index].tolist()
    record = {
        "model": fit.model_name,
        "scheme": fit.scheme,
        "camera": {
            "type": fit.camera,
            "rotation": fit.rotation[index].tolist(),
            "scale_px_per_mm": float(fit.scale[index]),
            "translation_px": fit.translation[index].tolist(),
        },
        "pose_deg": {"yaw": yaw, "pitch": pitch, "roll": roll},
        "identity": fit.id_coeffs[index].tolist(),
        "expression": dict(zip(fit.exp_names, fit.exp_coeffs[index].tolist())),
        "error": {
            "mean_px": float(fit.error_px[index]),
            "nme": float(fit.nme[index]),
            "per_landmark_px": [None if v != v else v for v in fit.landmark_error[index].tolist()],
        },
        "reliable": bool(fit.reliable[index]),
        "unreliable_reasons": list(fit.reasons[index]),
    }
    if "ibug68" in model.landmark_maps:
        with torch.no_grad():
            one = fit[index]
            pts = one.image_points(model.landmarks(one.vertices(model), "ibug68"))[0, :, :2]
        valid = model.landmark_map("ibug68").valid.tolist()
        record["landmarks_68"] = [point if ok else None for point, ok in zip(pts.tolist(), valid)]
    return record
