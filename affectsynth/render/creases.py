"""Expression creases: the wrinkles action units fold into the skin, drawn as shading.

Moving the mesh shows the large folds of an expression (a cheek bulging, the nasolabial fold
deepening), but not the narrow ones: a crease is 1-3 mm wide, below a face model's vertex
spacing, and it is what FACS lists among an action unit's appearance changes (Ekman, Friesen &
Hager 2002, the FACS Manual): AU1 "horizontal wrinkles in the centre of the forehead", AU2 in
its lateral part, AU4 "vertical wrinkles between the brows", AU9 "wrinkles along the sides and
across the root of the nose" with the upper nasolabial furrow deepened, AU10 the nasolabial
furrow deepened, AU17 the furrow below the lower lip deepened (the mentolabial sulcus, as the
chin boss pushes up). Where and how deep they run
here is our design, not measured.

Each crease is a polyline on the face model's rest surface, its points given as weighted blends
of MediaPipe's 478 landmarks (so that any model with an ``mp478`` landmark map gets them),
one per side of the face, and deepened by the increase of its side's action unit from the
photo's fitted expression to the target (a photo's own creases are in its pixels already).
A skin pixel at rest-space distance d (mm, in the frontal x-y plane of the model's mean shape,
where the creased regions face the camera) from the line is shaded by the factor
``1 - depth * activation * taper * (G(d, sigma) - SHOULDER * G(d, 2 sigma))``, G(d, s) =
exp(-d^2 / (2 s^2)): a dark valley between two faint light shoulders (the skin bunched up on
either side), so a crease reads as relief rather than as a drawn line, with the folded region a
little darker overall (the valleys are shadowed: :data:`SHOULDER` < 1/2 gives less light than
dark); ``taper`` fades it out over the last :data:`TAPER_FRACTION` of its length at a free
end, or over its whole end segment where another crease fades in over the same one
(:attr:`Crease.cross_fade`), and a crease that starts on the midline stops there, where its
mirror image goes on (the creases' factors are multiplied). Below :data:`MIN_SIGMA_PX` the
profile is widened and made shallower in proportion, so that a small face gets a faint band
rather than an aliased line.

Convention: landmark ids are MediaPipe's; "R" is the subject's right side (-x in the model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..affect.targets import AU_KEYS
from ..model.face_model import FaceModel
from . import kernels

__all__ = ["Crease", "CREASES", "CreaseLines", "crease_lines", "crease_shading", "MIN_SIGMA_PX", "SHOULDER",
           "FACTOR_RANGE", "GRID_MM", "TAPER_FRACTION", "MIRROR"]

#: The narrowest crease profile drawn, in pixels (Gaussian sigma).
MIN_SIGMA_PX = 1.0
#: The range of the shading factor, however many creases meet at a pixel.
FACTOR_RANGE = (0.5, 1.2)
#: Weight of the light shoulders of a crease's profile (1/2: as much light as dark).
SHOULDER = 0.25
#: Cell size (mm) of the rest-space grid the shading is evaluated on (:func:`crease_shading`).
GRID_MM = 0.4
#: A crease fades out over this fraction of its length at each free end.
TAPER_FRACTION = 0.3

Point = tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class Crease:
    """One crease on the subject's right side (its mirror image is the left side's).

    Attributes:
        au: the action unit number that deepens it.
        points: the polyline, each point ``((landmark, weight), ...)`` with weights summing to 1.
        sigma_mm: half-width (Gaussian sigma) of its darkening, mm.
        depth: weight of its profile at full activation (0..1): the valley's centre darkens
            by depth * (1 - :data:`SHOULDER`).
        from_midline: it starts on the midline, where it joins its mirror image: only its
            lateral end fades out (both ends do otherwise).
        cross_fade: (at the start, at the end): that end fades out over its whole end segment
            instead of the last :data:`TAPER_FRACTION` of the length, because another crease
            fades in over the same segment (smoothsteps over one interval sum to 1: the two
            run on as one line, neither gapped nor darkened twice).
    """

    au: int
    points: tuple[Point, ...]
    sigma_mm: float
    depth: float
    from_midline: bool = False
    cross_fade: tuple[bool, bool] = (False, False)


def _at(*pairs: float) -> Point:
    """A point from (landmark, weight, landmark, weight, ...)."""
    return tuple((int(pairs[i]), float(pairs[i + 1])) for i in range(0, len(pairs), 2))


def _mid(a: int, b: int, t: float = 0.5) -> Point:
    return _at(a, 1.0 - t, b, t)


_FOREHEAD_ROWS = (  # three rows between the brows and the hairline, from the midline outwards
    (_mid(9, 151), _mid(107, 108), _mid(66, 69), _mid(105, 104)),
    (_at(151, 1.0), _at(108, 1.0), _at(69, 1.0), _at(104, 1.0)),
    (_mid(151, 10), _mid(108, 109), _mid(69, 67)),
)
#: Depth of each forehead row: the middle one deepest. Three rows of one depth, evenly spaced,
#: read as a printed ladder of stripes; real forehead lines differ from row to row.
_FOREHEAD_DEPTHS = (0.12, 0.16, 0.10)
_NASOLABIAL = (_at(129, 1.0), _at(203, 1.0), _at(206, 1.0), _at(216, 1.0))

#: The creases of the subject's right side; :data:`MIRROR` gives the left side's landmarks.
CREASES: tuple[Crease, ...] = (
    # AU1: the central part of each forehead row (joining its mirror image at the midline);
    # AU2: the lateral part. They overlap over the row's second segment, where one fades out as the
    # other fades in: with both (surprise, fear) a row runs on unbroken (abutting at one point,
    # both faded there, each row had a gap above the inner brow).
    *(Crease(1, row[:3], 2.0, d, from_midline=True, cross_fade=(False, True))
      for row, d in zip(_FOREHEAD_ROWS, _FOREHEAD_DEPTHS)),
    *(Crease(2, row[1:], 2.0, d, cross_fade=(True, False)) for row, d in zip(_FOREHEAD_ROWS, _FOREHEAD_DEPTHS)),
    # AU4: the vertical glabellar furrow beside the midline, converging downward
    Crease(4, (_at(9, 0.6, 107, 0.4), _at(8, 0.6, 55, 0.4), _at(168, 0.6, 193, 0.4)), 1.2, 0.22),
    # AU9: across the root and the bridge of the nose, obliquely down its side, the upper furrow
    Crease(9, (_at(168, 1.0), _at(193, 1.0)), 1.4, 0.20, from_midline=True),
    Crease(9, (_at(6, 1.0), _at(122, 1.0), _at(188, 1.0)), 1.3, 0.20, from_midline=True),
    Crease(9, (_at(196, 1.0), _at(217, 1.0), _at(126, 1.0)), 1.3, 0.15),
    Crease(9, _NASOLABIAL[:3], 2.5, 0.18),
    # AU10: the nasolabial furrow
    Crease(10, _NASOLABIAL, 2.5, 0.22),
    # AU17: the mentolabial sulcus below the lower lip
    Crease(17, (_at(18, 0.75, 200, 0.25), _at(83, 0.75, 201, 0.25), _at(182, 0.75, 194, 0.25)), 2.5, 0.20,
           from_midline=True),
)

#: MediaPipe's left-right landmark pairs for the landmarks :data:`CREASES` use (midline ones map
#: to themselves).
MIRROR: dict[int, int] = {
    **{i: i for i in (6, 8, 9, 10, 18, 151, 168, 197, 200)},
    **{r: l for r, l in ((47, 277), (55, 285), (66, 296), (67, 297), (69, 299), (83, 313), (104, 333),
                         (105, 334), (107, 336), (108, 337), (109, 338), (114, 343), (122, 351), (126, 355),
                         (129, 358), (182, 406), (188, 412), (193, 417), (194, 418), (196, 419), (201, 421),
                         (203, 423), (206, 426), (216, 436), (217, 437))},
}


@dataclass(frozen=True)
class CreaseLines:
    """A model's creases (both sides) as polylines of straight segments in its rest space.

    Attributes:
        segments: [C, K, 2, 2] start and end (x, y) of each crease's segments, mm, in the model's
            mean shape; K is the most any crease has, and a crease with fewer repeats its last one
            (a repeat is never nearer to a point than the segment itself, and a tie goes to the
            first), so that all creases are evaluated in one pass.
        arc: [C, K, 2] where each segment starts and ends along its crease, as a fraction of the
            crease's length.
        fade: [C, 2] the fraction of each crease's length over which it fades out at its start
            and at its end (0: it does not fade there).
        midline_side: [C] 0, or for a crease that starts on the midline (:attr:`Crease.from_midline`)
            -1 (the subject's right, -x) or +1 (left): it is drawn only on its own side of its first
            point's x, where its mirror image takes over (drawn on both, the two darkened the join
            twice: a dark spot on the midline of the nose's root and of each forehead row).
        au_column: [C] int64 column of :data:`~affectsynth.affect.targets.AU_KEYS` that deepens it.
        sigma_mm: [C] profile half-width, mm.
        depth: [C] profile weight at full activation (:attr:`Crease.depth`).
    """

    segments: torch.Tensor
    arc: torch.Tensor
    fade: torch.Tensor
    midline_side: torch.Tensor
    au_column: torch.Tensor
    sigma_mm: torch.Tensor
    depth: torch.Tensor


def crease_lines(model: FaceModel) -> CreaseLines | None:
    """:data:`CREASES` (both sides) placed on ``model``'s mean shape through its ``mp478``
    landmark map; None if the model has no such map. A crease through a landmark the model has
    no point for is left out."""
    if "mp478" not in model.landmark_maps:
        return None
    lm_map = model.landmark_map("mp478")
    landmarks = lm_map.gather(model.mean[None].double().cpu())[0, :, :2]                # [478, 2]
    valid = lm_map.valid.cpu()
    column = {key: i for i, key in enumerate(AU_KEYS)}
    segments, arcs, fades, sides, columns, sigma, depth = [], [], [], [], [], [], []
    for crease in CREASES:
        for side, sign, ids in (("R", -1.0, lambda i: i), ("L", 1.0, MIRROR.__getitem__)):
            points = [[(ids(i), w) for i, w in point] for point in crease.points]
            if not all(bool(valid[i]) for point in points for i, _ in point):
                continue
            xy = torch.stack([sum(w * landmarks[i] for i, w in point) for point in points])   # [P, 2]
            segments.append(torch.stack((xy[:-1], xy[1:]), 1))
            arc = torch.cat((xy.new_zeros(1), (xy[1:] - xy[:-1]).norm(dim=1).cumsum(0)))
            arc = arc / arc[-1]
            arcs.append(torch.stack((arc[:-1], arc[1:]), 1))
            start = 0.0 if crease.from_midline else float(arc[1]) if crease.cross_fade[0] else TAPER_FRACTION
            fades.append([start, float(1.0 - arc[-2]) if crease.cross_fade[1] else TAPER_FRACTION])
            sides.append(sign if crease.from_midline else 0.0)
            columns.append(column[f"AU{crease.au}_{side}"])
            sigma.append(crease.sigma_mm)
            depth.append(crease.depth)
    if not segments:
        return None
    most = max(len(own) for own in segments)

    def padded(rows: list[torch.Tensor]) -> torch.Tensor:   # each crease's last row repeated up to `most`
        return torch.stack([torch.cat((own, own[-1:].expand(most - len(own), *own.shape[1:]))) for own in rows]).float()

    return CreaseLines(padded(segments), padded(arcs), torch.tensor(fades), torch.tensor(sides), torch.tensor(columns),
                       torch.tensor(sigma), torch.tensor(depth))


def _crease_factor(px: torch.Tensor, py: torch.Tensor, segments: torch.Tensor, arc: torch.Tensor,
                   fade: torch.Tensor, midline_side: torch.Tensor, s2: torch.Tensor,
                   weight: torch.Tensor) -> torch.Tensor:
    """[U, P] the shading factor of U creases, each at its own rest-space points (``px``, ``py``:
    [U, P], mm), from its segments [U, K, 2, 2], their arc fractions [U, K, 2], its
    :attr:`CreaseLines.fade` [U, 2] and ``midline_side`` [U], its profile's 2 sigma^2 [U] (mm^2,
    sigma widened) and its profile's weight [U] (depth, activation and widening included).

    The x and y terms are separate [U, P, K] operations (not a sum over a last axis of 2: the
    same two roundings, several times faster on the CPU).
    """
    (ax, ay), (bx, by) = (corner.unbind(-1) for corner in segments[:, None].unbind(3))   # [U, 1, K] each
    abx, aby = bx - ax, by - ay
    px, py = px[..., None], py[..., None]                                                   # [U, P, 1]
    t = (((px - ax) * abx + (py - ay) * aby) / (abx * abx + aby * aby)).clamp(0.0, 1.0)   # [U, P, K]
    d2, nearest = ((px - (ax + t * abx)).square() + (py - (ay + t * aby)).square()).min(2)  # the nearest segment
    t = t.gather(2, nearest[..., None])[..., 0]
    start, stop = (arc[..., k].gather(1, nearest) for k in (0, 1))
    along = start + t * (stop - start)                                  # position along the crease, 0..1
    taper = along.new_ones(())
    for k, left in enumerate((along, 1.0 - along)):                      # fading in at the start, out at the end
        span = fade[:, k, None]
        x = torch.where(span > 0, left / span.clamp(min=1e-12), 1.0).clamp(0.0, 1.0)
        taper = taper * (x * x * (3.0 - 2.0 * x))                        # smoothstep
    side = midline_side[:, None]
    # a midline crease only on its own side of its first point (see CreaseLines.midline_side)
    beyond = torch.where(side < 0, px[..., 0] >= ax[..., 0], px[..., 0] < ax[..., 0]) & (side != 0)
    taper = torch.where(beyond, 0.0, taper)
    s2 = s2[:, None]
    profile = taper * (torch.exp(-d2 / s2) - SHOULDER * torch.exp(-d2 / (4.0 * s2)))
    return 1.0 - (weight[:, None] * profile).clamp(max=1.0)


def crease_shading(rest_xy: torch.Tensor, activation: torch.Tensor, lines: CreaseLines,
                   px_per_mm: torch.Tensor) -> torch.Tensor:
    """The shading factor of skin pixels by the creases (module docstring).

    Per face, the factor is evaluated on a grid over its active creases in rest space (cells of
    :data:`GRID_MM`, or its pixel size where that is larger), each crease only on the window of
    the grid it reaches, and read bilinearly at the pixels: the cost follows the creases'
    extent, not the number of pixels, and a face renders the same in any batch. On the CPU
    without autograd face by face (:func:`.kernels.face_creases`); else every face's creases at
    once (:func:`_batch_shading`, the same steps, to the last bit or so).

    Args:
        rest_xy: [B, N, 2] each pixel's surface point in the model's rest space (x, y), mm.
        activation: [B, A] how much each action unit (:data:`AU_KEYS` columns) deepens its
            creases, in [0, 1].
        lines: the model's :func:`crease_lines`.
        px_per_mm: [B] the faces' image scale.
    Returns:
        [B, N] factors in :data:`FACTOR_RANGE` (1 away from every active crease).
    """
    device, dtype = rest_xy.device, rest_xy.dtype
    strength = activation.to(device, dtype)[:, lines.au_column.to(device)]                   # [B, C]
    if kernels.use_kernels(rest_xy, strength, lines.segments):
        geometry = [t.to(dtype) for t in (lines.segments, lines.arc, lines.fade, lines.midline_side)]
        return torch.stack([kernels.face_creases(rest_xy[i], strength[i], *geometry, lines.sigma_mm.double(),
                                                 lines.depth.to(dtype), scale, GRID_MM, MIN_SIGMA_PX, SHOULDER,
                                                 FACTOR_RANGE)
                            for i, scale in enumerate(px_per_mm.tolist())])
    return _batch_shading(rest_xy, strength, lines, px_per_mm)


def _batch_shading(rest_xy: torch.Tensor, strength: torch.Tensor, lines: CreaseLines,
                   px_per_mm: torch.Tensor) -> torch.Tensor:
    """[B, N] :func:`crease_shading` of B faces (rest points [B, N, 2], crease strengths [B, C]) in
    batched tensor ops: each face's grid and creases as the kernel's, the U (face, crease) pairs
    in use evaluated together, every face's grid padded to the largest."""
    device, dtype = rest_xy.device, rest_xy.dtype
    b = rest_xy.shape[0]
    face, crease = (strength > 0).nonzero(as_tuple=True)                                     # [U] each, by face
    if face.numel() == 0:
        return rest_xy.new_ones(rest_xy.shape[:2])
    scale = px_per_mm.to(device, torch.float64)                                              # [B]
    # Per-crease sizes in float64, each rounded once to the grid's dtype where it meets it.
    sigma_mm = lines.sigma_mm.to(device, torch.float64)[crease]
    sigma = torch.maximum(sigma_mm, MIN_SIGMA_PX / scale[face])                               # widened, mm
    reach = 4.0 * sigma                                                                      # [U] mm
    corners = lines.segments.to(device, dtype)[crease]                                       # [U, K, 2, 2]
    ends = corners.flatten(1, 2)                                                             # [U, 2K, 2]
    bounds = torch.stack((ends.amin(1), ends.amax(1)), 1)                                    # [U, 2, 2] low, high
    # Each face's grid: over its creases' bounds, grown by its widest reach (faces with none: empty).
    pairs = face[:, None].expand(-1, 2)
    inf = torch.tensor(float("inf"), dtype=dtype, device=device)
    grown = rest_xy.new_zeros(b).scatter_reduce(0, face, reach.to(dtype), "amax")[:, None]  # [B, 1]
    low = inf.expand(b, 2).scatter_reduce(0, pairs, bounds[:, 0], "amin") - grown
    high = (-inf).expand(b, 2).scatter_reduce(0, pairs, bounds[:, 1], "amax") + grown
    creased = torch.zeros(b, dtype=torch.bool, device=device).index_fill_(0, face, True)
    low, high = torch.where(creased[:, None], low, 0.0), torch.where(creased[:, None], high, 0.0)
    cell = (1.0 / scale).clamp(min=GRID_MM).to(dtype)                                      # [B]
    cells_xy = ((high - low) / cell[:, None]).ceil().long() + 2                             # [B, 2] nx ny
    # Each crease is evaluated on the window of its face's grid it reaches: its cells' index ranges.
    at_reach = reach.to(dtype)[:, None]
    lower = ((bounds[:, 0] - at_reach - low[face]) / cell[face, None]).floor().clamp(min=0)
    upper = ((bounds[:, 1] + at_reach - low[face]) / cell[face, None]).ceil() + 1
    box = torch.cat((lower, torch.minimum(upper, cells_xy[face].to(dtype))), 1).long()     # [U, 4] i0 j0 i1 j1
    width, count = box[:, 2] - box[:, 0], (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
    rank = torch.arange(face.shape[0], device=device) - torch.searchsorted(face, face)      # [U] its face's k-th
    nx, ny, most, ranks = torch.cat((cells_xy.amax(0), count.max()[None], rank.max()[None] + 1)).tolist()
    cells = torch.arange(most, device=device)
    i = box[:, :1] + cells % width[:, None]                                                  # [U, P]
    j = box[:, 1:2] + cells.div(width[:, None], rounding_mode="floor")
    s2 = (2.0 * sigma * sigma).to(dtype)
    # as much ink when widened: the depth scaled by sigma_mm / sigma
    weight = lines.depth.to(device, dtype)[crease] * strength[face, crease] * sigma_mm.to(dtype) / sigma.to(dtype)
    windows = _crease_factor(low[face, :1] + cell[face, None] * i.to(dtype),
                             low[face, 1:] + cell[face, None] * j.to(dtype), corners,
                             lines.arc.to(device, dtype)[crease], lines.fade.to(device, dtype)[crease],
                             lines.midline_side.to(device, dtype)[crease], s2, weight)
    # Each face's creases multiplied into its grid in their order, one rank at a time (a face
    # has at most one crease of each rank): the products of the kernel, in the same order.
    spare = ny * nx                                                   # a last column takes the cells past a window
    index = torch.full((ranks, b, most), spare, dtype=torch.long, device=device)          # [R, B, P]
    index[rank, face] = torch.where(cells < count[:, None], j * nx + i, spare)
    by_rank = windows.new_ones(ranks, b, most)
    by_rank[rank, face] = windows
    factor = rest_xy.new_ones(b, spare + 1)
    for at, window in zip(index, by_rank):
        factor.scatter_(1, at, factor.gather(1, at) * window)
    factor = factor[:, :spare].view(b, 1, ny, nx).clamp(*FACTOR_RANGE)
    # grid_sample's coordinates: -1 and 1 at the centres of the first and last cells
    extent = cell[:, None] * rest_xy.new_tensor([nx - 1, ny - 1])                         # [B, 2]
    where = (2.0 * (rest_xy - low[:, None]) / extent[:, None] - 1.0)[:, :, None]           # [B, N, 1, 2]
    sampled = torch.nn.functional.grid_sample(factor - 1.0, where, mode="bilinear", padding_mode="zeros",
                                              align_corners=True)[:, 0, :, 0] + 1.0
    return torch.where(creased[:, None], sampled, 1.0)
