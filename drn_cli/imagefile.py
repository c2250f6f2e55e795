"""Image file input and output for ``drn upscale``.

Reading (:func:`read_image`) turns any image Pillow can decode into a numpy array plus the metadata
worth carrying to the output; writing (:func:`write_image`) encodes an array as PNG, JPEG, WebP or
TIFF, atomically and byte-for-byte deterministically.

Pixel layout: always ``H x W x C`` with ``C`` in {1, 2, 3, 4}, meaning grey, grey + alpha, RGB and
RGBA (alpha is straight, not premultiplied). ``dtype`` is ``uint8``, or ``uint16`` for 16-bit
sources, which never pass through an 8-bit intermediate: Pillow cannot hold 16-bit colour, so
16-bit multi-channel PNG and TIFF pixels are decoded by OpenCV and written by the small PNG and
TIFF encoders in this module.

Metadata: EXIF (orientation applied to the pixels and reset to 1; resolution and pixel-size tags
updated on output), the ICC profile and the resolution (DPI, multiplied by the upscale factor on
output so the printed size stays the same). XMP, IPTC and text chunks are not carried over.

Pillow's process-wide switches (``Image.MAX_IMAGE_PIXELS`` and ``ImageFile.LOAD_TRUNCATED_IMAGES``)
are overridden only while a file is being decoded, under a module lock, so this module's own
``max_pixels`` limit and truncation checks are the ones that apply.
"""

from __future__ import annotations

import contextlib
import io
import math
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, TiffImagePlugin, TiffTags, features

from .atomic import atomic_path
from .errors import InputError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "OUTPUT_FORMATS",
    "LoadedImage",
    "output_extension",
    "read_image",
    "write_image",
]

# A 64-megapixel input is already a 1-gigapixel output at x4 (3 GB as 8-bit RGB, 6 GB as 16-bit),
# so anything larger is far more likely a mistake or a decompression bomb than a real request.
DEFAULT_MAX_PIXELS = 64_000_000

#: Default JPEG quality: visually lossless for photographs (chroma is kept at full resolution).
DEFAULT_JPEG_QUALITY = 95
#: Default WebP quality; ``quality=100`` selects lossless WebP.
DEFAULT_WEBP_QUALITY = 90

_READ_EXTENSIONS = {
    ".png",
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".webp",
    ".tif",
    ".tiff",
    ".bmp",
    ".dib",
    ".gif",
    ".tga",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
}
if features.check("avif"):
    _READ_EXTENSIONS.add(".avif")

#: Lower-case file extensions (with the dot) accepted as inputs when scanning folders.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(_READ_EXTENSIONS)

#: Values accepted by ``--format``.
OUTPUT_FORMATS: tuple[str, ...] = ("png", "jpg", "webp", "tiff", "same")

_FORMAT_ALIASES = {
    "png": "PNG",
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "jpe": "JPEG",
    "jfif": "JPEG",
    "webp": "WEBP",
    "tif": "TIFF",
    "tiff": "TIFF",
}
_DEFAULT_EXTENSION = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tiff"}

_EXIF_HEADER = b"Exif\x00\x00"
_ORIENTATION = 0x0112
_X_RESOLUTION = 0x011A
_Y_RESOLUTION = 0x011B
_RESOLUTION_UNIT = 0x0128
_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_INTEROP_IFD = 0xA005
_PIXEL_X_DIMENSION = 0xA002
_PIXEL_Y_DIMENSION = 0xA003
# IFD0 tags that describe the picture rather than the pixel layout; only these move between an
# EXIF block and TIFF tags.
_DESCRIPTIVE_TAGS = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x8298)

# TIFF limits the offsets of a classic (non-Big) TIFF to 32 bits.
_TIFF_MAX_BYTES = 2**32 - 2**20
_WEBP_MAX_SIDE = 16383
_JPEG_MAX_SIDE = 65535

_pillow_lock = threading.Lock()


@dataclass
class LoadedImage:
    """A decoded image and the metadata to carry to the output.

    Attributes:
        pixels: ``H x W x C`` array, ``C`` in {1, 2, 3, 4} (grey, grey + alpha, RGB, RGBA), dtype
            ``uint8`` or ``uint16``; already turned upright according to the EXIF orientation.
        bit_depth: 8 or 16, matching ``pixels.dtype``.
        source_format: Pillow's name for the file format ("PNG", "JPEG", "TIFF", "WEBP", ...).
        exif: EXIF as a TIFF-structured block (starting ``II*`` or ``MM*``, without JPEG's
            ``Exif\\0\\0`` header), with Orientation reset to 1; None if the file has none.
        icc_profile: the embedded ICC profile, or None.
        dpi: horizontal and vertical resolution in pixels per inch, or None if not recorded.
        notices: one-line descriptions of anything changed or dropped while reading.
    """

    pixels: np.ndarray
    bit_depth: int
    source_format: str
    exif: bytes | None = None
    icc_profile: bytes | None = None
    dpi: tuple[float, float] | None = None
    notices: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.pixels.shape[0])

    @property
    def channels(self) -> int:
        """Number of channels (1, 2, 3 or 4)."""
        return int(self.pixels.shape[2])

    @property
    def has_alpha(self) -> bool:
        """Whether the last channel is alpha (grey + alpha or RGBA)."""
        return self.channels in (2, 4)


