"""Compositing masks: feathering inside the outline, and the filling of specks before it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from affectsynth.render.composite import dilate, feathered_mask, fill_specks


def coverage_with_holes() -> torch.Tensor:
    """[1, 1, 60, 60]: a covered square with a 1-px speck, a 3-px-wide slit and a 12-px hole."""
    c = torch.zeros(1, 1, 60, 60)
    c[..., 5:55, 5:55] = 1
    c[..., 15, 15] = 0
    c[..., 30:33, 10:20] = 0
    c[..., 35:47, 35:47] = 0
    return c


def test_fill_specks_closes_small_gaps_only():
    c = coverage_with_holes()
    filled = fill_specks(c, 2)
    assert filled[..., 15, 15] == 1 and bool((filled[..., 30:33, 10:20] == 1).all())
    assert bool((filled[..., 37:45, 37:45] == 0).all())               # a real hole stays a hole
    assert torch.equal(filled[..., :5, :], c[..., :5, :]) and torch.equal(fill_specks(c, 0), c)
    assert bool((filled <= torch.ones(())).all()) and bool((filled >= c).all())  # it only adds


def test_feathered_mask_reaches_zero_inside_the_outline_and_around_holes():
    c = fill_specks(coverage_with_holes(), 2)
    mask = feathered_mask(c, 3.0)
    assert float(mask[..., 5, 30]) < 0.05 and float(mask[..., 25, 25]) > 0.95   # edge vs inside
    assert float(mask[..., 41, 41]) < 0.05                                       # the hole stays
    assert float(mask[..., 15, 15]) > 0.95 and float(mask[..., 31, 15]) > 0.95   # no speck grows
    unfilled = feathered_mask(coverage_with_holes(), 3.0)
    assert float(unfilled[..., 15, 15]) < 0.5                # without filling, a speck becomes a hole


def test_feathered_mask_closes_specks_in_the_same_erosion():
    """Closing specks inside feathered_mask (its erosion and the feather's as one) gives the bits of
    closing them first, on the CPU kernels and on the torch path, at the image's edges too."""
    c = coverage_with_holes()
    c[..., 0:3, 20:40] = 1                                     # coverage touching the top edge
    for soft in (c, c.clone().requires_grad_()):               # the kernels, then the torch ops
        for speck, feather in ((2, 3.0), (1, 0.4), (3, 0.0), (0, 2.0)):
            together = feathered_mask(soft, feather, speck)
            apart = feathered_mask(fill_specks(soft, speck), feather)
            assert torch.equal(together.detach(), apart.detach()), (speck, feather)


def test_feathered_mask_of_faces_of_several_sizes_is_each_alone():
    """Per-image feather and speck radii (faces of other sizes in one batch): each image's mask is
    the one it gets alone, to the bit on the CPU kernels and to float rounding on the torch path
    (one grouped blur whose taps are zero-padded to the widest, a filter per distinct radius),
    including a feather of 0 (no blur)."""
    c = coverage_with_holes()
    batch = torch.cat((c, c.flip(-1), c.transpose(-1, -2), c))
    feathers, specks = (3.0, 0.8, 5.5, 0.0), (2, 1, 2, 3)
    for soft, tolerance in ((batch, 0.0), (batch.clone().requires_grad_(), 1e-6)):   # the kernels, the torch ops
        together = feathered_mask(soft, feathers, specks).detach()
        for i, (feather, speck) in enumerate(zip(feathers, specks)):
            alone = feathered_mask(soft[i:i + 1], feather, speck).detach()
            assert float((together[i:i + 1] - alone).abs().max()) <= tolerance, (i, feather, speck)
    assert not torch.equal(together[0], together[3])                           # the radii matter


def test_dilate_is_the_square_max_filter():
    """dilate (OpenCV's on the CPU) gives max_pool2d's (2r + 1)^2 filter, off-image pixels left
    out, for any radius and for soft values and erosion too."""
    generator = torch.Generator().manual_seed(0)
    for r in (1, 2, 3, 5, 8):
        for shape in ((2, 1, 23, 17), (1, 1, 4, 60)):
            x = torch.rand(shape, generator=generator)
            for v in (x, (x > 0.7).float()):
                expected = F.max_pool2d(v, 2 * r + 1, stride=1, padding=r)
                assert torch.equal(dilate(v, r), expected)
                assert torch.equal(-dilate(-v, r), -F.max_pool2d(-v, 2 * r + 1, stride=1, padding=r))
