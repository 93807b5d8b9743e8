"""The Python API: Synthesizer.render_many, synthesize(), target strings, VA paths, devices."""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image

import affectsynth
from affectsynth.affect.bank import CIRCUMPLEX_DEG
from affectsynth.affect.targets import parse_expression
from affectsynth.errors import InputError
from affectsynth.pipeline import Synthesizer, parse_target, resolve_device, va_path_points, va_path_targets


@pytest.fixture(scope="module")
def synth(default_model):
    with Synthesizer(default_model) as synthesizer:
        yield synthesizer


def seeded(spec: str, seed: int):
    return parse_target(spec, torch.Generator().manual_seed(seed))


def test_render_many_shares_the_fit_and_matches_single_renders(synth, astronaut):
    targets = [parse_expression("surprise"), parse_expression("sadness")]
    many = list(synth.render_many(astronaut, targets))
    assert len(many) == 2 and many[0].fit is many[1].fit
    assert many[0].timings_ms["detect_fit"] == many[1].timings_ms["detect_fit"]
    for result, target in zip(many, targets):
        single = synth(astronaut, target)
        assert np.array_equal(single.image, result.image)  # bit for bit, however the call is batched
        assert result.labels[0]["category"] == target.category
    assert not np.array_equal(many[0].image, many[1].image)


