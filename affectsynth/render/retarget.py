"""Render re-expressed faces into their photo: the photo's own texture, carried by the
fitted surface from where it is (source geometry) to where it goes (target geometry)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..deform import Deformation
from .composite import composite, feathered_mask
from .raster import rasterize, resolve_backend
from .shade import PhotoTextureShader, interpolate, visibility

__all__ = ["RetargetRender", "render_retargeted"]

#: Feather width as a fraction of the face's size (its outer-eye-corner distance is ~90 mm;
#: this is ~1.5 % of the face box), so the seam scales with the face.
FEATHER_FRACTION = 0.015


@dataclass(frozen=True)
class RetargetRender:
    """Output of :func:`render_retargeted`.

    Attributes:
        image: [1, C, H, W] the photo with every face replaced by its re-expressed render
            (pixels farther than the feather margin from every face, before and after, are
            the photo's own values).
        mask: [B, 1, H, W] each face's soft compositing mask.
        backend: the rasteriser used.
    """

    image: torch.Tensor
    mask: torch.Tensor
    backend: str


def render_retargeted(photo: torch.Tensor, deformation: Deformation, faces: torch.Tensor,
                      backend: str = "auto") -> RetargetRender:
    """Re-render B faces of one photo with their target geometry and composite them.

    Texture: each target pixel's surface point is looked up on the *source* mesh in the
    photo. A pixel whose source triangle is not fully visible in the photo (self-occlusion,
    e.g. the far cheek of a turned face) is left to the photo: a hidden texel is never
    smeared across the face.

    Args:
        photo: [1, C, H, W] float in [0, 1].
        deformation: B faces of this photo (:func:`affectsynth.deform.retarget`).
        faces: [F, 3] triangles.
        backend: rasteriser backend name or "auto".
    Returns:
        :class:`RetargetRender`.
    """
    height, width = photo.shape[-2:]
    backend = resolve_backend(backend, photo.device)
    src, dst = deformation.source_image, deformation.target_image
    b = src.shape[0]
    face_size = (src[..., :2].amax(1) - src[..., :2].amin(1)).amax(-1)                      # [B] px
    feather = [float(f) * FEATHER_FRACTION for f in face_size]
    # Work in the window that holds every face before and after, plus the feather: pixels
    # outside it cannot change, and the per-pixel work scales with the face, not the photo.
    both = torch.cat((src[..., :2], dst[..., :2]), 1).reshape(-1, 2)
    margin = 2 * max(feather) + 2
    x0, y0 = (int(max(0.0, float(c) - margin)) for c in both.amin(0))
    x1, y1 = (int(min(float(lim), float(c) + margin + 1)) for c, lim in zip(both.amax(0), (width, height)))
    if x1 <= x0 or y1 <= y0:  # every face is off the image
        return RetargetRender(image=photo, mask=photo.new_zeros(b, 1, height, width), backend=backend)
    shift = src.new_tensor([x0, y0, 0.0])
    src_w, dst_w = src - shift, dst - shift
    window = photo[..., y0:y1, x0:x1]
    size = (y1 - y0, x1 - x0)
    visible = visibility(rasterize(src_w, faces, size, backend), src_w, faces)             # [B, V]
    frags = rasterize(dst_w, faces, size, backend)
    shaded = PhotoTextureShader()(frags, dst_w, faces, window.expand(b, -1, -1, -1), src_w[..., :2])
    colour, covered = shaded[..., :-1], shaded[..., -1:]
    seen = interpolate(visible.to(photo.dtype)[..., None], frags, faces) > 1 - 1e-4        # [B, h, w, 1]
    coverage = (covered * seen).permute(0, 3, 1, 2)                                        # [B, 1, h, w]
    out = window
    masks = []
    for i in range(b):  # faces of one photo are composited in turn (B is the number of faces, small)
        mask = feathered_mask(coverage[i:i + 1], feather[i])
        out = composite(out, colour[i:i + 1].permute(0, 3, 1, 2), mask)
        masks.append(mask)
    image = photo.clone()
    image[..., y0:y1, x0:x1] = out
    full_mask = photo.new_zeros(b, 1, height, width)
    full_mask[..., y0:y1, x0:x1] = torch.cat(masks)
    return RetargetRender(image=image, mask=full_mask, backend=backend)
