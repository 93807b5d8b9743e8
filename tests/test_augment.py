"""The training hook (affectsynth.augment) on the bundled photo: labels, pass-through, seeding,
DataLoader workers (fork and spawn), the dataset wrapper and the fit cache."""

from __future__ import annotations

import collections
import multiprocessing

import cv2
import numpy as np
import pytest
import torch

from affectsynth.augment import (DEFAULT_CLASSES, AffectAugment, BalanceClasses, RandomExpression,
                                 SynthesizedDataset, VAJitter, VAUniform, VaryIntensity, albumentations_transform)
from affectsynth.errors import InputError

FER2013 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@pytest.fixture(scope="module")
def face() -> torch.Tensor:
    """[3, 224, 224] uint8: the astronaut's face, cropped and scaled as a FER dataset would have it."""
    return _astronaut_face()


@pytest.fixture(scope="module")
def hook() -> AffectAugment:
    return AffectAugment(RandomExpression(), p=1.0, classes=FER2013)


def _face_change(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference (grey levels) over the central face region."""
    return float((a.int() - b.int()).abs()[:, 60:200, 50:174].float().mean())


def test_random_expression_relabels_and_is_seeded(hook, face):
    neutral = FER2013.index("neutral")
    out, label = hook(face, neutral, generator=torch.Generator().manual_seed(3))
    again, label_again = hook(face, neutral, generator=torch.Generator().manual_seed(3))
    assert out.dtype == torch.uint8 and out.shape == face.shape
    assert label.shape == (7,) and label.sum() == 1 and label.max() == 1 and label.argmax() != neutral
    assert torch.equal(out, again) and torch.equal(label, label_again)
    assert _face_change(out, face) > 1.0
    assert torch.equal(out[:, :8], face[:, :8])  # far from the face: the input's own bytes
    # a float image comes back as a float image in [0, 1]
    out_float, _ = hook(face.float() / 255, neutral, generator=torch.Generator().manual_seed(3))
    assert out_float.dtype == torch.float32 and (out_float * 255).round().byte().equal(out)
    # the other seeds reach other classes
    classes = {int(hook(face, neutral, generator=torch.Generator().manual_seed(s))[1].argmax()) for s in range(12)}
    assert len(classes) >= 3 and neutral not in classes


def test_soft_labels_follow_the_intensity(face):
    soft = AffectAugment(VaryIntensity(intensity=(0.4, 0.4)), p=1.0, classes=FER2013, soft_labels=True)
    out, label = soft(face, FER2013.index("happy"), generator=torch.Generator().manual_seed(0))
    assert label[FER2013.index("happy")] == pytest.approx(0.4) and label[FER2013.index("neutral")] == pytest.approx(0.6)
    assert soft.stats["synthesized"] == 1


def test_faces_that_cannot_be_synthesized_pass_through(face):
    hook = AffectAugment(RandomExpression(), p=1.0, classes=FER2013)
    grey = torch.full((3, 224, 224), 128, dtype=torch.uint8)
    for _ in range(3):
        out, label = hook(grey, 2)
        assert torch.equal(out, grey) and label.argmax() == 2 and label.sum() == 1
    assert hook.stats == collections.Counter({"failed:no_face": 3, "fitted": 1})  # the failure is remembered
    # the draw against p, and a neutral source under VaryIntensity, also keep the image and label
    never = AffectAugment(RandomExpression(), p=0.0, classes=FER2013)
    assert torch.equal(never(face, 4)[0], face) and never.stats["not_drawn"] == 1
    keep = AffectAugment(VaryIntensity(), p=1.0, classes=FER2013)
    assert torch.equal(keep(face, FER2013.index("neutral"))[0], face) and keep.stats["kept:policy"] == 1


def test_each_photo_is_fitted_once_and_the_disk_cache_is_shared(face, tmp_path):
    hook = AffectAugment(RandomExpression(), p=1.0, cache_dir=tmp_path / "fits")
    for seed in range(4):
        hook(face, 0, generator=torch.Generator().manual_seed(seed))
    assert hook.stats["fitted"] == 1 and hook.stats["synthesized"] == 4
    assert len(list((tmp_path / "fits").rglob("*.fit"))) == 1
    other = AffectAugment(RandomExpression(), p=1.0, cache_dir=tmp_path / "fits")  # another process's view
    a = other(face, 0, generator=torch.Generator().manual_seed(9))
    b = hook(face, 0, generator=torch.Generator().manual_seed(9))
    assert other.stats["fitted"] == 0 and torch.equal(a[0], b[0])


def test_va_policies(face):
    jitter = AffectAugment(VAJitter(sigma=0.1), p=1.0)
    source = torch.tensor([0.6, 0.2])
    out, va = jitter(face, source, generator=torch.Generator().manual_seed(1))
    assert va.shape == (2,) and float((va - source).norm()) < 0.5 and _face_change(out, face) > 0.5
    uniform = AffectAugment(VAUniform(), p=1.0)
    points = torch.stack([uniform(face, source, generator=torch.Generator().manual_seed(s))[1] for s in range(6)])
    assert (points.norm(dim=1) <= 1 + 1e-6).all() and points.std(0).min() > 0.1


def test_balance_draws_the_rare_classes():
    policy = BalanceClasses.from_labels([0] * 50 + [3] * 50 + [1] * 10, classes=DEFAULT_CLASSES)
    generator = torch.Generator().manual_seed(0)
    drawn = collections.Counter(policy.target("neutral", None, generator).category for _ in range(400))
    assert drawn["neutral"] == drawn["surprise"] == 0  # the two largest classes are full
    assert drawn["sadness"] > drawn["happiness"] > 0   # happiness (10) needs fewer than sadness (0)


def test_classes_by_dataset_name():
    """A dataset's name stands for its class order: RAF-DB's codes 1-7 as indices 0-6."""
    assert AffectAugment(RandomExpression(), classes="fer2013").classes == \
        AffectAugment(RandomExpression(), classes=FER2013).classes
    rafdb = BalanceClasses.from_labels([0] * 5 + [3] * 2, classes="rafdb")
    assert rafdb.counts == {"surprise": 5, "fear": 0, "disgust": 0, "happiness": 2, "sadness": 0, "anger": 0,
                            "neutral": 0}
    with pytest.raises(InputError, match="class codes 'fer'"):
        AffectAugment(RandomExpression(), classes="fer")


def test_batches_and_pil_and_numpy(hook, face):
    """A batch is drawn image by image as single images are, and its faces rendered together: the
    same labels, and images the single calls' to float rounding (a value at most 1 apart, rarely);
    an image the draw leaves alone passes through within the batch. PIL images and arrays too."""
    batch = torch.stack([face, face.flip(-1), face.roll(12, -1)])
    out, labels = hook(batch, torch.tensor([6, 6, 3]), generator=torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and labels.shape == (3, 7)
    generator = torch.Generator().manual_seed(0)
    singles = [hook(batch[i], label, generator=generator) for i, label in enumerate((6, 6, 3))]
    assert torch.equal(labels, torch.stack([label for _, label in singles]))
    for got, (expected, _) in zip(out, singles):
        diff = (got.int() - expected.int()).abs()
        assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 1e-3 and _face_change(got, face) > 0.5
    some = AffectAugment(RandomExpression(), p=0.5, classes=FER2013)
    drawn = [some(batch, torch.tensor([6, 6, 3]), generator=torch.Generator().manual_seed(s))[0] for s in range(4)]
    kept = [torch.equal(o[i], batch[i]) for o in drawn for i in range(3)]
    assert any(kept) and not all(kept)                                  # some pass through, some are rendered
    from PIL import Image

    pil_out, _ = hook(Image.fromarray(face.permute(1, 2, 0).numpy()), 6)
    assert isinstance(pil_out, Image.Image) and pil_out.size == (224, 224)
    array_out, _ = hook(face.permute(1, 2, 0).numpy(), 6)
    assert isinstance(array_out, np.ndarray) and array_out.shape == (224, 224, 3)
    with pytest.raises(ValueError, match="class index 9"):
        hook(face, 9)
    normalised = (face.float() / 255 - 0.5) / 0.25  # ImageNet-style Normalize before the hook: refused, not clamped
    with pytest.raises(ValueError, match=r"must be in \[0, 1\].*before Normalize"):
        hook(normalised, 6)


def test_greyscale_images_come_back_greyscale(hook, face):
    """FER2013 and CK+ are greyscale: [1, H, W] tensors (and batches), [H, W] and [H, W, 1] arrays and PIL
    "L" images keep their form, and each is the render of its RGB copy, which is itself grey."""
    from PIL import Image

    grey = torch.from_numpy(cv2.cvtColor(face.permute(1, 2, 0).numpy(), cv2.COLOR_RGB2GRAY))  # [224, 224]
    rgb_out, rgb_label = hook(grey.expand(3, -1, -1), 6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(rgb_out[0], rgb_out[1]) and torch.equal(rgb_out[0], rgb_out[2])  # grey in, grey out
    assert _face_change(rgb_out, grey.expand(3, -1, -1)) > 1.0
    out, label = hook(grey[None], 6, generator=torch.Generator().manual_seed(1))
    assert out.shape == (1, 224, 224) and out.dtype == torch.uint8
    assert torch.equal(out[0], rgb_out[0]) and torch.equal(label, rgb_label)
    out_float, _ = hook(grey[None].float() / 255, 6, generator=torch.Generator().manual_seed(1))
    assert out_float.shape == (1, 224, 224) and (out_float * 255).round().byte().equal(out)
    batch, labels = hook(torch.stack([grey[None], grey[None].flip(-1)]), torch.tensor([6, 6]),
                         generator=torch.Generator().manual_seed(1))
    assert batch.shape == (2, 1, 224, 224) and labels.shape == (2, 7)
    assert int((batch[0].int() - out.int()).abs().max()) <= 1  # the batch's render, to float rounding
    array = grey.numpy()
    for given, shape in ((array, (224, 224)), (array[..., None], (224, 224, 1))):
        got, _ = hook(given, 6, generator=torch.Generator().manual_seed(1))
        assert isinstance(got, np.ndarray) and got.shape == shape and np.array_equal(got.reshape(224, 224), out[0].numpy())
    pil, _ = hook(Image.fromarray(array), 6, generator=torch.Generator().manual_seed(1))
    assert pil.mode == "L" and np.array_equal(np.asarray(pil), out[0].numpy())
    with pytest.raises(ValueError, match=r"\[3, H, W\] or \[1, H, W\]"):
        hook(torch.zeros(2, 8, 8, dtype=torch.uint8), 6)


class _Faces(torch.utils.data.Dataset):
    """8 variants of one face (flips and shifts), all labelled neutral (FER2013 numbering)."""

    def __init__(self, face: torch.Tensor):
        self.items = [torch.roll(face.flip(-1) if i % 2 else face, shifts=2 * (i // 2), dims=-1) for i in range(8)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i], FER2013.index("neutral")


class _Augmented(torch.utils.data.Dataset):
    def __init__(self, base, hook):
        self.base, self.hook = base, hook

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.hook(*self.base[i])


def _load(dataset, workers: int, context: str | None):
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers,
                                         multiprocessing_context=context if workers else None)
    images, labels = zip(*loader)
    return torch.cat(images), torch.cat(labels)


def _astronaut_face() -> torch.Tensor:
    """[3, 224, 224] uint8 crop of the astronaut's face (also used from a fresh interpreter, without fixtures)."""
    from skimage import data

    crop = cv2.resize(data.astronaut()[20:260, 130:370], (224, 224), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).contiguous()


def check_dataloader_workers(context: str) -> None:
    """Two runs of 2 workers with the same generator give the same images and labels; the workers
    draw differently. Run by the test below (for fork in a fresh process: see there)."""
    base = _Faces(_astronaut_face())
    runs = [_load(_Augmented(base, AffectAugment(RandomExpression(), p=1.0, classes=FER2013,
                                                 generator=torch.Generator().manual_seed(5))), 2, context)
            for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    images, labels = runs[0]
    assert labels.shape == (8, 7) and (labels.argmax(1) != FER2013.index("neutral")).all()
    assert len({tuple(label.tolist()) for label in labels}) > 2
    assert _face_change(images[0], base[0][0]) > 1.0


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_are_seeded_and_reproducible(context):
    if context not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {context} start method here")
    if context == "spawn":
        check_dataloader_workers(context)
        return
    # MediaPipe cannot start in a fork of a process that holds a MediaPipe graph, as this test
    # process does (other tests' detectors); a training script whose hook runs in the workers
    # only does not, so fork is checked from a fresh interpreter, as such a script would run.
    import subprocess
    import sys
    from pathlib import Path

    code = "from tests.test_augment import check_dataloader_workers as c; c('fork'); print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_synthesized_dataset_is_reproducible_per_index(face):
    dataset = SynthesizedDataset(_Faces(face), AffectAugment(RandomExpression(), p=1.0, classes=FER2013), seed=1)
    forward = [dataset[i] for i in range(4)]
    backward = [dataset[i] for i in reversed(range(4))][::-1]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(forward, backward))
    images, labels = _load(dataset, 2, "spawn")
    assert torch.equal(images[:4], torch.stack([f[0] for f in forward]))
    dataset.set_epoch(1)
    assert any(not torch.equal(dataset[i][1], forward[i][1]) for i in range(4))


def test_albumentations_adapter(face):
    pytest.importorskip("albumentations", reason="albumentations is optional and not installed: it pulls "
                        "opencv-python-headless, which conflicts with mediapipe's opencv-contrib and numpy<2")
    import albumentations as A

    transform = albumentations_transform(AffectAugment(RandomExpression(), p=1.0, classes=FER2013))
    data = transform(image=face.permute(1, 2, 0).numpy(), label=6)
    assert data["image"].shape == (224, 224, 3) and data["label"].argmax() != 6
    compose = A.Compose([A.HorizontalFlip(p=1.0), transform], strict=False)  # strict would refuse the label key
    composed = compose(image=face.permute(1, 2, 0).numpy(), label=6)
    assert composed["image"].shape == (224, 224, 3) and composed["label"].argmax() != 6


def test_readme_training_example_runs(tmp_path):
    """The README's 10-line training example, on a folder of face crops, in a fresh interpreter (as a
    user runs it; its forked DataLoader workers need a process without a MediaPipe graph)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"<!-- training-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    face = _astronaut_face()
    for label, image in (("neutral", face), ("happiness", face.flip(-1))):
        for i in range(4):
            path = tmp_path / "faces" / label / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            small = cv2.resize(torch.roll(image, 3 * i, -1).permute(1, 2, 0).numpy(), (112, 112), interpolation=cv2.INTER_AREA)
            Image.fromarray(small).save(path)
    code += "\nprint('trained', len(files), float(loss))\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("trained 8 ")
