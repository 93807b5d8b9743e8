"""Render re-expressed faces into their photo: the photo's own texture, carried by the
fitted surface from where it is (source geometry) to where it goes (target geometry), and
the model's interior parts (mouth socket, teeth, tongue) where the target opens the face."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..affect.targets import model_coeffs_to_au
from ..deform import Deformation
from ..model.face_model import MATERIALS, FaceModel, mouth_opening
from . import kernels
from .composite import composite, dilate, feathered_mask
from .creases import CreaseLines, crease_lines, crease_shading
from .eyes import (COLLARETTE_GAIN, EDGE_SOFTNESS, LIMBAL_DARKENING, LIMBAL_FROM, LUMA, PUPIL_FRACTION, EyeAppearance,
                   eyeball_layers, luma, nearest_eye)
from .materials import (AMBIENT, APERTURE_FULL_MM, GUMS_OF_LIP, MOUTH_BOUNCE, MOUTH_LAMBERT, MOUTH_MATERIAL_IDS,
                        OCCLUSION_DEPTH_MM, OCCLUSION_FLOOR, PHOTO_GAMMA, RATIO_RANGE, SOCKET_OF_LIP, TONGUE_OF_LIP,
                        TOOTH_LUMA_OF_LIP, TOOTH_SATURATION_OF_LIP, MouthAppearance, estimate_mouth_appearance, key_light,
                        looks_like_teeth, shade_mouth, shading_ratio, vertex_normals)
from .grain import Grain, add_grain, estimate_grain
from .raster import Fragments, rasterize, resolve_backend
from .shade import gather_rows, interpolate, sample_image, surface_depth_at

__all__ = ["ModelParts", "model_parts", "rasterize_target", "RetargetRender", "render_retargeted", "stacked_rows"]

#: Feather width as a fraction of the face's size (its outer-eye-corner distance is ~90 mm;
#: this is ~1.5 % of the face box), so the seam scales with the face.
FEATHER_FRACTION = 0.015
#: A surface point counts as shown by the photo when the surface the photo shows at its
#: source position is no more than this many px of depth in front of it.
SEEN_DEPTH_TOLERANCE_PX = 1.0
#: The mouth interior takes the photo's pixel only where the photo shows it and it has not
#: moved farther than this (px; the upper teeth, a mouth kept as open as in the photo). A moved
#: interior point is shaded instead: the fitted mouth opening matches the photo's only to a
#: pixel or two, so a moved point's photo pixel is often the lips or a tooth edge, and a jaw
#: opening stretches a few rows of them into stripes.
INTERIOR_PHOTO_MAX_MOVE_PX = 1.0
#: ... and where the photo's opening around it is wide (no skin within this many px of its
#: source position: INTERIOR_PHOTO_CLEARANCE_MM at the face's scale, at least _PX) or the
#: target's is as narrow (skin as near). A closed mouth still has a slit in the fitted model (its
#: rest lips are 0.7 mm apart), whose photo pixels are the line where the lips meet: right in a
#: slit, a stripe across a parted mouth. A pixel or so in a face crop, the slit is 7 px wide in a
#: 2835 px photo (10.6 px/mm): at 2 px there, its middle drew a red line across bared teeth.
INTERIOR_PHOTO_CLEARANCE_PX, INTERIOR_PHOTO_CLEARANCE_MM = 2, 0.5
#: An eyeball point keeps the photo's pixel unless the photo shows a lid (skin) within this band
#: (mm at the photo's scale, and at least EYE_PHOTO_MIN_BAND_PX) of its source position and the
#: target's lid is farther from it: that band is the shadow of the photo's lid and lashes on the
#: eye (and, where the fitted lid margin is a pixel or so off, lid skin). A raised lid (AU5)
#: takes its shadow along, so the band is painted as the rest of the uncovered eyeball: kept, it
#: cut the top of the iris flat and left a dark line across it under a painted white crescent.
#: The band goes with the lid instead (:func:`_lid_band`): painted, the raised lid had no lashes.
EYE_LID_BAND_MM = 0.8
EYE_PHOTO_MIN_BAND_PX = 2
#: A painted eyeball pixel (the uncovered sclera and iris of a widened eye) is darkened by the
#: shadow of the upper lid and its lashes: by LID_SHADOW right under the lid, falling off e-fold
#: every LID_SHADOW_MM below it; and it is lit as EYEBALL_AMBIENT + (1 - EYEBALL_AMBIENT) cos, cos
#: the cosine between its normal and the view, so that the globe darkens toward the canthi (both
#: designs, as a portrait's light from above and the front shades an open eye). Painted evenly,
#: the band a raised lid uncovers read as a flat white crescent. Below the photo's lid band, where
#: it went with the lid, there is no such shadow: the band is the photo's own, and the photo's
#: sclera below it is lit. Shadowed again there, the paint on faces_140_y_f's raised lids (2835
#: px) was a grey crescent at 0.6 of the sclera beside it, edged against it.
LID_SHADOW, LID_SHADOW_MM = 0.5, 1.5
#: Uncovered sclera takes the colour of the photo's sclera below it in its column (within
#: SCLERA_BELOW_MM, and where that pixel is at least SCLERA_BELOW_MIN_LUMA as light as the eye's
#: sclera colour, not the iris or a lid): the light on a sclera varies across it, and one colour
#: for the eye, the median of its lightest quarter, left the painted crescent lighter than the
#: photo's sclera beside it on one of faces_140_y_f's eyes and darker on the other.
SCLERA_BELOW_MM, SCLERA_BELOW_MIN_LUMA, SCLERA_BELOW_AVERAGE_MM = 2.0, 0.35, 0.3
EYEBALL_AMBIENT = 0.6
#: Unshown gaps up to about 2 r + 1 px wide are filled before feathering, r = SPECK_MM at the face's
#: scale and at least SPECK_PX. In px alone, the gap where the lips meet at an open smile's corner
#: (about 1 mm) went unfilled in a 2835 px photo (10 px wide at 10.6 px/mm), and the feathered mask
#: around it let the photo's closed corner show through a 60 px square across the mouth's end.
SPECK_PX, SPECK_MM = 2, 0.75
#: Eyeballs are drawn this far behind where they are, for both depth tests (the photo's and
#: the target's): the lids rest on the globe, and without it the globe won through thin or
#: barely-fitting lids on 15 % of the dev photos. Far less than a lid's thickness.
EYEBALL_DEPTH_BIAS_MM = 1.0
#: The mouth interior's own vertices are drawn this far behind where they are in the target's
#: depth test: a wide-open jaw swings the socket's floor down through the chin's skin, which
#: drew dark dashes below the lower lip (jaw wide open: up to 4.5 mm on the dev photos, 6.8 mm on
#: 100 identities of the default model drawn from its prior at pitches -20, 0 and 20 deg;
#: identities at 1.5 sigma in every mode reach 30 mm, beyond any bias). Seen through the
#: opening nothing lies behind the interior, so only such poke-through changes; a bias much
#: larger would tilt the socket's triangles at the lips' rim (not pushed) in front of the teeth.
MOUTH_INTERIOR_DEPTH_BIAS_MM = 8.0
#: Where the shaded mouth interior meets the lips or another of its materials, each drawn pixel on
#: that edge takes the mean of its 3 x 3 neighbourhood weighted [1 2 1] x [1 2 1] / 16
#: (:func:`_smoothed_mouth_edges`): the shaded edges were a pixel's hard steps (the crowns' scalloped
#: edges and the lips' rim drew stair-steps across a face crop's teeth), where a photo's are softened
#: by its lens and sensor.
MOUTH_EDGE_TAPS = (0.25, 0.5, 0.25)
_SKIN = MATERIALS.index("skin")
_EYEBALL = MATERIALS.index("eyeball")
_TEETH = MATERIALS.index("teeth")


@dataclass(frozen=True)
class RetargetRender:
    """Output of :func:`render_retargeted`: the render inside a box of the photo, which is its
    own everywhere else.

    Attributes:
        photo: [P, C, H, W] the photo the B faces are rendered into (P = 1), or each face's own
            (P = B).
        box: (y0, y1, x0, x1), the rows [y0, y1) and columns [x0, x1) that hold every face,
            before and after, with its feather (empty where every face is off the image).
        window: [P, C, y1 - y0, x1 - x0] the composited pixels of the box.
        window_mask: [B, 1, y1 - y0, x1 - x0] each face's soft compositing mask in the box.
        backend: the rasteriser used.
    """

    photo: torch.Tensor
    box: tuple[int, int, int, int]
    window: torch.Tensor
    window_mask: torch.Tensor
    backend: str

    @property
    def image(self) -> torch.Tensor:
        """[P, C, H, W] the photo(s) with every face replaced by its re-expressed render (a new
        tensor; pixels farther than the feather margin from every face, before and after, are
        the photo's own values)."""
        y0, y1, x0, x1 = self.box
        image = self.photo.clone()
        image[..., y0:y1, x0:x1] = self.window
        return image

    @property
    def mask(self) -> torch.Tensor:
        """[B, 1, H, W] each face's soft compositing mask (a new tensor)."""
        y0, y1, x0, x1 = self.box
        mask = self.photo.new_zeros(self.window_mask.shape[0], 1, *self.photo.shape[-2:])
        mask[..., y0:y1, x0:x1] = self.window_mask
        return mask


@dataclass(frozen=True)
class ModelParts:
    """What rendering needs of a face model besides its vertices, derived once per model
    (:func:`model_parts`) and shared by all its renders.

    Attributes:
        triangles: [F, 3] int64, the model's triangles.
        triangle_material: [F] int64 index into :data:`~affectsynth.model.face_model.MATERIALS`.
        skin_triangle: [F] bool, the skin's triangles (``triangle_material`` is the skin's).
        skin_triangles: [S, 3] int64, the skin's triangles (all the photo's depth test needs).
        interior_only: [V] bool, the vertices of mouth-interior triangles that no skin triangle uses
            (not the rim the socket shares with the lips: pushing that back would move the lips'
            inner edge).
        eyeballs: [V] bool, the vertices of both eyeballs, or None (a model without them).
        lip_rim: [R] int64 vertex ids of the lips' inner edge (the mouth opening), or of the lips
            when the model does not name it.
        lip_midline: the model's :attr:`~affectsynth.model.FaceModel.lip_midline`.
        creases: the model's :func:`~affectsynth.render.creases.crease_lines`, or None.
    """

    triangles: torch.Tensor
    triangle_material: torch.Tensor
    skin_triangle: torch.Tensor
    skin_triangles: torch.Tensor
    interior_only: torch.Tensor
    eyeballs: torch.Tensor | None
    lip_rim: torch.Tensor
    lip_midline: torch.Tensor | None
    creases: CreaseLines | None


def model_parts(model: FaceModel) -> ModelParts:
    """:class:`ModelParts` of ``model``, on its device."""
    material, triangles, regions = model.triangle_materials(), model.triangles, model.regions
    device = triangles.device
    skin = material == _SKIN
    used = torch.zeros(2, model.mean.shape[0], dtype=torch.bool, device=device)            # by skin, by interior
    used[0, triangles[skin].reshape(-1)] = True
    used[1, triangles[~skin & (material != _EYEBALL)].reshape(-1)] = True
    eyeball = regions.get("eyeball_L"), regions.get("eyeball_R")
    rim = (torch.cat((regions["lip_inner_upper"], regions["lip_inner_lower"]))
           if "lip_inner_upper" in regions and "lip_inner_lower" in regions else regions["lips"])
    midline = model.lip_midline
    return ModelParts(triangles=triangles, triangle_material=material, skin_triangle=skin, skin_triangles=triangles[skin],
                      interior_only=used[1] & ~used[0],
                      eyeballs=None if eyeball[0] is None or eyeball[1] is None else _vertex_mask(
                          torch.cat(eyeball), model.mean.shape[0]).to(device),
                      lip_rim=rim.to(device), lip_midline=None if midline is None else midline.to(device),
                      creases=crease_lines(model))


def _vertex_mask(ids: torch.Tensor, count: int) -> torch.Tensor:
    """[count] bool, True at the vertex ``ids``."""
    mask = torch.zeros(count, dtype=torch.bool, device=ids.device)
    mask[ids] = True
    return mask


def _extents(src: torch.Tensor, dst: torch.Tensor) -> tuple[list[float], tuple[float, float, float, float]]:
    """(each face's size: the larger side of its box before, px; the lowest and highest x and y of
    every face before and after) of B faces' image points [B, V, 3] ``src`` and ``dst``, read into
    Python at once (each number read on its own costs microseconds; on the CPU without autograd,
    :func:`.kernels.extents`, the same values)."""
    if kernels.use_kernels(src, dst):
        return kernels.extents(src, dst)
    low, high = torch.stack((src[..., :2], dst[..., :2])).aminmax(dim=2)                   # [2, B, 2] each
    *face_size, lo_x, lo_y, hi_x, hi_y = torch.cat(((high[0] - low[0]).amax(-1), low.amin((0, 1)),
                                                    high.amax((0, 1)))).tolist()
    return face_size, (lo_x, lo_y, hi_x, hi_y)


def _moved(image_points: torch.Tensor, px_per_mm: torch.Tensor, vertices: torch.Tensor | None, mm: float,
           origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """A copy of ``image_points`` [B, V, 3] in the frame whose top-left corner is the pixel
    ``origin`` (x, y) of theirs, with ``vertices`` ([V] bool; None: none) moved ``mm`` away from the
    camera (B faces at ``px_per_mm`` [B]): every depth less the push times 1 or 0, the same values as
    pushing the selected ones alone, without searching the mask. On the CPU without autograd in
    one pass (:func:`.kernels.moved`, the same bits)."""
    amount = mm * px_per_mm
    if amount.dtype == image_points.dtype and kernels.use_kernels(image_points, amount):
        return kernels.moved(image_points, origin, amount, vertices)
    moved = image_points - image_points.new_tensor([*origin, 0.0])
    if vertices is not None:
        moved[..., 2] -= amount[:, None] * vertices.to(image_points.dtype)
    return moved


def rasterize_target(target_image: torch.Tensor, parts: ModelParts, px_per_mm: torch.Tensor,
                     size: tuple[int, int], backend: str = "auto") -> Fragments:
    """The target faces' fragments: every triangle of the model, with the mouth interior's own
    vertices drawn :data:`MOUTH_INTERIOR_DEPTH_BIAS_MM` behind where they are, so that skin
    always hides the interior it lies in front of (the bias is for this depth test only:
    barycentrics, and everything interpolated with them, are those of the true surface).

    Args:
        target_image: [B, V, 3] image-space vertices (u, v, depth px) of B faces.
        parts: their face model's :class:`ModelParts`.
        px_per_mm: [B] the faces' image scale.
        size: (H, W).
        backend: rasteriser backend name or "auto".
    Returns:
        :class:`~affectsynth.render.raster.Fragments` [B, H, W].
    """
    pushed = _moved(target_image, px_per_mm, parts.interior_only, MOUTH_INTERIOR_DEPTH_BIAS_MM)
    return rasterize(pushed, parts.triangles, size, backend)


def stacked_rows(parts: Sequence[EyeAppearance | MouthAppearance | Grain]) -> EyeAppearance | MouthAppearance | Grain:
    """Appearances of one class (dataclasses of [B_i, ...] tensors) as one of their faces in turn,
    e.g. the faces of a batch of photos for :func:`render_retargeted`."""
    return type(parts[0])(**{f.name: torch.cat([getattr(part, f.name) for part in parts])
                             for f in dataclasses.fields(parts[0])})


def _rows(appearance: EyeAppearance | MouthAppearance, face: torch.Tensor) -> EyeAppearance | MouthAppearance:
    """An appearance of B faces (a dataclass of [B, ...] tensors) as one of N: row ``face[n]``
    [N] (int64) as row n."""
    return type(appearance)(**{f.name: getattr(appearance, f.name)[face] for f in dataclasses.fields(appearance)})


@dataclass(frozen=True)
class DrawnPixels:
    """The pixels a target face covers, as a [B, 1, N] image of them (N the most any face has;
    a face with fewer is padded), with what the later steps ask of each.

    Attributes:
        pixels: [B, N] int64 flat indices (row * W + col) in raster order; padding H * W.
        frags: their fragments, [B, 1, N] (padding's is empty).
        material: [B, 1, N] int64 their triangles' material (padding's: the skin's).
        interior: [B, 1, N] bool, of the mouth interior (socket, teeth, gums, tongue).
        eyeball: [B, 1, N] bool, of an eyeball.
        any_interior: whether some pixel is of the mouth interior.
    """

    pixels: torch.Tensor
    frags: Fragments
    material: torch.Tensor
    interior: torch.Tensor
    eyeball: torch.Tensor
    any_interior: bool


def _drawn_pixels(frags: Fragments, triangle_material: torch.Tensor) -> DrawnPixels:
    """:class:`DrawnPixels` of [B, H, W] fragments ``frags`` whose triangles are of
    ``triangle_material`` ([F] int64). On the CPU without autograd in one pass
    (:func:`.kernels.drawn_pixels`, the same arrays)."""
    n_batch, height, width = frags.tri_id.shape
    if kernels.use_kernels(frags.tri_id, frags.bary):
        pixels, tri_id, bary, depth, material, interior, eyeball, interior_count = kernels.drawn_pixels(
            frags.tri_id, frags.bary, frags.depth, triangle_material, _SKIN, _EYEBALL)
        return DrawnPixels(pixels, Fragments(tri_id=tri_id[:, None], bary=bary[:, None], depth=depth[:, None],
                                             backend=frags.backend),
                           material[:, None], interior[:, None], eyeball[:, None], interior_count > 0)
    covered = frags.mask.reshape(n_batch, -1)
    face, pixel = covered.nonzero(as_tuple=True)
    if n_batch == 1:  # one face: nothing to pad (and the padding's index arithmetic is ~0.3 ms)
        pixels = pixel[None]
    else:
        count = covered.sum(1)
        slot = torch.arange(face.shape[0], device=face.device) - (count.cumsum(0) - count)[face]
        pixels = torch.full((n_batch, int(count.max())), height * width, dtype=torch.int64,
                            device=face.device)
        pixels[face, slot] = pixel
    drawn = Fragments(tri_id=_at(frags.tri_id, pixels, -1)[:, None], bary=_at(frags.bary, pixels, 0.0)[:, None],
                      depth=_at(frags.depth, pixels, float("-inf"))[:, None], backend=frags.backend)
    material = torch.where(drawn.mask, triangle_material[drawn.tri_id.clamp(min=0)],
                           torch.full_like(drawn.tri_id, _SKIN))
    interior = (material != _SKIN) & (material != _EYEBALL)
    return DrawnPixels(pixels, drawn, material, interior, material == _EYEBALL, bool(interior.any()))


def _at(grid: torch.Tensor, pixels: torch.Tensor, padding: bool | float = False) -> torch.Tensor:
    """[B, H, W, ...] values at flat pixel indices [B, N] -> [B, N, ...]; index H * W reads ``padding``."""
    n_batch, height, width = grid.shape[:3]
    values = gather_rows(grid.reshape(n_batch, height * width, *grid.shape[3:]), pixels.clamp(max=height * width - 1))
    if n_batch == 1:  # one face is never padded (:func:`_drawn_pixels`)
        return values
    padded = (pixels == height * width).view(*pixels.shape, *[1] * (grid.ndim - 3))
    return torch.where(padded, torch.full((), padding, dtype=grid.dtype, device=grid.device), values)


def _in_place(values: torch.Tensor, pixels: torch.Tensor, size: tuple[int, int],
              dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """The inverse of :func:`_at` for masks: values [B, N] bool at flat pixel indices [B, N] into a
    [B, H, W] grid of ``dtype`` (1 or True there, 0 elsewhere). On the CPU without autograd,
    :func:`.kernels.in_place` (the same values; its scatter and zeroed grid cost less than torch's,
    ~40 us at 224^2)."""
    if kernels.use_kernels(values, pixels):
        return kernels.in_place(values, pixels, size, dtype)
    n_batch, slots = pixels.shape[0], size[0] * size[1] + 1
    grid = values.new_zeros(n_batch, slots)
    # One index_copy_ into the flattened batch (padding lands in each face's spare last slot):
    # the same writes as grid[arange(B)[:, None], pixels] = values, 3-5x faster on the CPU.
    flat = pixels if n_batch == 1 else pixels + slots * torch.arange(n_batch, device=pixels.device)[:, None]
    grid.view(-1).index_copy_(0, flat.reshape(-1), values.reshape(-1))
    return grid[:, :-1].reshape(n_batch, *size).to(dtype)


def _surface_samples(attributes: torch.Tensor, frags: Fragments, faces: torch.Tensor, photo_frags: Fragments,
                     photo_verts: torch.Tensor, photo_faces: torch.Tensor,
                     window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each drawn surface point is in the photo, whether the photo shows it there (no skin
    in front of it; where no skin is drawn, an opening or the outline, nothing is), the photo's
    colour there, and how much its turn re-shades it.

    Args:
        attributes: [A, B, V, C] per-vertex values in A parts (stacked), their channels in turn:
            each vertex's source position in the window (u, v, depth px), its source normal and
            its target normal (image space), then any.
        frags: [B, 1, N] fragments of the drawn pixels (:func:`_drawn_pixels`) with ``faces``.
        photo_frags: [B, h, w] the source skin's fragments in the window, of ``photo_verts``
            [B, V, 3] drawn with ``photo_faces`` [S, 3].
        window: [1 or B, C', h, w] the faces' photo's window, or each face's.
    Returns:
        values [B, 1, N, A * C] (``attributes`` interpolated, each part's channels in turn), seen
        [B, 1, N] bool (drawn, and no skin the photo shows there within SEEN_DEPTH_TOLERANCE_PX in
        front of it), colour [B, 1, N, C'] (bicubic: a moved face keeps the photo's grain) and ratio [B, 1, N]
        (:func:`~.materials.shading_ratio`).
    """
    b = attributes.shape[1]
    window = window.expand(b, -1, -1, -1)
    if kernels.use_kernels(attributes, window):   # the ops below in one pass
        shape = frags.tri_id.shape
        values, seen, colour, ratio = kernels.surface_samples(
            attributes.contiguous(), faces.contiguous(), frags.tri_id.reshape(b, -1).contiguous(),
            frags.bary.reshape(b, -1, 3).to(attributes.dtype).contiguous(), photo_frags.tri_id.contiguous(),
            photo_verts.contiguous(), photo_faces.contiguous(), window, SEEN_DEPTH_TOLERANCE_PX,
            key_light(attributes), AMBIENT, RATIO_RANGE, 1.0 / PHOTO_GAMMA)
        return values.view(*shape, -1), seen.view(shape), colour.view(*shape, -1), ratio.view(shape)
    values = interpolate(attributes.permute(1, 2, 0, 3).flatten(2), frags, faces)
    where = values[..., :3]
    shown_depth, skin_there = surface_depth_at(photo_frags, photo_verts, photo_faces, where[..., :2].reshape(b, -1, 2))
    seen = ~skin_there | (shown_depth <= where[..., 2].reshape(b, -1).double() + SEEN_DEPTH_TOLERANCE_PX)
    return (values, seen.reshape(frags.tri_id.shape) & frags.mask,
            sample_image(window, where[..., :2], "bicubic"),
            shading_ratio(values[..., 3:6], values[..., 6:9]))


def _reshaded(colour: torch.Tensor, ratio: torch.Tensor, crease_factor: torch.Tensor | None, seen: torch.Tensor,
              material: torch.Tensor) -> torch.Tensor:
    """colour [B, 1, N, C] with the skin the photo shows (``seen`` [B, 1, N] bool, of ``material``
    [B, 1, N] skin) re-shaded: times its shading ratio [B, 1, N] and, where given, its creases'
    factor [B, 1, N] (on the CPU without autograd in place, :func:`.kernels.reshade`)."""
    if kernels.use_kernels(colour, ratio):
        kernels.reshade(colour.view(colour.shape[0], -1, colour.shape[-1]), ratio.view(ratio.shape[0], -1),
                        None if crease_factor is None else crease_factor.view(ratio.shape[0], -1),
                        seen.view(ratio.shape[0], -1), material.view(ratio.shape[0], -1), _SKIN)
        return colour
    ratio = ratio if crease_factor is None else ratio * crease_factor
    return torch.where((seen & (material == _SKIN))[..., None], colour * ratio[..., None].to(colour.dtype), colour)


def _layer(colour: torch.Tensor, pixels: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] each face's window [B, C, h, w] with its drawn colours [B, N, C] at its flat pixel
    indices [B, N] (index h * w: padding, dropped), written into a copy of the window in its own
    layout (a channels-last grid cost a transposing copy of the window)."""
    (b, channels), (height, width) = window.shape[:2], window.shape[2:]
    grid = window.new_empty(b, channels, height * width + 1)        # the last column takes the padding
    grid[..., :-1].view(b, channels, height, width).copy_(window)   # (one copy of the strided window)
    grid.scatter_(2, pixels[:, None].expand(-1, channels, -1), colour.transpose(1, 2).to(window.dtype))
    return grid[..., :-1].view(b, channels, height, width)


def _composited(base: torch.Tensor, colour: torch.Tensor, pixels: torch.Tensor, window: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] ``base`` with face b blended into image b by ``mask`` [B, 1, h, w]: its layer, the
    window [B, C, h, w] with its drawn colours [B, N, C] at its flat pixel indices [B, N]
    (:func:`_layer`). On the CPU without autograd in one pass per face (:func:`.kernels.blend_drawn`,
    the same bits)."""
    if kernels.use_kernels(base, colour, mask) and base.dtype == window.dtype == mask.dtype:
        blended = [kernels.blend_drawn(base[i:i + 1], window[i:i + 1], colour[i], pixels[i], mask[i:i + 1])
                   for i in range(base.shape[0])]
        return blended[0] if len(blended) == 1 else torch.cat(blended)
    return composite(base, _layer(colour, pixels, window), mask)


def _drawn_skin(tri_id: torch.Tensor, skin_triangle: torch.Tensor) -> torch.Tensor:
    """[B, h, w] bool: where skin is drawn, from fragments' ``tri_id`` [B, h, w] and which of the F
    triangles are skin (``skin_triangle`` [F] bool)."""
    return (tri_id >= 0) & skin_triangle[tri_id.clamp(min=0)]


def _box(rows: torch.Tensor, cols: torch.Tensor, margin: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1): the rows [r0, r1) and columns [c0, c1) of a window of ``size`` within
    ``margin`` px of the bounding box of M > 0 pixels (``rows``, ``cols``: [M] int64)."""
    r0, r1, c0, c1 = torch.stack((rows.min(), rows.max(), cols.min(), cols.max())).tolist()
    return max(r0 - margin, 0), min(r1 + margin + 1, size[0]), max(c0 - margin, 0), min(c1 + margin + 1, size[1])


def _selected_pixels(selected: torch.Tensor, pixels: torch.Tensor,
                     size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The face, row and column ([M] int64 each) of the M pixels of ``selected`` ([B, 1, N] bool
    over the drawn pixels ``pixels`` [B, N] of a window of ``size``), in the order of
    ``selected.nonzero()``."""
    face, slot = selected[:, 0].nonzero(as_tuple=True)
    pixel = pixels[face, slot]
    return face, pixel // size[1], pixel % size[1]


def _distance(tri_id: torch.Tensor, flagged: torch.Tensor | None, face: torch.Tensor, rows: torch.Tensor,
              cols: torch.Tensor, radii: tuple[int, ...]) -> torch.Tensor:
    """[M] int64: the smallest of the increasing ``radii`` (px, Chebyshev, as :func:`dilate`, clipped
    to the window) within which fragments' ``tri_id`` [B, h, w] show a triangle (``flagged`` None)
    or one of the ``flagged`` ([F] bool) around each of M pixels (``rows``, ``cols`` of face
    ``face``: [M] int64 each), the last radius + 1 where they do not.

    Only the box around the M pixels, grown by the last radius, is masked and dilated (they are
    the mouth's interior or the eyes; the whole window, read back at every drawn pixel, was ~1 ms
    at 224^2). On the CPU the fragments are searched pixel by pixel instead
    (:func:`.kernels.radius_reached`, the same answer, with no mask made).
    """
    if kernels.use_kernels(tri_id):
        return kernels.radius_reached(tri_id, flagged, face, rows, cols, radii)
    r0, r1, c0, c1 = _box(rows, cols, radii[-1], tri_id.shape[1:])
    box = tri_id[:, r0:r1, c0:c1]
    mask = ((box >= 0) if flagged is None else (box >= 0) & flagged[box.clamp(min=0)])[:, None].float()
    distance = torch.full_like(rows, radii[-1] + 1)
    for previous, r in zip((0,) + radii, radii):
        mask = dilate(mask, r - previous) if r > previous else mask
        distance = torch.where((mask[face, 0, rows - r0, cols - c0] > 0) & (distance > r), r, distance)
    return distance


def _skin_distance(selected: torch.Tensor, pixels: torch.Tensor, where: torch.Tensor, src_frags: Fragments,
                   frags: Fragments, skin_triangle: torch.Tensor, radii: tuple[int, ...],
                   size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """For the M pixels of ``selected`` ([B, 1, N] bool over the drawn pixels ``pixels`` [B, N] of a
    window of ``size``; in the order of ``selected.nonzero()``): how far, in :func:`_distance`'s
    ``radii``, the nearest skin the photo shows is from each one's source position (``where``
    [B, 1, N, 3], window px; as sample_image's "nearest", clamped to the window), and the nearest
    skin the target draws from the pixel itself -> ([M] int64, [M] int64)."""
    face, rows, cols = _selected_pixels(selected, pixels, size)
    source_xy = where[(selected,)][:, :2]
    source_cols = source_xy[:, 0].floor().clamp(0, size[1] - 1).long()
    source_rows = source_xy[:, 1].floor().clamp(0, size[0] - 1).long()
    return (_distance(src_frags.tri_id, None, face, source_rows, source_cols, radii),   # the photo's: all skin
            _distance(frags.tri_id, skin_triangle, face, rows, cols, radii))


def _interior_seen(interior: torch.Tensor, seen: torch.Tensor, pixels: torch.Tensor, where: torch.Tensor,
                   src_frags: Fragments, frags: Fragments, skin_triangle: torch.Tensor, material: torch.Tensor,
                   colour: torch.Tensor, lip: torch.Tensor, px_per_mm: torch.Tensor,
                   size: tuple[int, int]) -> torch.Tensor:
    """``seen`` [B, 1, N] without the mouth interior's pixels (``interior``, [B, 1, N] over the drawn
    pixels ``pixels`` of a window of ``size``) that must be shaded instead: those that moved
    (:data:`INTERIOR_PHOTO_MAX_MOVE_PX`), and those the photo shows in a slit that the target
    opens (:data:`INTERIOR_PHOTO_CLEARANCE_MM`), unless the photo shows a tooth there (its colour
    [B, 1, N, 3] against the face's ``lip`` [B, 3]). ``where`` [B, 1, N, 3]: the source positions;
    ``material`` [B, 1, N]; ``px_per_mm`` [B]. On the CPU without autograd in one pass
    (:func:`.kernels.interior_seen`, in place)."""
    clearance = (INTERIOR_PHOTO_CLEARANCE_MM * px_per_mm).ceil().long().clamp(min=INTERIOR_PHOTO_CLEARANCE_PX)
    if kernels.use_kernels(where, colour, seen):
        b = seen.shape[0]
        kernels.interior_seen(interior.view(b, -1), pixels, where.view(b, -1, where.shape[-1]), src_frags.tri_id,
                              frags.tri_id, skin_triangle, material.view(b, -1),
                              colour.view(b, -1, colour.shape[-1]), lip, clearance, _TEETH,
                              INTERIOR_PHOTO_MAX_MOVE_PX, LUMA, TOOTH_LUMA_OF_LIP, TOOTH_SATURATION_OF_LIP,
                              seen.view(b, -1))
        return seen
    # Decided at the interior pixels alone ([M], in the order of interior.nonzero()): they are few.
    at = interior.nonzero(as_tuple=True)   # found once (each boolean index would search again)
    face, rows, cols = _selected_pixels(interior, pixels, size)                          # [M] each
    centres = torch.stack((cols, rows), -1).to(where.dtype) + 0.5
    moved = (where[at][:, :2] - centres).norm(dim=-1) > INTERIOR_PHOTO_MAX_MOVE_PX
    slit_in_photo, slit_in_target = (d <= clearance[face] for d in _skin_distance(
        interior, pixels, where, src_frags, frags, skin_triangle, tuple(sorted(set(clearance.tolist()))), size))
    # The fit's opening is only as good as the landmarks: where the photo's teeth show
    # beyond it (a broad smile), its slit rows are teeth, and shading them (not the
    # rows between) would stripe the teeth like braces.
    # A moved tooth (the lower teeth of a jaw that opens further) keeps the photo's pixel
    # too where that pixel is a tooth, whatever the fit says of the edges.
    tooth_in_photo = (material[at] == _TEETH) & looks_like_teeth(colour[at][:, None], lip[face])[:, 0]
    slit_in_photo = slit_in_photo & ~tooth_in_photo
    moved = moved & ~tooth_in_photo
    return seen.index_put(at, seen[at] & ~(moved | (slit_in_photo & ~slit_in_target)))


def _light_in(mesh: torch.Tensor, midline: torch.Tensor) -> torch.Tensor:
    """[B] the share of the light the B mouths of ``mesh`` [B, V, 3] (mm) let in: all of it from a
    :func:`~affectsynth.model.mouth_opening` of :data:`~.materials.APERTURE_FULL_MM`, a narrower
    opening in proportion (``midline``: :attr:`ModelParts.lip_midline`)."""
    return (mouth_opening(mesh, midline) / APERTURE_FULL_MM).clamp(max=1.0)


def _dimmed_interior(colour: torch.Tensor, interior: torch.Tensor, seen: torch.Tensor, mouth: MouthAppearance,
                     deformation: Deformation, midline: torch.Tensor | None) -> tuple[torch.Tensor, MouthAppearance]:
    """A mouth narrowed by the target lets in less light than the photo's: ``colour`` [B, 1, N, C] with
    the photo's pixels of the interior (``interior & seen``, [B, 1, N]) dimmed by the target's light
    over the photo's (:func:`_light_in`, at most 1), and ``mouth`` with its tones dimmed by the
    target's light, for the pixels shaded."""
    if midline is None:
        return colour, mouth
    light = _light_in(deformation.target, midline)                                              # [B]
    narrowed = (light / _light_in(deformation.source, midline).clamp(min=1e-6)).clamp(max=1.0).to(colour)
    colour = torch.where((interior & seen)[..., None], colour * narrowed[:, None, None, None], colour)
    light = light[:, None].to(mouth.lip)
    return colour, dataclasses.replace(mouth, lip=mouth.lip * light, teeth=mouth.teeth * light)


def _lid_shadow_reach(px_per_mm: torch.Tensor) -> int:
    """How far up (px) the lid's shadow is searched for: 4 e-folds at the largest of the faces'
    ``px_per_mm`` [B] (no skin within: no shadow)."""
    return max(1, int(math.ceil(4 * LID_SHADOW_MM * float(px_per_mm.max()))))


def _sclera_below_reach(px_per_mm: torch.Tensor) -> tuple[int, int]:
    """(how far down, the half-width of the square averaged) in px, for the photo's sclera below a
    painted pixel, at the largest of the faces' ``px_per_mm`` [B]."""
    scale = float(px_per_mm.max())
    return max(1, int(math.ceil(SCLERA_BELOW_MM * scale))), max(1, round(SCLERA_BELOW_AVERAGE_MM * scale))


def _shaded_interior(interior: torch.Tensor, seen: torch.Tensor, pixels: torch.Tensor, values: torch.Tensor,
                     material: torch.Tensor, colour: torch.Tensor, rim_z: torch.Tensor, mouth: MouthAppearance,
                     size: tuple[int, int]) -> torch.Tensor:
    """colour [B, 1, N, C] with the mouth interior's pixels the photo does not show shaded
    (:func:`~.materials.shade_mouth`, ``mouth`` the faces' appearance; ``rim_z`` [B] the lips' inner
    edge's depth, mm) and blended with the photo's by the share of photo pixels around each
    (``interior``, ``seen``: [B, 1, N] over the drawn pixels ``pixels`` of a window of ``size``;
    ``values`` [B, 1, N, 15] their interpolated attributes, target normal 6-8 and target point in
    mm 9-11; ``material`` [B, 1, N]). On the CPU without autograd in one pass
    (:func:`.kernels.shade_interior`, in place)."""
    b = seen.shape[0]
    if kernels.use_kernels(colour, values, mouth.lip, mouth.teeth):
        kernels.shade_interior(interior.view(b, -1), seen.view(b, -1), pixels, values.view(b, -1, values.shape[-1]),
                               material.view(b, -1), colour.view(b, -1, colour.shape[-1]), rim_z, size,
                               mouth.lip[:, :3], mouth.teeth[:, :3], MOUTH_MATERIAL_IDS,
                               (GUMS_OF_LIP, TONGUE_OF_LIP, SOCKET_OF_LIP), OCCLUSION_FLOOR, OCCLUSION_DEPTH_MM,
                               MOUTH_LAMBERT, MOUTH_BOUNCE, LUMA)
        return colour
    if not bool((interior & ~seen).any()):
        return colour
    target_normal_px, target_mm = values[..., 6:9], values[..., 9:12]
    at = interior.nonzero(as_tuple=True)
    face = at[0]
    # Photo or shading is decided per pixel, and along the edge between them (the upper teeth
    # a raised lip uncovers, the lower ones a jaw moves) the decision flips pixel by pixel: a
    # speckle of photo teeth and dark socket. Each interior pixel takes the photo by the share
    # of the interior pixels around it that take it.
    photo_share = _photo_share(interior, seen, pixels, size, colour.dtype)                # [M, 1]
    behind_mm = rim_z[face] - target_mm[at][:, 2]                                      # [M]
    # The teeth's tone is the photo's own teeth, lit and occluded as they are where the photo
    # shows them: teeth are darkened only by how much deeper they lie than those (per face: the
    # median of its shown teeth's depths, NaN where it shows none).
    teeth = material[at] == _TEETH
    shown = torch.full((b, seen.shape[2]), float("nan"), dtype=behind_mm.dtype, device=behind_mm.device)   # [B, N]
    shown[at[0], at[2]] = torch.where(teeth & (photo_share[:, 0] > 0.5), behind_mm, float("nan"))
    median = shown.nanmedian(dim=1).values[face]                                               # [M]
    behind_mm = torch.where(teeth & ~median.isnan(), behind_mm - median, behind_mm)
    shaded = shade_mouth(material[at][:, None, None], behind_mm[:, None, None],
                         target_normal_px[at][:, 2].abs()[:, None, None], _rows(mouth, face))
    colour = colour.index_put(at, photo_share * colour[at] + (1 - photo_share) * shaded[:, 0, 0].to(colour.dtype))
    return colour


def _smoothed_mouth_edges(colour: torch.Tensor, material: torch.Tensor, shaded: torch.Tensor, pixels: torch.Tensor,
                          window: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """colour [B, 1, N, C] of the drawn pixels ``pixels`` [B, N] of a window of ``size`` (``material``
    [B, 1, N]) with the shaded mouth's edges smoothed (:data:`MOUTH_EDGE_TAPS`): a drawn pixel within
    1 px of a ``shaded`` one ([B, 1, N] bool: the interior the photo does not show) whose 3 x 3
    neighbourhood holds another material (or an undrawn pixel) takes the neighbourhood's weighted
    mean, of the drawn colours and, where nothing is drawn, the window's [1 or B, C, h, w] pixels
    (beyond the window its edge repeated). Edges between the photo's own pixels are the photo's and
    stay. On the CPU without autograd in one pass, in place (:func:`.kernels.smooth_mouth_edges`, to
    float rounding)."""
    b, n = pixels.shape
    window = window.expand(b, -1, -1, -1)
    if kernels.use_kernels(colour, window):
        kernels.smooth_mouth_edges(colour.view(b, n, -1), material.view(b, n), shaded.view(b, n), pixels, window,
                                   MOUTH_EDGE_TAPS)
        return colour
    height, width = size
    grid = material.new_full((b, height * width + 1), -1)                                # -1: nothing drawn
    grid.scatter_(1, pixels, material.view(b, n))
    grid = grid[:, :-1].view(b, 1, height, width).to(colour.dtype)
    near = F.max_pool2d(_in_place(shaded[:, 0], pixels, size, colour.dtype)[:, None], 3, 1, 1) > 0
    mixed = (F.max_pool2d(grid, 3, 1, 1) != grid) | (-F.max_pool2d(-grid, 3, 1, 1) != grid)
    edge = (mixed & near).view(b, -1)                                                     # [B, h w]
    layer = _layer(colour[:, 0], pixels, window)                                          # [B, C, h, w]
    channels = layer.shape[1]
    taps = colour.new_tensor(MOUTH_EDGE_TAPS)
    kernel = (taps[:, None] * taps[None, :]).expand(channels, 1, 3, 3)
    smooth = F.conv2d(F.pad(layer, (1, 1, 1, 1), mode="replicate"), kernel, groups=channels)  # [B, C, h, w]
    at = pixels.clamp(max=height * width - 1)
    smooth_at = smooth.view(b, channels, -1).gather(2, at[:, None].expand(-1, channels, -1)).transpose(1, 2)
    take = edge.gather(1, at) & (pixels < height * width)                                  # [B, N]
    return torch.where(take[:, None, :, None], smooth_at[:, None].to(colour.dtype), colour)


def _painted_eyes(eyeball: torch.Tensor, seen: torch.Tensor, pixels: torch.Tensor, values: torch.Tensor,
                  frags: Fragments, skin_triangle: torch.Tensor, lid_band: torch.Tensor | None,
                  window: torch.Tensor, colour: torch.Tensor, eyes: EyeAppearance, px_per_mm: torch.Tensor,
                  size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(colour [B, 1, N, C], seen [B, 1, N]) with the eyeball pixels (``eyeball`` [B, 1, N] over the
    drawn pixels ``pixels`` of a window of ``size``) the photo does not show painted, lit under
    the lid's shadow (:data:`LID_SHADOW`; ``lid_band``: [B, h, w] the band moved with a raised lid,
    or None) and by their facing (:data:`EYEBALL_AMBIENT`), the sclera continuing the photo's below
    it (:data:`SCLERA_BELOW_MM`), and blended with the photo's by the share of photo pixels around
    each; all eyeball pixels then shown. ``values`` [B, 1, N, 15]: the pixels' interpolated
    attributes (target normal 6-8, target point in mm 9-11); ``window`` [1 or B, C, h, w] the
    faces' photo's pixels, or each face's. On the CPU without autograd in one pass
    (:func:`.kernels.paint_eyes`, in place)."""
    b = seen.shape[0]
    window = window.expand(b, -1, -1, -1)
    if kernels.use_kernels(colour, seen, values):
        kernels.paint_eyes(eyeball.view(b, -1), seen.view(b, -1), pixels, values.view(b, -1, values.shape[-1]),
                           frags.tri_id, skin_triangle, lid_band, window,
                           colour.view(b, -1, colour.shape[-1]),
                           {"centre": eyes.centre, "gaze": eyes.gaze, "disc_radius": eyes.radius * eyes.iris_angle.sin(),
                            "iris": eyes.iris, "pupil": eyes.pupil, "sclera": eyes.sclera}, px_per_mm,
                           (_lid_shadow_reach(px_per_mm), LID_SHADOW, LID_SHADOW_MM), EYEBALL_AMBIENT,
                           (*_sclera_below_reach(px_per_mm), SCLERA_BELOW_MM, SCLERA_BELOW_MIN_LUMA), LUMA,
                           (COLLARETTE_GAIN, PUPIL_FRACTION, LIMBAL_DARKENING, LIMBAL_FROM, EDGE_SOFTNESS))
        return colour, seen
    if not bool((eyeball & ~seen).any()):
        return colour, seen
    target_normal_px, target_mm = values[..., 6:9], values[..., 9:12]
    photo_share = _photo_share(eyeball, seen, pixels, size, colour.dtype)              # [N, 1]
    mixed = photo_share[:, 0] < 1.0
    painted_px = eyeball.index_put((eyeball,), mixed)        # only where some paint goes in
    at, photo_share = painted_px.nonzero(as_tuple=True), photo_share[mixed]
    normal = target_normal_px[at]
    facing = normal[:, 2].abs() / normal.norm(dim=-1).clamp(min=1e-12)
    light = _lid_shadow(painted_px, pixels, frags, skin_triangle, px_per_mm, size, lid_band) \
        * (EYEBALL_AMBIENT + (1.0 - EYEBALL_AMBIENT) * facing)                           # [P]
    face = at[0]
    appearance = _rows(eyes, face)
    disc, sclera_share, sclera = (x[:, 0] for x in eyeball_layers(target_mm[at][:, None], appearance))
    painted = ((1.0 - sclera_share) * disc + sclera_share * sclera).clamp(0.0, 1.0) * light[:, None]   # [P, 3]
    # The uncovered sclera continues the photo's sclera below it in its column, as lit there.
    below, found = _photo_sclera_below(painted_px, pixels, seen & eyeball & ~painted_px, window, sclera,
                                       px_per_mm, size)
    if bool(found.any()):
        # where a column has none (above the iris), the eye's mean of those found
        eye_key = face * 2 + nearest_eye(target_mm[at][:, None], appearance)[:, 0]          # [P]
        sums = below.new_zeros(2 * b, 4).index_add_(0, eye_key[found], torch.cat(
            (below[found], below.new_ones(int(found.sum()), 1)), 1))
        below = torch.where(found[:, None], below, sums[eye_key, :3] / sums[eye_key, 3:].clamp(min=1.0))
        lit = ((1.0 - sclera_share) * disc).clamp(0.0, 1.0) * light[:, None] + sclera_share * below
        painted = torch.where((sums[eye_key, 3] > 0)[:, None], lit, painted)
    colour = colour.index_put(at, photo_share * colour[at] + (1 - photo_share) * painted.to(colour.dtype))
    seen = seen | eyeball
    return colour, seen


def _lid_shadow(selected: torch.Tensor, pixels: torch.Tensor, frags: Fragments, skin_triangle: torch.Tensor,
                px_per_mm: torch.Tensor, size: tuple[int, int], lid_band: torch.Tensor | None = None) -> torch.Tensor:
    """[M] the light left on each of the M eyeball pixels of ``selected`` ([B, 1, N] bool over the
    drawn pixels ``pixels`` of a window of ``size``, in the order of ``selected.nonzero()``) under
    the shadow of the upper lid and its lashes: 1 - :data:`LID_SHADOW` e^(-d / :data:`LID_SHADOW_MM`),
    d the distance (mm, at the faces' ``px_per_mm`` [B]) up to the first skin the target draws in
    the pixel's column (no skin within 4 widths: no shadow), or 1 where ``lid_band`` ([B, h, w] bool
    over the window, or None: the photo's band moved with the lid) lies between that skin and it."""
    face, rows, cols = _selected_pixels(selected, pixels, size)
    scale = px_per_mm[face]                                                                 # [M]
    reach = _lid_shadow_reach(px_per_mm)
    if kernels.use_kernels(frags.tri_id, scale):   # each column searched up from the pixel
        return kernels.lid_shadow(frags.tri_id, skin_triangle, lid_band, face, rows, cols, scale, reach,
                                  LID_SHADOW, LID_SHADOW_MM)
    r0, _, c0, _ = box = _box(rows, cols, reach, size)
    skin = _drawn_skin(frags.tri_id[:, box[0]:box[1], box[2]:box[3]], skin_triangle)
    above, _ = _margin_rows(skin)
    up = rows - r0 - above[face, rows - r0, cols - c0]                                      # [M] px
    up_px = torch.where(up <= reach, up.to(scale.dtype), float("inf"))
    if lid_band is not None:  # a band row nearer above than the skin: it carries the shadow
        nearer, _ = _margin_rows(skin | lid_band[:, box[0]:box[1], box[2]:box[3]])
        up_px = torch.where(nearer[face, rows - r0, cols - c0] > rows - r0 - up, float("inf"), up_px)
    return 1.0 - LID_SHADOW * torch.exp(-(up_px / scale) / LID_SHADOW_MM)


def _photo_sclera_below(selected: torch.Tensor, pixels: torch.Tensor, shown: torch.Tensor, window: torch.Tensor,
                        sclera: torch.Tensor, px_per_mm: torch.Tensor,
                        size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """For the M eyeball pixels of ``selected`` ([B, 1, N] bool over the drawn pixels ``pixels`` of
    a window of ``size``, in the order of ``selected.nonzero()``): the photo's mean colour over the
    pixels of ``shown`` ([B, 1, N] bool: eyeball pixels that keep the photo's) within
    :data:`SCLERA_BELOW_AVERAGE_MM` of the first one below each in its column, that first one within
    :data:`SCLERA_BELOW_MM` (at the faces' ``px_per_mm`` [B]), and whether there is one as light as
    sclera (luminance at least :data:`SCLERA_BELOW_MIN_LUMA` of ``sclera`` [M, 3], each pixel's
    eye's) -> ([M, 3], [M] bool). ``window``: [1 or B, C, h, w] the faces' photo's pixels, or each
    face's."""
    window = window.expand(selected.shape[0], -1, -1, -1)
    face, rows, cols = _selected_pixels(selected, pixels, size)
    reach, half = _sclera_below_reach(px_per_mm)
    limit = (SCLERA_BELOW_MM * px_per_mm[face]).ceil()
    if kernels.use_kernels(shown, window, sclera):   # the same, searched pixel by pixel
        return kernels.sclera_below(shown[:, 0], pixels, face, rows, cols, window, reach, half, limit, sclera,
                                    SCLERA_BELOW_MIN_LUMA, LUMA)
    r0, r1, c0, c1 = _box(rows, cols, reach, size)
    grid = _in_place(shown[:, 0], pixels, size)[:, r0:r1, c0:c1]                     # [B, h, w]
    _, first = _margin_rows(~grid)                                                            # first shown row below
    row = first[face, rows - r0, cols - c0]                                                   # [M], box rows
    # averaged over a square of shown pixels just below it: taken pixel by pixel, the
    # columns alternated between lashes' shadow and sclera, in stripes
    weight = grid[:, None].to(window.dtype)
    count, total = (torch.nn.functional.avg_pool2d(x, 2 * half + 1, stride=1, padding=half)
                    for x in (weight, window[:, :3, r0:r1, c0:c1] * weight))                # [B, 1 | 3, h, w]
    at_row = (row + half).clamp(max=r1 - r0 - 1)
    n = count[face, 0, at_row, cols - c0]
    colour = total[face, :, at_row, cols - c0] / n.clamp(min=1e-6)[:, None]                  # [M, 3]
    found = ((row < r1 - r0) & (row - (rows - r0) <= limit) & (n > 0)
             & (luma(colour) >= SCLERA_BELOW_MIN_LUMA * luma(sclera.to(colour.dtype))))
    return colour, found


def _margin_rows(skin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a [B, h, w] bool mask of skin: ([B, h, w] int64 the last skin row at or above each
    pixel in its column, -h where there is none; [B, h, w] int64 the first row at or below it
    that is not skin, h where there is none)."""
    height = skin.shape[1]
    rows = torch.arange(height, device=skin.device).view(1, height, 1)
    above = torch.where(skin, rows, -height).cummax(dim=1).values
    below = torch.where(skin, height, rows).flip(1).cummin(dim=1).values.flip(1)
    return above, below


def _lid_lifted(eyeball: torch.Tensor, seen: torch.Tensor, pixels: torch.Tensor, where: torch.Tensor,
                src_frags: Fragments, frags: Fragments, skin_triangle: torch.Tensor, band_px: torch.Tensor,
                size: tuple[int, int]) -> tuple[torch.Tensor, bool]:
    """``seen`` [B, 1, N] without the eyeball pixels (``eyeball``, [B, 1, N] over the drawn pixels
    ``pixels`` of a window of ``size``) in the photo's lid band that the target lifts the lid off:
    the photo shows its lid within ``band_px`` ([B]) of their source position (``where``
    [B, 1, N, 3]) and the target's lid is farther (:data:`EYE_LID_BAND_MM`); and whether some
    eyeball pixel is then not the photo's (None shown: none is lifted, and False). On the CPU
    without autograd in one pass (:func:`.kernels.lid_lifted`, in place)."""
    if kernels.use_kernels(where, seen):
        b = seen.shape[0]
        shown, unseen = kernels.lid_lifted(eyeball.view(b, -1), pixels, where.view(b, -1, where.shape[-1]),
                                           src_frags.tri_id, frags.tri_id, skin_triangle, band_px,
                                           seen.view(b, -1))
        return seen, shown > 0 and unseen > 0
    shown_eye = seen & eyeball
    if not bool(shown_eye.any()):
        return seen, False
    lid_in_photo, lid_in_target = _skin_distance(shown_eye, pixels, where, src_frags, frags, skin_triangle,
                                                 tuple(range(int(band_px.max()) + 1)), size)
    lifted = (lid_in_photo <= band_px[shown_eye.nonzero()[:, 0]]) & (lid_in_target > lid_in_photo)   # [M]
    seen = seen.index_put((shown_eye,), ~lifted)
    return seen, bool((eyeball & ~seen).any())


def _measured_mouth(photo: torch.Tensor, source_image: torch.Tensor, model: FaceModel) -> MouthAppearance:
    """:func:`~.materials.estimate_mouth_appearance` of B faces (``source_image`` [B, V, 3]) of one
    photo [1, C, H, W], or of B photos one each [B, C, H, W]."""
    if photo.shape[0] == 1:
        return estimate_mouth_appearance(photo, source_image, model)
    return stacked_rows([estimate_mouth_appearance(photo[i:i + 1], source_image[i:i + 1], model)
                         for i in range(photo.shape[0])])


def measure_grain(photo: torch.Tensor, source_image: torch.Tensor, model: FaceModel) -> Grain:
    """:func:`~.grain.estimate_grain` of B faces (``source_image`` [B, V, 3] in ``photo`` [1 or B, C, H, W])
    at their skin's vertices (the model's "skin" region, or all vertices where it names none)."""
    skin = model.regions.get("skin")
    points = source_image[..., :2] if skin is None else source_image[:, skin.to(source_image.device), :2]
    return estimate_grain(photo, points)


def _moved_band(eyeball: torch.Tensor, take: torch.Tensor, band_xy: torch.Tensor, window: torch.Tensor,
                pixels: torch.Tensor, size: tuple[int, int], colour: torch.Tensor,
                seen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(colour [B, 1, N, C], seen [B, 1, N], the band [B, h, w] bool or None) with the lid band
    :func:`_lid_band` takes (``take`` [M], ``band_xy`` [M, 2] of the M pixels of ``eyeball``): the
    face's window's colour ([1 or B, C, h, w]: the faces' photo's, or each face's) at band_xy
    (bilinear), shown. On the CPU without autograd in one pass (:func:`.kernels.take_band`, in
    place)."""
    window = window.expand(seen.shape[0], -1, -1, -1)
    if kernels.use_kernels(colour, seen, band_xy):
        b = seen.shape[0]
        band = kernels.take_band(eyeball.view(b, -1), take, band_xy, window, pixels, size,
                                 colour.view(b, -1, colour.shape[-1]), seen.view(b, -1))
        return colour, seen, band
    if not bool(take.any()):
        return colour, seen, None
    band = eyeball.index_put((eyeball,), take)
    face = band.nonzero()[:, 0]                                    # [T] each taken pixel's face
    taken = torch.arange(face.shape[0], device=face.device)
    points = band_xy.new_zeros(window.shape[0], face.shape[0], 2).index_put((face, taken), band_xy[take])
    colour = colour.index_put((band,), sample_image(window, points)[face, taken])
    return colour, seen | band, _in_place(band[:, 0], pixels, size)


def _lid_band(eyeball: torch.Tensor, pixels: torch.Tensor, where: torch.Tensor, src_frags: Fragments,
              frags: Fragments, skin_triangle: torch.Tensor, band_px: torch.Tensor,
              size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the target raised an upper lid, the band under its margin (the lashes and their
    shadow, :data:`EYE_LID_BAND_MM`) goes with it: for the M pixels of ``eyeball`` ([B, 1, N] bool
    over the drawn pixels ``pixels`` of a window of ``size``, in the order of ``eyeball.nonzero()``),
    which lie within ``band_px`` ([B]) under the skin the target draws in their column, that
    margin above the photo's, and where to sample the photo for them: in the column of their
    source position (``where`` [B, 1, N, 3]), as far under the photo's margin there (the photo's
    skin, ``src_frags``; for a source position under a lid, the lid's lower edge) -> ([M] bool,
    [M, 2] window px). A sample that would leave the photo's eye opening is not taken.

    Columns are the image's: a lid's margin runs across them unless the head is rolled far. A
    lowered lid (AU43) keeps the photo's eyeball under it: in the narrow opening it leaves, the
    fitted margin's pixel of error against the photo's lash line made the moved band a zigzag.
    The margins are searched in the boxes around the eyes, grown by the band: the skin right
    above an eye's top row is its lid's.
    """
    if kernels.use_kernels(where, src_frags.tri_id, frags.tri_id):   # the same, column by column
        return kernels.lid_band(eyeball[:, 0], pixels, where[:, 0], src_frags.tri_id, frags.tri_id,
                                skin_triangle, band_px)
    face, rows, cols = _selected_pixels(eyeball, pixels, size)
    reach = int(band_px.max()) + 1
    r0, _, c0, _ = box = _box(rows, cols, reach, size)
    above, _ = _margin_rows(_drawn_skin(frags.tri_id[:, box[0]:box[1], box[2]:box[3]], skin_triangle))
    depth_target = rows - r0 - above[face, rows - r0, cols - c0]            # [M] px; 1: right under the skin
    source = where[(eyeball,)][:, :2]
    src_rows = source[:, 1].floor().clamp(0, size[0] - 1).long()
    src_cols = source[:, 0].floor().clamp(0, size[1] - 1).long()
    r0, r1, c0, c1 = _box(src_rows, src_cols, reach, size)
    skin = src_frags.mask[:, r0:r1, c0:c1]
    above, below = _margin_rows(skin)
    at = (face, src_rows - r0, src_cols - c0)
    margin = torch.where(skin[at], below[at] - 1, above[at])                 # [M] the photo's margin (box row)
    depth_photo = src_rows - r0 - margin                                     # [M] px; <= 0 under the lid
    y = source[:, 1] + (depth_target - depth_photo).to(source.dtype)
    sample_rows = y.floor().long() - r0
    inside = (sample_rows >= 0) & (sample_rows < r1 - r0)
    sample_at = (face, sample_rows.clamp(0, r1 - r0 - 1), src_cols - c0)
    take = (depth_target <= band_px[face]) & (depth_target > depth_photo) & inside \
        & ~skin[sample_at] & (above[sample_at] == margin)                    # in the same opening
    return take, torch.stack((source[:, 0], y), -1)


def _photo_share(part: torch.Tensor, seen: torch.Tensor, pixels: torch.Tensor, size: tuple[int, int],
                 dtype: torch.dtype) -> torch.Tensor:
    """[M, 1] (``dtype``) the share of photo pixels (``seen``) among the pixels of ``part`` around
    each of its M pixels (both [B, 1, N] bool over the drawn pixels ``pixels`` of a window of
    ``size``; in the order of ``part.nonzero()``): where a part is partly the photo's and partly
    shaded, each pixel takes the photo by this share (:func:`_neighbour_share`)."""
    return _neighbour_share((part & seen)[:, 0], part[:, 0], pixels, size)[:, None].to(dtype)


def _neighbour_share(chosen: torch.Tensor, interior: torch.Tensor, pixels: torch.Tensor,
                     size: tuple[int, int]) -> torch.Tensor:
    """[M] the share of ``chosen`` among the ``interior`` pixels in the 3 x 3 neighbourhood of
    each of the M interior pixels, in the order of ``interior.nonzero()`` (``chosen`` and
    ``interior``: [B, N] bool over the drawn pixels ``pixels`` of a window of ``size``; ``chosen``
    only where ``interior``). ``interior`` is a part: the mouth's interior, or the eyeballs.

    Only the part's pixels are placed, on a grid over their bounding box grown by 1 px: a
    mouth is a small part of the window (pooling the whole window cost ~1 ms at 224^2). On the
    CPU, :func:`.kernels.neighbour_share` counts the neighbours (the same bits).
    """
    if kernels.use_kernels(chosen, interior, pixels):
        return kernels.neighbour_share(chosen & interior, interior, pixels, size)
    face, slot = interior.nonzero(as_tuple=True)                                       # [M] each
    if face.numel() == 0:
        return chosen.new_zeros(0, dtype=torch.float32)
    pixel = pixels[face, slot]
    rows, cols = pixel // size[1], pixel % size[1]
    r0, r1, c0, c1 = _box(rows, cols, 1, size)
    box = (r1 - r0, c1 - c0)
    local = (rows - r0) * box[1] + (cols - c0)                                           # [M]
    grids = chosen.new_zeros(interior.shape[0], box[0] * box[1], 2, dtype=torch.float32)
    grids[face, local] = torch.stack((chosen[face, slot], interior[face, slot]), -1).float()
    grids = grids.view(-1, *box, 2).permute(0, 3, 1, 2)                                # [B, 2, h, w]
    sums = torch.nn.functional.avg_pool2d(grids, 3, stride=1, padding=1)
    share = (sums[:, 0] / sums[:, 1].clamp(min=1e-6)).clamp(0.0, 1.0)                  # [B, h, w]
    return share.view(-1, box[0] * box[1])[face, local]


def render_retargeted(photo: torch.Tensor, deformation: Deformation, model: FaceModel,
                      backend: str = "auto", eyes: EyeAppearance | None = None,
                      mouth: MouthAppearance | None = None, grain: Grain | None = None,
                      parts: ModelParts | None = None) -> RetargetRender:
    """Re-render B faces of one photo, or of B photos one each, with their target geometry and
    composite them.

    Texture: each target pixel's surface point is looked up on the *source* mesh in the
    photo, and used when the photo shows that point: the surface the photo shows there
    (source z-buffer) is not in front of it. A skin point the photo does not show
    (self-occlusion, e.g. the far cheek of a turned face) is left to the photo: a hidden
    texel is never smeared across the face. An interior point (mouth socket, teeth, gums,
    tongue) the photo does not show is shaded (:mod:`.materials`; where shaded and photo
    pixels meet, the two are blended), and so is an eyeball point the photo's lids hid, when
    ``eyes`` is given (:mod:`.eyes`; without it such points are left to the photo, like skin).
    Every drawn pixel then gets the photo's grain it lacks (:mod:`.grain`).

    Args:
        photo: [1, C, H, W] float in [0, 1], the photo of the B faces; or [B, C, H, W], face b's
            photo at b (a batch of photos of one size: each is rendered and composited as if
            alone, in the window that holds every face).
        deformation: B faces of this photo (:func:`affectsynth.deform.retarget`).
        model: the face model the deformation was made with (triangles, materials, regions).
        backend: rasteriser backend name or "auto".
        eyes: the B faces' :class:`~affectsynth.render.eyes.EyeAppearance`, or None.
        mouth: the B faces' :class:`~affectsynth.render.materials.MouthAppearance`, or None
            to measure it here (pass it when rendering one photo to many targets).
        grain: the B faces' photos' :class:`~affectsynth.render.grain.Grain` (:func:`measure_grain`),
            or None to measure it here.
        parts: ``model``'s :func:`model_parts`, or None to derive them here
            (pass them when rendering many).
    Returns:
        :class:`RetargetRender`.
    """
    height, width = photo.shape[-2:]
    if photo.shape[0] not in (1, deformation.source_image.shape[0]):
        raise ValueError(f"photo must be [1 or B, C, H, W] for B = {deformation.source_image.shape[0]} faces, "
                         f"got {list(photo.shape)}")
    backend = resolve_backend(backend, photo.device)
    parts = parts if parts is not None else model_parts(model)
    faces = parts.triangles
    src, dst, px_per_mm = deformation.source_image, deformation.target_image, deformation.px_per_mm
    b = src.shape[0]
    face_size, (lo_x, lo_y, hi_x, hi_y) = _extents(src, dst)
    feather = [size * FEATHER_FRACTION for size in face_size]
    # Work in the window that holds every face before and after, plus the feather: pixels
    # outside it cannot change, and the per-pixel work scales with the face, not the photo.
    margin = 2 * max(feather) + 2
    x0, y0 = int(max(0.0, lo_x - margin)), int(max(0.0, lo_y - margin))
    x1, y1 = int(min(float(width), hi_x + margin + 1)), int(min(float(height), hi_y + margin + 1))
    if x1 <= x0 or y1 <= y0:  # every face is off the image
        return RetargetRender(photo=photo, box=(0, 0, 0, 0), window=photo[..., :0, :0],
                              window_mask=photo.new_zeros(b, 1, 0, 0), backend=backend)
    src_w, dst_w = (_moved(points, px_per_mm, parts.eyeballs, EYEBALL_DEPTH_BIAS_MM, (x0, y0)) for points in (src, dst))
    window = photo[..., y0:y1, x0:x1]   # [1 or B, C, h, w]: the steps below read face b's photo at b
    size = (y1 - y0, x1 - x0)

    # Only skin hides things in a photo: interior parts lie behind it, and where a fitted face
    # lets one poke through (a premolar beside a wide mouth's corner) it must not hide the skin.
    skin_faces = parts.skin_triangles
    src_frags = rasterize(src_w, skin_faces, size, backend)
    frags = rasterize_target(dst_w, parts, px_per_mm, size, backend)
    # Per-pixel work is done on the drawn pixels only, as a [B, 1, N] image of them (the rest
    # of the window is the photo's), then put back in place for the masks and the compositing.
    # (a pixel where nothing is drawn, padding, has the skin's material: it is neither part below)
    drawn = _drawn_pixels(frags, parts.triangle_material)
    pixels, drawn_frags, material, interior, eyeball_px = (drawn.pixels, drawn.frags, drawn.material, drawn.interior,
                                                           drawn.eyeball)
    # Every per-vertex quantity the pixels need, interpolated in one pass (one corner lookup):
    # the source position in the window, the source and target normals, the target in mm and
    # the rest position (mm, the model's mean shape: where the creases are drawn).
    source_normals, target_normals = vertex_normals(torch.cat((src_w, dst_w)), faces).split(b)   # one pass for both
    rest = model.mean.to(src_w)[None].expand(b, -1, -1)
    attributes = torch.stack((src_w, source_normals, target_normals, deformation.target, rest))   # [5, B, V, 3]
    values, seen, colour, ratio = _surface_samples(attributes, drawn_frags, faces, src_frags, src_w, skin_faces,
                                                   window)
    where, rest_mm = values[..., 0:3], values[..., 12:15]   # (the target normal and point: read from values below)
    # Skin the photo shows is re-shaded where the expression turned it (folds, bulges) and
    # darkened along the creases its action units deepen.
    lines, crease_factor = parts.creases, None
    if lines is not None:
        target_au, source_au = model_coeffs_to_au(torch.cat((deformation.exp_target, deformation.exp_source)),
                                                  model).split(b)
        deepened = (target_au - source_au).clamp(0.0, 1.0)                                    # [B, A]
        crease_factor = crease_shading(rest_mm[..., :2].reshape(b, -1, 2), deepened,
                                       lines, px_per_mm).reshape(ratio.shape)
    colour = _reshaded(colour, ratio, crease_factor, seen, material)
    # Skin shows only what the photo shows; the mouth interior (and, with ``eyes``, the
    # eyeballs) are shaded where it does not.
    mouth_appearance = None
    if drawn.any_interior:
        mouth_appearance = mouth if mouth is not None else _measured_mouth(photo, src, model)
        seen = _interior_seen(interior, seen, pixels, where, src_frags, frags, parts.skin_triangle, material, colour,
                              mouth_appearance.lip, px_per_mm, size)
    # Eyeball pixels in the photo's lid band that the target lifts the lid off are painted too,
    # and the band goes with the lid (EYE_LID_BAND_MM).
    lid_band = None  # [B, h, w] the photo's band where it went with a raised lid
    if eyes is not None:
        band_px = (EYE_LID_BAND_MM * px_per_mm).ceil().long().clamp(min=EYE_PHOTO_MIN_BAND_PX)   # [B]
        seen, raised = _lid_lifted(eyeball_px, seen, pixels, where, src_frags, frags, parts.skin_triangle, band_px, size)
        if raised:  # a lid moved off some eyeball
            take, band_xy = _lid_band(eyeball_px, pixels, where, src_frags, frags, parts.skin_triangle, band_px, size)
            colour, seen, lid_band = _moved_band(eyeball_px, take, band_xy, window, pixels, size, colour, seen)
    shaded = interior & ~seen   # the mouth interior's pixels to shade (they have none of the photo's grain)
    # The eyes and the mouth are shaded only at the pixels that need it (few), each pixel as a
    # face of its own ([N, 1, ...] with its face's appearance), so the shaders stay batched.
    # Painted and photo eyeball pixels are blended as the mouth's are (by the share of photo
    # pixels around each): decided pixel by pixel, a band a pixel or two wide became a checkerboard.
    if eyes is not None:
        shaded = shaded | (eyeball_px & ~seen)   # and the eyeball's to paint
        colour, seen = _painted_eyes(eyeball_px, seen, pixels, values, frags, parts.skin_triangle, lid_band, window,
                                     colour, eyes, px_per_mm, size)
    if mouth_appearance is not None:
        rim_z = deformation.target[:, parts.lip_rim, 2].mean(1)                                      # [B] mm
        colour, lit = _dimmed_interior(colour, interior, seen, mouth_appearance, deformation, parts.lip_midline)
        colour = _shaded_interior(interior, seen, pixels, values, material, colour, rim_z, lit, size)
        colour = _smoothed_mouth_edges(colour, material, interior & ~seen, pixels, window, size)
    grain = grain if grain is not None else measure_grain(photo, src, model)
    colour = add_grain(colour, where, shaded, grain, pixels, window, (y0, x0))
    # A speck the photo does not show (a pixel or two where the lips meet at a corner) would
    # otherwise become a hole the size of the feather, the photo's old corner showing through.
    coverage = _in_place((seen | interior)[:, 0], pixels, size, photo.dtype)[:, None]
    speck = [max(SPECK_PX, round(SPECK_MM * scale)) for scale in px_per_mm.tolist()]   # px, per face
    # Undrawn pixels hold the photo's own: the feathered mask reaches about half a feather past
    # the coverage, so they show, faintly, and must not bring in another pixel's colour.
    masks = feathered_mask(coverage, feather, speck)                                    # [B, 1, h, w]
    if photo.shape[0] == 1:  # faces of one photo are composited onto it in turn (B is the number of faces, small)
        out = window
        for i in range(b):
            out = _composited(out, colour[i:i + 1, 0], pixels[i:i + 1], window, masks[i:i + 1])
    else:                    # each face onto its own photo, together
        out = _composited(window, colour[:, 0], pixels, window, masks)
    return RetargetRender(photo=photo, box=(y0, y1, x0, x1), window=out, window_mask=masks, backend=backend)
