"""Rasterisation: which triangle covers each pixel centre, where inside it, and how near.

Conventions (see :mod:`affectsynth.camera`)
-------------------------------------------
Vertices come in image space, ``[B, V, 3]`` = (u px right, v px down, depth px toward the
camera), e.g. from :meth:`affectsynth.fit.FitResult.image_points`. Pixel (i, j) covers
[j, j+1) x [i, i+1) and is sampled once, at its centre (j + 0.5, i + 0.5).

Coverage (fill rule)
    A pixel belongs to a triangle when its centre lies strictly inside, or exactly on an
    edge that is a *top* edge (horizontal, the triangle below it, image y down) or a *left*
    edge (the triangle to its right) — Direct3D's top-left rule. Edge functions are evaluated
    from each edge's endpoints taken in a canonical (lexicographic) order, so two triangles
    sharing an edge compute bit-identical values of opposite sign: a mesh is drawn watertight,
    every pixel centre inside it exactly once, with no gaps and no double-drawn edge pixels.
Depth test
    The largest depth (the nearest surface) wins; on an exact tie the lower triangle id wins,
    so the result does not depend on thread scheduling.
Culling
    A model triangle is counter-clockwise seen from the front (camera y up). Image y points
    down, so in image coordinates a front-facing triangle is clockwise: its signed area
    (b - a) x (c - a) = (bu - au)(cv - av) - (bv - av)(cu - au) is negative (drawn with
    y down, as an image is shown, it still looks counter-clockwise). ``cull_backfaces=True``
    (the default) drops triangles with a positive area. Degenerate (zero-area or
    non-finite) triangles are always dropped.
Barycentrics
    ``bary[..., k]`` weighs the triangle's k-th vertex (``faces[tri_id, k]``). The camera is
    weak perspective, so image-space (affine) barycentrics are exactly the surface's
    barycentrics. They, ``tri_id`` and ``depth`` are not differentiable (as in nvdiffrast);
    gradients flow through :func:`affectsynth.render.shade.interpolate`.

Backends
--------
``BACKENDS`` maps a name to a :class:`RasterBackend`; ``backend="auto"`` takes the first
available one in ``AUTO_ORDER`` that accepts the input's device.

* ``"numba"`` — a CPU z-buffer compiled with numba: triangles are binned into bands of
  rows and the bands are rasterised in parallel (each band owns its rows: no races); where
  ``torch.get_num_threads()`` is 1 (DataLoader workers; see :func:`.kernels.compiled`), the
  triangles are drawn in id order on one thread, unbinned, with the same result. A triangle
  strictly behind what is already drawn over its bounding box is skipped without testing its
  pixels (the same result: it could not win one). The default on the CPU (measured in
  ``scripts/bench_raster.py``).
* ``"moderngl"`` — OpenGL through a headless EGL context (Mesa llvmpipe on a machine with
  no GPU; needs the system's libEGL/libGL and Mesa's EGL and DRI drivers). Follows the same
  conventions; it may disagree with ``"numba"`` only for pixel centres within ~1/256 px of
  an edge (llvmpipe snaps vertices to a 1/256 px grid) and where two surfaces are nearer in
  depth than its 24-bit depth buffer resolves. Slower than ``"numba"`` on every size and
  batch measured; kept as an independent cross-check.
* ``"nvdiffrast"`` — CUDA tensors, through nvdiffrast's CUDA rasteriser
  (:mod:`.raster_nvdiffrast`; ``pip install affectsynth[gpu]``). The first in ``AUTO_ORDER``, so
  "auto" takes it for CUDA tensors where it is installed (it takes no CPU tensors). It may
  disagree with ``"numba"`` for pixel centres within ~1/32 px of an edge (it snaps corners to
  1/16 px). Untested on a GPU so far.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numba
import numpy as np
import torch

from .raster_nvdiffrast import nvdiffrast_available, rasterize_nvdiffrast

__all__ = ["Fragments", "RasterBackend", "BACKENDS", "AUTO_ORDER", "rasterize", "Rasterizer",
           "available_backends", "resolve_backend"]


@dataclass(frozen=True)
class Fragments:
    """What the rasteriser saw at each pixel centre.

    Attributes:
        tri_id: [B, H, W] int64 index into ``faces`` of the visible triangle, -1 where empty.
        bary: [B, H, W, 3] float32 barycentric weights of the triangle's 3 vertices (zeros
            where empty); they sum to 1.
        depth: [B, H, W] float32 depth of the visible surface, px (larger = nearer), -inf
            where empty.
        backend: name of the backend that produced them.
    """

    tri_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    backend: str

    @property
    def mask(self) -> torch.Tensor:
        """[B, H, W] bool, True where a triangle covers the pixel centre."""
        return self.tri_id >= 0

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return (self.tri_id.shape[1], self.tri_id.shape[2])


#: A backend's rasterising call: (verts_img [B, V, 3] float, faces [F, 3] int64 on the same
#: device, (H, W), cull_backfaces) -> (tri_id [B, H, W] int64, bary [B, H, W, 3] float32,
#: depth [B, H, W] float32), all on the input's device, following the module's conventions.
RasterCall = Callable[[torch.Tensor, torch.Tensor, tuple[int, int], bool],
                      tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class RasterBackend:
    """One way to rasterise.

    Attributes:
        run: the :data:`RasterCall`.
        available: a cheap check that the backend can run here (its libraries load).
        devices: device types (``torch.device.type``) whose tensors it takes.
    """

    run: RasterCall
    available: Callable[[], bool]
    devices: tuple[str, ...]


# ------------------------------------------------------------------------------- numba
_BAND_ROWS = 16  # rows per parallel task: small enough to spread work, large enough to bin cheaply


@numba.njit(cache=True)
def _corners(verts, faces, b, f):  # pragma: no cover - jitted
    """Image x, y of triangle f's corners and its signed area (b - a) x (c - a)."""
    i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
    x = (verts[b, i0, 0], verts[b, i1, 0], verts[b, i2, 0])
    y = (verts[b, i0, 1], verts[b, i1, 1], verts[b, i2, 1])
    return x, y, (x[1] - x[0]) * (y[2] - y[0]) - (y[1] - y[0]) * (x[2] - x[0])


