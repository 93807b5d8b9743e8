"""affectsynth.io on files made in tmp_path from skimage's astronaut photo."""

from __future__ import annotations

import json
import os
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps
from skimage import data

from affectsynth.errors import AffectsynthError, InputError
from affectsynth.io import check_output_path, decode_image, load_image, save_image, save_json, write_atomic

# How to store an upright image so that EXIF orientation o shows it upright again, written from the
# EXIF definitions ("row 0 is the visual right-hand side, column 0 the visual top" for 6, ...).
STORED_FOR_ORIENTATION = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, 1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, -1),
}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """[512, 384, 3] uint8: not square, so a missed 90° rotation changes the shape."""
    return np.ascontiguousarray(data.astronaut()[:, 64:448])


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A valid 8-bit RGB PNG that declares width x height but holds one short IDAT: a decompression bomb."""
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + png_chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + png_chunk(b"IEND", b"")


def with_exif_chunk(png: bytes, orientation: int) -> bytes:
    """Insert an eXIf chunk right after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    return png[:33] + png_chunk(b"eXIf", exif_bytes(orientation)[6:]) + png[33:]  # eXIf holds no "Exif\0\0"


def to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def assert_one_line_error(error: pytest.ExceptionInfo, name: str) -> None:
    message = str(error.value)
    assert "\n" not in message and name in message, message


def assert_rgb8(image: np.ndarray, shape_hw: tuple[int, int]) -> None:
    assert image.shape == (*shape_hw, 3) and image.dtype == np.uint8
    assert image.flags.c_contiguous and image.flags.writeable


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ------------------------------------------------------------------ formats
@pytest.mark.parametrize("ext, tolerance", [(".png", 0), (".bmp", 0), (".tif", 0), (".tiff", 0),
                                            (".jpg", 3.0), (".jpeg", 3.0), (".webp", 3.0)])
def test_save_then_load_round_trip(tmp_path, photo, ext, tolerance):
    path = tmp_path / f"astronaut{ext}"
    save_image(path, photo)
    loaded = load_image(path)
    assert_rgb8(loaded, photo.shape[:2])
    assert mean_abs_diff(loaded, photo) <= tolerance
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


@pytest.mark.parametrize("ext, mode", [(".png", "L"), (".jpg", "L"), (".tif", "L"), (".webp", "RGB")])
def test_a_grey_image_is_saved_greyscale(tmp_path, photo, ext, mode):
    grey = np.repeat(np.asarray(Image.fromarray(photo).convert("L"))[..., None], 3, axis=2)
    save_image(tmp_path / f"grey{ext}", grey)
    save_image(tmp_path / f"colour{ext}", photo)
    with Image.open(tmp_path / f"grey{ext}") as saved, Image.open(tmp_path / f"colour{ext}") as colour:
        assert saved.mode == mode and colour.mode == "RGB"
    if ext in (".png", ".tif"):  # lossless: the same pixels come back, as three channels
        assert np.array_equal(load_image(tmp_path / f"grey{ext}"), grey)


def test_decode_image_matches_load_image(tmp_path, photo):
    path = tmp_path / "a.jpg"
    save_image(path, photo)
    assert np.array_equal(decode_image(path.read_bytes(), "a.jpg"), load_image(path))


# ------------------------------------------------------------------ EXIF orientation
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_jpeg_exif_orientation_gives_upright_image(tmp_path, photo, orientation):
    path = tmp_path / f"rotated{orientation}.jpg"
    stored = np.ascontiguousarray(STORED_FOR_ORIENTATION[orientation](photo))
    Image.fromarray(stored).save(path, quality=95, exif=exif_bytes(orientation))
    loaded = load_image(path)
    assert_rgb8(loaded, photo.shape[:2])
    assert mean_abs_diff(loaded, photo) < 3.0
    if orientation == 3:  # same shape when stored: make sure ignoring the tag would have been caught
        assert mean_abs_diff(stored, photo) > 30.0


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_all_eight_orientations_exactly(tmp_path, photo, orientation, fmt):
    path = tmp_path / f"o{orientation}.{fmt.lower()}"
    Image.fromarray(np.ascontiguousarray(STORED_FOR_ORIENTATION[orientation](photo))).save(
        path, format=fmt, exif=exif_bytes(orientation))
    loaded = load_image(path)
    assert np.array_equal(loaded, photo)
    with Image.open(path) as reference:  # PIL's own table agrees
        assert np.array_equal(loaded, np.asarray(ImageOps.exif_transpose(reference)))


