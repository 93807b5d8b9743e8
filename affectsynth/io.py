"""Image decoding and atomic file writing: the only place affectsynth touches image files.

Reading (:func:`load_image`, :func:`decode_image`) guarantees
    * the result is a C-contiguous, writable [H, W, 3] uint8 RGB array in the *upright* frame: the EXIF
      orientation tag (all 8 values; TIFF's own tag too) is applied, so (H, W) is what a viewer shows;
    * JPEG (camera MPO too), PNG, WebP, BMP, TIFF and GIF are read, the first frame of multi-frame files;
      alpha is dropped (the colour channels are kept as stored), gray/palette/CMYK become RGB, 16-bit
      samples become 8-bit as round(v / 257) (16-bit RGB/RGBA through OpenCV, since PIL keeps only the
      high byte), 32-bit integer gray is clipped to [0, 65535] first, and float gray ("F") is scaled
      from [0, 1] when it lies there, otherwise from its finite min..max;
    * the declared size is checked from the header *before* any pixel is decoded: more than
      ``max_pixels`` pixels, or a side shorter than ``min_side``, is refused (PIL itself refuses more
      than 2 * ``Image.MAX_IMAGE_PIXELS``, about 179 MP, at open; that is reported the same way);
    * the whole file is decoded, so truncated or corrupt data is refused, never padded with gray;
    * every problem with the file is an :class:`~affectsynth.errors.InputError` whose message is one
      line that names the file.
Writing (:func:`write_atomic`, :func:`save_image`, :func:`save_json`; frame sequences as mp4, gif or a
directory of PNGs: :func:`save_frames`) goes through a hidden temporary file (or directory) beside the
target that is fsynced and then renamed over it, so the target name only ever holds a complete file;
:func:`check_output_path` makes sure an output never replaces one of the inputs.
"""

from __future__ import annotations

import io
import json
import math
import os
import secrets
import shutil
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import AffectsynthError, InputError

__all__ = ["load_image", "decode_image", "write_atomic", "save_image", "save_json", "check_output_path",
           "save_frames", "frames_kind", "check_frames_output", "FRAME_NAME"]

_READ_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")  # PIL opens camera MPO files as JPEG
_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> how to turn the stored [H, W, C] pixels upright (the table of PIL's exif_transpose).
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),  # stored rotated 90° counter-clockwise: turn it clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}
_WRITE_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".png": ("PNG", {}),
    ".jpg": ("JPEG", {"quality": 95}),
    ".jpeg": ("JPEG", {"quality": 95}),
    ".webp": ("WEBP", {"quality": 95}),
    ".bmp": ("BMP", {}),
    ".tif": ("TIFF", {}),
    ".tiff": ("TIFF", {}),
}


def load_image(path: str | os.PathLike, *, max_pixels: int = 200_000_000, min_side: int = 32) -> np.ndarray:
    """Read an image file as an upright [H, W, 3] uint8 RGB array (see the module docstring)."""
    try:
        file = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not an image file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as e:
        raise InputError(f"{path}: cannot open: {e.strerror or e}") from None
    with file:
        return _decode(file, str(path), max_pixels, min_side)


def decode_image(data: bytes, name: str = "<bytes>", *, max_pixels: int = 200_000_000,
                 min_side: int = 32) -> np.ndarray:
    """:func:`load_image` for encoded bytes held in memory; ``name`` is what error messages call them."""
    return _decode(io.BytesIO(data), name, max_pixels, min_side)


def _decode(file: BinaryIO, name: str, max_pixels: int, min_side: int) -> np.ndarray:
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # read per call: other code may have set the global since import
        raise AffectsynthError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES was set to True by other code; "
                               "refusing to decode because truncated images would pass unnoticed")
    if not file.read(1):
        raise InputError(f"{name}: the file is empty")
    file.seek(0)
    try:
        with warnings.catch_warnings():
            # The pixel limit is max_pixels; PIL's warning threshold (~89 MP) is below photos we must read.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            stored, orientation = _decode_stored_frame(file, name, max_pixels, min_side)
    except InputError:
        raise
    except Image.DecompressionBombError as e:
        raise InputError(f"{name}: {_one_line(e)}") from None
    except UnidentifiedImageError:
        raise InputError(f"{name}: not a JPEG, PNG, WebP, BMP, TIFF or GIF image") from None
    except MemoryError:
        raise
    except Exception as e:  # decoders report bad data with many exception types (OSError, SyntaxError, ...)
        raise InputError(f"{name}: corrupt or truncated image data ({type(e).__name__}: {_one_line(e)})") from e
    return np.ascontiguousarray(_UPRIGHT.get(orientation, lambda a: a)(stored))


