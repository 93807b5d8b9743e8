"""CPU kernels (numba; OpenCV's morphology and separable filter) for the per-pixel work of
:mod:`.retarget`, :mod:`.materials`, :mod:`.creases` and :mod:`.composite`.

The torch formulations in those modules are the reference and the differentiable path. On the
CPU, where no gradient is asked for (``torch.no_grad``, as in ``render`` and the training hook),
the renderer calls these instead: one pass over the pixels in place of a dozen tensor ops, each
of which costs more in dispatch and temporaries than in arithmetic at a face's size (224^2: ~20k
pixels). Each kernel does the reference's floating-point operations in the reference's order, so
it returns the same bits (``tests/test_kernels.py``); numba does not contract a * b + c into a
fused multiply-add unless asked (``fastmath``), and none of these ask. The exceptions agree to
the last bit or so: :func:`vertex_normals` (torch's ``cross`` and ``norm`` fuse multiply-adds),
the shading ratio of :func:`surface_samples`, :func:`face_creases`, :func:`shade_mouth`,
:func:`shade_interior`, :func:`paint_eyes` and :func:`lid_shadow` (torch's and libm's ``pow``
and ``exp``) and :func:`separable_filter` (OpenCV's order of summation).

:func:`surface_samples` chains four reference ops per drawn pixel (interpolate, the photo's
depth there, its colour there, the shading ratio) in one loop body: as four kernels, each pass
re-read from memory the [P, 15] values the first wrote (~2x the time at 224^2). The steps the
kernels share (the bilinear lookup, the nearest drawn pixel, the lid's shadow, the mouth's
colour) are jitted helpers inlined where they are called (``inline="always"``: as fast as
writing them out, measured on :func:`surface_samples`); called instead, each call pays numba's
reference counting on its array arguments.

:func:`polygon_pixels` takes the pixels of the eye and mouth openings whose colours set a photo's
eye and mouth appearance (measured once per photo: in the training hook, on every photo whose fit
is not in memory).

The renderer's steps after the lookup are one kernel each (:func:`interior_seen`,
:func:`lid_lifted`, :func:`take_band`, :func:`paint_eyes`, :func:`shade_interior`): each went
through its pixels in a few dozen tensor ops on masks of the drawn pixels, ~0.1-0.5 ms at 224^2
in dispatch alone.

:func:`add_grain` gives each composited pixel the photo's grain it lacks (:mod:`.grain`).

Per-point kernels loop over the batch and then, in parallel, over its points: one ``prange`` over
B * N with ``task // N`` spent a 64-bit division per point, about as long as a bilinear lookup
(B is the number of faces in a photo, mostly 1).

Arrays are numpy views of the tensors (no copies where the tensor is already contiguous).
"""

from __future__ import annotations

from collections.abc import Callable
from types import FunctionType

import cv2
import numba
import numpy as np
import torch

__all__ = ["compiled", "use_kernels", "surface_samples", "blend", "vertex_normals", "max_filter", "min_filter",
           "radius_reached", "neighbour_share", "shade_mouth", "drawn_pixels", "in_place", "lid_shadow", "lid_band",
           "sclera_below", "face_creases", "separable_filter", "reshade", "to_uint8_hwc", "blend_drawn",
           "interior_seen", "lid_lifted", "take_band", "paint_eyes", "shade_interior", "extents", "moved",
           "closed_eroded_blurred", "polygon_pixels", "sample_image", "eye_colours", "linear_quantile", "add_grain"]


def compiled(kernel) -> tuple[Callable, Callable]:
    """(parallel, serial) numba builds of a kernel that loops with ``numba.prange``.

    The serial build runs where torch is asked for one thread: DataLoader workers (which set it)
    and batch workers. There it is also the only one that works: numba's threading layer in the
    PyPI wheels (workqueue) hangs or aborts in a forked child, and it would oversubscribe cores
    that other processes already use."""
    serial = FunctionType(kernel.__code__, kernel.__globals__, kernel.__name__ + "_serial")
    serial.__qualname__ = kernel.__qualname__ + "_serial"  # its own cache file: numba keys its cache by name, not flags
    return numba.njit(cache=True, parallel=True)(kernel), numba.njit(cache=True)(serial)


def _build(kernel) -> Callable:
    """The build of ``kernel`` (:func:`compiled`) for torch's current number of threads."""
    parallel, serial = compiled(kernel)
    return lambda *args: (serial if torch.get_num_threads() == 1 else parallel)(*args)


def use_kernels(*tensors: torch.Tensor) -> bool:
    """Whether an op on these tensors takes its kernel: all on the CPU, and no gradient asked for."""
    if not all(t.is_cpu for t in tensors):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


@numba.njit(cache=True, inline="always")
def _bilinear_into(image, x, y, out, row):  # pragma: no cover - jitted
    """out[row, :] = image [C, H, W] at the point (x, y) px, bilinear between pixel centres and
    clamped to the outermost ones (shade.sample_image's steps, in the image's dtype)."""
    one, half = image.dtype.type(1.0), image.dtype.type(0.5)
    right, bottom_edge = image.dtype.type(image.shape[2] - 0.5), image.dtype.type(image.shape[1] - 0.5)
    sx = min(max(image.dtype.type(x), half), right) - half
    sy = min(max(image.dtype.type(y), half), bottom_edge) - half
    fx, fy = sx - np.floor(sx), sy - np.floor(sy)
    c0, r0 = int(np.floor(sx)), int(np.floor(sy))
    c1, r1 = min(c0 + 1, image.shape[2] - 1), min(r0 + 1, image.shape[1] - 1)
    for c in range(image.shape[0]):
        top = image[c, r0, c0] * (one - fx) + image[c, r0, c1] * fx
        bottom = image[c, r1, c0] * (one - fx) + image[c, r1, c1] * fx
        out[row, c] = top * (one - fy) + bottom * fy


@numba.njit(cache=True, inline="always")
def _catmull_rom(t, half, one, two, one_half, two_half):  # pragma: no cover - jitted
    """The 4 Catmull-Rom weights of the taps at -1, 0, 1, 2 for a point t in [0, 1) past tap 0
    (shade.catmull_rom's steps; the constants in t's dtype)."""
    return (((-half * t + one) * t - half) * t, (one_half * t - two_half) * t * t + one,
            ((-one_half * t + two) * t + half) * t, (half * t - half) * t * t)


@numba.njit(cache=True, inline="always")
def _bicubic_into(image, x, y, out, row):  # pragma: no cover - jitted
    """out[row, :] = image [C, H, W] at the point (x, y) px: Catmull-Rom between pixel centres (taps
    beyond the image repeat its edge), the point clamped to the outermost centres (shade.sample_image's
    "bicubic" steps, in the image's dtype)."""
    zero, one, half = image.dtype.type(0.0), image.dtype.type(1.0), image.dtype.type(0.5)
    height, width = image.shape[1], image.shape[2]
    sx = min(max(image.dtype.type(x), half), image.dtype.type(width - 0.5)) - half
    sy = min(max(image.dtype.type(y), half), image.dtype.type(height - 0.5)) - half
    c0, r0 = int(np.floor(sx)), int(np.floor(sy))
    two, one_half, two_half = image.dtype.type(2.0), image.dtype.type(1.5), image.dtype.type(2.5)
    wx = _catmull_rom(sx - np.floor(sx), half, one, two, one_half, two_half)
    wy = _catmull_rom(sy - np.floor(sy), half, one, two, one_half, two_half)
    cols = (max(c0 - 1, 0), c0, min(c0 + 1, width - 1), min(c0 + 2, width - 1))
    for c in range(image.shape[0]):
        value = zero
        for j in range(4):
            r = min(max(r0 - 1 + j, 0), height - 1)
            across = image[c, r, cols[0]] * wx[0] + image[c, r, cols[1]] * wx[1]
            across = across + image[c, r, cols[2]] * wx[2]
            across = across + image[c, r, cols[3]] * wx[3]
            value = value + across * wy[j]
        out[row, c] = value


@numba.njit(cache=True, inline="always")
def _source_pixel(x, y, height, width):  # pragma: no cover - jitted
    """(row, col) of the pixel of an image of (height, width) that holds the point (x, y) px,
    clamped into the image (shade.sample_image's "nearest")."""
    return int(min(max(np.floor(y), 0.0), height - 1.0)), int(min(max(np.floor(x), 0.0), width - 1.0))


def _surface_samples(attr, faces, tri_id, bary, photo_tri_id, photo_verts, photo_faces, image, tolerance,
                     light, ambient, diffuse, lowest, highest, exponent, values, seen, colour, ratio):  # pragma: no cover - jitted
    """:func:`surface_samples`, one pass per drawn pixel; each step in its torch op's order
    (every scalar of the ratio in the normals' dtype and of the lookup in the image's, as torch
    takes Python scalars: float32 stays float32)."""
    n_batch, n_pixels, channels = values.shape
    height, width = photo_tri_id.shape[1], photo_tri_id.shape[2]
    # Each vertex's values side by side (a pixel's three corners are then three runs of memory,
    # not one per part: read from the parts as they lie, the lookup took 1.3x as long).
    corner = np.empty((attr.shape[2], channels), attr.dtype)
    zero, one_ratio = ambient - ambient, ambient / ambient
    planes = np.empty((photo_faces.shape[0], 10))   # each photo triangle's corner, edges and det, once
    for b in range(n_batch):
        verts = photo_verts[b].astype(np.float64)   # (in float64, as surface_depth_at)
        for s in range(photo_faces.shape[0]):
            j0, j1, j2 = photo_faces[s, 0], photo_faces[s, 1], photo_faces[s, 2]
            x0, y0, z0 = verts[j0, 0], verts[j0, 1], verts[j0, 2]
            planes[s, 0], planes[s, 1], planes[s, 2] = x0, y0, z0
            planes[s, 3], planes[s, 4], planes[s, 5] = verts[j1, 0] - x0, verts[j1, 1] - y0, verts[j1, 2] - z0
            planes[s, 6], planes[s, 7], planes[s, 8] = verts[j2, 0] - x0, verts[j2, 1] - y0, verts[j2, 2] - z0
            planes[s, 9] = planes[s, 3] * planes[s, 7] - planes[s, 4] * planes[s, 6]
        for v in range(attr.shape[2]):
            for a in range(attr.shape[0]):
                for c in range(attr.shape[3]):
                    corner[v, a * attr.shape[3] + c] = attr[a, b, v, c]
        photo = image[b]   # face b's photo ([C', H, W])
        for p in numba.prange(n_pixels):
            # shade.interpolate: summed from corner 0 (zero where nothing is drawn)
            tri = tri_id[b, p]
            if tri < 0:
                values[b, p] = 0.0
            else:
                i0, i1, i2 = faces[tri, 0], faces[tri, 1], faces[tri, 2]
                w0, w1, w2 = bary[b, p, 0], bary[b, p, 1], bary[b, p, 2]
                for c in range(channels):
                    value = w0 * corner[i0, c]
                    value += w1 * corner[i1, c]
                    value += w2 * corner[i2, c]
                    values[b, p, c] = value
            # shade.surface_depth_at (float64): the plane of the photo's triangle at the point
            x, y = np.float64(values[b, p, 0]), np.float64(values[b, p, 1])
            col, row = np.floor(x), np.floor(y)
            shown = -1
            if col >= 0 and col < width and row >= 0 and row < height:
                shown = photo_tri_id[b, int(row), int(col)]
            visible = tri >= 0
            if visible and shown >= 0:
                x0, y0, z0 = planes[shown, 0], planes[shown, 1], planes[shown, 2]
                e1x, e1y, e1z = planes[shown, 3], planes[shown, 4], planes[shown, 5]
                e2x, e2y, e2z = planes[shown, 6], planes[shown, 7], planes[shown, 8]
                det = planes[shown, 9]
                px, py = x - x0, y - y0
                u1 = (px * e2y - py * e2x) / det
                u2 = (e1x * py - e1y * px) / det
                visible = z0 + u1 * e1z + u2 * e2z <= np.float64(values[b, p, 2]) + tolerance
            seen[b, p] = visible
            _bicubic_into(photo, values[b, p, 0], values[b, p, 1], colour[b], p)   # shade.sample_image
            # materials.shading_ratio of the source normal (channels 3-5) and the target's (6-8)
            lit_source = -(values[b, p, 3] * light[0] + values[b, p, 4] * light[1] + values[b, p, 5] * light[2])
            lit_target = -(values[b, p, 6] * light[0] + values[b, p, 7] * light[1] + values[b, p, 8] * light[2])
            change = (ambient + diffuse * max(lit_target, zero)) / (ambient + diffuse * max(lit_source, zero))
            clamped = min(max(change, lowest), highest)
            ratio[b, p] = clamped ** exponent if clamped != one_ratio else one_ratio   # (pow(1, e) is 1: spared)


