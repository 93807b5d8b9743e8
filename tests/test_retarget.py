"""Deform + render + composite on a real photo: texture moves with the target geometry."""

from __future__ import annotations

import dataclasses

import torch

from affectsynth.affect.targets import parse_au, parse_expression
from affectsynth.deform import retarget
from affectsynth.fit import FitResult
from affectsynth.pipeline import FaceFitter
from affectsynth.camera import rotation_from_euler_deg, to_image_space
from affectsynth.model.face_model import MATERIALS
from affectsynth.render.raster import rasterize
from affectsynth.render.retarget import model_parts, rasterize_target, render_retargeted, stacked_rows


def _to_tensor(image):
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def _to_image(tensor):
    return (tensor[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()


def test_unchanged_expression_reproduces_the_photo(default_model, astronaut, mp_detector):
    fit = FaceFitter(default_model, mp_detector)(astronaut).fit
    out = render_retargeted(_to_tensor(astronaut), retarget(default_model, fit, fit.exp_coeffs), default_model)
    diff = (out.image - _to_tensor(astronaut)).abs()
    assert diff.max() < 1.5 / 255 and out.mask.amax() > 0.99


def test_raised_brows_move_the_photo_brows_up(default_model, astronaut, mp_detector):
    """AU1+AU2 at full intensity added to the photo's own expression (her smile and parted jaw
    kept): MediaPipe finds the brows of the output higher, the chin not."""
    fit = FaceFitter(default_model, mp_detector)(astronaut).fit
    brows_up, _ = parse_au("1:1,2:1").to_model_coeffs(default_model)
    coeffs = torch.maximum(fit.exp_coeffs, brows_up[None].to(fit.exp_coeffs))
    out = render_retargeted(_to_tensor(astronaut), retarget(default_model, fit, coeffs), default_model)
    before, after = mp_detector(astronaut).xy[0], mp_detector(_to_image(out.image)).xy[0]
    brows, chin = [105, 66, 334, 296], 152  # mid-brow points of both brows; chin
    rise = (before[brows, 1] - after[brows, 1]).mean()   # px, image y points down
    scale_px_per_mm = float(fit.scale[0])
    assert rise > 3.0 * scale_px_per_mm, rise          # the model raises the brows ~8 mm at full intensity
    assert abs(before[chin, 1] - after[chin, 1]) < 2.0 * scale_px_per_mm  # detector jitter only


def test_two_faces_render_as_each_alone(default_model, astronaut, mp_detector):
    """B = 2 (each face's drawn pixels padded to the larger count) renders each face as it renders
    alone: the astronaut's face and a smaller copy beside it, apart, both made surprised."""
    fit = FaceFitter(default_model, mp_detector)(astronaut).fit
    copy = dataclasses.replace(fit, scale=fit.scale * 0.4,
                               translation=fit.translation + fit.translation.new_tensor([170.0, 190.0]))
    both = FitResult(**{f.name: torch.cat((getattr(fit, f.name), getattr(copy, f.name)))
                        if isinstance(getattr(fit, f.name), torch.Tensor) else getattr(fit, f.name)
                        for f in dataclasses.fields(FitResult)})
    coeffs, _ = parse_expression("surprise").to_model_coeffs(default_model)
    photo = _to_tensor(astronaut)
    out = render_retargeted(photo, retarget(default_model, both, coeffs[None].expand(2, -1).to(fit.exp_coeffs)),
                            default_model)
    alone = [render_retargeted(photo, retarget(default_model, both[i], coeffs[None].to(fit.exp_coeffs)), default_model)
             for i in range(2)]
    assert float((alone[0].mask * alone[1].mask).amax()) == 0.0   # apart: the masks do not touch
    assert torch.allclose(out.mask, torch.cat([a.mask for a in alone]), atol=1e-6)
    expected = photo + sum(a.image - photo for a in alone)
    assert float((out.image - expected).abs().amax()) < 1e-4 and float(out.mask[1].amax()) > 0.99


def test_brow_lowerer_creases_darken_the_glabella_only(default_model, astronaut, mp_detector):
    """AU4 at full intensity on the astronaut, rendered with the model's creases and with the
    same creases at zero depth: the renders differ only around the glabellar furrows (between
    the inner brow ends, above the nasal root), where the photo got darker on the whole."""
    fitted = FaceFitter(default_model, mp_detector)(astronaut)
    fit = fitted.fit
    frown, _ = parse_au("4:1").to_model_coeffs(default_model)
    deformation = retarget(default_model, fit, torch.maximum(fit.exp_coeffs, frown[None].to(fit.exp_coeffs)))
    photo = _to_tensor(astronaut)
    parts = model_parts(default_model)
    flat = dataclasses.replace(parts, creases=dataclasses.replace(parts.creases, depth=torch.zeros_like(parts.creases.depth)))
    creased = render_retargeted(photo, deformation, default_model, parts=parts).image
    plain = render_retargeted(photo, deformation, default_model, parts=flat).image
    luma = (creased - plain).mean(1)[0]                                                  # [H, W]
    changed = luma.abs() > 1.5 / 255
    assert int(changed.sum()) > 30
    ys, xs = changed.nonzero().unbind(1)
    after = mp_detector(_to_image(plain)).xy[0]
    inner_brows, nasal_root = after[[55, 285]], after[168]        # MediaPipe: inner brow ends, nasion
    margin = 4.0 * float(fit.scale[0])                             # 4 mm, in px
    assert xs.min() >= inner_brows[:, 0].min() - margin and xs.max() <= inner_brows[:, 0].max() + margin
    assert ys.max() <= nasal_root[1] + margin
    assert float(luma[changed].mean()) < -2.0 / 255                # darker where it changed


def test_skin_hides_the_mouth_interior_a_wide_jaw_swings_through_the_chin(default_model):
    """A wide-open jaw (AU25+26+27) on some identities of the model's prior, the head pitched,
    swings the socket's floor through the chin's skin: drawn plainly, interior pixels show with
    skin behind them (dark dashes below the lower lip, first seen on a dev photo). The target's
    raster never does."""
    n, size = 100, 256
    ids = torch.randn(n, default_model.id_basis.shape[0], generator=torch.Generator().manual_seed(1))
    jaw, _ = parse_au("25:1,26:1,27:1").to_model_coeffs(default_model)
    vertices = default_model(ids, jaw[None].expand(n, -1).to(default_model.dtype)).vertices
    rot = rotation_from_euler_deg(torch.zeros(n), torch.linspace(-20.0, 20.0, n), torch.zeros(n))
    scale = torch.full((n,), 0.8 * size / 155.0)
    image = to_image_space(vertices, rot, scale, torch.full((n, 2), size / 2.0))
    material = default_model.triangle_materials()
    skin = rasterize(image, default_model.triangles[material == MATERIALS.index("skin")], (size, size))

    def interior_over_skin(frags) -> torch.Tensor:   # [n] interior pixels with skin behind them
        kind = material[frags.tri_id.clamp(min=0)]
        interior = frags.mask & (kind != MATERIALS.index("skin")) & (kind != MATERIALS.index("eyeball"))
        return (interior & skin.mask & (frags.depth > skin.depth)).sum((1, 2))

    assert int((interior_over_skin(rasterize(image, default_model.triangles, (size, size))) > 0).sum()) >= 3
    assert int(interior_over_skin(rasterize_target(image, model_parts(default_model), scale, (size, size))).sum()) == 0


def test_the_upper_lid_shades_the_eyeball_it_uncovers():
    """An uncovered eyeball pixel right under the target's lid skin is darkened by LID_SHADOW,
    less so further down its column (e-fold every LID_SHADOW_MM), and not at all with no skin
    above it within reach."""
    from affectsynth.render.raster import Fragments
    from affectsynth.render.retarget import LID_SHADOW, LID_SHADOW_MM, _lid_shadow

    size, px_per_mm = (20, 3), torch.tensor([2.0])
    skin = torch.tensor([True, False])                                       # triangle 0 skin, 1 eyeball
    tri_id = torch.ones(1, *size, dtype=torch.int64)                         # eyeball everywhere...
    tri_id[0, :4, :2] = 0                                                    # ...under skin in rows 0-3 of columns 0-1
    frags = Fragments(tri_id=tri_id, bary=torch.zeros(1, *size, 3), depth=torch.zeros(1, *size), backend="test")
    pixels = torch.tensor([[4 * 3 + 0, 5 * 3 + 0, 8 * 3 + 1, 19 * 3 + 1, 4 * 3 + 2]])    # rows 4, 5, 8, 19; column 2
    shade = _lid_shadow(torch.ones(1, 1, 5, dtype=torch.bool), pixels, frags, skin, px_per_mm, size)
    expected = 1 - LID_SHADOW * torch.exp(-torch.tensor([1.0, 2.0, 5.0]) / 2.0 / LID_SHADOW_MM)
    torch.testing.assert_close(shade[:3], expected)
    assert shade[3] == 1.0 and shade[4] == 1.0                               # out of reach; no lid above
    # where the photo's lid band went with the lid (row 4 of column 0), it carries the shadow
    band = torch.zeros(1, *size, dtype=torch.bool)
    band[0, 4, 0] = True
    under_band = _lid_shadow(torch.ones(1, 1, 2, dtype=torch.bool), pixels[:, 1:3], frags, skin, px_per_mm, size,
                             band)
    assert under_band[0] == 1.0 and under_band[1] == shade[2]      # row 5 under the band; column 1 has none


def test_uncovered_sclera_takes_the_photos_sclera_below_it():
    """An uncovered eyeball pixel takes the mean colour of the photo's shown eyeball pixels just
    below it in its column (SCLERA_BELOW_AVERAGE_MM around the first); none within SCLERA_BELOW_MM,
    or one darker than SCLERA_BELOW_MIN_LUMA of the eye's sclera (the iris), gives none."""
    from affectsynth.render.retarget import _photo_sclera_below

    size = (8, 5)
    window = torch.zeros(1, 3, *size)
    window[0, :, 3:6, :2] = 0.8                                   # lit sclera under rows 0-2 of columns 0-1
    window[0, :, 3:6, 2:] = 0.1                                   # iris under columns 2-4
    shown = torch.zeros(size, dtype=torch.bool)
    shown[3:6] = True
    pixels = torch.arange(size[0] * size[1])[None]                 # every pixel of the window, in raster order
    selected = torch.zeros(1, 1, size[0] * size[1], dtype=torch.bool)
    for row, col in ((1, 0), (1, 3), (0, 0)):                      # 2 rows above the sclera; above the iris; 3 rows
        selected[0, 0, row * size[1] + col] = True
    colour, found = _photo_sclera_below(selected, pixels, shown.reshape(1, 1, -1), window,
                                        torch.full((3, 3), 0.8), torch.tensor([1.0]), size)
    # raster order: (0, 0), (1, 0), (1, 3); 1 px/mm: within 2 px; averaged over 3 x 3 around the first row + 1
    torch.testing.assert_close(colour[1], torch.full((3,), 0.8))
    assert found.tolist() == [False, True, False]


def test_a_batch_of_photos_renders_each_as_alone(default_model, astronaut, mp_detector, monkeypatch):
    """photo [B, C, H, W] (face b in photo b): three photos of one size, each with its own fit,
    target and measured eyes and mouth, render in one call to the values each face renders alone
    (to float rounding; the CPU kernels), and the torch path (the differentiable and GPU one) agrees with them."""
    import cv2
    import numpy as np

    from affectsynth.pipeline import FaceFit, Synthesizer
    from affectsynth.render import kernels

    crop = cv2.resize(astronaut[40:440, 60:460], astronaut.shape[1::-1], interpolation=cv2.INTER_AREA)
    photos = [astronaut, np.ascontiguousarray(astronaut[:, ::-1]), crop]
    targets = ["surprise", "happiness", "fear"]
    with Synthesizer(default_model) as synthesizer:
        fitted = [synthesizer.face_fitter(p) for p in photos]
        measured = [synthesizer.appearance(p, f) for p, f in zip(photos, fitted)]
    fits = [f.fit for f in fitted]
    batch_fit = FitResult.cat(fits)
    coeffs = torch.stack([parse_expression(t).to_model_coeffs(default_model)[0] for t in targets]).to(fits[0].exp_coeffs)
    appearance = {part: stacked_rows([m[part] for m in measured]) for part in measured[0]}
    batch = torch.cat([_to_tensor(p) for p in photos])

    deformation = retarget(default_model, batch_fit, coeffs)
    out = render_retargeted(batch, deformation, default_model, **appearance)
    # (each face's rows of the one deformation: the batch's blend is another matrix product, whose
    # sums may round differently in the last bit)
    rows = [dataclasses.replace(deformation, **{f.name: getattr(deformation, f.name)[i:i + 1]
                                                for f in dataclasses.fields(deformation)}) for i in range(3)]
    alone = [render_retargeted(_to_tensor(p), row, default_model, **m) for p, row, m in zip(photos, rows, measured)]
    assert out.window.shape[0] == 3 and out.window_mask.shape[0] == 3
    for i, single in enumerate(alone):   # to float rounding: a window of another origin rounds the lookups differently
        assert float((out.image[i] - single.image[0]).abs().amax()) < 1e-5, targets[i]
        assert float((out.image[i] - batch[i]).abs().amax()) > 0.2          # each photo re-expressed
    monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    reference = render_retargeted(batch, deformation, default_model, **appearance)
    assert float((reference.image - out.image).abs().amax()) < 1e-5


def test_the_torch_path_has_no_python_loop_over_faces(default_model, astronaut, monkeypatch):
    """The batched path a GPU takes (torch ops; the CPU kernels off) makes as many torch calls for a
    batch of six photos as for one of two: no step loops over the faces in Python (on a GPU each
    such step would launch its kernels once per face, which would bound a batch's images/s)."""
    from torch.overrides import TorchFunctionMode

    from affectsynth.pipeline import Synthesizer
    from affectsynth.render import kernels

    class Calls(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.count += 1
            return func(*args, **(kwargs or {}))

    with Synthesizer(default_model) as synthesizer:
        fitted = synthesizer.face_fitter(astronaut)
        appearance = synthesizer.appearance(astronaut, fitted)
    coeffs = torch.stack([parse_expression(t).to_model_coeffs(default_model)[0]
                          for t in ("surprise", "happiness")]).to(fitted.fit.exp_coeffs)
    photo, parts = _to_tensor(astronaut), model_parts(default_model)
    monkeypatch.setattr(kernels, "use_kernels", lambda *tensors: False)
    calls, images = {}, {}
    for b in (2, 2, 6):   # (surprise, happiness) repeated: the same steps apply; the first call makes caches
        deformation = retarget(default_model, FitResult.cat([fitted.fit] * b), coeffs.repeat(b // 2, 1))
        stacked = {part: stacked_rows([appearance[part]] * b) for part in appearance}
        with Calls() as counted:
            images[b] = render_retargeted(photo.expand(b, -1, -1, -1), deformation, default_model, parts=parts,
                                          **stacked).image
        calls[b] = counted.count
    assert calls[2] > 300 and calls[6] == calls[2], calls
    assert float((images[6][4:] - images[2]).abs().amax()) < 1e-6       # and the batch renders each as before
    assert float((images[2][0] - images[2][1]).abs().amax()) > 0.2


def test_the_mouths_edges_are_smoothed_and_nothing_else():
    """A window whose drawn pixels are shaded teeth (white) above shaded socket (black) on the left,
    skin on the right, and, below, teeth and socket the photo shows: across the shaded teeth-socket
    edge the rows either side become a ramp ([1 2 1]^2 / 16: 3/4 and 1/4 white), as do the pixels where
    the shaded interior meets the skin; the photo's own edge, skin farther than a pixel from the shaded
    interior, and the interior away from an edge keep their colours."""
    from affectsynth.render.retarget import _smoothed_mouth_edges

    size = (12, 10)
    rows, cols = torch.meshgrid(torch.arange(12), torch.arange(10), indexing="ij")
    skin, socket, teeth = (MATERIALS.index(m) for m in ("skin", "mouth_socket", "teeth"))
    material = torch.where(cols >= 5, skin, torch.where((rows < 4) | ((rows >= 8) & (rows < 10)), teeth, socket))
    material = material.reshape(1, 1, -1)
    shaded = ((material != skin) & (rows < 6).reshape(1, 1, -1))
    colour = torch.where(material == teeth, 1.0, torch.where(material == skin, 0.6, 0.0))[..., None].repeat(1, 1, 1, 3)
    out = _smoothed_mouth_edges(colour, material, shaded, torch.arange(120)[None], torch.zeros(1, 3, 12, 10),
                                size)[0, 0, :, 0].view(12, 10)
    torch.testing.assert_close(out[3, 1:4], torch.full((3,), 0.75))            # shaded teeth above the edge
    torch.testing.assert_close(out[4, 1:4], torch.full((3,), 0.25))            # shaded socket below it
    assert (out[:2, :4] == 1).all() and (out[5, :4] == 0).all()                # away from it: unchanged
    assert (out[7:11, :4] == colour[0, 0, :, 0].view(12, 10)[7:11, :4]).all()  # the photo's own edge stays
    assert (out[:, 7:] == 0.6).all() and (out[:6, 4:6] != torch.tensor([0.0, 0.6])).any()   # the skin beside