# ------------------------------------------------------------------ modes
def test_gray_la_and_rgba_keep_colour_values(tmp_path, photo):
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    alpha = np.tile(np.linspace(0, 255, photo.shape[1]).astype(np.uint8), (photo.shape[0], 1))  # 0 included
    cases = {"gray.png": (Image.fromarray(gray), to_rgb(gray)),
             "la.png": (Image.fromarray(np.dstack([gray, alpha])), to_rgb(gray)),
             "rgba.png": (Image.fromarray(np.dstack([photo, alpha])), photo),
             "rgba.webp": (Image.fromarray(np.dstack([photo, alpha])), photo)}
    for name, (image, expected) in cases.items():
        image.save(tmp_path / name, lossless=True, exact=True)  # WebP: keep colour under alpha 0
        assert np.array_equal(load_image(tmp_path / name), expected), name


def test_palette_with_transparency_and_gif_first_frame(tmp_path, photo):
    palette_image = Image.fromarray(photo).quantize(64)
    palette = np.array(palette_image.getpalette(), dtype=np.uint8).reshape(-1, 3)
    expected = palette[np.asarray(palette_image)]
    palette_image.save(tmp_path / "p.png", transparency=bytes([0, 128] + [255] * 62))
    second = Image.fromarray(photo[::-1]).quantize(64)
    palette_image.save(tmp_path / "anim.gif", save_all=True, append_images=[second])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL warns when RGB-converting palettes with per-entry alpha
        assert np.array_equal(load_image(tmp_path / "p.png"), expected)
        assert np.array_equal(load_image(tmp_path / "anim.gif"), expected)