def _decode_stored_frame(file: BinaryIO, name: str, max_pixels: int, min_side: int) -> tuple[np.ndarray, int]:
    """First frame as stored -> ([H, W, 3] uint8, writable, maybe a strided view; EXIF orientation tag).

    A separate function so that PIL's decoded image is freed on return, before the caller may copy.
    """
    with Image.open(file, formats=_READ_FORMATS) as img:
        width, height = img.size
        if width * height > max_pixels:
            raise InputError(f"{name}: declares {width} x {height} = {width * height:,} pixels, more "
                             f"than the limit of {max_pixels:,} (possible decompression bomb)")
        if min(width, height) < min_side:
            raise InputError(f"{name}: image is {width} x {height} pixels; "
                             f"both sides must be at least {min_side}")
        rawmode = _rawmode(img)  # the tile list that tells the stored sample depth is gone after load()
        img.load()  # the full decode: PIL's open only reads the header
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        if img.mode in ("RGB", "RGBA") and ";16" in rawmode:
            return _decode_rgb16(file, (height, width)), orientation
        return _pil_to_rgb8(img), orientation


def _rawmode(img: Image.Image) -> str:
    """PIL's raw mode of the first tile, e.g. "RGB;16B" for 16-bit RGB PNG, "" when there is none."""
    if not img.tile:
        return ""
    args = img.tile[0].args
    return str(args[0] if isinstance(args, tuple) else args)


def _decode_rgb16(file: BinaryIO, size_hw: tuple[int, int]) -> np.ndarray:
    """16-bit RGB(A) PNG/TIFF through OpenCV (stored frame, no EXIF applied) -> [H, W, 3] uint8."""
    file.seek(0)
    bgr = cv2.imdecode(np.frombuffer(file.read(), np.uint8), cv2.IMREAD_UNCHANGED)
    if bgr is None or bgr.dtype != np.uint16 or bgr.ndim != 3 or bgr.shape[:2] != size_hw:
        raise ValueError("OpenCV could not decode the 16-bit samples")
    return _16_to_8(bgr[..., 2::-1])  # BGR(A) -> RGB