@numba.njit(cache=True)
def _vertex_normals(verts, faces, out):  # pragma: no cover - jitted
    """Area-weighted unit vertex normals of :func:`~affectsynth.render.materials.vertex_normals`:
    face normals added corner by corner (all first corners, then the second, then the third)."""
    n_batch, n_verts = verts.shape[0], verts.shape[1]
    n_faces = faces.shape[0]
    normal = np.empty((n_faces, 3), verts.dtype)
    tiny = verts.dtype.type(1e-12)
    for b in range(n_batch):
        out[b] = 0.0
        for f in range(n_faces):
            i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
            ax, ay, az = verts[b, i1, 0] - verts[b, i0, 0], verts[b, i1, 1] - verts[b, i0, 1], verts[b, i1, 2] - verts[b, i0, 2]
            bx, by, bz = verts[b, i2, 0] - verts[b, i0, 0], verts[b, i2, 1] - verts[b, i0, 1], verts[b, i2, 2] - verts[b, i0, 2]
            normal[f, 0] = ay * bz - az * by
            normal[f, 1] = az * bx - ax * bz
            normal[f, 2] = ax * by - ay * bx
        for k in range(3):
            for f in range(n_faces):
                v = faces[f, k]
                out[b, v, 0] += normal[f, 0]
                out[b, v, 1] += normal[f, 1]
                out[b, v, 2] += normal[f, 2]
        for v in range(n_verts):
            length = np.sqrt(out[b, v, 0] * out[b, v, 0] + out[b, v, 1] * out[b, v, 1] + out[b, v, 2] * out[b, v, 2])
            length = max(length, tiny)
            out[b, v, 0] /= length
            out[b, v, 1] /= length
            out[b, v, 2] /= length


@numba.njit(cache=True, inline="always")
def _nearest_drawn(tri_id, flagged, any_triangle, f, r, c, reach):  # pragma: no cover - jitted
    """The Chebyshev distance (inside the image) from (r, c) of image f to the nearest pixel that
    draws a triangle (``any_triangle``) or a ``flagged`` one, if within ``reach``; else reach + 1.
    (Inlined where it is called: as a call, numba counts references to its arrays every time.)"""
    height, width = tri_id.shape[1], tri_id.shape[2]
    nearest = reach + 1
    for i in range(max(r - reach, 0), min(r + reach + 1, height)):
        for j in range(max(c - reach, 0), min(c + reach + 1, width)):
            tri = tri_id[f, i, j]
            if tri >= 0 and (any_triangle or flagged[tri]):
                nearest = min(nearest, max(abs(i - r), abs(j - c)))
    return nearest


def _radius_reached(tri_id, flagged, any_triangle, face, rows, cols, radii, out):  # pragma: no cover - jitted
    """out[m]: the smallest of the increasing ``radii`` within which (Chebyshev distance, inside
    the image) image face[m] draws a triangle (``any_triangle``) or a ``flagged`` one around
    (rows[m], cols[m]); the last + 1 if none is."""
    reach = radii[-1]
    for m in numba.prange(face.shape[0]):
        nearest = _nearest_drawn(tri_id, flagged, any_triangle, face[m], rows[m], cols[m], reach)
        out[m] = reach + 1
        for radius in radii:
            if nearest <= radius:
                out[m] = radius
                break


def _interior_seen(interior, pixels, where, photo_tri_id, target_tri_id, is_skin, material, colour, lip, clearance,
                   teeth, max_move, luma_weights, tooth_luma, tooth_saturation, seen):  # pragma: no cover - jitted
    """seen[b, p] &= not (moved or slit in the photo but not in the target) at the mouth's interior
    pixels, a tooth in the photo being neither (retarget._interior_seen's torch steps, in place)."""
    n_batch, n_pixels = interior.shape
    height, width = photo_tri_id.shape[1], photo_tri_id.shape[2]
    zero, half, tiny = colour.dtype.type(0.0), colour.dtype.type(0.5), colour.dtype.type(1e-6)
    for b in range(n_batch):
        lip_top = max(lip[b, 0], lip[b, 1], lip[b, 2])
        lip_luma = zero + lip[b, 0] * luma_weights[0] + lip[b, 1] * luma_weights[1] + lip[b, 2] * luma_weights[2]
        lip_saturation = (lip_top - min(lip[b, 0], lip[b, 1], lip[b, 2])) / max(lip_top, tiny)
        reach = clearance[b]
        for p in numba.prange(n_pixels):
            if not interior[b, p]:
                continue
            r, c = pixels[b, p] // width, pixels[b, p] % width
            x, y = where[b, p, 0], where[b, p, 1]
            dx, dy = x - (colour.dtype.type(c) + half), y - (colour.dtype.type(r) + half)
            moved = np.sqrt(dx * dx + dy * dy) > max_move
            top = max(colour[b, p, 0], colour[b, p, 1], colour[b, p, 2])
            luma = zero + colour[b, p, 0] * luma_weights[0] + colour[b, p, 1] * luma_weights[1] \
                + colour[b, p, 2] * luma_weights[2]
            saturation = (top - min(colour[b, p, 0], colour[b, p, 1], colour[b, p, 2])) / max(top, tiny)
            if material[b, p] == teeth and luma > tooth_luma * lip_luma and saturation <= tooth_saturation * lip_saturation:
                continue                            # a tooth in the photo keeps the photo's pixel
            source_r, source_c = _source_pixel(x, y, height, width)
            slit_in_photo = _nearest_drawn(photo_tri_id, is_skin, True, b, source_r, source_c, reach) <= reach
            slit_in_target = _nearest_drawn(target_tri_id, is_skin, False, b, r, c, reach) <= reach
            if moved or (slit_in_photo and not slit_in_target):
                seen[b, p] = False


def _lid_lifted(eyeball, pixels, where, photo_tri_id, target_tri_id, is_skin, band_px, seen):  # pragma: no cover - jitted
    """seen[b, p] = False at the eyeball pixels the photo shows whose source position has the
    photo's lid within band_px[b] and the target's lid farther (retarget._lid_lifted's torch
    steps, in place) -> (eyeball pixels shown before, eyeball pixels not shown after)."""
    n_batch, n_pixels = eyeball.shape
    height, width = photo_tri_id.shape[1], photo_tri_id.shape[2]
    reach = band_px.max()
    shown, unseen = 0, 0
    for b in range(n_batch):
        for p in numba.prange(n_pixels):
            if not eyeball[b, p]:
                continue
            if not seen[b, p]:
                unseen += 1
                continue
            shown += 1
            source_r, source_c = _source_pixel(where[b, p, 0], where[b, p, 1], height, width)
            in_photo = _nearest_drawn(photo_tri_id, is_skin, True, b, source_r, source_c, reach)
            if in_photo <= band_px[b] and _nearest_drawn(target_tri_id, is_skin, False, b, pixels[b, p] // width,
                                                         pixels[b, p] % width, reach) > in_photo:
                seen[b, p] = False
                unseen += 1
    return shown, unseen


@numba.njit(cache=True)
def _take_band(eyeball, take, band_xy, window, pixels, colour, seen, grid):  # pragma: no cover - jitted
    """At the m-th eyeball pixel (row-major) where take[m]: colour = the window at band_xy[m]
    (bilinear), seen and grid[b, its pixel] set -> how many were taken."""
    n_batch, n_pixels = eyeball.shape
    m, taken = 0, 0
    for b in range(n_batch):
        for p in range(n_pixels):
            if not eyeball[b, p]:
                continue
            if take[m]:
                _bilinear_into(window[b], band_xy[m, 0], band_xy[m, 1], colour[b], p)
                seen[b, p] = True
                grid[b, pixels[b, p]] = True
                taken += 1
            m += 1
    return taken


@numba.njit(cache=True, inline="always")
def _smoothstep(x, lo, span, one):  # pragma: no cover - jitted
    """eyes._smoothstep of x with ``lo``, ``span`` = hi - lo and ``one`` in x's dtype."""
    t = min(max((x - lo) / span, one - one), one)
    return t * t * ((one + one + one) - (one + one) * t)


@numba.njit(cache=True)
def _photo_share(part, seen, pixels, height, width):  # pragma: no cover - jitted
    """[M] float32 retarget._photo_share of the M pixels of ``part`` [B, N] (row-major): the share of
    the part's pixels around each that the photo shows (``seen``); empty where it shows them all
    (nothing to shade)."""
    chosen = np.zeros(part.shape, np.bool_)
    count, shading = 0, False
    for b in range(part.shape[0]):
        for p in range(part.shape[1]):
            if part[b, p]:
                count += 1
                chosen[b, p] = seen[b, p]
                shading = shading or not seen[b, p]
    share = np.empty(count if shading else 0, np.float32)
    if shading:
        _neighbour_share(chosen, part, pixels, height, width, share)
    return share


@numba.njit(cache=True)
def _paint_eyes(eyeball, seen, pixels, values, target_tri_id, is_skin, band, has_band, window, colour, centre, gaze,
                disc_radius, iris, pupil, sclera, px_per_mm, shadow_reach, shadow, shadow_mm, ambient, below_reach,
                below_half, below_mm, min_luma, luma_weights, gain, pupil_fraction, limbal_darkening, limbal_from,
                edge_softness):  # pragma: no cover - jitted
    """retarget._painted_eyes's torch steps at the eyeball pixels, in place on colour and seen."""
    n_batch, n_pixels = eyeball.shape
    height, width = target_tri_id.shape[1], target_tri_id.shape[2]
    real = colour.dtype.type
    zero, one = real(0.0), real(1.0)
    share = _photo_share(eyeball, seen, pixels, height, width)
    # the painted pixels: some paint goes in (the photo's share below 1), in row-major order
    n_painted = 0
    for m in range(share.shape[0]):
        n_painted += share[m] < 1       # (each unshown pixel is one: it is no share of itself)
    if n_painted == 0:
        return
    positions = np.empty((4, n_painted), np.int64)
    face, rows, cols, slot = positions[0], positions[1], positions[2], positions[3]
    photo_share, light = np.empty(n_painted, np.float32), np.empty(n_painted, px_per_mm.dtype)
    eye = np.empty(n_painted, np.int64)
    disc, sclera_share, eye_sclera = np.empty((n_painted, 3), real), np.empty(n_painted, real), np.empty((n_painted, 3), real)
    shown = np.zeros((n_batch, n_pixels), np.bool_)            # the photo's eyeball pixels not painted
    limit = np.empty(n_painted, px_per_mm.dtype)
    m, k = 0, 0
    pupil_lo = real(pupil_fraction - edge_softness / 2)
    pupil_span = real((pupil_fraction + edge_softness / 2) - (pupil_fraction - edge_softness / 2))
    iris_lo, iris_span = real(1.0 - edge_softness / 2), real((1.0 + edge_softness / 2) - (1.0 - edge_softness / 2))
    collarette_lo, collarette_span = real(pupil_fraction), real(0.6 - pupil_fraction)
    limbal_lo, limbal_span = real(limbal_from), real(1.0 - limbal_from)
    for b in range(n_batch):
        for p in range(n_pixels):
            if not eyeball[b, p]:
                continue
            shown[b, p] = seen[b, p] and share[m] >= 1
            if share[m] < 1:
                r, c = pixels[b, p] // width, pixels[b, p] % width
                face[k], rows[k], cols[k], slot[k], photo_share[k] = b, r, c, p, share[m]
                nx, ny, nz = values[b, p, 6], values[b, p, 7], values[b, p, 8]
                facing = abs(nz) / max(np.sqrt(nx * nx + ny * ny + nz * nz), real(1e-12))
                light[k] = _lid_light(target_tri_id, is_skin, band, has_band, b, r, c, px_per_mm, b, shadow_reach,
                                      shadow, shadow_mm) * (real(ambient) + real(1.0 - ambient) * facing)
                limit[k] = np.ceil(px_per_mm.dtype.type(below_mm) * px_per_mm[b])
                # eyes.eyeball_layers at the target point (mm): the nearer eye's iris disc and sclera
                x, y, z = values[b, p, 9], values[b, p, 10], values[b, p, 11]
                nearest, best = 0, np.inf
                for e in range(2):
                    dx, dy, dz = x - centre[b, e, 0], y - centre[b, e, 1], z - centre[b, e, 2]
                    distance = np.sqrt(dx * dx + dy * dy + dz * dz)
                    if distance < best:
                        nearest, best = e, distance
                e = nearest
                eye[k] = e
                ox, oy, oz = x - centre[b, e, 0], y - centre[b, e, 1], z - centre[b, e, 2]
                gx, gy, gz = gaze[b, e, 0], gaze[b, e, 1], gaze[b, e, 2]
                along = ox * gx + oy * gy + oz * gz
                lx, ly, lz = ox - along * gx, oy - along * gy, oz - along * gz
                lateral = np.sqrt(max(lx * lx + ly * ly + lz * lz, real(1e-12)))
                rho = lateral / disc_radius[b, e] if along > 0 else real(np.inf)
                collarette = one + real(gain) * (one - _smoothstep(rho, collarette_lo, collarette_span, one))
                limbal = one - real(limbal_darkening) * _smoothstep(rho, limbal_lo, limbal_span, one)
                in_pupil = one - _smoothstep(rho, pupil_lo, pupil_span, one)
                in_iris = one - _smoothstep(rho, iris_lo, iris_span, one)
                for q in range(3):
                    tone = iris[b, e, q] * collarette * limbal
                    disc[k, q] = in_pupil * pupil[b, e, q] + (one - in_pupil) * tone
                    eye_sclera[k, q] = sclera[b, e, q]
                sclera_share[k] = one - in_iris
                k += 1
            m += 1
    # the photo's sclera below each painted pixel, else its eye's mean of those found
    below, found = np.empty((n_painted, 3), real), np.empty(n_painted, np.bool_)
    _sclera_below(shown, pixels, face, rows, cols, window, below_reach, below_half, limit, eye_sclera, min_luma,
                  luma_weights, below, found)
    sums = np.zeros((2 * n_batch, 4), real)
    for k in range(n_painted):
        if found[k]:
            key = 2 * face[k] + eye[k]
            for q in range(3):
                sums[key, q] += below[k, q]
            sums[key, 3] += one
    for k in range(n_painted):
        b, p, key = face[k], slot[k], 2 * face[k] + eye[k]
        share_k = photo_share[k]
        for q in range(3):
            painted = min(max((one - sclera_share[k]) * disc[k, q] + sclera_share[k] * eye_sclera[k, q], zero), one) \
                * light[k]
            if sums[key, 3] > 0:
                lower = below[k, q] if found[k] else sums[key, q] / max(sums[key, 3], one)
                painted = min(max((one - sclera_share[k]) * disc[k, q], zero), one) * light[k] \
                    + sclera_share[k] * lower
            colour[b, p, q] = share_k * colour[b, p, q] + (one - share_k) * painted
    for b in range(n_batch):
        for p in range(n_pixels):
            seen[b, p] = seen[b, p] or eyeball[b, p]