# --------------------------------------------------------------------------------------------------
# Formats and extensions


def output_extension(fmt: str, source_path: Path) -> str:
    """Return the output file extension (with the dot) for ``--format fmt``.

    ``fmt`` is one of :data:`OUTPUT_FORMATS` (``jpeg`` and ``tif`` are accepted too). ``same``
    keeps the source's extension when it is a format this module writes (PNG, JPEG, WebP, TIFF,
    spelling preserved in lower case) and falls back to ``.png`` for everything else (BMP, GIF, ...).

    Raises:
        InputError: ``fmt`` is not a known output format.
    """
    key = fmt.strip().lower().lstrip(".")
    if key == "same":
        suffix = Path(source_path).suffix.lower()
        return suffix if suffix.lstrip(".") in _FORMAT_ALIASES else ".png"
    if key not in _FORMAT_ALIASES:
        raise InputError(
            f"Output format {fmt!r} for {source_path} is not supported (use png, jpg, webp, tiff or same)."
        )
    if key in ("jpg", "jpeg", "tif", "tiff", "png", "webp"):
        return f".{key}"
    return _DEFAULT_EXTENSION[_FORMAT_ALIASES[key]]


# --------------------------------------------------------------------------------------------------
# Reading


@contextlib.contextmanager
def _pillow_guard(notices: list[str]) -> Iterator[None]:
    """Make this module's checks, not Pillow's global switches, govern a decode.

    Pillow's own bomb check is disabled (ours runs on the header first), truncated files are never
    silently padded, and decoder warnings become notices instead of raw ``UserWarning`` lines.
    """
    caught: list[warnings.WarningMessage] = []
    with _pillow_lock:
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
                yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved
            messages = []
            for w in caught:
                if issubclass(w.category, UserWarning) and str(w.message):
                    messages.append(str(w.message).splitlines()[0])
                else:  # deprecations and the like are for developers: pass them on untouched
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            notices.extend(f"decoder warning: {m}" for m in dict.fromkeys(messages))


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"Image {path} does not exist.")
    if path.is_dir():
        raise InputError(f"Image {path} is a folder, not an image file.")
    if not path.is_file():
        raise InputError(f"Image {path} is not a regular file.")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"Image {path} cannot be read ({exc.strerror or exc}).") from exc
    if size == 0:
        raise InputError(f"Image {path} is empty (0 bytes).")


def _check_pixels(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError(f"Image {path} has an invalid size of {width}x{height} pixels.")
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(
            f"Image {path} is {width}x{height} pixels ({width * height / 1e6:.1f} MP), more than the "
            f"{max_pixels / 1e6:g} MP limit; pass --max-pixels to raise the limit."
        )


_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"GIF87a", b"GIF89a", b"BM")


def _known_signature(path: Path) -> bool:
    """Whether the file starts like a PNG, JPEG, TIFF, GIF, BMP or WebP (so it is damaged, not foreign)."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, or None if it cannot be read."""
    with open(path, "rb") as fh:
        head = fh.read(33)
    if len(head) < 26 or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _needs_opencv(path: Path, im: Image.Image) -> bool:
    """Whether Pillow would squeeze this file's 16-bit colour (or grey + alpha) samples to 8 bits."""
    if im.format == "PNG":
        header = _png_header(path)
        return header is not None and header[0] == 16 and header[1] in (2, 4, 6)
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        samples = int(im.tag_v2.get(277, 1))
        photometric = im.tag_v2.get(262)
        # Only grey and RGB: OpenCV would hand back CMYK, Lab etc. samples as if they were RGB(A).
        return max(bits) > 8 and samples >= 2 and photometric in (1, 2)
    return False


def _read_opencv_16bit(path: Path, size: tuple[int, int], grey_alpha: bool) -> np.ndarray:
    """Decode a 16-bit multi-channel PNG/TIFF with OpenCV, returned in RGB(A) / grey+alpha order.

    OpenCV expands grey + alpha to BGRA; with ``grey_alpha`` the two real channels are picked back.
    """
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    # libtiff's harmless remarks (e.g. about a missing ExtraSamples tag) would reach stderr as raw
    # "[ WARN ]" lines; real failures still show up as a None result below.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        # IMREAD_UNCHANGED keeps 16 bits and alpha and ignores the EXIF orientation (applied later).
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    finally:
        cv2.utils.logging.setLogLevel(level)
    width, height = size
    if arr is None or arr.shape[:2] != (height, width) or arr.dtype != np.uint16:
        raise InputError(f"Image {path} could not be decoded as a 16-bit image.")
    if arr.ndim == 2:
        return arr[:, :, None]
    if arr.shape[2] == 3:
        return np.ascontiguousarray(arr[:, :, ::-1])
    if arr.shape[2] == 4:
        return np.ascontiguousarray(arr[:, :, [0, 3] if grey_alpha else [2, 1, 0, 3]])
    return np.ascontiguousarray(arr)


