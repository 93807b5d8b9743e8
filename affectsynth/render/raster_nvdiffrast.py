"""The nvdiffrast backend of :mod:`affectsynth.render.raster`: CUDA tensors, rasterised by
nvdiffrast's CUDA rasteriser (``pip install affectsynth[gpu]``: diffrp-nvdiffrast, which compiles
its CUDA plugin on first use; NVIDIA's non-commercial source code licence).

UNTESTED ON A GPU: written and checked on a machine without one. Everything around the
nvdiffrast call (clip-space mapping, culling, ranges, decoding) is checked on the CPU against an
emulation of nvdiffrast's documented output (tests/test_gpu_parity.py); the comparison with the
numba backend on CUDA tensors runs in that file only where CUDA and nvdiffrast are present.

How raster.py's conventions are met
-----------------------------------
Pixel centres
    nvdiffrast samples pixel (i, j) at clip (x, y) = ((2j + 1) / W - 1, (2i + 1) / H - 1). Mapping
    image (u, v) to clip (2u / W - 1, 2v / H - 1) puts that sample at (u, v) = (j + 0.5, i + 0.5),
    our centre, and makes output row i image row i (no flip: nvdiffrast's "y up" is only a
    convention of how its images are shown).
Depth
    Clip z = (centre - depth) / half_range, per batch element, with w = 1: larger depth (nearer)
    gives smaller z, which nvdiffrast's depth test keeps; every corner lies strictly inside
    (-1, 1), so nothing is clipped in z. Depth comes back from the output's z/w.
Culling and dropped triangles
    nvdiffrast culls nothing. The triangles raster.py drops (back faces when culling, zero-area
    or non-finite ones always) are left out per batch element, so nvdiffrast runs in *range
    mode*: one vertex buffer for all elements and, per element, the range of its kept triangles.
    The signed area is computed in float64 from the input, as the numba backend does.
Barycentrics
    The output's (u, v) weigh the triangle's first and second corners, 1 - u - v its third:
    ``bary = (u, v, 1 - u - v)``, in raster.py's per-corner order. nvdiffrast evaluates them at
    the exact pixel centre from the float32 clip-space corners (affine here, since w = 1).
Triangle ids
    The output's id is one more than the index into the range-mode triangle list (0 = empty),
    mapped back to the index into ``faces``.
Where it may differ from the numba backend
    nvdiffrast decides coverage on corners snapped to 1/16 px (its CudaRaster), so pixel
    centres within about 1/32 px of an edge may go to the neighbouring triangle or none, and
    triangles narrower than that snapping may vanish; depth ties resolve by its own order.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

import torch

__all__ = ["NvdiffrastCall", "rasterize_nvdiffrast", "rasterize_ranges", "nvdiffrast_available"]

#: nvdiffrast's range-mode rasterise call: (pos [N, 4] float32 clip space on the GPU, tri [T, 3]
#: int32 on the same device, (H, W), ranges [B, 2] int32 on the CPU (start, count) into ``tri``)
#: -> rast [B, H, W, 4] float32 (u, v, z/w, triangle index into ``tri`` + 1; zeros where empty).
NvdiffrastCall = Callable[[torch.Tensor, torch.Tensor, tuple[int, int], torch.Tensor], torch.Tensor]

#: Triangle ids come back as float32, exact below 2^24.
_MAX_TRIANGLES = 2 ** 24


def rasterize_ranges(call: NvdiffrastCall, verts_img: torch.Tensor, faces: torch.Tensor, size: tuple[int, int],
                     cull_backfaces: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """raster.py's rasterising call (its ``RasterCall``) on top of an nvdiffrast-like ``call``.

    Args:
        call: :data:`NvdiffrastCall` (nvdiffrast itself, or an emulation of it in tests).
        verts_img: [B, V, 3] image-space vertices (u px, v px, depth px; larger = nearer).
        faces: [F, 3] int64 vertex indices, on ``verts_img``'s device.
        size: (H, W).
        cull_backfaces: drop triangles whose image-space signed area is positive.
    Returns:
        tri_id [B, H, W] int64 (-1 where empty), bary [B, H, W, 3] float32 (zeros where empty),
        depth [B, H, W] float32 (-inf where empty), on ``verts_img``'s device.
    """
    n_batch, n_verts = verts_img.shape[:2]
    height, width = size
    device = verts_img.device
    verts = verts_img.detach().double()
    corners = verts[:, faces, :2]                                                     # [B, F, 3, 2]
    edge_1, edge_2 = corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0]
    area = edge_1[..., 0] * edge_2[..., 1] - edge_1[..., 1] * edge_2[..., 0]          # [B, F]
    finite_corners = torch.isfinite(verts[:, faces]).all(-1).all(-1)                  # [B, F]
    keep = finite_corners & torch.isfinite(area) & (area != 0.0)
    if cull_backfaces:
        keep &= area < 0.0
    element, face = keep.nonzero(as_tuple=True)                                      # batch-major order
    if len(face) + n_batch >= _MAX_TRIANGLES:
        raise ValueError(f"the nvdiffrast backend draws fewer than 2^24 triangles per call, got {len(face)}")
    # One vertex buffer for every element, plus a last vertex for a zero-area stand-in triangle
    # per element: an element with no triangle gets its range on that (nvdiffrast rejects empty
    # buffers, and a zero-area triangle never covers a pixel).
    finite = torch.isfinite(verts).all(-1)                                            # [B, V]
    depth = verts[..., 2]
    z_lo = torch.where(finite, depth, torch.inf).amin(1)
    z_hi = torch.where(finite, depth, -torch.inf).amax(1)
    z_lo, z_hi = torch.where(finite.any(1), z_lo, 0.0), torch.where(finite.any(1), z_hi, 0.0)
    z_centre = 0.5 * (z_lo + z_hi)                                                    # [B]
    z_half = 0.5 * (z_hi - z_lo) * 1.01 + 1e-3   # strictly inside clip z: nothing clipped in depth
    clip = torch.stack((2.0 * verts[..., 0] / width - 1.0, 2.0 * verts[..., 1] / height - 1.0,
                        (z_centre[:, None] - depth) / z_half[:, None], torch.ones_like(depth)), -1)
    clip = torch.where(finite[..., None], clip, 0.0)   # unreferenced, but no NaN reaches the GPU
    pos = torch.cat((clip.reshape(-1, 4), clip.new_tensor([[0.0, 0.0, 0.0, 1.0]]))).float().contiguous()
    stand_in = torch.full((n_batch, 3), n_batch * n_verts, dtype=torch.int64, device=device)
    tri = torch.cat((faces[face] + (element * n_verts)[:, None], stand_in)).int().contiguous()
    face_of = torch.cat((face, torch.full((n_batch,), -1, dtype=torch.int64, device=device)))   # [T]
    count = keep.sum(1).cpu()                                                         # [B]
    start = count.cumsum(0) - count
    empty = count == 0
    ranges = torch.stack((torch.where(empty, len(face) + torch.arange(n_batch), start),
                          torch.where(empty, 1, count)), -1).int()
    rast = call(pos, tri, (height, width), ranges)                                   # [B, H, W, 4]
    index = rast[..., 3].long() - 1
    covered = index >= 0
    tri_id = torch.where(covered, face_of[index.clamp(min=0)], -1)
    covered = tri_id >= 0
    u, v = rast[..., 0], rast[..., 1]
    bary = torch.stack((u, v, (1.0 - u - v).clamp(min=0.0)), -1)
    bary = torch.where(covered[..., None], bary, 0.0)
    surface = (z_centre[:, None, None] - rast[..., 2].double() * z_half[:, None, None]).float()
    depth_out = torch.where(covered, surface, -torch.inf)
    return tri_id, bary, depth_out


_CUDA_PER_THREAD = threading.local()


def _context(device: torch.device):
    """This thread's nvdiffrast CUDA context on ``device`` (made on first use: it allocates
    the rasteriser's buffers, and the first one in a process compiles nvdiffrast's plugin)."""
    import nvdiffrast.torch as dr

    index = torch.cuda.current_device() if device.index is None else device.index
    if not hasattr(_CUDA_PER_THREAD, "contexts"):
        _CUDA_PER_THREAD.contexts = {}
    if index not in _CUDA_PER_THREAD.contexts:
        _CUDA_PER_THREAD.contexts[index] = dr.RasterizeCudaContext(device=index)
    return _CUDA_PER_THREAD.contexts[index]


def rasterize_nvdiffrast(verts_img: torch.Tensor, faces: torch.Tensor, size: tuple[int, int],
                         cull_backfaces: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """raster.py's ``RasterCall`` through nvdiffrast on ``verts_img``'s CUDA device (untested on a GPU)."""
    import nvdiffrast.torch as dr

    context = _context(verts_img.device)

    def call(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int], ranges: torch.Tensor):
        with torch.cuda.device(verts_img.device):
            return dr.rasterize(context, pos, tri, resolution, ranges=ranges, grad_db=False)[0]

    return rasterize_ranges(call, verts_img, faces, size, cull_backfaces)


@functools.cache
def _nvdiffrast_importable() -> bool:
    """Whether nvdiffrast's torch module imports (asked once per process; it compiles nothing yet)."""
    try:
        import nvdiffrast.torch  # noqa: F401
    except Exception:  # noqa: BLE001 - not installed, or a broken install: both mean "not here"
        return False
    return True


def nvdiffrast_available() -> bool:
    """Whether CUDA is usable and nvdiffrast is installed (its plugin compiles on first use, later)."""
    return torch.cuda.is_available() and _nvdiffrast_importable()