def _pil_to_rgb8(img: Image.Image) -> np.ndarray:
    """A loaded PIL image of any other mode -> [H, W, 3] uint8 (may be a strided view)."""
    if img.mode.startswith("I"):  # "I;16*" 16-bit gray; "I" (32-bit) clipped to 16 bits
        gray = _16_to_8(np.clip(_pixels(img), 0, 65535))
    elif img.mode == "F":
        values = _pixels(img)  # float32
        finite = values[np.isfinite(values)]
        low, high = 0.0, 1.0
        if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
            low, high = float(finite.min()), float(finite.max())
        scaled = (np.nan_to_num(values, nan=low) - low) * (255.0 / max(high - low, 1e-12))
        gray = np.round(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
    else:
        # Via RGBA rather than RGB: PIL warns and drops colours converting palettes with per-entry alpha.
        return _pixels(img if img.mode in ("RGB", "RGBA") else img.convert("RGBA"))[..., :3]
    return np.repeat(gray[..., None], 3, axis=2)


def _pixels(img: Image.Image, band_bytes: int = 1 << 24) -> np.ndarray:
    """A loaded PIL image's pixels as a new [H, W] or [H, W, C] array, copied in bands of rows.

    np.asarray(img) goes through img.tobytes(), which holds two more full copies at its peak (1.1 GB
    instead of 0.75 GB for a 108 MP photo); bands of ~16 MB avoid that.
    """
    band_rows = max(1, band_bytes // (4 * img.width))  # PIL stores up to 4 bytes per pixel
    pixels = None
    for top in range(0, img.height, band_rows):
        band = np.asarray(img.crop((0, top, img.width, min(top + band_rows, img.height))))
        if pixels is None:
            pixels = np.empty((img.height, *band.shape[1:]), band.dtype)
        pixels[top:top + len(band)] = band
    return pixels


def _16_to_8(samples: np.ndarray) -> np.ndarray:
    """Integer samples in [0, 65535] -> uint8 round(v / 257), exact (257 is odd, so there are no ties)."""
    return ((samples.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or "no details"


def write_atomic(path: Path | str, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a hidden temporary file beside ``path``, fsync it, then rename it to ``path``.

    The temporary file is ``.<name>.<random>.tmp`` in the same directory (a rename across file systems
    would not be atomic). If anything raises, it is removed and the exception propagates; an existing
    ``path`` is then left untouched. A missing directory is created (only now, when there is
    something to write); one that cannot be created or written is an InputError.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{path}: cannot create the output directory {path.parent}: {e.strerror or e}") from None
    temp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:  # os.open with 0o666 lets the umask set the final permissions, as for any new file
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise InputError(f"{path}: cannot write in {path.parent}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def save_npz(path: Path | str, arrays: dict[str, np.ndarray], format_version: int) -> None:
    """Write arrays to a compressed ``.npz`` with a ``format_version`` entry, atomically."""
    arrays = {"format_version": np.array(format_version), **arrays}
    write_atomic(Path(path), lambda file: np.savez_compressed(file, **arrays))


def load_npz(path: Path | str, kind: str, format_version: int,
             error: type[InputError] = InputError) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` written by :func:`save_npz` with ``format_version``.

    A missing file, a file that is not an ``.npz`` (no pickles are loaded), or another format
    version raises ``error`` with one line naming the file and ``kind`` (e.g. "model").
    """
    path = Path(path)
    try:
        # Each member read once (np.load's NpzFile opens a member twice, to check it and to read
        # it: half the time of a fit cache entry's 20 small arrays went there).
        with zipfile.ZipFile(path) as z:
            data = {}
            for member in z.infolist():
                with z.open(member) as file:
                    data[member.filename.removesuffix(".npy")] = np.lib.format.read_array(file, allow_pickle=False)
    except FileNotFoundError:
        raise error(f"{path}: no such {kind} file") from None
    except Exception as e:  # zipfile / numpy errors: not an npz of ours
        raise error(f"{path}: not a {kind} file ({type(e).__name__}: {' '.join(str(e).split())})") from None
    try:
        version = int(data.pop("format_version"))
    except (KeyError, TypeError, ValueError):
        version = -1
    if version != format_version:
        raise error(f"{path}: {kind} format version {version}, expected {format_version}")
    return data


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an [H, W, 3] uint8 RGB array atomically; the format follows the extension (JPEG/WebP quality 95).

    An image whose three channels are equal everywhere is written greyscale (one channel, losslessly), as
    a greyscale photo's render is: outputs of greyscale datasets stay greyscale files. (WebP has no such
    mode; PIL stores it as RGB.)"""
    path = Path(path)
    try:
        pil_format, options = _WRITE_FORMATS[path.suffix.lower()]
    except KeyError:
        raise InputError(f"{path}: unsupported image extension {path.suffix!r} "
                         f"(use one of {', '.join(_WRITE_FORMATS)})") from None
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"save_image needs an [H, W, 3] uint8 array, got {image.shape} {image.dtype}")
    grey = np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
    pil_image = Image.fromarray(np.ascontiguousarray(image[..., 0] if grey else image))
    write_atomic(path, lambda file: pil_image.save(file, format=pil_format, **options))


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON (indent 2, trailing newline) atomically; it is serialised before the file is made."""
    text = json.dumps(obj, indent=2) + "\n"
    write_atomic(Path(path), lambda file: file.write(text.encode("utf-8")))


def check_output_path(output: str | os.PathLike, *inputs: str | os.PathLike) -> Path:
    """The resolved ``output`` path, after checking it can be written without replacing any input.

    InputError if ``output`` is a directory, lies below an existing non-directory, or is the same
    file as one of ``inputs`` (same resolved path, which covers symlinks, or os.path.samefile, hard
    links). A missing output directory is fine: :func:`write_atomic` creates it.
    """
    resolved = Path(output).resolve()
    if resolved.is_dir():
        raise InputError(f"{output}: is a directory; give an output file name")
    existing = next(p for p in resolved.parents if p.exists())
    if not existing.is_dir():
        raise InputError(f"{output}: {existing} is not a directory")
    for input_path in inputs:
        input_resolved = Path(input_path).resolve()
        if resolved == input_resolved or (
                resolved.exists() and input_resolved.exists() and os.path.samefile(resolved, input_resolved)):
            raise InputError(f"{output}: is the input file {input_path}; refusing to overwrite an input")
    return resolved


#: File name of frame i in a directory written by :func:`save_frames` (sorts correctly up to 10,000 frames).
FRAME_NAME = "frame_{:04d}.png"


def frames_kind(output: str | os.PathLike) -> str:
    """What :func:`save_frames` writes to ``output``: "mp4", "gif", or "dir" (a path written with a
    trailing "/", an existing directory, or a name without a suffix); InputError for other suffixes."""
    text = os.fspath(output)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir() or not path.suffix:
        return "dir"
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("mp4", "gif"):
        raise InputError(f"{output}: a frame sequence is written as .mp4, .gif or a directory (end it with /), "
                         f"not {path.suffix!r}")
    return kind


def check_frames_output(output: str | os.PathLike, *inputs: str | os.PathLike) -> tuple[Path, str]:
    """(resolved path, :func:`frames_kind`) after checking that :func:`save_frames` can write there
    without replacing an input: as :func:`check_output_path` for files; a directory must not exist
    yet or be empty."""
    kind = frames_kind(output)
    if kind != "dir":
        return check_output_path(output, *inputs), kind
    resolved = Path(output).resolve()
    if resolved.exists() and not resolved.is_dir():
        raise InputError(f"{output}: exists and is not a directory")
    if resolved.is_dir() and any(resolved.iterdir()):
        raise InputError(f"{output}: the directory exists and is not empty; give a new or empty one")
    existing = next(p for p in resolved.parents if p.exists())
    if not existing.is_dir():
        raise InputError(f"{output}: {existing} is not a directory")
    return resolved, kind


def save_frames(output: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 24.0) -> int:
    """Write a sequence of [H, W, 3] uint8 RGB frames (all the same size); returns how many.

    The kind follows :func:`frames_kind`: ``.mp4`` (MPEG-4 part 2 through OpenCV's "mp4v" codec,
    which needs even sizes: an odd width or height is padded by one replicated column or row),
    ``.gif`` (looping, 256 colours per frame, delays in whole centiseconds), or a directory of
    :data:`FRAME_NAME` PNGs. mp4 and directory frames are written as they come, so ``frames``
    may be a lazy iterator. Atomic: everything goes to a hidden temporary file or directory
    beside ``output``, renamed into place when complete and removed if anything fails; a
    directory output must not exist or be empty (:func:`check_frames_output`).
    """
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(f"frame rate {fps} must be a positive number")
    kind = frames_kind(output)
    path = Path(output).resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{output}: cannot create the output directory {path.parent}: {e.strerror or e}") from None
    # The codec is chosen by the extension, so the temporary name keeps it.
    temp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix if kind != 'dir' else ''}"
    try:
        if kind == "dir":
            temp.mkdir()
            count = 0
            for count, frame in enumerate(_same_size(frames), 1):
                save_image(temp / FRAME_NAME.format(count - 1), frame)
            if count == 0:
                raise ValueError("save_frames got no frames")
            if path.is_dir():
                path.rmdir()  # empty (checked): rename cannot replace a directory that holds anything
        elif kind == "gif":
            images = [Image.fromarray(np.ascontiguousarray(f)) for f in _same_size(frames)]
            if not images:
                raise ValueError("save_frames got no frames")
            images[0].save(temp, format="GIF", save_all=True, append_images=images[1:], loop=0,
                           duration=max(10, round(100.0 / fps) * 10))
            count = len(images)
        else:
            count = _write_mp4(temp, frames, fps)
        if kind != "dir":
            with open(temp, "rb") as file:
                os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            temp.unlink(missing_ok=True)
        raise
    return count


def _write_mp4(path: Path, frames: Iterable[np.ndarray], fps: float) -> int:
    writer = None
    count = 0
    try:
        for frame in _same_size(frames):
            height, width = frame.shape[:2]
            frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
            if writer is None:
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps),
                                         (frame.shape[1], frame.shape[0]))
                if not writer.isOpened():
                    raise AffectsynthError(f"{path}: OpenCV cannot write mp4 (mp4v) video on this machine")
            writer.write(np.ascontiguousarray(frame[..., ::-1]))  # OpenCV takes BGR
            count += 1
    finally:
        if writer is not None:
            writer.release()
    if count == 0:
        raise ValueError("save_frames got no frames")
    return count


def _same_size(frames: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    """The frames, checked to be [H, W, 3] uint8 of one size."""
    shape = None
    for frame in frames:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or shape not in (None, frame.shape):
            raise ValueError(f"frames must be [H, W, 3] uint8 of one size, got {frame.shape} {frame.dtype} "
                             f"after {shape}")
        shape = frame.shape
        yield frame