@numba.njit(cache=True)
def _shade_interior(interior, seen, pixels, values, material, colour, rim_z, lip, teeth, teeth_id, gums_id, tongue_id,
                    socket_id, of_lip, floor, depth_mm, lambert, bounce, luma_weights, height,
                    width):  # pragma: no cover - jitted
    """retarget._shaded_interior's torch steps at the mouth's interior pixels, in place on colour."""
    n_batch, n_pixels = interior.shape
    real = colour.dtype.type
    one, half = real(1.0), np.float32(0.5)
    share = _photo_share(interior, seen, pixels, height, width)
    n_interior = share.shape[0]
    if n_interior == 0:
        return
    behind = np.empty(n_interior, real)
    m = 0
    for b in range(n_batch):
        shown = np.empty(n_interior, real)                      # this face's teeth that keep the photo's
        n_shown, first = 0, m
        for p in range(n_pixels):
            if interior[b, p]:
                behind[m] = rim_z[b] - values[b, p, 11]
                if material[b, p] == teeth_id and share[m] > half:
                    shown[n_shown] = behind[m]
                    n_shown += 1
                m += 1
        if n_shown > 0:   # teeth are darkened by how much deeper they lie than those (torch.median: the lower)
            median = np.sort(shown[:n_shown])[(n_shown - 1) // 2]
            k = first
            for p in range(n_pixels):
                if interior[b, p]:
                    if material[b, p] == teeth_id:
                        behind[k] = behind[k] - median
                    k += 1
    shaded = np.empty((1, 3), real)
    m = 0
    for b in range(n_batch):
        for p in range(n_pixels):
            if not interior[b, p]:
                continue
            _mouth_colour(material[b, p], behind[m], abs(values[b, p, 8]), lip, teeth, b, teeth_id, gums_id, tongue_id,
                          socket_id, of_lip, floor, depth_mm, lambert, bounce, luma_weights, shaded, 0)
            for c in range(3):
                colour[b, p, c] = share[m] * colour[b, p, c] + (one - share[m]) * shaded[0, c]
            m += 1


def _crease_factor(px, py, segments, arc, fade, midline_side, s2, weight, shoulder, one, out,
                   counts):  # pragma: no cover - jitted
    """out[u, p] of :func:`~affectsynth.render.creases._crease_factor` for p < counts[u], crease u's
    cells (every scalar, ``one`` too, in the points' dtype, as the ratio of :func:`surface_samples`)."""
    zero = one - one
    two, three, four = one + one, one + one + one, one + one + one + one
    for u in numba.prange(out.shape[0]):
        for p in range(counts[u]):
            x, y = px[u, p], py[u, p]
            best, best_t, nearest = zero, zero, 0
            for k in range(segments.shape[1]):
                ax, ay = segments[u, k, 0, 0], segments[u, k, 0, 1]
                abx, aby = segments[u, k, 1, 0] - ax, segments[u, k, 1, 1] - ay
                t = min(max(((x - ax) * abx + (y - ay) * aby) / (abx * abx + aby * aby), zero), one)
                dx, dy = x - (ax + t * abx), y - (ay + t * aby)
                d2 = dx * dx + dy * dy
                if k == 0 or d2 < best:  # the first of equal minima, as torch's min
                    best, best_t, nearest = d2, t, k
            start, stop = arc[u, nearest, 0], arc[u, nearest, 1]
            along = start + best_t * (stop - start)
            taper = one
            for end in range(2):
                left = along if end == 0 else one - along
                span = fade[u, end]
                f = min(max(left / span, zero), one) if span > zero else one
                taper = taper * (f * f * (three - two * f))
            side = midline_side[u]
            if (side < zero and x >= segments[u, 0, 0, 0]) or (side > zero and x < segments[u, 0, 0, 0]):
                taper = zero
            profile = taper * (np.exp(-best / s2[u]) - shoulder * np.exp(-best / (four * s2[u])))
            out[u, p] = one - min(weight[u] * profile, one)


def _blend(photo, layer, mask, out):  # pragma: no cover - jitted
    """out = mask * layer + (1 - mask) * photo, in that order, per pixel ([B, C, H, W]; mask [B, 1, H, W])."""
    one = out.dtype.type(1.0)
    n_batch, channels, height, width = out.shape
    for b in range(n_batch):
        for i in numba.prange(height):
            for c in range(channels):
                for j in range(width):
                    m = mask[b, 0, i, j]
                    out[b, c, i, j] = m * layer[b, c, i, j] + (one - m) * photo[b, c, i, j]


def _blend_drawn(base, window, colour, pixels, mask, out):  # pragma: no cover - jitted
    """out = mask * layer + (1 - mask) * base, the layer being ``window`` with ``colour[n]`` at flat
    pixel ``pixels[n]`` (ascending; padding past the end): _blend with the layer found on the way
    (a row's drawn pixels followed with a pointer: a 64-bit division per pixel cost more)."""
    one = out.dtype.type(1.0)
    _, channels, height, width = out.shape
    for i in numba.prange(height):
        start = np.searchsorted(pixels, i * width)       # the row's first drawn pixel, if any
        for c in range(channels):                        # (a plane at a time, as the arrays lie)
            n = start
            for j in range(width):
                m = mask[0, 0, i, j]
                if n < pixels.shape[0] and pixels[n] == i * width + j:
                    layer = colour[n, c]
                    n += 1
                else:
                    layer = window[0, c, i, j]
                out[0, c, i, j] = m * layer + (one - m) * base[0, c, i, j]


@numba.njit(cache=True)
def _extents(src, dst, out):  # pragma: no cover - jitted
    """out[b] = the larger side of src[b]'s box (x, y: columns 0, 1); out[B:] = the lowest x, y and
    the highest x, y of every point of src and dst."""
    n_batch = src.shape[0]
    for axis in range(2):
        out[n_batch + axis], out[n_batch + 2 + axis] = src[0, 0, axis], src[0, 0, axis]
    for b in range(n_batch):
        for k, points in enumerate((src, dst)):
            lo_x, lo_y, hi_x, hi_y = points[b, 0, 0], points[b, 0, 1], points[b, 0, 0], points[b, 0, 1]
            for v in range(1, points.shape[1]):
                lo_x, hi_x = min(lo_x, points[b, v, 0]), max(hi_x, points[b, v, 0])
                lo_y, hi_y = min(lo_y, points[b, v, 1]), max(hi_y, points[b, v, 1])
            if k == 0:
                out[b] = max(hi_x - lo_x, hi_y - lo_y)
            out[n_batch], out[n_batch + 1] = min(out[n_batch], lo_x), min(out[n_batch + 1], lo_y)
            out[n_batch + 2], out[n_batch + 3] = max(out[n_batch + 2], hi_x), max(out[n_batch + 3], hi_y)


@numba.njit(cache=True)
def _moved(points, x0, y0, amount, vertices, out):  # pragma: no cover - jitted
    """out = points less (x0, y0, 0), and out[b, v, 2] less amount[b] * (1 or 0: vertices[v])."""
    one, zero = points.dtype.type(1.0), points.dtype.type(0.0)
    x0, y0 = points.dtype.type(x0), points.dtype.type(y0)
    for b in range(points.shape[0]):
        for v in range(points.shape[1]):
            out[b, v, 0] = points[b, v, 0] - x0
            out[b, v, 1] = points[b, v, 1] - y0
            out[b, v, 2] = (points[b, v, 2] - zero) - amount[b] * (one if vertices[v] else zero)


def _reshade(colour, ratio, factor, has_factor, seen, material, skin):  # pragma: no cover - jitted
    """colour[b, p] *= ratio[b, p] (times factor[b, p] where ``has_factor``) at the pixels of ``seen``
    whose material is ``skin``, in place."""
    n_batch, n_pixels, channels = colour.shape
    for b in range(n_batch):
        for p in numba.prange(n_pixels):
            if seen[b, p] and material[b, p] == skin:
                r = ratio[b, p] * factor[b, p] if has_factor else ratio[b, p]
                for c in range(channels):
                    colour[b, p, c] = colour[b, p, c] * r


def _to_uint8_hwc(image, out):  # pragma: no cover - jitted
    """out[i, j, c] = round(clamp(image[c, i, j], 0, 1) * 255) (half to even, as torch.round) as uint8."""
    channels, height, width = image.shape
    zero, one, full = image.dtype.type(0.0), image.dtype.type(1.0), image.dtype.type(255.0)
    for c in range(channels):   # a plane at a time (reading the planes in turn per pixel took half as long again)
        for i in numba.prange(height):
            for j in range(width):
                out[i, j, c] = np.uint8(np.rint(min(max(image[c, i, j], zero), one) * full))


@numba.njit(cache=True)
def _neighbour_share(chosen, part, pixels, height, width, out):  # pragma: no cover - jitted
    """out[m]: :func:`neighbour_share` for the m-th pixel of ``part`` in row-major order."""
    n_batch, n_pixels = part.shape
    grid = np.zeros((n_batch, height, width), np.int8)                     # 1: the part's, 2: and chosen
    for b in range(n_batch):
        for p in range(n_pixels):
            if part[b, p]:
                grid[b, pixels[b, p] // width, pixels[b, p] % width] = 2 if chosen[b, p] else 1
    nine, tiny, zero, one = np.float32(9.0), np.float32(1e-6), np.float32(0.0), np.float32(1.0)
    m = 0
    for b in range(n_batch):
        for p in range(n_pixels):
            if not part[b, p]:
                continue
            r, c = pixels[b, p] // width, pixels[b, p] % width
            in_part, in_chosen = 0, 0
            for i in range(max(r - 1, 0), min(r + 2, height)):
                for j in range(max(c - 1, 0), min(c + 2, width)):
                    in_part += grid[b, i, j] > 0
                    in_chosen += grid[b, i, j] == 2
            # avg_pool2d's means (sums / 9) and their ratio, as the torch path takes them
            share = (np.float32(in_chosen) / nine) / max(np.float32(in_part) / nine, tiny)
            out[m] = min(max(share, zero), one)
            m += 1


@numba.njit(cache=True)
def _smooth_mouth_edges(colour, material, shaded, pixels, window, taps):  # pragma: no cover - jitted
    """retarget._smoothed_mouth_edges's torch steps, in place on colour [B, N, C]. Only the box around the
    face's shaded pixels grown by 2 px is looked at (an edge pixel lies within 1 px of one, its
    neighbours within 2), and of the drawn pixels (in raster order) those of its rows."""
    n_batch, n_pixels = material.shape
    channels, height, width = window.shape[1], window.shape[2], window.shape[3]
    real = colour.dtype.type
    for b in range(n_batch):
        first, last, c0, c1 = height * width, -1, width, -1
        for p in range(n_pixels):
            if pixels[b, p] < height * width and shaded[b, p]:
                first, last = min(first, pixels[b, p]), max(last, pixels[b, p])
                c0, c1 = min(c0, pixels[b, p] % width), max(c1, pixels[b, p] % width)
        if last < 0:
            continue
        r0, r1 = max(first // width - 2, 0), min(last // width + 3, height)
        c0, c1 = max(c0 - 2, 0), min(c1 + 3, width)
        lo, hi = np.searchsorted(pixels[b], r0 * width), np.searchsorted(pixels[b], r1 * width)   # the box's rows
        slot = np.full((r1 - r0, c1 - c0), -1, np.int64)                # each pixel's drawn pixel, -1: none
        near = np.zeros((r1 - r0, c1 - c0), np.bool_)                   # within 1 px of a shaded pixel
        for p in range(lo, hi):
            r, c = pixels[b, p] // width - r0, pixels[b, p] % width - c0
            if 0 <= c < c1 - c0:
                slot[r, c] = p
                if shaded[b, p]:
                    near[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] = True
        smoothed = np.empty((hi - lo, channels), colour.dtype)
        which = np.empty(hi - lo, np.int64)
        count = 0
        for p in range(lo, hi):
            r, c = pixels[b, p] // width, pixels[b, p] % width
            if not (c0 <= c < c1) or not near[r - r0, c - c0]:
                continue
            mixed = False
            for i in range(max(r - 1, 0), min(r + 2, height)):
                for j in range(max(c - 1, 0), min(c + 2, width)):
                    q = slot[i - r0, j - c0]
                    mixed = mixed or q < 0 or material[b, q] != material[b, p]
            if not mixed:
                continue
            for ch in range(channels):
                total = real(0.0)
                for di in range(3):
                    i = min(max(r + di - 1, 0), height - 1)             # beyond the window: its edge repeated
                    for dj in range(3):
                        j = min(max(c + dj - 1, 0), width - 1)
                        q = slot[i - r0, j - c0]
                        value = colour[b, q, ch] if q >= 0 else window[b, ch, i, j]
                        total += real(taps[di]) * real(taps[dj]) * value
                smoothed[count, ch] = total
            which[count] = p
            count += 1
        for k in range(count):   # written after: each mean reads the unsmoothed colours
            for ch in range(channels):
                colour[b, which[k], ch] = smoothed[k, ch]


@numba.njit(cache=True, inline="always")
def _mouth_colour(kind, behind, facing, lip, teeth, b, teeth_id, gums_id, tongue_id, socket_id, of_lip, floor,
                  depth_mm, lambert, bounce, luma_weights, out, row):  # pragma: no cover - jitted
    """out[row]: :func:`~affectsynth.render.materials.shade_mouth` of a point of material ``kind``,
    ``behind`` mm behind the lips, ``facing`` the view, of face b (lip, teeth [B, 3]), its ops in
    their order (every scalar in the colours' dtype; ``of_lip``: gums, tongue and socket tones as
    multiples of the lips')."""
    real = lip.dtype.type
    zero, one, tiny = real(0.0), real(1.0), real(1e-6)
    brightest = max(max(lip[b, 0], lip[b, 1]), lip[b, 2])
    occlusion = floor[0] + floor[1] * np.exp(-max(behind, zero) / depth_mm)
    light = one if kind == socket_id else lambert[0] + lambert[1] * min(max(facing, zero), one)
    share = zero if kind == socket_id else (one - occlusion) * bounce
    lit = occlusion * light
    s0, s1, s2 = zero, zero, zero
    w0, w1, w2 = zero, zero, zero
    for c in range(3):
        tone = zero
        if kind == teeth_id:
            tone = teeth[b, c]
        elif kind == gums_id:
            tone = lip[b, c] * of_lip[0]
        elif kind == tongue_id:
            tone = lip[b, c] * of_lip[1]
        elif kind == socket_id:
            tone = lip[b, c] * of_lip[2]
        shaded = tone * lit
        warmed = shaded * (one - share + share * (lip[b, c] / max(brightest, tiny)))
        if c == 0:
            s0, w0 = shaded, warmed
        elif c == 1:
            s1, w1 = shaded, warmed
        else:
            s2, w2 = shaded, warmed
    luma_shaded = s0 * luma_weights[0] + s1 * luma_weights[1] + s2 * luma_weights[2]
    luma_warmed = w0 * luma_weights[0] + w1 * luma_weights[1] + w2 * luma_weights[2]
    keep = luma_shaded / max(luma_warmed, tiny)
    out[row, 0] = min(max(w0 * keep, zero), one)
    out[row, 1] = min(max(w1 * keep, zero), one)
    out[row, 2] = min(max(w2 * keep, zero), one)


def _shade_mouth(material, behind, facing, lip, teeth, teeth_id, gums_id, tongue_id, socket_id, of_lip,
                 floor, depth_mm, lambert, bounce, luma_weights, out):  # pragma: no cover - jitted
    """out[b, n]: :func:`~affectsynth.render.materials.shade_mouth` of point n of face b."""
    for b in range(material.shape[0]):
        for n in numba.prange(material.shape[1]):
            _mouth_colour(material[b, n], behind[b, n], facing[b, n], lip, teeth, b, teeth_id, gums_id, tongue_id,
                          socket_id, of_lip, floor, depth_mm, lambert, bounce, luma_weights, out[b], n)


@numba.njit(cache=True)
def _drawn_pixels(tri_id, bary, depth, triangle_material, skin, eyeball):  # pragma: no cover - jitted
    """:func:`drawn_pixels`' arrays: each face's covered pixels in raster order, padded."""
    n_batch, height, width = tri_id.shape
    count = np.zeros(n_batch, np.int64)
    for b in range(n_batch):
        for i in range(height):
            for j in range(width):
                count[b] += tri_id[b, i, j] >= 0
    most = count.max() if n_batch else 0
    pixels = np.full((n_batch, most), height * width, np.int64)
    drawn_tri = np.full((n_batch, most), -1, np.int64)
    drawn_bary = np.zeros((n_batch, most, 3), bary.dtype)
    drawn_depth = np.full((n_batch, most), -np.inf, depth.dtype)
    material = np.full((n_batch, most), skin, np.int64)
    interior = np.zeros((n_batch, most), np.bool_)
    eyeball_px = np.zeros((n_batch, most), np.bool_)
    interior_count = 0
    for b in range(n_batch):
        n = 0
        for i in range(height):
            for j in range(width):
                if tri_id[b, i, j] >= 0:
                    pixels[b, n] = i * width + j
                    drawn_tri[b, n] = tri_id[b, i, j]
                    drawn_bary[b, n, 0] = bary[b, i, j, 0]
                    drawn_bary[b, n, 1] = bary[b, i, j, 1]
                    drawn_bary[b, n, 2] = bary[b, i, j, 2]
                    drawn_depth[b, n] = depth[b, i, j]
                    kind = triangle_material[tri_id[b, i, j]]
                    material[b, n] = kind
                    interior[b, n] = kind != skin and kind != eyeball
                    eyeball_px[b, n] = kind == eyeball
                    interior_count += interior[b, n]
                    n += 1
    return pixels, drawn_tri, drawn_bary, drawn_depth, material, interior, eyeball_px, interior_count


@numba.njit(cache=True)
def _in_place(values, pixels, out):  # pragma: no cover - jitted
    """out[b, pixels[b, n]] = 1 where values[b, n] (``out`` [B, H * W] zeroed; padding H * W skipped)."""
    for b in range(pixels.shape[0]):
        for n in range(pixels.shape[1]):
            if values[b, n] and pixels[b, n] < out.shape[1]:
                out[b, pixels[b, n]] = 1


@numba.njit(cache=True, inline="always")
def _lid_light(tri_id, is_skin, band, has_band, f, r, c, scales, k, reach, shadow, shadow_mm):  # pragma: no cover - jitted
    """:func:`lid_shadow` of pixel (r, c) of image f at ``scales[k]`` px per mm."""
    real = scales.dtype.type
    up = np.inf
    for i in range(r, max(r - reach, 0) - 1, -1):       # at or above, within reach
        tri = tri_id[f, i, c]
        if tri >= 0 and is_skin[tri]:
            up = real(r - i)
            break
        if has_band and band[f, i, c]:                   # the band comes first: it carries the shadow
            break
    return real(1.0) - shadow * np.exp(-(real(up) / scales[k]) / shadow_mm)


def _lid_shadow(tri_id, is_skin, band, has_band, face, rows, cols, scale, reach, shadow, shadow_mm,
                out):  # pragma: no cover - jitted
    """out[m]: :func:`lid_shadow` of pixel m."""
    for m in numba.prange(face.shape[0]):
        out[m] = _lid_light(tri_id, is_skin, band, has_band, face[m], rows[m], cols[m], scale, m, reach, shadow,
                            shadow_mm)


@numba.njit(cache=True)
def _sclera_below(shown, pixels, face, rows, cols, image, reach, half, limit, sclera, min_luma, luma_weights,
                  colour, found):  # pragma: no cover - jitted
    """colour[m], found[m]: :func:`sclera_below` of pixel m, in the torch path's box (the pixels'
    rows and columns grown by ``reach``) and its order of summation."""
    n_batch, height, width = shown.shape[0], image.shape[2], image.shape[3]
    real = image.dtype.type
    grid = np.zeros((n_batch, height, width), np.bool_)
    for b in range(n_batch):
        for p in range(pixels.shape[1]):
            if shown[b, p]:
                grid[b, pixels[b, p] // width, pixels[b, p] % width] = True
    top, bottom = max(rows.min() - reach, 0), min(rows.max() + reach + 1, height)
    left, right = max(cols.min() - reach, 0), min(cols.max() + reach + 1, width)
    divisor, tiny = real((2 * half + 1) * (2 * half + 1)), real(1e-6)
    for m in range(face.shape[0]):
        f, r, c = face[m], rows[m], cols[m]
        first = bottom                                            # the first shown row at or below
        for i in range(r, bottom):
            if grid[f, i, c]:
                first = i
                break
        centre = min(first + half, bottom - 1)
        count = 0
        total = np.zeros(3, image.dtype)
        for i in range(max(centre - half, top), min(centre + half + 1, bottom)):
            for j in range(max(c - half, left), min(c + half + 1, right)):
                if grid[f, i, j]:
                    count += 1
                    for k in range(3):
                        total[k] += image[f, k, i, j]
        mean = max(real(count) / divisor, tiny)
        light, own = real(0.0), real(0.0)
        for k in range(3):
            colour[m, k] = (total[k] / divisor) / mean
            light += colour[m, k] * luma_weights[k]
            own += sclera[m, k] * luma_weights[k]
        found[m] = first < bottom and first - r <= limit[m] and count > 0 and light >= min_luma * own


@numba.njit(cache=True)
def _skin_above(tri_id, is_skin, any_triangle, b, i, c, top, none):  # pragma: no cover - jitted
    """The last row in [top, i] of column c of image b where a triangle is drawn (``any_triangle``)
    or a skin one (``is_skin`` [F]), relative to ``top``; ``none`` where there is none."""
    for k in range(i, top - 1, -1):
        tri = tri_id[b, k, c]
        if tri >= 0 and (any_triangle or is_skin[tri]):
            return k - top
    return none


@numba.njit(cache=True)
def _lid_band(eyeball, pixels, where, photo_tri_id, target_tri_id, is_skin, band_px, take,
              band_xy):  # pragma: no cover - jitted
    """take[m], band_xy[m]: :func:`lid_band` of the m-th eyeball pixel (row-major), in the torch
    path's boxes (the pixels' rows and their source positions' rows, grown by the widest band + 1)."""
    n_batch, n_pixels = eyeball.shape
    height, width = photo_tri_id.shape[1], photo_tri_id.shape[2]
    reach = band_px.max() + 1
    lo_t, hi_t, lo_p, hi_p = height, -1, height, -1
    for b in range(n_batch):
        for p in range(n_pixels):
            if eyeball[b, p]:
                row = pixels[b, p] // width
                source_row, _ = _source_pixel(where[b, p, 0], where[b, p, 1], height, width)
                lo_t, hi_t = min(lo_t, row), max(hi_t, row)
                lo_p, hi_p = min(lo_p, source_row), max(hi_p, source_row)
    top_t, top_p = max(lo_t - reach, 0), max(lo_p - reach, 0)
    rows_t, rows_p = min(hi_t + reach + 1, height) - top_t, min(hi_p + reach + 1, height) - top_p
    m = 0
    for b in range(n_batch):
        for p in range(n_pixels):
            if not eyeball[b, p]:
                continue
            r, c = pixels[b, p] // width, pixels[b, p] % width
            # rows down from the target's lid margin above the pixel (1: right under it)
            depth_target = (r - top_t) - _skin_above(target_tri_id, is_skin, False, b, r, c, top_t, -rows_t)
            x, y = where[b, p, 0], where[b, p, 1]
            sr, sc = _source_pixel(x, y, height, width)
            # the photo's margin there: the lid's lower edge (under a lid), else the last skin above
            if photo_tri_id[b, sr, sc] >= 0:
                margin = rows_p - 1
                for k in range(sr, top_p + rows_p):
                    if photo_tri_id[b, k, sc] < 0:
                        margin = k - top_p - 1
                        break
            else:
                margin = _skin_above(photo_tri_id, is_skin, True, b, sr, sc, top_p, -rows_p)
            depth_photo = (sr - top_p) - margin
            moved_y = y + where.dtype.type(depth_target - depth_photo)
            sample = int(np.floor(moved_y)) - top_p
            sample_row = top_p + min(max(sample, 0), rows_p - 1)
            take[m] = (depth_target <= band_px[b] and depth_target > depth_photo and 0 <= sample < rows_p
                       and photo_tri_id[b, sample_row, sc] < 0
                       and _skin_above(photo_tri_id, is_skin, True, b, sample_row, sc, top_p, -rows_p) == margin)
            band_xy[m, 0], band_xy[m, 1] = x, moved_y
            m += 1


def _face_creases(rest_xy, strength, segments, arc, fade, midline_side, sigma_mm, depth, px_per_mm, grid_mm,
                  min_sigma_px, shoulder, lowest, highest, out):  # pragma: no cover - jitted
    """out [N]: :func:`~affectsynth.render.creases.crease_shading` of one face, step by step as
    its ``_batch_shading`` for one face (the grid and the points in their float dtype, the creases' sizes in
    float64, each rounded once where it meets the grid; ``grid_sample``'s bilinear lookup in its
    own order, so to the last bit or so)."""
    real = rest_xy.dtype.type
    one, zero = real(1.0), real(0.0)
    used = np.nonzero(strength > zero)[0]
    n_used, n_segments = used.shape[0], segments.shape[1]
    if n_used == 0:
        out[:] = one
        return
    sigma_floor = min_sigma_px / px_per_mm
    sigma_used = np.empty(n_used)
    sigma = np.empty(n_used)
    bounds = np.empty((n_used, 2, 2), rest_xy.dtype)                       # [U, low | high, x | y]
    for u in range(n_used):
        c = used[u]
        sigma_used[u] = sigma_mm[c]
        sigma[u] = max(sigma_mm[c], sigma_floor)
        for axis in range(2):
            bounds[u, 0, axis] = segments[c, 0, 0, axis]
            bounds[u, 1, axis] = segments[c, 0, 0, axis]
            for k in range(n_segments):
                for end in range(2):
                    bounds[u, 0, axis] = min(bounds[u, 0, axis], segments[c, k, end, axis])
                    bounds[u, 1, axis] = max(bounds[u, 1, axis], segments[c, k, end, axis])
    reach = 4.0 * sigma
    reach_max = real(reach.max())
    low, high = np.empty(2, rest_xy.dtype), np.empty(2, rest_xy.dtype)
    for axis in range(2):
        low[axis] = bounds[:, 0, axis].min() - reach_max
        high[axis] = bounds[:, 1, axis].max() + reach_max
    cell = max(grid_mm, 1.0 / px_per_mm)
    cell_real = real(cell)
    nx = int(np.ceil((high[0] - low[0]) / cell_real)) + 2
    ny = int(np.ceil((high[1] - low[1]) / cell_real)) + 2
    box = np.empty((n_used, 4), np.int64)                                     # i0 j0 i1 j1
    most = 0
    for u in range(n_used):
        grown = real(reach[u])
        for axis, cells in ((0, nx), (1, ny)):
            box[u, axis] = int(max(np.floor((bounds[u, 0, axis] - grown - low[axis]) / cell_real), zero))
            box[u, 2 + axis] = int(min(np.ceil((bounds[u, 1, axis] + grown - low[axis]) / cell_real) + one, real(cells)))
        most = max(most, (box[u, 2] - box[u, 0]) * (box[u, 3] - box[u, 1]))
    px, py = np.empty((n_used, most), rest_xy.dtype), np.empty((n_used, most), rest_xy.dtype)
    s2, weight = np.empty(n_used, rest_xy.dtype), np.empty(n_used, rest_xy.dtype)
    for u in range(n_used):
        width = box[u, 2] - box[u, 0]
        for p in range(most):
            px[u, p] = low[0] + cell_real * real(box[u, 0] + p % width)
            py[u, p] = low[1] + cell_real * real(box[u, 1] + p // width)
        s2[u] = real(2.0 * sigma[u] * sigma[u])
        c = used[u]
        # as much ink when widened: the depth scaled by sigma_mm / sigma
        weight[u] = depth[c] * strength[c] * real(sigma_used[u]) / real(sigma[u])
    windows = np.empty((n_used, most), rest_xy.dtype)
    _CREASE_FACTOR(px, py, segments[used], arc[used], fade[used], midline_side[used], s2, weight, shoulder,
                   one, windows, (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))   # each crease its own cells
    factor = np.ones((ny, nx), rest_xy.dtype)
    for u in range(n_used):
        width = box[u, 2] - box[u, 0]
        for p in range((box[u, 3] - box[u, 1]) * width):
            factor[box[u, 1] + p // width, box[u, 0] + p % width] *= windows[u, p]
    # grid_sample (bilinear, zeros beyond the grid, align_corners) of factor - 1 at the points, + 1
    two = real(2.0)
    extent_x, extent_y = real(nx - 1) * cell_real, real(ny - 1) * cell_real
    half_x, half_y = real(nx - 1) / two, real(ny - 1) / two
    for j in range(ny):   # each cell's clamped factor - 1, once
        for i in range(nx):
            factor[j, i] = min(max(factor[j, i], lowest), highest) - one
    # a point two cells or more off the grid has no cell around it: 1, without its divisions
    x_lo, x_hi = low[0] - two * cell_real, low[0] + real(nx + 1) * cell_real
    y_lo, y_hi = low[1] - two * cell_real, low[1] + real(ny + 1) * cell_real
    for n in range(rest_xy.shape[0]):
        if not (x_lo <= rest_xy[n, 0] <= x_hi and y_lo <= rest_xy[n, 1] <= y_hi):
            out[n] = one
            continue
        gx = (two * (rest_xy[n, 0] - low[0]) / extent_x - one + one) * half_x
        gy = (two * (rest_xy[n, 1] - low[1]) / extent_y - one + one) * half_y
        x0, y0 = np.floor(gx), np.floor(gy)
        fx, fy = gx - x0, gy - y0
        total = zero
        for dj in range(2):
            j, wy = int(y0) + dj, fy if dj else one - fy
            if j < 0 or j >= ny:
                continue
            for di in range(2):
                i, wx = int(x0) + di, fx if di else one - fx
                if 0 <= i < nx:
                    total += wy * wx * factor[j, i]
        out[n] = total + one


@numba.njit(cache=True, inline="always")
def _lower_median(values):  # pragma: no cover - jitted
    """torch.median of N > 0 values: the lower of the two middle ones."""
    return np.sort(values)[(values.shape[0] - 1) // 2]


@numba.njit(cache=True, inline="always")
def _linear_quantile(values, q):  # pragma: no cover - jitted
    """torch.quantile(values, q) of N > 0 values (linear): the rank and weight in the values'
    dtype, and torch's lerp, whose fused multiply-add is done here in float64 (a product of two
    float32 is exact there)."""
    real = values.dtype.type
    ordered = np.sort(values)
    rank = real(q) * real(values.shape[0] - 1)
    below, above = int(np.floor(rank)), int(np.ceil(rank))
    weight = rank - real(below)
    low, high = ordered[below], ordered[above]
    if weight < real(0.5):
        return real(np.float64(weight) * np.float64(high - low) + np.float64(low))
    return real(np.float64(high) - np.float64(high - low) * np.float64(real(1.0) - weight))


@numba.njit(cache=True)
def _linear_quantiles(values, q, out):  # pragma: no cover - jitted
    """out [B]: each row's _linear_quantile of values [B, N]."""
    for b in range(values.shape[0]):
        out[b] = _linear_quantile(np.ascontiguousarray(values[b]), q)


@numba.njit(cache=True, inline="always")
def _weighted_sum3(colours, weights):  # pragma: no cover - jitted
    """[N]: (colours [N, 3] * weights [3]).sum(-1), in torch's order."""
    out = np.empty(colours.shape[0], colours.dtype)
    for n in range(colours.shape[0]):
        out[n] = (colours[n, 0] * weights[0] + colours[n, 1] * weights[1]) + colours[n, 2] * weights[2]
    return out


@numba.njit(cache=True)
def _eye_colours(colours, rho, pupil_core, ring, sclera_from, sclera_quantile, luma, out, found):  # pragma: no cover - jitted
    """out [3, 3] the sclera's, iris's and pupil's median colours and found [3] whether each had
    pixels: eyes._classified_colours with rho, step by step."""
    sclera, pupil = colours[rho > sclera_from], colours[rho < pupil_core]
    lit = sclera
    if sclera.shape[0]:
        whiteness = _weighted_sum3(sclera, luma)
        for n in range(sclera.shape[0]):
            whiteness[n] = whiteness[n] - (max(sclera[n, 0], sclera[n, 1], sclera[n, 2])
                                           - min(sclera[n, 0], sclera[n, 1], sclera[n, 2]))
        lit = sclera[whiteness >= _linear_quantile(whiteness, sclera_quantile)]
    dark = pupil
    if pupil.shape[0]:
        brightness = _weighted_sum3(pupil, luma)
        dark = pupil[brightness <= _lower_median(brightness)]
    iris = colours[(rho > ring[0]) & (rho < ring[1])]
    for k, chosen in enumerate((lit, iris, dark)):
        found[k] = chosen.shape[0] > 0
        for c in range(3):
            out[k, c] = _lower_median(np.ascontiguousarray(chosen[:, c])) if found[k] else 0.0


@numba.njit(cache=True)
def _sample_image(image, points, bicubic, out):  # pragma: no cover - jitted
    """out [B, N, C]: image [B, C, H, W] at points [B, N, 2] (:func:`_bicubic_into` or :func:`_bilinear_into`)."""
    for b in range(points.shape[0]):
        for n in range(points.shape[1]):
            if bicubic:
                _bicubic_into(image[b], points[b, n, 0], points[b, n, 1], out[b], n)
            else:
                _bilinear_into(image[b], points[b, n, 0], points[b, n, 1], out[b], n)


@numba.njit(cache=True, inline="always")
def _polygon_test(px, py, polygon, tiny):  # pragma: no cover - jitted
    """(inside, distance) of the point (px, py) and the polygon [M, 2]:
    :func:`~affectsynth.render.polygon.inside_polygon`'s, edge by edge in its order (in the
    polygon's dtype; its norm is x^2 and then a fused multiply-add of y^2, done here in float64,
    where a product of two float32 is exact)."""
    n_edges = polygon.shape[0]
    real = polygon.dtype.type
    zero, one = real(0.0), real(1.0)
    crossings, nearest = 0, np.inf
    for e in range(n_edges):
        ax, ay = polygon[e, 0], polygon[e, 1]
        bx, by = polygon[(e + 1) % n_edges, 0], polygon[(e + 1) % n_edges, 1]
        rise = by - ay
        if rise == zero:  # a horizontal edge never crosses
            rise = tiny
        if ((ay > py) != (by > py)) and px < ax + (py - ay) * (bx - ax) / rise:
            crossings += 1
        abx, aby = bx - ax, by - ay
        t = min(max(((px - ax) * abx + (py - ay) * aby) / max(abx * abx + aby * aby, tiny), zero), one)
        dx, dy = px - (ax + t * abx), py - (ay + t * aby)
        nearest = min(nearest, np.sqrt(real(np.float64(dy) * np.float64(dy) + np.float64(dx * dx))))
    return crossings % 2 == 1, nearest


@numba.njit(cache=True)
def _polygon_pixels(photo, polygon, x0, y0, x1, y1, margin, tiny):  # pragma: no cover - jitted
    """:func:`polygon_pixels`' (colours [N, 3], centres [N, 2]) of the box [y0, y1) x [x0, x1), its
    pixels in row-major order (two passes: the count, then the values)."""
    real = polygon.dtype.type
    half = real(0.5)
    keep = np.empty((y1 - y0, x1 - x0), np.bool_)
    for i in range(y0, y1):
        for j in range(x0, x1):
            inside, distance = _polygon_test(real(j) + half, real(i) + half, polygon, tiny)
            keep[i - y0, j - x0] = inside and distance >= margin
    count = keep.sum()
    colours, centres = np.empty((count, 3), photo.dtype), np.empty((count, 2), polygon.dtype)
    n = 0
    for i in range(y0, y1):
        for j in range(x0, x1):
            if keep[i - y0, j - x0]:
                for c in range(3):
                    colours[n, c] = photo[c, i, j]
                centres[n, 0], centres[n, 1] = real(j) + half, real(i) + half
                n += 1
    return colours, centres


_SURFACE_SAMPLES = _build(_surface_samples)
_BLEND = _build(_blend)
_RESHADE = _build(_reshade)
_BLEND_DRAWN = _build(_blend_drawn)
_TO_UINT8_HWC = _build(_to_uint8_hwc)
_RADIUS_REACHED = _build(_radius_reached)
_INTERIOR_SEEN = _build(_interior_seen)
_LID_LIFTED = _build(_lid_lifted)
_LID_SHADOW = _build(_lid_shadow)
_SHADE_MOUTH = _build(_shade_mouth)
_CREASE_FACTOR = numba.njit(cache=True)(_crease_factor)   # called per face, from _face_creases
_FACE_CREASES = numba.njit(cache=True)(_face_creases)


def surface_samples(attr: torch.Tensor, faces: torch.Tensor, tri_id: torch.Tensor, bary: torch.Tensor,
                    photo_tri_id: torch.Tensor, photo_verts: torch.Tensor, photo_faces: torch.Tensor,
                    image: torch.Tensor, tolerance: float, light: torch.Tensor, ambient: float,
                    ratio_range: tuple[float, float],
                    exponent: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the photo shows of B faces' drawn surface points, in one pass over them.

    Args:
        attr: [A, B, V, C] per-vertex values in A parts, their channels in turn A * C >= 9: the
            vertex's position in the photo (u, v, depth px), its unit normal there, and its
            normal in the target (stacked parts: concatenated along the channels, a copy of
            3-wide rows, took 4x as long).
        faces: [F, 3] int64; tri_id [B, P] int64, bary [B, P, 3] (attr's dtype): the P drawn
            pixels' triangles and weights (tri_id -1: nothing drawn).
        photo_tri_id: [B, H, W] int64, the photo's z-buffer of ``photo_verts`` [B, V', 3] (any
            float dtype, taken as float64) drawn with ``photo_faces`` [F', 3] int64.
        image: [B, C', H, W] each face's photo (a view that repeats one photo: its faces').
        tolerance: px of depth.
        light: [3] unit light direction; ambient, ratio_range, exponent: the shading ratio's
            (:func:`~affectsynth.render.materials.shading_ratio`).
    Returns:
        values [B, P, A * C]: the parts interpolated, each part's channels in turn
        (:func:`~affectsynth.render.shade.interpolate`); seen [B, P] bool: drawn, and the surface
        the photo shows at (u, v) (:func:`~affectsynth.render.shade.surface_depth_at`) not more
        than ``tolerance`` in front of depth, or none there; colour [B, P, C']: the photo there
        (bicubic, :func:`~affectsynth.render.shade.sample_image`); ratio [B, P]: the shading ratio
        of the two normals, in attr's dtype.
    """
    values = torch.empty(*tri_id.shape, attr.shape[0] * attr.shape[3], dtype=attr.dtype)
    seen = torch.empty(tri_id.shape, dtype=torch.bool)
    colour = torch.empty(*tri_id.shape, image.shape[1], dtype=image.dtype)
    ratio = torch.empty(tri_id.shape, dtype=attr.dtype)
    scalar = values.numpy().dtype.type  # the ratio's scalars in the normals' dtype
    _SURFACE_SAMPLES(attr.numpy(), faces.numpy(), tri_id.numpy(), bary.numpy(), photo_tri_id.numpy(),
                     photo_verts.numpy(), photo_faces.numpy(), image.numpy(), float(tolerance),
                     light.to(attr.dtype).numpy(), scalar(ambient), scalar(1 - ambient), scalar(ratio_range[0]),
                     scalar(ratio_range[1]), scalar(exponent), values.numpy(), seen.numpy(), colour.numpy(),
                     ratio.numpy())
    return values, seen, colour, ratio


def linear_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """values [B, N] (N > 0, float) -> [B]: ``values.quantile(q, dim=1)`` (linear), the same bits
    (torch's sorts and checks took ~0.13 ms for 2,000 values)."""
    if values.shape[1] == 0:   # (the kernel would index an empty array)
        raise ValueError("linear_quantile of no values")
    out = torch.empty(values.shape[0], dtype=values.dtype)
    _linear_quantiles(values.numpy(), q, out.numpy())
    return out


def eye_colours(colours: torch.Tensor, rho: torch.Tensor, pupil_core: float, ring: tuple[float, float],
                sclera_from: float, sclera_quantile: float, luma: tuple[float, float, float]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """An eye opening's pixel colours [N, 3] and normalised radii rho [N] (one dtype) -> the
    median colours [3, 3] of its sclera, iris and pupil and [3] bool whether each had pixels
    (:func:`~affectsynth.render.eyes._classified_colours` by rho: the same values; its quantile
    and medians as torch's)."""
    real = colours.numpy().dtype.type
    out, found = torch.empty(3, 3, dtype=colours.dtype), torch.empty(3, dtype=torch.bool)
    _eye_colours(colours.contiguous().numpy(), rho.contiguous().numpy(), real(pupil_core),
                 np.array(ring, colours.numpy().dtype), real(sclera_from), real(sclera_quantile),
                 np.array(luma, colours.numpy().dtype), out.numpy(), found.numpy())
    return out, found


def sample_image(image: torch.Tensor, points: torch.Tensor, bicubic: bool = False) -> torch.Tensor:
    """image [B, C, H, W] (any strides), points [B, N, 2] px (any float dtype) -> [B, N, C]:
    :func:`~affectsynth.render.shade.sample_image`'s bilinear (or bicubic) lookup, the same bits."""
    out = torch.empty(*points.shape[:2], image.shape[1], dtype=image.dtype)
    _sample_image(image.numpy(), points.contiguous().numpy(), bicubic, out.numpy())
    return out


def polygon_pixels(photo: torch.Tensor, polygon: torch.Tensor, box: tuple[int, int, int, int],
                   margin_px: float) -> tuple[torch.Tensor, torch.Tensor]:
    """photo [C, H, W] (C >= 3, any strides), polygon [M, 2] (photo's dtype), the pixel box (x0,
    y0, x1, y1) -> colours [N, 3] and centres [N, 2] of the box's pixels inside the polygon and at
    least ``margin_px`` from its edge: :func:`~affectsynth.render.polygon.polygon_pixels`'s, in its
    order (a pixel whose distance is within the norm's last bit of the margin may go either way)."""
    real = photo.numpy().dtype.type
    colours, centres = _polygon_pixels(photo.numpy(), polygon.contiguous().numpy(), *box, real(margin_px), real(1e-12))
    return torch.from_numpy(colours), torch.from_numpy(centres)


def blend(photo: torch.Tensor, layer: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """photo, layer [B, C, H, W] and mask [B, 1, H, W], one float dtype (any strides) ->
    mask * layer + (1 - mask) * photo [B, C, H, W] (:func:`~affectsynth.render.composite.composite`)."""
    out = torch.empty(photo.shape, dtype=photo.dtype)
    _BLEND(photo.numpy(), layer.numpy(), mask.numpy(), out.numpy())
    return out


def blend_drawn(base: torch.Tensor, window: torch.Tensor, colour: torch.Tensor, pixels: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
    """base, window [1, C, h, w] and mask [1, 1, h, w], one float dtype (any strides); colour [N, C] at
    the ascending flat pixel indices ``pixels`` [N] (index h * w: padding) -> [1, C, h, w]
    ``blend(base, layer, mask)``, the layer being the window with the colours in place: the same bits."""
    out = torch.empty(base.shape, dtype=base.dtype)
    _BLEND_DRAWN(base.numpy(), window.numpy(), colour.to(base.dtype).contiguous().numpy(), pixels.contiguous().numpy(),
                 mask.numpy(), out.numpy())
    return out


def extents(src: torch.Tensor, dst: torch.Tensor) -> tuple[list[float], tuple[float, float, float, float]]:
    """B faces' image points src, dst [B, V, 3] (V > 0) -> (each face's size, max(x extent, y extent)
    of src [B]; the lowest x, y and highest x, y of all points), as Python floats: retarget._extents."""
    out = np.empty(src.shape[0] + 4, src.numpy().dtype)
    _extents(src.contiguous().numpy(), dst.contiguous().numpy(), out)
    *sizes, lo_x, lo_y, hi_x, hi_y = out.tolist()
    return sizes, (lo_x, lo_y, hi_x, hi_y)


def moved(points: torch.Tensor, origin: tuple[int, int], amount: torch.Tensor,
          vertices: torch.Tensor | None) -> torch.Tensor:
    """points [B, V, 3] less (x, y, 0) of ``origin``, the depth (column 2) of ``vertices`` ([V] bool;
    None: none) also less ``amount`` [B] (of points' dtype), as a new tensor: ``m = points -
    points.new_tensor([*origin, 0.0]); m[..., 2] -= amount[:, None] * vertices.to(points.dtype)``,
    the same bits (retarget._moved)."""
    out = torch.empty(points.shape, dtype=points.dtype)
    selected = np.zeros(points.shape[1], np.bool_) if vertices is None else vertices.contiguous().numpy()
    _moved(points.contiguous().numpy(), float(origin[0]), float(origin[1]), amount.contiguous().numpy(), selected,
           out.numpy())
    return out


def reshade(colour: torch.Tensor, ratio: torch.Tensor, factor: torch.Tensor | None, seen: torch.Tensor,
            material: torch.Tensor, skin: int) -> torch.Tensor:
    """colour [B, N, C] (contiguous), ratio and factor (or None) [B, N] of its dtype, seen [B, N] bool,
    material [B, N] int64 -> colour, multiplied in place by ratio * factor where seen and of material
    ``skin``: ``torch.where(seen & (material == skin), colour * (ratio * factor), colour)``, the same bits."""
    _RESHADE(colour.numpy(), ratio.contiguous().numpy(), ratio.numpy() if factor is None else factor.contiguous().numpy(),
             factor is not None, seen.contiguous().numpy(), material.contiguous().numpy(), skin)
    return colour


def to_uint8_hwc(image: torch.Tensor, out: np.ndarray) -> None:
    """image [C, H, W] float -> ``out`` [H, W, C] uint8 (any strides: a window of a larger image):
    ``(image.permute(1, 2, 0).clamp(0, 1) * 255).round()`` as uint8, the same values."""
    _TO_UINT8_HWC(image.numpy(), out)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """verts [B, V, 3], faces [F, 3] int64 -> [B, V, 3] unit normals."""
    out = torch.empty_like(verts)
    _vertex_normals(verts.numpy(), faces.numpy(), out.numpy())
    return out


def max_filter(x: torch.Tensor, r: int) -> torch.Tensor:
    """x [B, 1, H, W] float -> the maximum over each pixel's (2r + 1)^2 square, pixels off the
    image left out (OpenCV's dilation: its default border takes no part)."""
    return _each_image(x, lambda image: cv2.dilate(image, _square(r)))


def min_filter(x: torch.Tensor, r: int) -> torch.Tensor:
    """:func:`max_filter`'s minimum (OpenCV's erosion)."""
    return _each_image(x, lambda image: cv2.erode(image, _square(r)))


def separable_filter(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """x [B, 1, H, W] float, taps [2r + 1] -> x filtered by ``taps`` along rows, then along columns,
    the border replicated (OpenCV's ``sepFilter2D``: its own order of summation, so it agrees with
    :func:`~affectsynth.render.composite._gaussian_blur`'s taps to the last bit or so)."""
    return _each_image(x, _blur(taps, x))


def closed_eroded_blurred(x: torch.Tensor, grow: int, shrink: int, taps: torch.Tensor | None) -> torch.Tensor:
    """x [B, 1, H, W] float -> :func:`max_filter` by ``grow``, :func:`min_filter` by ``shrink`` (each
    where > 0), then :func:`separable_filter` by ``taps`` (where given): the same values, in one
    pass of OpenCV's calls over each image (each call's tensor round trip cost more than it)."""
    blur = None if taps is None else _blur(taps, x)

    def filtered(image: np.ndarray) -> np.ndarray:
        image = cv2.dilate(image, _square(grow)) if grow > 0 else image
        image = cv2.erode(image, _square(shrink)) if shrink > 0 else image
        return image if blur is None else blur(image)
    return _each_image(x, filtered)


def _square(r: int) -> np.ndarray:
    """OpenCV's (2r + 1)^2 square structuring element."""
    return cv2.getStructuringElement(cv2.MORPH_RECT, (2 * r + 1, 2 * r + 1))


def _blur(taps: torch.Tensor, like: torch.Tensor) -> Callable[[np.ndarray], np.ndarray]:
    """OpenCV's separable filter by ``taps`` along rows and columns, the border replicated, in
    ``like``'s dtype."""
    k = np.ascontiguousarray(taps.numpy().astype(like.numpy().dtype))
    return lambda image: cv2.sepFilter2D(image, -1, k, k, borderType=cv2.BORDER_REPLICATE)


def _each_image(x: torch.Tensor, op: Callable[[np.ndarray], np.ndarray]) -> torch.Tensor:
    """An OpenCV ``op`` on each [H, W] image of x [B, 1, H, W] -> [B, 1, H, W]."""
    if x.shape[0] == 1:  # (no stacking copy for one)
        return torch.from_numpy(op(np.ascontiguousarray(x[0, 0].numpy())))[None, None]
    return torch.stack([torch.from_numpy(op(np.ascontiguousarray(image[0].numpy()))) for image in x])[:, None]


def neighbour_share(chosen: torch.Tensor, part: torch.Tensor, pixels: torch.Tensor,
                    size: tuple[int, int]) -> torch.Tensor:
    """chosen, part [B, N] bool over the drawn pixels ``pixels`` [B, N] (flat indices into a window
    of ``size``) -> [M] float32: for each of the M pixels of ``part`` (row-major order) the mean of
    ``chosen & part`` over its 3 x 3 neighbourhood divided by the mean of ``part`` (zero beyond
    the window), clamped to [0, 1]."""
    out = torch.empty(int(part.sum()), dtype=torch.float32)
    _neighbour_share(chosen.contiguous().numpy(), part.contiguous().numpy(), pixels.contiguous().numpy(),
                     int(size[0]), int(size[1]), out.numpy())
    return out


def smooth_mouth_edges(colour: torch.Tensor, material: torch.Tensor, shaded: torch.Tensor, pixels: torch.Tensor,
                       window: torch.Tensor, taps: tuple[float, float, float]) -> None:
    """colour [B, N, C] (float), material [B, N] int64 and shaded [B, N] bool of the drawn pixels ``pixels``
    [B, N] (raster order) of a window [B, C, h, w] (any strides): the shaded pixels' edges smoothed with
    ``taps`` in place (:func:`~affectsynth.render.retarget._smoothed_mouth_edges`, to float rounding)."""
    _smooth_mouth_edges(colour.numpy(), material.contiguous().numpy(), shaded.contiguous().numpy(),
                        pixels.contiguous().numpy(), window.numpy(), tuple(float(t) for t in taps))


def shade_mouth(material: torch.Tensor, behind: torch.Tensor, facing: torch.Tensor, lip: torch.Tensor,
                teeth: torch.Tensor, ids: tuple[int, int, int, int], of_lip: tuple[float, float, float],
                floor: float, depth_mm: float, lambert: tuple[float, float], bounce: float,
                luma_weights: tuple[float, float, float]) -> torch.Tensor:
    """material [B, P] int64, behind, facing [B, P], lip, teeth [B, 3] (one float dtype); ids: the
    teeth's, gums', tongue's and socket's material indices -> [B, P, 3]
    (:func:`~affectsynth.render.materials.shade_mouth`: to the last bit or so, libm's exp being
    not torch's)."""
    out = torch.empty(*material.shape, 3, dtype=lip.dtype)
    dtype = out.numpy().dtype   # every scalar in the colours' dtype
    _SHADE_MOUTH(material.contiguous().numpy(), behind.contiguous().numpy(), facing.contiguous().numpy(),
                 lip.contiguous().numpy(), teeth.to(lip.dtype).contiguous().numpy(), *ids,
                 np.array(of_lip, dtype), np.array((floor, 1 - floor), dtype), dtype.type(depth_mm),
                 np.array(lambert, dtype), dtype.type(bounce), np.array(luma_weights, dtype), out.numpy())
    return out


def drawn_pixels(tri_id: torch.Tensor, bary: torch.Tensor, depth: torch.Tensor, triangle_material: torch.Tensor,
                 skin: int, eyeball: int) -> tuple[torch.Tensor, ...]:
    """Fragments tri_id [B, H, W], bary [B, H, W, 3], depth [B, H, W] -> each face's covered pixels
    in raster order, N the most any face has: flat indices [B, N] int64 (padding: H * W) and the
    fragments there, tri_id [B, N] (padding -1), bary [B, N, 3] (0), depth [B, N] (-inf), the
    material [B, N] of their triangles (``triangle_material`` [F] int64; padding ``skin``), which
    are neither ``skin`` nor ``eyeball`` [B, N] bool, which are ``eyeball`` [B, N] bool, and the
    number of the former (a Python int): retarget._drawn_pixels."""
    *arrays, interior_count = _drawn_pixels(tri_id.contiguous().numpy(), bary.contiguous().numpy(),
                                            depth.contiguous().numpy(), triangle_material.contiguous().numpy(),
                                            skin, eyeball)
    return (*(torch.from_numpy(a) for a in arrays), int(interior_count))


def in_place(values: torch.Tensor, pixels: torch.Tensor, size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """values [B, N] bool at flat pixel indices [B, N] (index H * W: padding) -> [B, H, W] grid of
    ``dtype``, 1 there and 0 elsewhere: retarget._in_place."""
    out = torch.zeros(pixels.shape[0], size[0] * size[1], dtype=dtype)
    _in_place(values.contiguous().numpy(), pixels.contiguous().numpy(), out.numpy())
    return out.view(pixels.shape[0], *size)


def lid_shadow(tri_id: torch.Tensor, is_skin: torch.Tensor, band: torch.Tensor | None, face: torch.Tensor,
               rows: torch.Tensor, cols: torch.Tensor, scale: torch.Tensor, reach: int, shadow: float,
               shadow_mm: float) -> torch.Tensor:
    """tri_id [B, h, w] (fragments'), is_skin [F] bool, band [B, h, w] bool or None, face, rows,
    cols [M] int64, scale [M] px per mm -> [M] in scale's dtype: 1 - shadow e^(-d / shadow_mm), d the
    distance (mm) up to the first skin drawn at or above each pixel in its column within ``reach``
    rows (none, or a ``band`` pixel first: no shadow). (retarget._lid_shadow: to the last bit or
    so, libm's exp being not torch's.)"""
    out = torch.empty(face.shape, dtype=scale.dtype)
    real = out.numpy().dtype.type
    flags = np.zeros((1, 1, 1), np.bool_) if band is None else band.contiguous().numpy()
    _LID_SHADOW(tri_id.contiguous().numpy(), is_skin.contiguous().numpy(), flags, band is not None,
                face.contiguous().numpy(), rows.contiguous().numpy(), cols.contiguous().numpy(),
                scale.contiguous().numpy(), int(reach), real(shadow), real(shadow_mm), out.numpy())
    return out


def sclera_below(shown: torch.Tensor, pixels: torch.Tensor, face: torch.Tensor, rows: torch.Tensor,
                 cols: torch.Tensor, image: torch.Tensor, reach: int, half: int, limit: torch.Tensor,
                 sclera: torch.Tensor, min_luma: float,
                 luma_weights: tuple[float, float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """shown [B, N] bool over the drawn pixels ``pixels`` [B, N] of ``image`` [B, C, h, w]; M pixels
    (face, rows, cols [M] int64) -> colour [M, 3], found [M] bool: retarget._photo_sclera_below (the
    mean of the shown pixels within ``half`` px of the first shown one below each pixel in its
    column, that one within ``limit`` [M] px, and at least ``min_luma`` as light as ``sclera``
    [M, 3]): the same bits."""
    colour = torch.empty(face.shape[0], 3, dtype=image.dtype)
    found = torch.empty(face.shape, dtype=torch.bool)
    real = colour.numpy().dtype.type
    _sclera_below(shown.contiguous().numpy(), pixels.contiguous().numpy(), face.contiguous().numpy(),
                  rows.contiguous().numpy(), cols.contiguous().numpy(), image.numpy(), int(reach), int(half),
                  limit.contiguous().numpy(), sclera.to(image.dtype).contiguous().numpy(), real(min_luma),
                  np.array(luma_weights, colour.numpy().dtype), colour.numpy(), found.numpy())
    return colour, found


def lid_band(eyeball: torch.Tensor, pixels: torch.Tensor, where: torch.Tensor, photo_tri_id: torch.Tensor,
             target_tri_id: torch.Tensor, is_skin: torch.Tensor, band_px: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """eyeball [B, N] bool over the drawn pixels ``pixels`` [B, N] of a window whose fragments are
    photo_tri_id (the photo's skin) and target_tri_id [B, h, w] (``is_skin`` [F] of the target's
    triangles); where [B, N, C] (u, v first: each pixel's source position); band_px [B] int64 ->
    take [M] bool, band_xy [M, 2]: retarget._lid_band, the same values."""
    count = int(eyeball.sum())
    take = torch.empty(count, dtype=torch.bool)
    band_xy = torch.empty(count, 2, dtype=where.dtype)
    _lid_band(eyeball.contiguous().numpy(), pixels.contiguous().numpy(), where.numpy(), photo_tri_id.contiguous().numpy(),
              target_tri_id.contiguous().numpy(), is_skin.contiguous().numpy(), band_px.contiguous().numpy(),
              take.numpy(), band_xy.numpy())
    return take, band_xy


def radius_reached(tri_id: torch.Tensor, flagged: torch.Tensor | None, face: torch.Tensor, rows: torch.Tensor,
                   cols: torch.Tensor, radii: tuple[int, ...]) -> torch.Tensor:
    """tri_id [B, h, w] int64 (fragments'); flagged [F] bool, or None for any triangle; face, rows,
    cols [M] int64; increasing radii -> [M] int64: for each pixel the smallest radius within which
    (Chebyshev) a (flagged) triangle is drawn, the last + 1 where none is."""
    out = torch.empty_like(rows)
    flags = np.ones(1, np.bool_) if flagged is None else flagged.contiguous().numpy()
    _RADIUS_REACHED(tri_id.contiguous().numpy(), flags, flagged is None, face.contiguous().numpy(),
                    rows.contiguous().numpy(), cols.contiguous().numpy(), np.asarray(radii, np.int64), out.numpy())
    return out


def interior_seen(interior: torch.Tensor, pixels: torch.Tensor, where: torch.Tensor, photo_tri_id: torch.Tensor,
                  target_tri_id: torch.Tensor, is_skin: torch.Tensor, material: torch.Tensor, colour: torch.Tensor,
                  lip: torch.Tensor, clearance: torch.Tensor, teeth: int, max_move: float,
                  luma_weights: tuple[float, float, float], tooth_luma: float, tooth_saturation: float,
                  seen: torch.Tensor) -> torch.Tensor:
    """interior [B, N] bool over the drawn pixels ``pixels`` [B, N] of a window whose fragments are
    photo_tri_id (the photo's skin) and target_tri_id [B, h, w] (``is_skin`` [F]); where [B, N, C]
    (the source position first), material [B, N] int64, colour [B, N, 3], lip [B, 3], clearance [B]
    int64 px; seen [B, N] bool -> seen, cleared in place where retarget._interior_seen clears it."""
    real = colour.numpy().dtype.type
    _INTERIOR_SEEN(interior.contiguous().numpy(), pixels.contiguous().numpy(), where.numpy(),
                   photo_tri_id.contiguous().numpy(), target_tri_id.contiguous().numpy(), is_skin.contiguous().numpy(),
                   material.contiguous().numpy(), colour.numpy(), lip.to(colour.dtype).contiguous().numpy(),
                   clearance.contiguous().numpy(), teeth, real(max_move), np.array(luma_weights, real),
                   real(tooth_luma), real(tooth_saturation), seen.numpy())
    return seen


def lid_lifted(eyeball: torch.Tensor, pixels: torch.Tensor, where: torch.Tensor, photo_tri_id: torch.Tensor,
               target_tri_id: torch.Tensor, is_skin: torch.Tensor, band_px: torch.Tensor,
               seen: torch.Tensor) -> tuple[int, int]:
    """eyeball, seen [B, N] bool over the drawn pixels ``pixels`` [B, N] of a window whose fragments
    are photo_tri_id (the photo's skin) and target_tri_id [B, h, w] (``is_skin`` [F]); where [B, N, C]
    (the source position first); band_px [B] int64 -> seen cleared in place where
    retarget._lid_lifted clears it; (eyeball pixels seen before, eyeball pixels unseen after)."""
    shown, unseen = _LID_LIFTED(eyeball.contiguous().numpy(), pixels.contiguous().numpy(), where.numpy(),
                                photo_tri_id.contiguous().numpy(), target_tri_id.contiguous().numpy(),
                                is_skin.contiguous().numpy(), band_px.contiguous().numpy(), seen.numpy())
    return int(shown), int(unseen)


def take_band(eyeball: torch.Tensor, take: torch.Tensor, band_xy: torch.Tensor, window: torch.Tensor,
              pixels: torch.Tensor, size: tuple[int, int], colour: torch.Tensor,
              seen: torch.Tensor) -> torch.Tensor | None:
    """eyeball [B, N] bool over the drawn pixels ``pixels`` [B, N] of ``window`` [B, C, h, w] (``size``);
    take [M] bool, band_xy [M, 2] of its M pixels (:func:`lid_band`); colour [B, N, C], seen [B, N]
    -> at the taken pixels, colour set to the window at band_xy (bilinear) and seen set, in place;
    the taken pixels as a [B, h, w] bool grid, or None where none is."""
    grid = torch.zeros(eyeball.shape[0], size[0] * size[1] + 1, dtype=torch.bool)
    taken = _take_band(eyeball.contiguous().numpy(), take.contiguous().numpy(), band_xy.contiguous().numpy(),
                       window.numpy(), pixels.contiguous().numpy(), colour.numpy(), seen.numpy(), grid.numpy())
    return grid[:, :-1].view(-1, *size) if taken else None


def paint_eyes(eyeball: torch.Tensor, seen: torch.Tensor, pixels: torch.Tensor, values: torch.Tensor,
               target_tri_id: torch.Tensor, is_skin: torch.Tensor, band: torch.Tensor | None, window: torch.Tensor,
               colour: torch.Tensor, eyes: dict[str, torch.Tensor], px_per_mm: torch.Tensor,
               shadow: tuple[int, float, float], ambient: float, below: tuple[int, int, float, float],
               luma_weights: tuple[float, float, float], iris_shape: tuple[float, float, float, float, float]) -> None:
    """retarget._painted_eyes in place on colour [B, N, C] and seen [B, N] (eyeball [B, N] over the
    drawn pixels ``pixels`` [B, N]; values [B, N, 15] their interpolated attributes (target normal
    6-8, target mm 9-11); the target's fragments target_tri_id [B, h, w] with ``is_skin`` [F]; band
    [B, h, w] bool or None; window [B, C, h, w], each face's). ``eyes``: [B, 2, ...] centre, gaze, disc_radius
    (radius x sin(iris angle)), iris, pupil, sclera; shadow: (reach px, LID_SHADOW, LID_SHADOW_MM);
    below: (reach px, half px, SCLERA_BELOW_MM, SCLERA_BELOW_MIN_LUMA); iris_shape: (COLLARETTE_GAIN,
    PUPIL_FRACTION, LIMBAL_DARKENING, LIMBAL_FROM, EDGE_SOFTNESS)."""
    real = colour.numpy().dtype.type
    scale = px_per_mm.contiguous().numpy()
    band_array = np.zeros((1, 1, 1), np.bool_) if band is None else band.contiguous().numpy()
    appearance = [eyes[k].to(colour.dtype).contiguous().numpy() for k in ("centre", "gaze", "disc_radius", "iris",
                                                                           "pupil", "sclera")]
    _paint_eyes(eyeball.contiguous().numpy(), seen.numpy(), pixels.contiguous().numpy(), values.numpy(),
                target_tri_id.contiguous().numpy(), is_skin.contiguous().numpy(), band_array, band is not None,
                window.numpy(), colour.numpy(), *appearance, scale, int(shadow[0]), scale.dtype.type(shadow[1]),
                scale.dtype.type(shadow[2]), float(ambient), int(below[0]), int(below[1]), float(below[2]),
                real(below[3]), np.array(luma_weights, real), *(float(x) for x in iris_shape))


def shade_interior(interior: torch.Tensor, seen: torch.Tensor, pixels: torch.Tensor, values: torch.Tensor,
                   material: torch.Tensor, colour: torch.Tensor, rim_z: torch.Tensor, size: tuple[int, int],
                   lip: torch.Tensor, teeth: torch.Tensor, ids: tuple[int, int, int, int],
                   of_lip: tuple[float, float, float], floor: float, depth_mm: float, lambert: tuple[float, float],
                   bounce: float, luma_weights: tuple[float, float, float]) -> None:
    """retarget._shaded_interior in place on colour [B, N, C]: interior, seen [B, N] bool over the
    drawn pixels ``pixels`` [B, N] of a window of ``size``; values [B, N, 15] their interpolated
    attributes (target normal 6-8, target mm 9-11); material [B, N]; rim_z [B] mm; lip, teeth [B, 3]
    and the rest as :func:`shade_mouth` takes them."""
    dtype = colour.numpy().dtype   # every scalar of the shading in the colours' dtype
    _shade_interior(interior.contiguous().numpy(), seen.contiguous().numpy(), pixels.contiguous().numpy(),
                    values.numpy(), material.contiguous().numpy(), colour.numpy(), rim_z.to(colour.dtype).numpy(),
                    lip.to(colour.dtype).contiguous().numpy(), teeth.to(colour.dtype).contiguous().numpy(), *ids,
                    np.array(of_lip, dtype), np.array((floor, 1 - floor), dtype), dtype.type(depth_mm),
                    np.array(lambert, dtype), dtype.type(bounce), np.array(luma_weights, dtype), size[0], size[1])


def face_creases(rest_xy: torch.Tensor, strength: torch.Tensor, segments: torch.Tensor, arc: torch.Tensor,
                 fade: torch.Tensor, midline_side: torch.Tensor, sigma_mm: torch.Tensor, depth: torch.Tensor,
                 px_per_mm: float, grid_mm: float, min_sigma_px: float, shoulder: float,
                 factor_range: tuple[float, float]) -> torch.Tensor:
    """rest_xy [N, 2] (any strides); per crease C: strength, depth, midline_side [C], segments
    [C, K, 2, 2], arc [C, K, 2], fade [C, 2] (all rest_xy's dtype) and sigma_mm [C] float64 -> [N]
    (:func:`~affectsynth.render.creases.crease_shading` of one face, on one thread: it is ~1k cells)."""
    out = torch.empty(rest_xy.shape[0], dtype=rest_xy.dtype)
    real = out.numpy().dtype.type
    arrays = [t.contiguous().numpy() for t in (strength, segments, arc, fade, midline_side, sigma_mm, depth)]
    _FACE_CREASES(rest_xy.numpy(), *arrays, float(px_per_mm), float(grid_mm), float(min_sigma_px), real(shoulder),
                  real(factor_range[0]), real(factor_range[1]), out.numpy())
    return out


@numba.njit(cache=True, inline="always")
def _hash32(x):  # pragma: no cover - jitted
    """grain._hash32 of an int64 in [0, 2^32)."""
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return (x >> 16) ^ x


@numba.njit(cache=True, inline="always")
def _squares(t, c):  # pragma: no cover - jitted
    """grain.kept_variance's polynomial of one axis at t: its 7 coefficients ``c`` by Horner, in t's dtype."""
    return (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) * t + c[6]


def _add_grain(colour, where, shaded, sigma, pixels, window, origin, coefficients, noise_scale):  # pragma: no cover - jitted
    """:func:`add_grain`, one pass per drawn pixel, in place on colour."""
    n_batch, n_pixels, channels = colour.shape
    height, width = window.shape[2], window.shape[3]
    zero, one, half = colour.dtype.type(0.0), colour.dtype.type(1.0), colour.dtype.type(0.5)
    top_x, top_y = colour.dtype.type(width - 0.5), colour.dtype.type(height - 0.5)
    eight_bit, per_row = window.dtype.type(255.0), 1.0 / width
    for b in range(n_batch):
        for p in numba.prange(n_pixels):
            flat = min(pixels[b, p], height * width - 1)
            row = int((flat + 0.5) * per_row)   # flat // width: exact, and ~10x faster than a 64-bit division
            col = flat - row * width
            packed = 0
            for c in range(window.shape[1]):
                packed = ((packed << 8) | int(window[b, c, row, col] * eight_bit + half)) & 0xFFFFFFFF
            key = (((row + origin[0]) * 73856093) ^ ((col + origin[1]) * 19349663) ^ (packed * 83492791)) & 0xFFFFFFFF
            hashed = _hash32(key)
            total = (hashed & 0xFF) + ((hashed >> 8) & 0xFF) + ((hashed >> 16) & 0xFF) + ((hashed >> 24) & 0xFF)
            noise = colour.dtype.type(total - 510) * noise_scale
            if shaded[b, p]:
                kept = zero
            else:
                tx = min(max(where[b, p, 0], half), top_x) - half
                ty = min(max(where[b, p, 1], half), top_y) - half
                kept = _squares(tx - np.floor(tx), coefficients) * _squares(ty - np.floor(ty), coefficients)
            amount = sigma[b] * np.sqrt(max(one - kept, zero))
            for c in range(channels):
                colour[b, p, c] = colour[b, p, c] + amount * noise


_ADD_GRAIN = _build(_add_grain)


def add_grain(colour: torch.Tensor, where: torch.Tensor, shaded: torch.Tensor, sigma: torch.Tensor,
              pixels: torch.Tensor, window: torch.Tensor, origin: tuple[int, int],
              coefficients: tuple[float, ...], noise_scale: float) -> torch.Tensor:
    """colour [B, N, C] (contiguous; changed in place and returned), where [B, N, >=2] px, shaded
    [B, N] bool, sigma [B], pixels [B, N] int64, window [B, C, h, w] (any strides) ->
    :func:`~affectsynth.render.grain.add_grain`'s colours, the same bits (4 hash bytes)."""
    real = colour.numpy().dtype.type
    _ADD_GRAIN(colour.numpy(), where.numpy(), shaded.numpy(), sigma.numpy(), pixels.numpy(), window.numpy(),
               (int(origin[0]), int(origin[1])), tuple(real(c) for c in coefficients), real(noise_scale))
    return colour