#: The smallest positive double: ``e >= _ABOVE_ZERO`` is ``e > 0``, so one comparison per edge
#: tests inside (a top-left edge's threshold is 0.0: ``e >= 0``).
_ABOVE_ZERO = 5e-324


@numba.njit(cache=True)
def _edge(x, y, k, orient):  # pragma: no cover - jitted
    """Edge k (from corner k+1 to corner k+2, facing corner k) as (ax, ay, dx, dy, threshold):
    the edge function dx (py - ay) - dy (px - ax) is positive inside the triangle, and a pixel
    centre is inside the edge where it is at least ``threshold`` (0 on a top or left edge, else
    the smallest positive double).

    The edge is taken from its lexicographically smaller endpoint, so the two triangles that
    share it evaluate bit-identical values (of opposite sign): no gaps, no double draws. The
    sign that makes it positive inside is folded into dx and dy (a multiplication by +-1: the
    same values as applying it to the function).
    """
    p, q = (k + 1) % 3, (k + 2) % 3
    flip = 1.0
    if x[q] < x[p] or (x[q] == x[p] and y[q] < y[p]):
        p, q = q, p
        flip = -1.0
    sign = orient * flip
    dx, dy = sign * (x[q] - x[p]), sign * (y[q] - y[p])
    # The inward normal is (-dy, dx): a left edge when it points right, a top edge when it
    # points straight down (image y down).
    top_left = -dy > 0.0 or (-dy == 0.0 and dx > 0.0)
    return x[p], y[p], dx, dy, 0.0 if top_left else _ABOVE_ZERO