def test_render_batch_gives_each_image_its_own_render(synth, astronaut, monkeypatch):
    """Three photos of one size, each its own face and target, rendered as one batch (and, as the
    CPU's pixel budget splits them, one by one): per image the render of render_many (to float
    rounding: an output value at most 1 apart, a few of them), its own labels, fit and mask;
    images of two sizes or a fit of two faces are refused."""
    import affectsynth.pipeline

    photos = [astronaut, np.ascontiguousarray(astronaut[:, ::-1]), np.ascontiguousarray(np.roll(astronaut, 30, 1))]
    targets = [parse_expression("surprise"), parse_expression("happiness"), parse_expression("fear", 0.8)]
    fitted = [synth.face_fitter(p) for p in photos]
    split = synth.render_batch(photos, fitted, targets)                 # 512^2 each: over the budget, one by one
    monkeypatch.setattr(affectsynth.pipeline, "CPU_BATCH_PIXELS", 3 * astronaut[..., 0].size)
    batch = synth.render_batch(photos, fitted, targets)
    assert len(batch) == len(split) == 3
    assert all(np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 1 for a, b in zip(batch, split))
    for photo, fit, target, result in zip(photos, fitted, targets, batch):
        alone = next(synth.render_many(photo, [target], fitted=fit))
        diff = np.abs(result.image.astype(int) - alone.image.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3 and (result.image != photo).any()
        assert np.abs(result.mask - alone.mask).max() < 1e-5 and result.fit is fit.fit
        assert result.labels[0]["category"] == target.category and result.labels[0]["intensity"] == target.intensity
    assert synth.render_batch([], [], []) == []
    with pytest.raises(ValueError, match="one size"):
        synth.render_batch([astronaut, astronaut[:400]], fitted[:2], targets[:2])
    with pytest.raises(ValueError, match="one fit and one target"):
        synth.render_batch(photos, fitted[:2], targets)
    two = type(fitted[0])(landmarks=fitted[0].landmarks, fit=type(fitted[0].fit).cat([f.fit for f in fitted[:2]]),
                          faces_found=2)
    with pytest.raises(ValueError, match="one face per image"):
        synth.render_batch([astronaut], [two], targets[:1])
    with pytest.raises(ValueError, match="one model and landmark scheme"):
        type(two.fit).cat([fitted[0].fit, dataclasses.replace(fitted[1].fit, scheme="ibug68")])


def test_render_tensors_keeps_the_batch_as_tensors(synth, astronaut):
    """Synthesizer.render_tensors (the batch, its fits and coefficients as tensors, the result left as
    one): the images render_batch writes, before their bytes; a photo, coefficients or fit of the
    wrong shape is refused with a one-line ValueError."""
    from affectsynth.affect.targets import stack_model_coeffs
    from affectsynth.fit import FitResult
    from affectsynth.render.retarget import stacked_rows

    photos = [astronaut, np.ascontiguousarray(astronaut[:, ::-1])]
    targets = [parse_expression("surprise"), parse_expression("happiness")]
    fitted = [synth.face_fitter(p) for p in photos]
    measured = [synth.appearance(p, f) for p, f in zip(photos, fitted)]
    appearance = {part: stacked_rows([m[part] for m in measured]) for part in measured[0]}
    photo = torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).float() / 255
    fit = FitResult.cat([f.fit for f in fitted])
    coeffs, _ = stack_model_coeffs(targets, synth.model)
    rendered = synth.render_tensors(photo, fit, coeffs, appearance)
    assert rendered.image.shape == (2, 3, 512, 512) and rendered.mask.shape == (2, 1, 512, 512)
    as_bytes = (rendered.image.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().numpy()
    for image, mask, result in zip(as_bytes, rendered.mask[:, 0].numpy(), synth.render_batch(photos, fitted, targets,
                                                                                             measured)):
        assert np.abs(image.astype(int) - result.image.astype(int)).max() <= 1 and (image != astronaut).any()
        assert np.abs(mask - result.mask).max() < 1e-6
    for bad, match in (((photo[:1], fit, coeffs), r"photo must be \[B, 3, H, W\] with B = 2"),
                       ((photo, fit, coeffs[:, :3]), "coeffs must be"),
                       ((photo[:, :1], fit, coeffs), "photo must be")):
        with pytest.raises(ValueError, match=match):
            synth.render_tensors(*bad, appearance)


def test_seeded_va_variants_reproduce_and_differ(synth, astronaut):
    angle = math.radians(CIRCUMPLEX_DEG["anger"])  # anger's variants differ in the lip action (AU23 vs AU24)
    spec = f"va:{0.95 * math.cos(angle):.4f},{0.95 * math.sin(angle):.4f}"
    first, again, other = (synth(astronaut, seeded(spec, s)) for s in (3, 3, 4))
    assert np.array_equal(first.image, again.image) and first.labels == again.labels
    assert first.labels[0]["au"] != other.labels[0]["au"] and not np.array_equal(first.image, other.image)


def test_pixels_beyond_the_face_region_are_unchanged(synth, astronaut):
    result = synth(astronaut, parse_expression("surprise"))  # opens the jaw: the face grows downwards
    changed = (result.image != astronaut).any(-1)
    assert changed.sum() > 1000
    assert not changed[result.mask == 0].any()  # composited only where the mask is > 0
    # The mask itself stays near the face: the detected box grown by a quarter of its size.
    x0, y0, x1, y1 = result.landmarks.box[0].tolist()
    grow = 0.25 * max(x1 - x0, y1 - y0)
    region = np.zeros(changed.shape, bool)
    region[max(0, int(y0 - grow)):int(y1 + grow) + 1, max(0, int(x0 - grow)):int(x1 + grow) + 1] = True
    assert not (result.mask > 0)[~region].any()
    assert result.mask.shape == astronaut.shape[:2] and result.mask.max() == pytest.approx(1.0, abs=1e-3)


def test_a_greyscale_photo_stays_greyscale(synth, astronaut):
    # Greyscale datasets (CK+, FER2013) must not get coloured teeth or eyes: a cue of the rendered classes alone.
    grey = np.repeat(np.asarray(Image.fromarray(astronaut).convert("L"))[..., None], 3, axis=2)
    for name in ("happiness", "surprise"):  # her teeth re-rendered, and a mouth opened wider than the photo's
        result = synth(grey, parse_expression(name))
        assert (result.image != grey).any(-1).sum() > 1000
        assert np.array_equal(result.image[..., 0], result.image[..., 1])
        assert np.array_equal(result.image[..., 0], result.image[..., 2])


def test_synthesize_from_path_or_array(tmp_path, astronaut):
    path = tmp_path / "face.png"
    Image.fromarray(astronaut).save(path)
    results = affectsynth.synthesize(path, ["happiness", "au:12:0.8,6:0.6"], seed=0)
    assert [r.labels[0]["category"] for r in results] == ["happiness", None]
    assert results[1].labels[0]["au"] == {"AU6": 0.6, "AU12": 0.8}
    assert set(results[0].timings_ms) == {"detect_fit", "deform", "render_composite"}
    single = affectsynth.synthesize(astronaut, "happiness", seed=0)
    assert isinstance(single, affectsynth.SynthesisResult)
    assert np.array_equal(single.image, results[0].image)  # a fresh Synthesizer, the same bytes
    with pytest.raises(InputError, match="unknown expression"):
        affectsynth.synthesize(astronaut, "joyy")


@pytest.mark.parametrize("spec, check", [
    ("happiness", lambda c: c.category == "happiness" and c.intensity == 1.0),
    ("Fear@0.5", lambda c: c.category == "fear" and c.intensity == 0.5),
    ("happiness+surprise", lambda c: c.category is None and set(c.soft_label) == {"happiness", "surprise"}),
    ("va:0.5,0.7", lambda c: (c.valence, c.arousal) == (0.5, 0.7)),
    ("AU:12:0.8,6:0.6", lambda c: c.au == {"AU6": 0.6, "AU12": 0.8}),
])
def test_target_strings(spec, check):
    assert check(parse_target(spec))


@pytest.mark.parametrize("spec", ["joyy", "fear@2", "fear@x", "va:2,0", "va:nan,0", "va:0.5", "au:99:1", "rgb:1,2"])
def test_bad_target_strings(spec):
    with pytest.raises(InputError):
        parse_target(spec)


def test_va_path_points_at_constant_speed():
    points = va_path_points([(0, 0), (0.6, 0.4), (0.8, -0.2)], 48)
    assert len(points) == 48 and points[0] == (0.0, 0.0) and points[-1] == (0.8, -0.2)
    steps = np.linalg.norm(np.diff(np.asarray(points), axis=0), axis=1)
    # Equal arc-length steps; the one step that turns the corner cuts it, so it is a little shorter.
    assert np.median(steps) == pytest.approx((math.hypot(0.6, 0.4) + math.hypot(0.2, 0.6)) / 47, rel=1e-6)
    assert steps.min() > 0.9 * steps.max()
    for bad in ([(0, 0)], [(0, 0), (2, 0)], [(0, 0), (math.nan, 0)]):
        with pytest.raises(InputError):
            va_path_points(bad, 48)
    with pytest.raises(InputError):
        va_path_points([(0, 0), (1, 0)], 1)


@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_va_path_targets_change_smoothly(seed):
    # the path crosses the unpleasant half, where emotions with several variants meet
    path = [(0, 0), (0.6, 0.4), (0.8, -0.2), (-0.5, -0.9), (-0.9, 0.4), (-0.2, 0.9)]

    def largest_step(frames):
        au = torch.stack([code.au_vector() for code in va_path_targets(path, frames, seed=seed)])
        return float((au[1:] - au[:-1]).abs().max())

    coarse, fine = largest_step(96), largest_step(960)
    # No AU moves more than 45 % of its range between frames (0.048 VA a frame). The blend keeps an
    # emotion at full strength until its neighbour takes over (bank docstring), so where the rim is
    # sparse (fear to disgust, 45 degrees apart) a unit fades within about 0.15 VA: 41 % a frame
    # here, 17 % with a plain average, which showed both emotions at half strength there instead.
    assert coarse < 0.45
    assert fine < 0.15 * coarse  # ten times the frames, a tenth the step: continuous, no jump anywhere


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")


def test_auto_device_takes_cuda_where_it_can_render_else_the_cpu_and_says_why_once(monkeypatch, caplog):
    import affectsynth.pipeline as pipeline
    import affectsynth.render.raster_nvdiffrast as raster_nvdiffrast

    caplog.set_level(logging.INFO, logger="affectsynth")
    pipeline._log_cpu_fallback.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device("auto") == torch.device("cpu")
    with pytest.raises(InputError, match="CUDA is not available"):  # asked for by name: still an error
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(raster_nvdiffrast, "_nvdiffrast_importable", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    reasons = [r.getMessage() for r in caplog.records if r.getMessage().startswith("device auto")]
    assert len(reasons) == 2 and "CUDA is not available" in reasons[0] and "affectsynth[gpu]" in reasons[1]
    monkeypatch.setattr(raster_nvdiffrast, "_nvdiffrast_importable", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