def _tiff_associated_alpha(im: Image.Image) -> bool:
    """Whether a TIFF declares its extra sample as associated (premultiplied) alpha."""
    extra = im.tag_v2.get(338)
    extra = extra if isinstance(extra, tuple) else (extra,)
    return bool(extra) and extra[0] == 1


def _unpremultiply(pixels: np.ndarray) -> np.ndarray:
    """Divide 16-bit colour samples by alpha (Pillow does this itself for 8-bit "RGBa")."""
    alpha = pixels[:, :, -1:].astype(np.float64)
    colour = pixels[:, :, :-1].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        straight = np.where(alpha > 0, np.rint(colour * 65535.0 / alpha), 0)
    out = pixels.copy()
    out[:, :, :-1] = np.clip(straight, 0, 65535).astype(np.uint16)
    return out


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None, notices: list[str]) -> Image.Image:
    if icc:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            converted = ImageCms.profileToProfile(im, source, srgb, outputMode="RGB")
            if converted is not None:
                notices.append("CMYK converted to RGB (sRGB) using the embedded ICC profile")
                return converted
        except Exception:  # a broken or unusual profile: fall back to the plain formula below
            pass
    notices.append("CMYK converted to RGB without colour management (colours are approximate)")
    return im.convert("RGB")


def _to_array(path: Path, im: Image.Image, notices: list[str]) -> tuple[np.ndarray, bool]:
    """Pixels of a loaded Pillow image as ``H x W x C`` plus whether the embedded ICC still applies."""
    mode = im.mode
    icc_valid = True
    if mode in ("L", "LA", "RGB", "RGBA"):
        pass
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.array(im, dtype=np.uint16)
        return arr[:, :, None], icc_valid
    elif mode == "I":
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise InputError(f"Image {path} holds 32-bit integer samples outside 0..65535, which is not supported.")
        notices.append("32-bit integer greyscale stored as 16-bit")
        return values.astype(np.uint16)[:, :, None], icc_valid
    elif mode == "F":
        raise InputError(f"Image {path} holds 32-bit floating-point samples, which are not supported.")
    elif mode == "1":
        notices.append("1-bit image converted to 8-bit greyscale")
        im = im.convert("L")
    elif mode in ("P", "PA"):
        transparent = mode == "PA" or "transparency" in im.info or (im.palette and im.palette.mode == "RGBA")
        target = "RGBA" if transparent else "RGB"
        notices.append(f"palette image converted to {target}")
        im = im.convert(target)
    elif mode == "CMYK":
        im = _cmyk_to_rgb(im, im.info.get("icc_profile"), notices)
        icc_valid = False
    elif mode in ("RGBa", "La"):
        im = im.convert("RGBA" if mode == "RGBa" else "LA")
    elif mode == "RGBX":
        im = im.convert("RGB")
    else:
        try:
            im = im.convert("RGB")
        except (ValueError, OSError) as exc:
            raise InputError(f"Image {path} uses the unsupported colour mode {mode}.") from exc
        notices.append(f"{mode} converted to RGB")
        icc_valid = False
    arr = np.array(im, dtype=np.uint8)  # a writable copy, not a view of Pillow's buffer
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr, icc_valid


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation the way ``ImageOps.exif_transpose`` does, on an ``H x W x C`` array."""
    if orientation == 2:
        out = pixels[:, ::-1]
    elif orientation == 3:
        out = pixels[::-1, ::-1]
    elif orientation == 4:
        out = pixels[::-1]
    elif orientation == 5:
        out = pixels.transpose(1, 0, 2)
    elif orientation == 6:
        out = np.rot90(pixels, k=-1)
    elif orientation == 7:
        out = pixels.transpose(1, 0, 2)[::-1, ::-1]
    elif orientation == 8:
        out = np.rot90(pixels, k=1)
    else:
        return pixels
    return np.ascontiguousarray(out)


def _clean_dpi(dpi: object) -> tuple[float, float] | None:
    """A positive, finite (x, y) resolution; values within 0.01 of a whole number are snapped to it."""
    try:
        x, y = (float(v) for v in dpi)  # type: ignore[attr-defined]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not (math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0):
        return None
    # PNG stores pixels per metre as an integer, so 300 dpi reads back as 299.9994.
    return tuple(float(round(v)) if abs(v - round(v)) < 0.01 else v for v in (x, y))  # type: ignore[return-value]


def _resolution_from_tags(tags: dict, xres: object, yres: object) -> tuple[float, float] | None:
    """DPI from TIFF-style XResolution / YResolution / ResolutionUnit (unit defaults to inches)."""
    if xres is None or yres is None:
        return None
    unit = tags.get(_RESOLUTION_UNIT, 2)
    if unit == 2:
        factor = 1.0
    elif unit == 3:
        factor = 2.54
    else:
        return None  # unit 1: an aspect ratio only, no absolute size
    try:
        return _clean_dpi((float(xres) * factor, float(yres) * factor))
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _tiff_exif(im: Image.Image) -> bytes | None:
    """EXIF block rebuilt from a TIFF's descriptive tags and its EXIF / GPS sub-directories."""
    tiff = im.getexif()
    out = Image.Exif()
    for tag in _DESCRIPTIVE_TAGS:
        if tag in tiff:
            out[tag] = tiff[tag]
    for pointer in (_EXIF_IFD, _GPS_IFD):
        if pointer in tiff:
            sub = dict(tiff.get_ifd(pointer))
            sub.pop(_INTEROP_IFD, None)
            if sub:
                out[pointer] = sub
    if not len(out):
        return None
    return out.tobytes()[len(_EXIF_HEADER) :]