@numba.njit(cache=True)
def _pixel_box(x, y, area, height, width, cull):  # pragma: no cover - jitted
    """(j0, j1, i0, i1): the half-open pixel ranges whose centres may be inside a triangle with
    corners x, y and signed area ``area``, clipped to the image; j0 = j1 = 0 for a dropped
    (culled, degenerate, non-finite or off-image) triangle."""
    if not np.isfinite(area) or area == 0.0 or (cull and area > 0.0):
        return 0, 0, 0, 0
    # Pixel centres j + 0.5 within [min x, max x], clipped to the image (in float: no overflow).
    lo_x = min(max(np.ceil(min(x[0], x[1], x[2]) - 0.5), 0.0), float(width))
    hi_x = min(max(np.floor(max(x[0], x[1], x[2]) - 0.5) + 1.0, 0.0), float(width))
    lo_y = min(max(np.ceil(min(y[0], y[1], y[2]) - 0.5), 0.0), float(height))
    hi_y = min(max(np.floor(max(y[0], y[1], y[2]) - 0.5) + 1.0, 0.0), float(height))
    if lo_x < hi_x and lo_y < hi_y:
        return int(lo_x), int(hi_x), int(lo_y), int(hi_y)
    return 0, 0, 0, 0


@numba.njit(cache=True)
def _draw_rows(verts, faces, cull, b, r0, r1, ids, tri_id, bary, depth):  # pragma: no cover - jitted
    """Rows [r0, r1) of image b: cleared, then triangles ``ids`` (ascending) drawn at the pixel
    centres they cover, each where it is nearer than what is drawn there (one loop body for both
    paths: a jitted call per triangle cost ~15 ns in numba's reference counting)."""
    height, width = tri_id.shape[1], tri_id.shape[2]
    tri_id[b, r0:r1] = -1           # (an array at a time: a pixel at a time, the five stores took longer)
    depth[b, r0:r1] = -np.inf
    bary[b, r0:r1] = 0.0
    for f in ids:
        x, y, area = _corners(verts, faces, b, f)
        j0, j1, i0, i1 = _pixel_box(x, y, area, height, width, cull)
        i0, i1 = max(i0, r0), min(i1, r1)
        if j0 >= j1 or i0 >= i1:
            continue
        z0, z1, z2 = verts[b, faces[f, 0], 2], verts[b, faces[f, 1], 2], verts[b, faces[f, 2], 2]
        # Strictly behind what is drawn over its whole box, it cannot take a pixel (its depths
        # are blends of its corners', within rounding of the nearest): its tests are skipped. A
        # third of a target face's tests were on such triangles, the eyeballs and the mouth
        # behind lids and lips, which come after the skin.
        limit = max(z0, z1, z2) + 1e-12 * (abs(z0) + abs(z1) + abs(z2))
        hidden, i = True, i0
        while hidden and i < i1:
            j = j0
            while hidden and j < j1:
                hidden = depth[b, i, j] > limit
                j += 1
            i += 1
        if hidden:
            continue
        orient = 1.0 if area > 0.0 else -1.0
        ax0, ay0, dx0, dy0, t0 = _edge(x, y, 0, orient)
        ax1, ay1, dx1, dy1, t1 = _edge(x, y, 1, orient)
        ax2, ay2, dx2, dy2, t2 = _edge(x, y, 2, orient)
        for i in range(i0, i1):
            py = i + 0.5
            q0, q1, q2 = dx0 * (py - ay0), dx1 * (py - ay1), dx2 * (py - ay2)   # the row's part
            for j in range(j0, j1):
                px = j + 0.5
                e0 = q0 - dy0 * (px - ax0)
                e1 = q1 - dy1 * (px - ax1)
                e2 = q2 - dy2 * (px - ax2)
                # Inside: every edge function at least its threshold. Tested at once (bitwise, not
                # short-circuit): in a triangle of a few pixels each test is a coin toss, and one
                # unpredictable branch costs less than three.
                if not ((e0 >= t0) & (e1 >= t1) & (e2 >= t2)):
                    continue
                total = e0 + e1 + e2
                w0, w1, w2 = e0 / total, e1 / total, e2 / total
                z = w0 * z0 + w1 * z1 + w2 * z2
                if z > depth[b, i, j]:  # strict: on a tie the earlier (lower) id stays
                    depth[b, i, j] = z
                    tri_id[b, i, j] = f
                    bary[b, i, j, 0] = w0
                    bary[b, i, j, 1] = w1
                    bary[b, i, j, 2] = w2


