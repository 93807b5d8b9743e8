"""Coordinate conventions and the camera model. Every module follows this note.

Convention
----------
Image
    x to the right, y down, in pixels of the *upright* input image (after EXIF
    rotation). Pixel (i, j) covers [j, j+1) x [i, i+1); its centre is (j + 0.5, i + 0.5).
    Sizes are (H, W). Colour images are RGB, uint8, shaped [H, W, 3].
Model space
    Right-handed, millimetres, +y up, the face looks along +z (toward the viewer), so
    +x points to the subject's *left* (which appears on the image's right in a frontal
    photo). Suffixes ``_L``/``_R`` always mean the subject's own left/right.
Camera (weak perspective, also called scaled orthographic)
    A fit stores a rotation ``R`` [B,3,3] (model -> camera axes), a scale ``s`` [B] in
    pixels per millimetre and a translation ``t`` [B,2] in pixels. A model point X maps to

        p = R @ X                       (camera axes: x right, y up, z toward the viewer)
        u = t_x + s * p_x               (image x, px)
        v = t_y - s * p_y               (image y, px; image y points down)
        depth = s * p_z                 (px, larger = closer to the camera; no offset)

    Weak perspective is exact enough for a face seen from more than ~10 face depths
    away, is what landmark detectors such as MediaPipe's output effectively assume, and
    keeps fitting linear in the shape coefficients for a fixed pose.
Angles
    (yaw, pitch, roll) in degrees with R = Rz(roll) @ Ry(yaw) @ Rx(pitch), in camera axes:
    yaw > 0 turns the nose toward the image's right, pitch > 0 turns the nose down
    (head bowed), roll > 0 turns the face counter-clockwise as seen in the image.
Batches
    Every tensor has a leading batch dimension B (faces). A single face is B = 1.
"""

from __future__ import annotations

import torch

__all__ = ["to_image_space", "euler_angles_deg", "rotation_from_euler_deg", "skew"]


def to_image_space(points: torch.Tensor, rotation: torch.Tensor, scale: torch.Tensor,
                   translation: torch.Tensor) -> torch.Tensor:
    """Model-space points to image space (u, v, depth) under the weak-perspective camera.

    Args:
        points: [B, N, 3] model-space points, mm.
        rotation: [B, 3, 3] model -> camera rotation.
        scale: [B] pixels per mm.
        translation: [B, 2] image position of the model origin, px.
    Returns:
        [B, N, 3]: u (px, right), v (px, down), depth (px, toward the camera).
    """
    # The scale and the flip of y folded into the rotation ([B, 3, 3], nine numbers): an op that
    # broadcasts [B, 1, 3] over [B, N, 3] runs a 3-long inner loop, ~5x a contiguous op's time.
    linear = rotation.transpose(1, 2) * (scale[:, None, None] * scale.new_tensor([1.0, -1.0, 1.0]))
    return torch.bmm(points, linear) + torch.nn.functional.pad(translation, (0, 1))[:, None]


def skew(w: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices: [..., 3] -> [..., 3, 3] with skew(a) @ b = a x b."""
    z = torch.zeros_like(w[..., 0])
    return torch.stack((
        torch.stack((z, -w[..., 2], w[..., 1]), -1),
        torch.stack((w[..., 2], z, -w[..., 0]), -1),
        torch.stack((-w[..., 1], w[..., 0], z), -1),
    ), -2)


def rotation_from_euler_deg(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [B, 3, 3] from angles [B] in degrees; inverse of :func:`euler_angles_deg`."""
    y, p, r = (torch.deg2rad(a) for a in (yaw, pitch, roll))
    one, zero = torch.ones_like(y), torch.zeros_like(y)
    rx = torch.stack((one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos()), -1).view(-1, 3, 3)
    ry = torch.stack((y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()), -1).view(-1, 3, 3)
    rz = torch.stack((r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one), -1).view(-1, 3, 3)
    return rz @ ry @ rx


def euler_angles_deg(rotation: torch.Tensor) -> torch.Tensor:
    """(yaw, pitch, roll) in degrees, [B, 3], from rotations [B, 3, 3] = Rz(roll) Ry(yaw) Rx(pitch).

    Signs as in the module's Convention note (yaw > 0: nose to the image's right;
    pitch > 0: nose down; roll > 0: counter-clockwise in the image).
    """
    r = rotation
    yaw = torch.asin((-r[:, 2, 0]).clamp(-1.0, 1.0))
    pitch = torch.atan2(r[:, 2, 1], r[:, 2, 2])
    roll = torch.atan2(r[:, 1, 0], r[:, 0, 0])
    return torch.rad2deg(torch.stack((yaw, pitch, roll), -1))