def read_image(path: Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read an image file into a :class:`LoadedImage`.

    The size in the file header is checked against ``max_pixels`` before any pixel is decoded
    (``None`` disables the limit); the whole image is then decoded so that truncated and corrupt
    files are refused rather than padded. Conversions: palette to RGB/RGBA, CMYK to RGB, 1-bit to
    8-bit grey, premultiplied alpha to straight alpha; grey + alpha is kept as two channels. Only the
    first frame of an animation or multi-page file is read. The EXIF orientation is applied.

    Raises:
        InputError: the file is missing, a folder, empty, truncated, corrupt, not an image, in an
            unsupported format or colour mode, or larger than ``max_pixels``.
    """
    path = Path(path)
    if max_pixels is not None and max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive or None, got {max_pixels}")
    _check_file(path)
    notices: list[str] = []
    try:
        with _pillow_guard(notices), Image.open(path) as im:
            size = im.size
            _check_pixels(path, size, max_pixels)
            source_format = "JPEG" if im.format == "MPO" else str(im.format)
            frames = getattr(im, "n_frames", 1)
            im.load()
            use_opencv = _needs_opencv(path, im)
            icc = im.info.get("icc_profile") or None
            if source_format == "TIFF":
                tags = dict(im.tag_v2)
                dpi = _resolution_from_tags(tags, tags.get(_X_RESOLUTION), tags.get(_Y_RESOLUTION))
            else:
                dpi = _clean_dpi(im.info["dpi"]) if "dpi" in im.info else None
            exif_tags = im.getexif()
            orientation = exif_tags.get(_ORIENTATION, 1)
            if source_format == "TIFF":
                exif = _tiff_exif(im)
            else:
                exif = im.info.get("exif") or None
                if exif is not None and exif.startswith(_EXIF_HEADER):
                    exif = exif[len(_EXIF_HEADER) :]
            if dpi is None and source_format not in ("TIFF", "PNG"):
                dpi = _resolution_from_tags(dict(exif_tags), exif_tags.get(_X_RESOLUTION), exif_tags.get(_Y_RESOLUTION))
            if use_opencv:
                grey_alpha = im.format == "PNG" and _png_header(path) == (16, 4)
                pixels = _read_opencv_16bit(path, size, grey_alpha)
                if source_format == "TIFF" and pixels.shape[2] in (2, 4) and _tiff_associated_alpha(im):
                    pixels = _unpremultiply(pixels)
                    notices.append("premultiplied alpha converted to straight alpha")
                icc_valid = True
            else:
                pixels, icc_valid = _to_array(path, im, notices)
    except InputError:
        raise
    except Image.UnidentifiedImageError as exc:
        if _known_signature(path):
            raise InputError(f"Image {path} is truncated or corrupt and cannot be decoded.") from exc
        raise InputError(f"Image {path} is not an image in a supported format.") from exc
    except MemoryError as exc:
        raise InputError(f"Image {path} is too large to decode in the available memory.") from exc
    except Exception as exc:
        # Decoders raise OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error and more
        # for damaged data; whichever it is, the file is unusable.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"Image {path} is truncated or corrupt and cannot be decoded ({reason}).") from exc

    if frames > 1 and source_format != "JPEG":
        notices.append(f"only the first of {frames} frames was read")
    if not icc_valid:
        icc = None
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1
    if orientation != 1:
        pixels = _orient(pixels, orientation)
        notices.append(f"EXIF orientation {orientation} applied")
    if exif is not None:
        exif = _reset_orientation(exif)
        if exif is None:
            notices.append("unreadable EXIF data dropped")
    bit_depth = 16 if pixels.dtype == np.uint16 else 8
    return LoadedImage(
        pixels=pixels,
        bit_depth=bit_depth,
        source_format=source_format,
        exif=exif,
        icc_profile=icc,
        dpi=dpi,
        notices=notices,
    )


# --------------------------------------------------------------------------------------------------
# EXIF editing in place: a fixed-size value is overwritten where it lies, so everything else in the
# block (maker notes with absolute offsets, the thumbnail) stays byte-for-byte intact.


def _exif_layout(buf: bytes) -> tuple[str, int]:
    if buf[:4] == b"II*\x00":
        endian = "<"
    elif buf[:4] == b"MM\x00*":
        endian = ">"
    else:
        raise ValueError("not a TIFF-structured EXIF block")
    (ifd0,) = struct.unpack_from(endian + "I", buf, 4)
    return endian, ifd0


def _ifd_entries(buf: bytes, endian: str, offset: int) -> Iterator[tuple[int, int, int, int]]:
    """(tag, type, count, position of the entry) for each entry of the IFD at ``offset``."""
    (count,) = struct.unpack_from(endian + "H", buf, offset)
    for i in range(count):
        pos = offset + 2 + 12 * i
        tag, typ, n = struct.unpack_from(endian + "HHI", buf, pos)
        yield tag, typ, n, pos


def _rational(value: float) -> tuple[int, int]:
    frac = Fraction(value).limit_denominator(10_000)
    if frac.numerator >= 2**32:
        frac = Fraction(min(round(value), 2**32 - 1), 1)
    return frac.numerator, frac.denominator


def _patch_exif(
    raw: bytes,
    *,
    orientation: int | None = None,
    dpi: tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[bytes, set[int]]:
    """Overwrite Orientation, X/YResolution + ResolutionUnit and PixelX/YDimension where present.

    Returns the new block and the set of tags that were found (whether or not they were changed).

    Raises:
        ValueError / struct.error: the block is malformed.
    """
    buf = bytearray(raw)
    endian, ifd0 = _exif_layout(buf)
    found: set[int] = set()
    exif_ifd = None
    for tag, typ, n, pos in list(_ifd_entries(buf, endian, ifd0)):
        if tag == _ORIENTATION and typ == 3 and n == 1:
            found.add(tag)
            if orientation is not None:
                struct.pack_into(endian + "H", buf, pos + 8, orientation)
        elif tag in (_X_RESOLUTION, _Y_RESOLUTION) and typ == 5 and n == 1:
            found.add(tag)
            if dpi is not None:
                (where,) = struct.unpack_from(endian + "I", buf, pos + 8)
                value = dpi[0] if tag == _X_RESOLUTION else dpi[1]
                struct.pack_into(endian + "II", buf, where, *_rational(value))
        elif tag == _RESOLUTION_UNIT and typ == 3 and n == 1:
            found.add(tag)
            if dpi is not None:
                struct.pack_into(endian + "H", buf, pos + 8, 2)
        elif tag == _EXIF_IFD and typ in (4, 13) and n == 1:
            (exif_ifd,) = struct.unpack_from(endian + "I", buf, pos + 8)
    if exif_ifd is not None and size is not None:
        for tag, typ, n, pos in list(_ifd_entries(buf, endian, exif_ifd)):
            if tag in (_PIXEL_X_DIMENSION, _PIXEL_Y_DIMENSION) and n == 1:
                found.add(tag)
                value = size[0] if tag == _PIXEL_X_DIMENSION else size[1]
                if typ == 3 and value < 2**16:
                    struct.pack_into(endian + "H", buf, pos + 8, value)
                elif typ == 4:
                    struct.pack_into(endian + "I", buf, pos + 8, value)
    return bytes(buf), found


def _reset_orientation(raw: bytes) -> bytes | None:
    """The EXIF block with Orientation set to 1; None if it is unreadable."""
    try:
        patched, found = _patch_exif(raw, orientation=1)
        if _ORIENTATION in found or not _has_tag(raw, _ORIENTATION):
            return patched
    except (ValueError, struct.error):
        pass
    # Orientation stored in an unexpected type, or a block the walker cannot follow: re-serialise.
    try:
        exif = Image.Exif()
        exif.load(raw)
        if not len(exif):
            return None
        exif[_ORIENTATION] = 1
        return exif.tobytes()[len(_EXIF_HEADER) :]
    except Exception:
        return None


def _has_tag(raw: bytes, wanted: int) -> bool:
    endian, ifd0 = _exif_layout(raw)
    return any(tag == wanted for tag, _, _, _ in _ifd_entries(raw, endian, ifd0))


def _exif_for_output(
    raw: bytes | None, dpi: tuple[float, float] | None, size: tuple[int, int], *, need_resolution: bool
) -> bytes | None:
    """The EXIF block to write: resolution and pixel size brought up to date.

    With ``need_resolution`` (formats whose only place for a DPI is EXIF, i.e. WebP) missing
    resolution tags are added, which means re-serialising the block.
    """
    found: set[int] = set()
    if raw is not None:
        # A block the walker cannot follow is written unchanged: better stale tags than lost metadata.
        with contextlib.suppress(ValueError, struct.error):
            raw, found = _patch_exif(raw, dpi=dpi, size=size)
    if not need_resolution or dpi is None or {_X_RESOLUTION, _Y_RESOLUTION} <= found:
        return raw
    exif = Image.Exif()
    if raw is not None:
        try:
            exif.load(raw)
        except Exception:
            return raw
    exif[_X_RESOLUTION] = TiffImagePlugin.IFDRational(*_rational(dpi[0]))
    exif[_Y_RESOLUTION] = TiffImagePlugin.IFDRational(*_rational(dpi[1]))
    exif[_RESOLUTION_UNIT] = 2
    return exif.tobytes()[len(_EXIF_HEADER) :]


# --------------------------------------------------------------------------------------------------
# Writing


def _check_pixels_array(pixels: np.ndarray) -> np.ndarray:
    if not isinstance(pixels, np.ndarray):
        raise TypeError(f"pixels must be a numpy array, got {type(pixels).__name__}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels must be uint8 or uint16, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4) or pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ValueError(f"pixels must be H x W x C with C in 1..4, got shape {pixels.shape}")
    return np.ascontiguousarray(pixels)


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    """Round 16-bit samples to the nearest 8-bit value (v / 257; 257 is odd so there are no ties)."""
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _icc_matches(icc: bytes, channels: int) -> bool:
    """Whether an ICC profile's colour space fits grey (C <= 2) or RGB (C >= 3) pixels."""
    if len(icc) < 20:
        return True  # not a profile we can inspect; leave it to the reader
    space = icc[16:20]
    return space == (b"GRAY" if channels <= 2 else b"RGB ")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_filter_rows(raw: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """Filter byte rows with the per-row filter of least absolute sum (libpng's heuristic).

    ``raw`` is ``rows x stride`` uint8, ``prev`` the row above the first one; returns
    ``rows x (1 + stride)`` with the filter type byte in front of each row.
    """
    rows, stride = raw.shape
    up_rows = np.vstack([prev[None, :], raw[:-1]])
    a = np.zeros_like(raw)
    a[:, bpp:] = raw[:, :-bpp]
    c = np.zeros_like(raw)
    c[:, bpp:] = up_rows[:, :-bpp]
    b = up_rows
    ai, bi, ci = a.astype(np.int16), b.astype(np.int16), c.astype(np.int16)
    pa, pb, pc = np.abs(bi - ci), np.abs(ai - ci), np.abs(ai + bi - 2 * ci)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    candidates = np.stack(
        [
            raw,
            raw - a,
            raw - b,
            raw - ((ai + bi) >> 1).astype(np.uint8),
            raw - paeth,
        ]
    )
    cost = np.abs(candidates.view(np.int8).astype(np.int32)).sum(axis=2)
    choice = cost.argmin(axis=0)
    out = np.empty((rows, stride + 1), dtype=np.uint8)
    out[:, 0] = choice
    out[:, 1:] = candidates[choice, np.arange(rows)]
    return out


def _encode_png16(
    pixels: np.ndarray,
    fh: BinaryIO,
    icc: bytes | None,
    exif: bytes | None,
    dpi: tuple[float, float] | None,
) -> None:
    """Encode 16-bit pixels (any C) as PNG; Pillow cannot hold 16-bit colour, so this is done here."""
    height, width, channels = pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    fh.write(b"\x89PNG\r\n\x1a\n")
    fh.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)))
    if icc:
        fh.write(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if dpi:
        ppm = [int(v / 0.0254 + 0.5) for v in dpi]
        fh.write(_png_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    if exif:
        fh.write(_png_chunk(b"eXIf", exif))
    data = np.ascontiguousarray(pixels, dtype=">u2").view(np.uint8).reshape(height, width * channels * 2)
    bpp = channels * 2
    block = max(1, (1 << 20) // data.shape[1])
    compressor = zlib.compressobj(6)
    prev = np.zeros(data.shape[1], dtype=np.uint8)
    pending = b""
    for start in range(0, height, block):
        rows = data[start : start + block]
        pending += compressor.compress(_png_filter_rows(rows, prev, bpp).tobytes())
        prev = rows[-1]
        # One IDAT chunk per MiB of compressed data keeps the chunk boundaries deterministic.
        while len(pending) >= 1 << 20:
            fh.write(_png_chunk(b"IDAT", pending[: 1 << 20]))
            pending = pending[1 << 20 :]
    pending += compressor.flush()
    while pending:
        fh.write(_png_chunk(b"IDAT", pending[: 1 << 20]))
        pending = pending[1 << 20 :]
    fh.write(_png_chunk(b"IEND", b""))


def _exif_to_tiff_tags(raw: bytes, size: tuple[int, int]) -> dict[int, object]:
    """Descriptive IFD0 tags and the EXIF / GPS sub-directories of an EXIF block, for a TIFF IFD."""
    exif = Image.Exif()
    exif.load(raw)
    tags: dict[int, object] = {tag: exif[tag] for tag in _DESCRIPTIVE_TAGS if tag in exif}
    for pointer in (_EXIF_IFD, _GPS_IFD):
        if pointer in exif:
            sub = dict(exif.get_ifd(pointer))
            sub.pop(_INTEROP_IFD, None)
            if pointer == _EXIF_IFD:
                for tag, value in ((_PIXEL_X_DIMENSION, size[0]), (_PIXEL_Y_DIMENSION, size[1])):
                    if tag in sub:
                        sub[tag] = value
            if sub:
                tags[pointer] = sub
    return tags


def _encode_tiff(
    pixels: np.ndarray,
    fh: BinaryIO,
    icc: bytes | None,
    exif: bytes | None,
    dpi: tuple[float, float] | None,
    notices: list[str],
) -> None:
    """Encode pixels (8 or 16 bit, any C) as a little-endian TIFF, Adobe Deflate with a predictor."""
    height, width, channels = pixels.shape
    bits = pixels.dtype.itemsize * 8
    data = pixels.astype("<u2") if bits == 16 else pixels
    # Horizontal differencing (predictor 2) per sample; unsigned arithmetic wraps as TIFF expects.
    diff = data.copy()
    diff[:, 1:] -= data[:, :-1]
    row_bytes = width * channels * pixels.dtype.itemsize
    rows_per_strip = max(1, min(height, (256 * 1024) // row_bytes))
    strips = []
    for start in range(0, height, rows_per_strip):
        strips.append(zlib.compress(diff[start : start + rows_per_strip].tobytes(), 6))
    if sum(len(s) for s in strips) > _TIFF_MAX_BYTES:
        raise OverflowError("TIFF output larger than 4 GiB")

    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    if exif:
        try:
            for tag, value in _exif_to_tiff_tags(exif, (width, height)).items():
                ifd[tag] = value
        except Exception:
            ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
            notices.append("EXIF data could not be carried into the TIFF")

    def put(tag: int, value: object, typ: int) -> None:
        ifd.tagtype[tag] = typ
        ifd[tag] = value

    put(256, width, TiffTags.LONG)
    put(257, height, TiffTags.LONG)
    put(258, (bits,) * channels, TiffTags.SHORT)
    put(259, 8, TiffTags.SHORT)  # Adobe Deflate
    put(262, 1 if channels <= 2 else 2, TiffTags.SHORT)  # BlackIsZero / RGB
    put(277, channels, TiffTags.SHORT)
    put(278, rows_per_strip, TiffTags.LONG)
    put(284, 1, TiffTags.SHORT)  # chunky (interleaved) samples
    put(317, 2, TiffTags.SHORT)  # horizontal differencing
    put(339, (1,) * channels, TiffTags.SHORT)  # unsigned integers
    if channels in (2, 4):
        put(338, (2,), TiffTags.SHORT)  # unassociated (straight) alpha
    if dpi:
        put(_X_RESOLUTION, TiffImagePlugin.IFDRational(*_rational(dpi[0])), TiffTags.RATIONAL)
        put(_Y_RESOLUTION, TiffImagePlugin.IFDRational(*_rational(dpi[1])), TiffTags.RATIONAL)
        put(_RESOLUTION_UNIT, 2, TiffTags.SHORT)
    if icc:
        put(34675, icc, TiffTags.UNDEFINED)
    offsets, position = [], 0
    for strip in strips:
        offsets.append(position)
        position += len(strip)
    # The IFD writer adds the end of the directory to StripOffsets: the strips follow it.
    put(273, tuple(offsets), TiffTags.LONG)
    put(279, tuple(len(s) for s in strips), TiffTags.LONG)
    header = b"II*\x00" + struct.pack("<I", 8)
    directory = ifd.tobytes(8)
    if len(directory) + position + 8 > _TIFF_MAX_BYTES:
        raise OverflowError("TIFF output larger than 4 GiB")
    fh.write(header)
    fh.write(directory)
    for strip in strips:
        fh.write(strip)


def _resolve_format(path: Path, fmt: str | None) -> str:
    key = (fmt if fmt is not None else path.suffix).strip().lower().lstrip(".")
    if key not in _FORMAT_ALIASES:
        shown = fmt if fmt is not None else (path.suffix or "(no extension)")
        raise InputError(
            f"Cannot write {path}: the output format {shown!r} is not supported (use png, jpg, webp or tiff)."
        )
    return _FORMAT_ALIASES[key]


def write_image(
    path: Path,
    pixels: np.ndarray,
    *,
    like: LoadedImage | None = None,
    format: str | None = None,
    quality: int | None = None,
    scale: float = 1.0,
) -> list[str]:
    """Write ``pixels`` to ``path`` atomically; return notices about anything changed or dropped.

    Args:
        path: the output file; it only appears, complete, once encoding succeeded.
        pixels: ``H x W`` or ``H x W x C`` (``C`` in 1..4, as in :class:`LoadedImage`), uint8 or uint16.
        like: the source image whose EXIF, ICC profile and DPI are carried over.
        format: "png", "jpg"/"jpeg", "webp" or "tiff"/"tif"; None picks it from the extension.
        quality: JPEG/WebP quality 1..100 (defaults 95 and 90; WebP 100 means lossless); ignored
            for PNG and TIFF, which are always lossless.
        scale: the upscale factor; the DPI is multiplied by it so the printed size is unchanged.

    16-bit pixels stay 16-bit in PNG and TIFF and are rounded to 8 bits for JPEG and WebP (with a
    notice). JPEG cannot hold alpha: a fully opaque alpha channel is dropped, anything else is
    refused. WebP has no greyscale, so grey is written as RGB. The same pixels and metadata always
    give the same bytes (no timestamps or software tags are written).

    Raises:
        InputError: unsupported format, bad quality, an image too large or with alpha for the
            format, or the file cannot be written (missing or read-only folder, disk full).
        TypeError / ValueError: ``pixels`` is not a uint8/uint16 array of a supported shape.
    """
    path = Path(path)
    pixels = _check_pixels_array(pixels)
    fmt = _resolve_format(path, format)
    if quality is not None and (isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100):
        raise InputError(f"Cannot write {path}: quality must be a whole number from 1 to 100, got {quality!r}.")
    if scale <= 0 or not math.isfinite(scale):
        raise ValueError(f"scale must be positive, got {scale}")
    notices: list[str] = []
    height, width, channels = pixels.shape

    dpi = None
    exif = icc = None
    if like is not None:
        if like.dpi is not None:
            dpi = (like.dpi[0] * scale, like.dpi[1] * scale)
        exif = like.exif
        icc = like.icc_profile

    if fmt in ("JPEG", "WEBP"):
        limit = _JPEG_MAX_SIDE if fmt == "JPEG" else _WEBP_MAX_SIDE
        name = "JPEG" if fmt == "JPEG" else "WebP"
        if max(width, height) > limit:
            raise InputError(
                f"Cannot write {path}: {width}x{height} pixels is larger than {name} allows "
                f"({limit} per side); use png or tiff."
            )
        if pixels.dtype == np.uint16:
            pixels = _to_8bit(pixels)
            notices.append(f"16-bit pixels rounded to 8 bits for {name}")
        if fmt == "JPEG" and channels in (2, 4):
            if not (pixels[:, :, -1] == 255).all():
                raise InputError(
                    f"Cannot write {path}: JPEG cannot store the transparency of this image; "
                    "use --format png, webp or tiff."
                )
            pixels = np.ascontiguousarray(pixels[:, :, :-1])
            notices.append("fully opaque alpha channel dropped for JPEG")
        if fmt == "WEBP" and pixels.shape[2] <= 2:
            pixels = np.ascontiguousarray(pixels[:, :, [0, 0, 0, 1][: pixels.shape[2] + 2]])
            notices.append("greyscale written as RGB (WebP has no greyscale mode)")
    if fmt == "TIFF" and pixels.dtype == np.uint16 and channels == 2:
        # Neither Pillow nor OpenCV reads 16-bit grey + alpha TIFF back, and few other programs do.
        pixels = np.ascontiguousarray(pixels[:, :, [0, 0, 0, 1]])
        notices.append("16-bit grey + alpha written as RGBA (TIFF readers rarely support it)")
    out_channels = pixels.shape[2]
    if icc is not None and not _icc_matches(icc, out_channels):
        icc = None
        notices.append("ICC profile dropped: its colour space does not match the output channels")
    exif = _exif_for_output(exif, dpi, (width, height), need_resolution=fmt == "WEBP")
    if fmt == "JPEG" and exif is not None and len(exif) + len(_EXIF_HEADER) > 65533:
        exif = None
        notices.append("EXIF dropped: larger than the 64 KB a JPEG can hold")

    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            _encode(fmt, pixels, fh, icc=icc, exif=exif, dpi=dpi, quality=quality, notices=notices)
    except OverflowError as exc:
        raise InputError(f"Cannot write {path}: the image is too large for TIFF ({exc}); use png.") from exc
    except OSError as exc:
        raise InputError(f"Cannot write {path} ({exc.strerror or exc}).") from exc
    return notices


def _encode(
    fmt: str,
    pixels: np.ndarray,
    fh: BinaryIO,
    *,
    icc: bytes | None,
    exif: bytes | None,
    dpi: tuple[float, float] | None,
    quality: int | None,
    notices: list[str],
) -> None:
    """Encode ``pixels`` as ``fmt`` into the open file ``fh``."""
    if fmt == "TIFF":
        _encode_tiff(pixels, fh, icc, exif, dpi, notices)
        return
    if fmt == "PNG" and pixels.dtype == np.uint16:
        _encode_png16(pixels, fh, icc, exif, dpi)
        return
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    image = Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels)
    assert image.mode == mode
    options: dict[str, object] = {}
    if icc:
        options["icc_profile"] = icc
    if fmt == "PNG":
        if exif:
            options["exif"] = exif
        if dpi:
            options["dpi"] = dpi
        options["compress_level"] = 6
    elif fmt == "JPEG":
        q = DEFAULT_JPEG_QUALITY if quality is None else quality
        options.update(quality=q, subsampling=0 if q >= 90 else 2, optimize=True)
        if exif:
            options["exif"] = _EXIF_HEADER + exif
        if dpi:
            options["dpi"] = tuple(max(1, round(v)) for v in dpi)
    else:  # WEBP
        q = DEFAULT_WEBP_QUALITY if quality is None else quality
        options.update(quality=q, lossless=q == 100, method=4, exact=True)
        if exif:
            options["exif"] = exif
    image.save(fh, format=fmt, **options)