def _triangle_boxes(verts, faces, height, width, cull, box):  # pragma: no cover - jitted
    """box[b, f] = :func:`_pixel_box` of triangle f of image b."""
    n_batch, n_faces = verts.shape[0], faces.shape[0]
    for task in numba.prange(n_batch * n_faces):
        b, f = task // n_faces, task % n_faces
        x, y, area = _corners(verts, faces, b, f)
        box[b, f, 0], box[b, f, 1], box[b, f, 2], box[b, f, 3] = _pixel_box(x, y, area, height, width, cull)


@numba.njit(cache=True)
def _bin_triangles(box, n_bands, band_rows):  # pragma: no cover - jitted
    """Triangle ids per (batch, band) task, ascending: (start [B * n_bands + 1], ids)."""
    n_batch, n_faces = box.shape[0], box.shape[1]
    start = np.zeros(n_batch * n_bands + 1, np.int64)
    for b in range(n_batch):
        for f in range(n_faces):
            if box[b, f, 0] < box[b, f, 1]:
                for band in range(box[b, f, 2] // band_rows, (box[b, f, 3] - 1) // band_rows + 1):
                    start[b * n_bands + band + 1] += 1
    for t in range(n_batch * n_bands):
        start[t + 1] += start[t]
    ids = np.empty(start[-1], np.int32)
    fill = start[:-1].copy()
    for b in range(n_batch):
        for f in range(n_faces):
            if box[b, f, 0] < box[b, f, 1]:
                for band in range(box[b, f, 2] // band_rows, (box[b, f, 3] - 1) // band_rows + 1):
                    t = b * n_bands + band
                    ids[fill[t]] = f
                    fill[t] += 1
    return start, ids


def _raster_bands(verts, faces, cull, start, ids, band_rows, tri_id, bary, depth):  # pragma: no cover - jitted
    """Each task owns a band of rows of one image (no two tasks write the same pixel) and
    draws the triangles binned to it."""
    n_batch, height, width = tri_id.shape
    n_bands = (height + band_rows - 1) // band_rows
    for task in numba.prange(n_batch * n_bands):
        b, band = task // n_bands, task % n_bands
        _draw_rows(verts, faces, cull, b, band * band_rows, min((band + 1) * band_rows, height),
                   ids[start[task]:start[task + 1]], tri_id, bary, depth)


@numba.njit(cache=True)
def _raster_serial(verts, faces, cull, tri_id, bary, depth):  # pragma: no cover - jitted
    """The same z-buffer on one thread: each image's triangles in ascending id order, straight
    into the image (no boxes kept, no binning: those pay only for sharing the work)."""
    every = np.arange(faces.shape[0]).astype(np.int32)
    for b in range(tri_id.shape[0]):
        _draw_rows(verts, faces, cull, b, 0, tri_id.shape[1], every, tri_id, bary, depth)


_TRIANGLE_BOXES = numba.njit(cache=True, parallel=True)(_triangle_boxes)
_RASTER_BANDS = numba.njit(cache=True, parallel=True)(_raster_bands)


def _rasterize_numba(verts_img: torch.Tensor, faces: torch.Tensor, size: tuple[int, int],
                     cull_backfaces: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    height, width = size
    verts = np.ascontiguousarray(verts_img.detach().cpu().numpy(), dtype=np.float64)
    tris = np.ascontiguousarray(faces.cpu().numpy(), dtype=np.int64)
    tri_id = np.empty((verts.shape[0], height, width), np.int64)
    bary = np.empty((verts.shape[0], height, width, 3), np.float32)
    depth = np.empty((verts.shape[0], height, width), np.float32)
    if torch.get_num_threads() == 1:  # see kernels.compiled: the serial build is the one a worker can run
        _raster_serial(verts, tris, cull_backfaces, tri_id, bary, depth)
        return torch.from_numpy(tri_id), torch.from_numpy(bary), torch.from_numpy(depth)
    box = np.empty((verts.shape[0], tris.shape[0], 4), np.int32)
    _TRIANGLE_BOXES(verts, tris, height, width, cull_backfaces, box)
    n_bands = (height + _BAND_ROWS - 1) // _BAND_ROWS
    start, ids = _bin_triangles(box, n_bands, _BAND_ROWS)
    _RASTER_BANDS(verts, tris, cull_backfaces, start, ids, _BAND_ROWS, tri_id, bary, depth)
    return torch.from_numpy(tri_id), torch.from_numpy(bary), torch.from_numpy(depth)


# ---------------------------------------------------------------------------- moderngl
_VERTEX_SHADER = """
#version 430
uniform vec2 size;          // (W, H)
uniform vec2 depth_range;   // (centre, half range) mapping depth into clip z
in vec3 position;           // u, v, depth (px); three vertices per triangle, unindexed
void main() {
    // Clip y = image v, so gl_FragCoord is (u, v) of the pixel centre and OpenGL's bottom-up
    // rows come back in our top-down order. Nearer (larger depth) -> smaller clip z.
    gl_Position = vec4(2.0 * position.x / size.x - 1.0, 2.0 * position.y / size.y - 1.0,
                       (depth_range.x - position.z) / depth_range.y, 1.0);
}
"""
# Barycentrics are computed from the corners at the exact pixel centre, as the numba backend
# does, rather than interpolated: llvmpipe interpolates from corners snapped to 1/256 px.
_FRAGMENT_SHADER = """
#version 430
layout(std430, binding = 0) readonly buffer Corners { float corner[]; };   // the vertex buffer
layout(location = 0) out vec4 weights_depth;
layout(location = 1) out float triangle;   // id + 1, exact in float32 below 2^24 triangles
vec3 at(int k) { int i = 9 * gl_PrimitiveID + 3 * k; return vec3(corner[i], corner[i + 1], corner[i + 2]); }
float cross2(vec2 d, vec2 q) { return d.x * q.y - d.y * q.x; }
void main() {
    vec3 a = at(0), b = at(1), c = at(2);
    vec2 p = gl_FragCoord.xy;
    vec3 e = vec3(cross2(c.xy - b.xy, p - b.xy), cross2(a.xy - c.xy, p - c.xy), cross2(b.xy - a.xy, p - a.xy));
    // A centre that llvmpipe's snapped edges let in may lie a hair outside: clamp onto the triangle.
    vec3 w = max(e / (e.x + e.y + e.z), 0.0);
    w /= w.x + w.y + w.z;
    weights_depth = vec4(w, dot(w, vec3(a.z, b.z, c.z)));
    triangle = float(gl_PrimitiveID + 1);
}
"""


class _GLRasterizer:
    """A headless OpenGL context, the program and a framebuffer of the last size used; one per
    thread, since an OpenGL context is current on the thread that made it."""

    def __init__(self) -> None:
        import moderngl

        self.ctx = moderngl.create_standalone_context(backend="egl")
        self.program = self.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        self.fbo = None

    def framebuffer(self, height: int, width: int):
        """(w0, w1, w2, depth) and (id + 1) float32 colour attachments and a depth buffer."""
        if self.fbo is None or self.fbo.size != (width, height):
            if self.fbo is not None:
                for attachment in (*self.fbo.color_attachments, self.fbo.depth_attachment):
                    attachment.release()
                self.fbo.release()
            attachments = [self.ctx.texture((width, height), 4, dtype="f4"),
                           self.ctx.texture((width, height), 1, dtype="f4")]
            self.fbo = self.ctx.framebuffer(attachments, self.ctx.depth_texture((width, height)))
        return self.fbo

    def __call__(self, verts_img: torch.Tensor, faces: torch.Tensor, size: tuple[int, int],
                 cull_backfaces: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        import moderngl

        height, width = size
        if len(faces) >= 2 ** 24:
            raise ValueError(f"the moderngl backend draws fewer than 2^24 triangles, got {len(faces)}")
        corners = verts_img.detach().cpu().float()[:, faces.cpu()]                       # [B, F, 3, 3]
        # OpenGL has no rule for non-finite corners: collapse such triangles to a point (dropped).
        finite = torch.isfinite(corners).all(-1).all(-1)
        corners = torch.where(finite[..., None, None], corners, torch.zeros(())).reshape(len(corners), -1, 3).numpy()
        n_batch = corners.shape[0]
        fbo = self.framebuffer(height, width)
        fbo.use()
        self.ctx.enable_only(moderngl.DEPTH_TEST | (moderngl.CULL_FACE if cull_backfaces else moderngl.NOTHING))
        self.ctx.front_face = "cw"    # clip y = image v: a front face stays clockwise
        self.ctx.depth_func = "<"     # smaller clip z = nearer (strict: the first drawn keeps a tie)
        self.program["size"].value = (float(width), float(height))
        weights_depth = np.empty((n_batch, height, width, 4), np.float32)
        triangle = np.empty((n_batch, height, width), np.float32)
        for b in range(n_batch):
            z_lo, z_hi = (float(corners[b, :, 2].min()), float(corners[b, :, 2].max())) if len(faces) else (0.0, 0.0)
            # Keep every depth strictly inside the clip range, so that nothing is clipped in z.
            self.program["depth_range"].value = (0.5 * (z_lo + z_hi), 0.5 * (z_hi - z_lo) * 1.01 + 1e-3)
            fbo.clear(0.0, 0.0, 0.0, -np.inf, depth=1.0)   # empty: zero weights, depth -inf, id 0
            if len(faces):
                vbo = self.ctx.buffer(np.ascontiguousarray(corners[b]))
                vbo.bind_to_storage_buffer(0)
                vao = self.ctx.vertex_array(self.program, [(vbo, "3f", "position")])
                vao.render(moderngl.TRIANGLES)
                vao.release()
                vbo.release()
            fbo.read_into(weights_depth[b], components=4, attachment=0, dtype="f4")
            fbo.read_into(triangle[b], components=1, attachment=1, dtype="f4")
        tri_id = torch.from_numpy(triangle.astype(np.int64)) - 1
        out = torch.from_numpy(weights_depth)
        return tri_id, out[..., :3], out[..., 3]


_GL_PER_THREAD = threading.local()


def _rasterize_moderngl(verts_img: torch.Tensor, faces: torch.Tensor, size: tuple[int, int],
                        cull_backfaces: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not hasattr(_GL_PER_THREAD, "rasterizer"):
        _GL_PER_THREAD.rasterizer = _GLRasterizer()
    return _GL_PER_THREAD.rasterizer(verts_img, faces, size, cull_backfaces)


@functools.cache
def _moderngl_available() -> bool:
    """Whether a headless EGL context can be made here (asked once per process)."""
    try:
        import moderngl

        moderngl.create_standalone_context(backend="egl").release()
        return True
    except Exception:  # noqa: BLE001 - no module, no libEGL, no driver: all mean "not here"
        return False


# ----------------------------------------------------------------------------- registry
BACKENDS: Mapping[str, RasterBackend] = MappingProxyType({
    "numba": RasterBackend(run=_rasterize_numba, available=lambda: True, devices=("cpu",)),
    "moderngl": RasterBackend(run=_rasterize_moderngl, available=_moderngl_available, devices=("cpu",)),
    "nvdiffrast": RasterBackend(run=rasterize_nvdiffrast, available=nvdiffrast_available, devices=("cuda",)),
})

#: Preference order of ``backend="auto"`` (a backend is skipped for tensors on a device it does not take).
AUTO_ORDER: tuple[str, ...] = ("nvdiffrast", "numba", "moderngl")


def _usable(name: str, device: torch.device | str) -> bool:
    return torch.device(device).type in BACKENDS[name].devices and BACKENDS[name].available()


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Names of the backends that can rasterise tensors on ``device`` here, in preference order."""
    return [name for name in AUTO_ORDER if _usable(name, device)]


def resolve_backend(backend: str, device: torch.device | str = "cpu") -> str:
    """The backend name ``backend`` stands for on ``device`` ("auto": the first usable in ``AUTO_ORDER``)."""
    if backend == "auto":
        name = next((n for n in AUTO_ORDER if _usable(n, device)), None)
        if name is None:
            raise RuntimeError(f"no rasteriser backend for {torch.device(device).type} tensors")
        return name
    if backend not in BACKENDS:
        raise ValueError(f"unknown rasteriser backend {backend!r}; known: {sorted(BACKENDS)}")
    return backend


def rasterize(verts_img: torch.Tensor, faces: torch.Tensor, size: tuple[int, int], backend: str = "auto",
              cull_backfaces: bool = True) -> Fragments:
    """Rasterise a batch of meshes that share their triangles.

    Args:
        verts_img: [B, V, 3] image-space vertices (u px, v px, depth px; larger depth = nearer).
            Each batch element may have its own pose.
        faces: [F, 3] integer vertex indices, counter-clockwise seen from the front.
        size: (H, W) of the image.
        backend: a name in ``BACKENDS`` or "auto".
        cull_backfaces: drop triangles that face away from the camera.
    Returns:
        :class:`Fragments` at pixel centres, on ``verts_img``'s device.
    """
    if verts_img.ndim != 3 or verts_img.shape[-1] != 3:
        raise ValueError(f"verts_img must be [B, V, 3], got {list(verts_img.shape)}")
    if faces.ndim != 2 or faces.shape[-1] != 3 or faces.dtype.is_floating_point:
        raise ValueError(f"faces must be an integer [F, 3] tensor, got {faces.dtype} {list(faces.shape)}")
    if faces.numel():
        lowest, highest = torch.stack(torch.aminmax(faces)).tolist()   # (one pass, one read)
        if lowest < 0 or highest >= verts_img.shape[1]:
            raise ValueError(f"faces index outside the {verts_img.shape[1]} vertices")
    height, width = int(size[0]), int(size[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive (H, W), got {size}")
    name = resolve_backend(backend, verts_img.device)
    chosen = BACKENDS[name]
    if verts_img.device.type not in chosen.devices:
        raise ValueError(f"backend {name!r} takes {chosen.devices} tensors, got {verts_img.device.type}")
    tri_id, bary, depth = chosen.run(verts_img, faces.long(), (height, width), cull_backfaces)
    device = verts_img.device
    return Fragments(tri_id=tri_id.to(device), bary=bary.to(device), depth=depth.to(device), backend=name)


class Rasterizer(torch.nn.Module):
    """:func:`rasterize` with its settings held: ``Rasterizer((H, W))(verts_img, faces) -> Fragments``."""

    def __init__(self, size: tuple[int, int], backend: str = "auto", cull_backfaces: bool = True):
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.backend = backend
        self.cull_backfaces = cull_backfaces

    def forward(self, verts_img: torch.Tensor, faces: torch.Tensor) -> Fragments:
        """verts_img [B, V, 3] (u, v, depth px), faces [F, 3] -> :class:`Fragments` [B, H, W]."""
        return rasterize(verts_img, faces, self.size, self.backend, self.cull_backfaces)
