"""The typed result of face detection, shared by detectors and the fitter.

Conventions: see :mod:`affectsynth.camera` (image x right, y down, pixels).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

__all__ = ["Landmarks", "SCHEMES"]

#: Landmark schemes and their point counts. "mp478": MediaPipe face mesh (468 mesh points
#: followed by 10 iris points); "ibug68": the iBUG 300-W 68-point markup (dlib's order).
SCHEMES = {"mp478": 478, "ibug68": 68}


@dataclass(frozen=True)
class Landmarks:
    """Landmarks of B faces, largest face first.

    Attributes:
        xy: [B, N, 2] float32 pixel coordinates in the upright input image.
        depth: [B, N] float32 relative depth in pixels, larger = closer to the camera,
            with an arbitrary per-face offset; NaN where the detector gives no depth
            (e.g. dlib).
        box: [B, 4] float32 face box (x0, y0, x1, y1) in pixels.
        score: [B] float32 detection confidence in [0, 1].
        image_size: [B, 2] int64 (H, W) of the image each face was found in.
        scheme: the landmark scheme, a key of :data:`SCHEMES`.
    """

    xy: torch.Tensor
    depth: torch.Tensor
    box: torch.Tensor
    score: torch.Tensor
    image_size: torch.Tensor
    scheme: str

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown landmark scheme {self.scheme!r}; known: {sorted(SCHEMES)}")
        b, n = self.xy.shape[:2]
        if n != SCHEMES[self.scheme] or self.xy.shape[2:] != (2,):
            raise ValueError(f"xy must be [B, {SCHEMES[self.scheme]}, 2] for {self.scheme}, got {tuple(self.xy.shape)}")
        for name, shape in (("depth", (b, n)), ("box", (b, 4)), ("score", (b,)), ("image_size", (b, 2))):
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name} must be {list(shape)}, got {list(getattr(self, name).shape)}")

    @property
    def batch_size(self) -> int:
        return self.xy.shape[0]

    @property
    def has_depth(self) -> bool:
        return bool(torch.isfinite(self.depth).all()) and self.batch_size > 0

    def __getitem__(self, index) -> Landmarks:
        """Select faces with an int, slice, list or boolean mask; keeps the batch dimension."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return replace(self, xy=self.xy[index], depth=self.depth[index], box=self.box[index],
                       score=self.score[index], image_size=self.image_size[index])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Landmarks:
        """Move to a device; ``dtype`` applies to the floating-point fields."""
        def f(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        return replace(self, xy=f(self.xy), depth=f(self.depth), box=f(self.box), score=f(self.score),
                       image_size=self.image_size.to(device))

    @staticmethod
    def cat(items: list[Landmarks]) -> Landmarks:
        """Concatenate faces (from one or several images) along the batch dimension."""
        if not items:
            raise ValueError("nothing to concatenate")
        schemes = {i.scheme for i in items}
        if len(schemes) != 1:
            raise ValueError(f"cannot mix landmark schemes {sorted(schemes)}")
        return Landmarks(
            xy=torch.cat([i.xy for i in items]), depth=torch.cat([i.depth for i in items]),
            box=torch.cat([i.box for i in items]), score=torch.cat([i.score for i in items]),
            image_size=torch.cat([i.image_size for i in items]), scheme=items[0].scheme)