def test_cmyk_tiff(tmp_path, photo):
    cmyk = np.dstack([photo, photo[..., 1:2] // 2]).astype(np.uint8)  # C, M, Y from the photo, K = G / 2
    Image.frombytes("CMYK", cmyk.shape[1::-1], cmyk.tobytes()).save(tmp_path / "cmyk.tif")
    c, m, y, k = (cmyk[..., i].astype(np.float64) for i in range(4))
    expected = np.round(np.dstack([(255 - c), (255 - m), (255 - y)]) * ((255 - k) / 255)[..., None])
    loaded = load_image(tmp_path / "cmyk.tif")
    assert np.abs(loaded.astype(np.float64) - expected).max() <= 1


def sixteen_bit(photo: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint16 using all 16 bits (high byte from the photo, low byte from its mirror)."""
    return photo.astype(np.uint16) * 256 + photo[:, ::-1]


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_gray_and_rgb_round_to_8bit(tmp_path, photo, ext):
    rgb16 = sixteen_bit(photo)
    expected = np.round(rgb16 / 257.0).astype(np.uint8)
    assert not np.array_equal(expected, (rgb16 >> 8).astype(np.uint8))  # keeping the high byte would fail
    cv2.imwrite(str(tmp_path / f"g16{ext}"), rgb16[..., 0])
    cv2.imwrite(str(tmp_path / f"rgb16{ext}"), rgb16[..., ::-1])
    cv2.imwrite(str(tmp_path / f"rgba16{ext}"), np.dstack([rgb16[..., ::-1], rgb16[..., :1]]))
    assert np.array_equal(load_image(tmp_path / f"g16{ext}"), to_rgb(expected[..., 0]))
    assert np.array_equal(load_image(tmp_path / f"rgb16{ext}"), expected)
    assert np.array_equal(load_image(tmp_path / f"rgba16{ext}"), expected)


def test_16bit_rgb_png_applies_exif_orientation(tmp_path, photo):
    rgb16 = sixteen_bit(photo)
    stored = np.ascontiguousarray(STORED_FOR_ORIENTATION[6](rgb16))
    encoded = cv2.imencode(".png", stored[..., ::-1])[1].tobytes()
    loaded = decode_image(with_exif_chunk(encoded, 6), "rotated16.png")
    assert np.array_equal(loaded, np.round(rgb16 / 257.0).astype(np.uint8))


@pytest.mark.parametrize("low, high", [(0.0, 1.0), (-2.0, 3.0)])
def test_float_tiff_scales_unit_range_or_min_max(tmp_path, photo, low, high):
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0 * (high - low) + low
    Image.fromarray(gray).save(tmp_path / "f.tif")
    full_range = (gray - gray.min()) / (gray.max() - gray.min()) if low < 0 else gray
    expected = np.round(full_range * 255.0)
    assert np.abs(load_image(tmp_path / "f.tif")[..., 0] - expected).max() <= 1


# ------------------------------------------------------------------ bad input
def test_bad_files_raise_one_line_input_error(tmp_path, photo):
    save_image(tmp_path / "whole.jpg", photo)
    whole = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "text.jpg").write_text("this is not a picture\n")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    Image.new("RGB", (1, 1)).save(tmp_path / "tiny.png")
    for name in ["truncated.jpg", "text.jpg", "empty.png", "missing.png", "folder.png", "tiny.png"]:
        with pytest.raises(InputError) as error:
            load_image(tmp_path / name)
        assert_one_line_error(error, name)
    with pytest.raises(InputError, match=r"1 x 1.*32"):
        load_image(tmp_path / "tiny.png")


def test_truncated_png_and_bytes(photo):
    png = cv2.imencode(".png", photo)[1].tobytes()
    # Cutting only IEND and the zlib checksum leaves every pixel in place, which is accepted; these cut pixels.
    for cut in (len(png) // 2, len(png) - 40):
        with pytest.raises(InputError) as error:
            decode_image(png[:cut], "cut.png")
        assert_one_line_error(error, "cut.png")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path, photo):
    path = tmp_path / "locked.png"
    save_image(path, photo)
    path.chmod(0)
    with pytest.raises(InputError, match="permission denied") as error:
        load_image(path)
    assert_one_line_error(error, "locked.png")


@pytest.mark.parametrize("width, height, max_pixels", [(50_000, 50_000, 200_000_000),  # over PIL's own limit
                                                       (15_000, 10_000, 100_000_000)])  # over ours only
def test_decompression_bomb_rejected_from_header(tmp_path, width, height, max_pixels):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(width, height))
    assert path.stat().st_size < 200
    with pytest.raises(InputError) as error:
        load_image(path, max_pixels=max_pixels)
    assert_one_line_error(error, "bomb.png")
    # Rejected for its declared size (the header holds no pixel data that could be decoded).
    assert str(width * height) in str(error.value).replace(",", "")


def test_truncated_images_refused_even_if_pil_global_was_changed(monkeypatch, photo):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(AffectsynthError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(cv2.imencode(".png", photo)[1].tobytes())


def test_108_megapixel_photo_loads(tmp_path, photo):
    path = tmp_path / "big.jpg"
    big = cv2.resize(photo[..., ::-1], (12_000, 9_000), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    probe = big[::97, ::89, ::-1].copy()  # BGR -> RGB samples to compare with
    del big
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning (> 89 MP) must not reach the user
        loaded = load_image(path)
    assert_rgb8(loaded, (9_000, 12_000))
    assert mean_abs_diff(loaded[::97, ::89], probe) < 2.0


# ------------------------------------------------------------------ writing
def test_write_atomic_failure_leaves_nothing_and_keeps_old_target(tmp_path):
    target = tmp_path / "out.bin"

    def failing_write(file):
        file.write(b"partial")
        names = [p.name for p in tmp_path.iterdir()]
        assert any(n.startswith(".out.bin.") for n in names), names  # writes go to a hidden sibling
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_atomic(target, failing_write)
    assert list(tmp_path.iterdir()) == []

    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        write_atomic(target, failing_write)
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]

    write_atomic(target, lambda file: file.write(b"new"))
    assert target.read_bytes() == b"new" and list(tmp_path.iterdir()) == [target]


def test_write_atomic_creates_missing_directory(tmp_path):
    write_atomic(tmp_path / "new" / "dir" / "out.bin", lambda file: file.write(b"x"))
    assert (tmp_path / "new" / "dir" / "out.bin").read_bytes() == b"x"
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(InputError, match="cannot create"):
        write_atomic(tmp_path / "file" / "out.bin", lambda file: file.write(b"x"))


def test_save_image_unknown_extension_and_save_json(tmp_path, photo):
    with pytest.raises(InputError, match=r"\.gifx"):
        save_image(tmp_path / "out.gifx", photo)
    assert list(tmp_path.iterdir()) == []
    manifest = {"items": [{"input": "a.jpg", "ok": True, "score": 0.5}]}
    save_json(tmp_path / "manifest.json", manifest)
    text = (tmp_path / "manifest.json").read_text()
    assert json.loads(text) == manifest and text.startswith('{\n  "items"') and text.endswith("}\n")


def test_check_output_path(tmp_path):
    source = tmp_path / "in.jpg"
    source.write_bytes(b"x")
    (tmp_path / "link.jpg").symlink_to(source)
    os.link(source, tmp_path / "hard.jpg")
    refused = [source, tmp_path / "sub" / ".." / "in.jpg", tmp_path / "link.jpg", tmp_path / "hard.jpg",
               tmp_path / "other.png" / "out.jpg", tmp_path]
    (tmp_path / "other.png").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    for output in refused:
        with pytest.raises(InputError) as error:
            check_output_path(output, tmp_path / "other.png", source)
        assert_one_line_error(error, str(output))
    assert check_output_path(tmp_path / "sub" / ".." / "out.jpg", source) == (tmp_path / "out.jpg").resolve()
    assert check_output_path(tmp_path / "new" / "out.jpg", source) == (tmp_path / "new" / "out.jpg").resolve()
