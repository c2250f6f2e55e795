"""Tests for drn_cli.imagefile: real files in tmp_path and the shared benchmark images, read back
with Pillow and OpenCV as independent decoders."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile, ImageOps

from drn_cli.errors import InputError
from drn_cli.imagefile import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    LoadedImage,
    output_extension,
    read_image,
    write_image,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BENCHMARK_PNGS = sorted((SHARED / "data" / "benchmark").glob("*/HR/*.png"))
needs_shared = pytest.mark.skipif(not BENCHMARK_PNGS, reason="shared benchmark images not available")

RNG = np.random.default_rng(1234)


def random_pixels(height: int, width: int, channels: int, dtype: type = np.uint8) -> np.ndarray:
    return RNG.integers(0, np.iinfo(dtype).max + 1, size=(height, width, channels), dtype=dtype)


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def sample_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "ACME"  # Make
    exif[0x0110] = "Camera 1"  # Model
    if orientation is not None:
        exif[0x0112] = orientation
    exif[0x011A] = 72.0  # XResolution
    exif[0x011B] = 72.0  # YResolution
    exif[0x0128] = 2  # inches
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "2021:02:03 04:05:06"  # DateTimeOriginal
    sub[0xA002] = 11  # PixelXDimension
    sub[0xA003] = 7  # PixelYDimension
    return exif


def cv_read_rgb(path: Path) -> np.ndarray:
    """Decode with OpenCV (keeping depth and alpha) and put channels in RGB(A) order."""
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert arr is not None
    if arr.ndim == 2:
        return arr[:, :, None]
    return arr[:, :, ::-1] if arr.shape[2] == 3 else arr[:, :, [2, 1, 0, 3]]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_8bit_png_round_trip(tmp_path: Path, channels: int) -> None:
    pixels = random_pixels(23, 31, channels)
    path = tmp_path / "out.png"
    assert write_image(path, pixels) == []
    with Image.open(path) as im:
        assert im.mode == {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
        reference = np.asarray(im).reshape(pixels.shape)
    np.testing.assert_array_equal(reference, pixels)
    loaded = read_image(path)
    assert loaded.pixels.shape == pixels.shape and loaded.pixels.dtype == np.uint8
    np.testing.assert_array_equal(loaded.pixels, pixels)
    assert (loaded.bit_depth, loaded.source_format, loaded.notices) == (8, "PNG", [])
    assert loaded.pixels.flags.writeable  # callers may work in place


def test_read_rgb_png_from_shared_benchmark() -> None:
    if not BENCHMARK_PNGS:
        pytest.skip("shared benchmark images not available")
    path = BENCHMARK_PNGS[0]
    loaded = read_image(path)
    np.testing.assert_array_equal(loaded.pixels, cv_read_rgb(path))
    assert loaded.source_format == "PNG" and loaded.bit_depth == 8


def test_16bit_greyscale_png_round_trip(tmp_path: Path) -> None:
    pixels = random_pixels(19, 27, 1, np.uint16)
    pixels[0, :4, 0] = [0, 255, 256, 65535]
    path = tmp_path / "grey16.png"
    write_image(path, pixels)
    np.testing.assert_array_equal(cv_read_rgb(path), pixels)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    loaded = read_image(path)
    assert loaded.pixels.dtype == np.uint16 and loaded.bit_depth == 16
    np.testing.assert_array_equal(loaded.pixels, pixels)


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_png_round_trip(tmp_path: Path, channels: int) -> None:
    pixels = random_pixels(21, 17, channels, np.uint16)
    pixels[0, 0, :3] = [256, 1000, 65535]  # all above 8 bits
    path = tmp_path / "rgb16.png"
    write_image(path, pixels)
    # OpenCV (libpng) decodes the file independently of our encoder.
    decoded = cv_read_rgb(path)
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, pixels)
    loaded = read_image(path)
    assert loaded.pixels.dtype == np.uint16 and loaded.bit_depth == 16
    np.testing.assert_array_equal(loaded.pixels, pixels)


def test_16bit_grey_alpha_png_round_trip(tmp_path: Path) -> None:
    pixels = random_pixels(9, 14, 2, np.uint16)
    path = tmp_path / "la16.png"
    write_image(path, pixels)
    loaded = read_image(path)
    assert loaded.pixels.shape == (9, 14, 2)
    np.testing.assert_array_equal(loaded.pixels, pixels)


def test_read_16bit_rgb_png_written_by_opencv(tmp_path: Path) -> None:
    rgb = random_pixels(15, 12, 3, np.uint16)
    path = tmp_path / "cv16.png"
    assert cv2.imwrite(str(path), rgb[:, :, ::-1])  # OpenCV takes BGR
    loaded = read_image(path)
    assert loaded.bit_depth == 16
    np.testing.assert_array_equal(loaded.pixels, rgb)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_round_trip(tmp_path: Path, channels: int, dtype: type) -> None:
    pixels = random_pixels(33, 20, channels, dtype)
    path = tmp_path / "out.tiff"
    write_image(path, pixels)
    if dtype == np.uint16:
        decoded = cv_read_rgb(path)
    else:  # OpenCV premultiplies 8-bit TIFF alpha while decoding, so check with Pillow (libtiff)
        with Image.open(path) as im:
            decoded = np.asarray(im).reshape(pixels.shape)
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, pixels)
    loaded = read_image(path)
    assert loaded.source_format == "TIFF" and loaded.pixels.dtype == dtype
    np.testing.assert_array_equal(loaded.pixels, pixels)


def test_read_16bit_rgb_tiff_written_by_opencv(tmp_path: Path) -> None:
    rgb = random_pixels(18, 25, 3, np.uint16)
    path = tmp_path / "cv16.tif"
    assert cv2.imwrite(str(path), rgb[:, :, ::-1])
    loaded = read_image(path)
    assert loaded.bit_depth == 16
    np.testing.assert_array_equal(loaded.pixels, rgb)


def test_read_16bit_tiff_with_premultiplied_alpha(tmp_path: Path) -> None:
    stored = random_pixels(6, 7, 4, np.uint16)
    stored[..., 3] = np.maximum(stored[..., 3], 1000)
    stored[0, 0, 3] = 0
    stored[..., :3] = np.minimum(stored[..., :3], stored[..., 3:])  # valid premultiplied values
    path = tmp_path / "assoc.tif"
    write_image(path, stored)
    data = path.read_bytes()
    # ExtraSamples (0x0152, SHORT, count 1) = 2 (straight) -> 1 (associated)
    entry = bytes.fromhex("5201 0300 01000000 0200")
    assert data.count(entry) == 1
    path.write_bytes(data.replace(entry, bytes.fromhex("5201 0300 01000000 0100")))

    expected = stored.astype(np.float64)
    alpha = expected[..., 3:]
    expected[..., :3] = np.where(alpha > 0, np.round(expected[..., :3] * 65535 / np.maximum(alpha, 1)), 0)
    loaded = read_image(path)
    np.testing.assert_array_equal(loaded.pixels, expected.astype(np.uint16))
    assert any("premultiplied" in n for n in loaded.notices)


def test_read_16bit_greyscale_tiff_written_by_pillow(tmp_path: Path) -> None:
    grey = RNG.integers(0, 65536, size=(10, 13), dtype=np.uint16)
    path = tmp_path / "grey16.tif"
    Image.fromarray(grey).save(path)
    loaded = read_image(path)
    np.testing.assert_array_equal(loaded.pixels[:, :, 0], grey)
    assert loaded.bit_depth == 16


def test_16bit_grey_alpha_tiff_is_written_as_rgba(tmp_path: Path) -> None:
    pixels = random_pixels(6, 5, 2, np.uint16)
    path = tmp_path / "la16.tiff"
    notices = write_image(path, pixels)
    assert any("RGBA" in n for n in notices)
    np.testing.assert_array_equal(read_image(path).pixels, pixels[:, :, [0, 0, 0, 1]])


def test_palette_png_with_transparency_becomes_rgba(tmp_path: Path) -> None:
    palette = [(10, 20, 30), (200, 100, 0), (0, 255, 0), (7, 7, 7)]
    indices = RNG.integers(0, 4, size=(12, 9), dtype=np.uint8)
    im = Image.frombytes("P", (9, 12), indices.tobytes())
    im.putpalette([v for rgb in palette for v in rgb])
    path = tmp_path / "palette.png"
    im.save(path, transparency=3)

    expected = np.zeros((12, 9, 4), dtype=np.uint8)
    for index, rgb in enumerate(palette):
        expected[indices == index] = (*rgb, 0 if index == 3 else 255)
    loaded = read_image(path)
    np.testing.assert_array_equal(loaded.pixels, expected)
    assert "palette image converted to RGBA" in loaded.notices


def test_palette_png_without_transparency_becomes_rgb(tmp_path: Path) -> None:
    indices = RNG.integers(0, 2, size=(5, 6), dtype=np.uint8)
    im = Image.frombytes("P", (6, 5), indices.tobytes())
    im.putpalette([255, 0, 0, 0, 0, 255])
    path = tmp_path / "palette.png"
    im.save(path)
    loaded = read_image(path)
    expected = np.where(indices[:, :, None] == 0, [255, 0, 0], [0, 0, 255]).astype(np.uint8)
    np.testing.assert_array_equal(loaded.pixels, expected)
    assert "palette image converted to RGB" in loaded.notices


def test_one_bit_image_becomes_8bit_grey(tmp_path: Path) -> None:
    bits = RNG.integers(0, 2, size=(8, 16), dtype=np.uint8).astype(bool)
    path = tmp_path / "bw.png"
    Image.fromarray(bits).save(path)
    loaded = read_image(path)
    np.testing.assert_array_equal(loaded.pixels[:, :, 0], np.where(bits, 255, 0))
    assert loaded.pixels.shape == (8, 16, 1)
    assert any("1-bit" in n for n in loaded.notices)


def cmyk_blocks() -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    colours = [(0, 255, 255, 0), (255, 0, 0, 0), (0, 0, 0, 128), (50, 100, 150, 30)]
    cmyk = np.zeros((16, 64, 4), dtype=np.uint8)
    for i, colour in enumerate(colours):
        cmyk[:, 16 * i : 16 * (i + 1)] = colour
    return cmyk, colours


@pytest.mark.parametrize("broken_icc", [False, True])
def test_cmyk_jpeg_becomes_rgb(tmp_path: Path, broken_icc: bool) -> None:
    cmyk, colours = cmyk_blocks()
    path = tmp_path / "cmyk.jpg"
    options = {"icc_profile": b"not really an ICC profile"} if broken_icc else {}
    Image.fromarray(cmyk, mode="CMYK").save(path, quality=100, **options)
    loaded = read_image(path)
    assert loaded.pixels.shape == (16, 64, 3)
    for i, (c, m, y, k) in enumerate(colours):
        expected = [(255 - v) * (255 - k) / 255 for v in (c, m, y)]
        block = loaded.pixels[4:12, 16 * i + 4 : 16 * i + 12].reshape(-1, 3).astype(float)
        np.testing.assert_allclose(block.mean(axis=0), expected, atol=4)
    assert any("CMYK converted to RGB" in n for n in loaded.notices)
    assert loaded.icc_profile is None  # a CMYK profile does not describe RGB pixels


# --------------------------------------------------------------------------------------------------
# EXIF orientation


def test_jpeg_exif_orientation_6_is_applied_and_reset(tmp_path: Path) -> None:
    stored = random_pixels(24, 40, 3)
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=sample_exif(orientation=6))

    loaded = read_image(path)
    with Image.open(path) as im:
        decoded = np.asarray(im)
        upright = np.asarray(ImageOps.exif_transpose(im))
    assert loaded.pixels.shape == (40, 24, 3)
    np.testing.assert_array_equal(loaded.pixels, upright)
    # Orientation 6 means "rotate 90 degrees clockwise to display": row y, column x of the upright
    # image is stored at row H-1-x, column y.
    height = decoded.shape[0]
    expected = np.empty((decoded.shape[1], height, 3), dtype=np.uint8)
    for y in range(expected.shape[0]):
        for x in range(expected.shape[1]):
            expected[y, x] = decoded[height - 1 - x, y]
    np.testing.assert_array_equal(loaded.pixels, expected)
    assert "EXIF orientation 6 applied" in loaded.notices

    exif = Image.Exif()
    exif.load(loaded.exif)
    assert exif[0x0112] == 1
    assert exif[0x010F] == "ACME"
    assert exif.get_ifd(0x8769)[0x9003] == "2021:02:03 04:05:06"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    stored = random_pixels(6, 10, 3)
    path = tmp_path / "o.png"
    Image.fromarray(stored).save(path, exif=sample_exif(orientation=orientation))
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    loaded = read_image(path)
    np.testing.assert_array_equal(loaded.pixels, expected)
    assert any("orientation" in n for n in loaded.notices) == (orientation != 1)


def test_tiff_orientation_tag_is_applied(tmp_path: Path) -> None:
    stored = random_pixels(5, 9, 3)
    path = tmp_path / "o.tif"
    Image.fromarray(stored).save(path, tiffinfo={0x0112: 8})
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(read_image(path).pixels, expected)


# --------------------------------------------------------------------------------------------------
# Metadata


def source_with_metadata(pixels: np.ndarray) -> LoadedImage:
    raw = sample_exif(orientation=1).tobytes()[len(b"Exif\x00\x00") :]
    return LoadedImage(
        pixels=pixels,
        bit_depth=8 * pixels.dtype.itemsize,
        source_format="PNG",
        exif=raw,
        icc_profile=srgb_icc(),
        dpi=(300.0, 150.0),
    )


@pytest.mark.parametrize("fmt", ["png", "jpg", "tiff", "webp"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_exif_icc_dpi_are_kept_and_dpi_scaled(tmp_path: Path, fmt: str, dtype: type) -> None:
    pixels = random_pixels(14, 22, 3, dtype)
    like = source_with_metadata(pixels)
    path = tmp_path / f"out.{fmt}"
    write_image(path, pixels, like=like, scale=2)

    with Image.open(path) as im:
        assert im.info.get("icc_profile") == like.icc_profile
        exif = im.getexif()
        assert exif[0x010F] == "ACME"
        sub = exif.get_ifd(0x8769)
        assert sub[0x9003] == "2021:02:03 04:05:06"
        assert (sub[0xA002], sub[0xA003]) == (22, 14)  # updated to the written size
        if fmt == "webp":  # WebP has no resolution field of its own; EXIF carries it
            assert (float(exif[0x011A]), float(exif[0x011B]), exif[0x0128]) == (600.0, 300.0, 2)
        else:
            np.testing.assert_allclose([float(v) for v in im.info["dpi"]], (600, 300), atol=0.01)
            assert (float(exif[0x011A]), float(exif[0x011B])) == (600.0, 300.0)

    loaded = read_image(path)
    assert loaded.dpi == (600.0, 300.0)
    assert loaded.icc_profile == like.icc_profile
    exif = Image.Exif()
    exif.load(loaded.exif)
    assert exif[0x0110] == "Camera 1"


def test_webp_dpi_without_source_exif(tmp_path: Path) -> None:
    pixels = random_pixels(8, 8, 3)
    like = LoadedImage(pixels=pixels, bit_depth=8, source_format="PNG", dpi=(72.0, 72.0))
    path = tmp_path / "out.webp"
    write_image(path, pixels, like=like, scale=4)
    assert read_image(path).dpi == (288.0, 288.0)


def test_metadata_survives_read_then_write(tmp_path: Path) -> None:
    pixels = random_pixels(10, 12, 3)
    source = tmp_path / "source.jpg"
    Image.fromarray(pixels).save(source, exif=sample_exif(orientation=6), icc_profile=srgb_icc(), dpi=(100, 100))
    loaded = read_image(source)
    assert loaded.dpi == (100.0, 100.0)
    out = tmp_path / "out.png"
    write_image(out, loaded.pixels, like=loaded, scale=3)
    with Image.open(out) as im:
        assert im.getexif()[0x0112] == 1  # already upright: must not be rotated again
        assert im.info["icc_profile"] == srgb_icc()
        np.testing.assert_allclose(im.info["dpi"], (300, 300), atol=0.01)
    # The source file is untouched.
    with Image.open(source) as im:
        assert im.getexif()[0x0112] == 6


def test_tiff_source_exif_is_read(tmp_path: Path) -> None:
    pixels = random_pixels(7, 9, 3)
    path = tmp_path / "meta.tiff"
    write_image(path, pixels, like=source_with_metadata(pixels))
    loaded = read_image(path)
    exif = Image.Exif()
    exif.load(loaded.exif)
    assert exif[0x010F] == "ACME"
    assert exif.get_ifd(0x8769)[0x9003] == "2021:02:03 04:05:06"
    assert loaded.dpi == (300.0, 150.0)


@pytest.mark.parametrize("fmt", ["png", "jpg", "tiff", "webp"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_output_is_deterministic(tmp_path: Path, fmt: str, dtype: type) -> None:
    pixels = random_pixels(40, 30, 4 if fmt != "jpg" else 3, dtype)
    like = source_with_metadata(pixels)
    first, second = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
    write_image(first, pixels, like=like, scale=2)
    write_image(second, pixels.copy(), like=like, scale=2)
    assert first.read_bytes() == second.read_bytes()


# --------------------------------------------------------------------------------------------------
# Lossy formats


def test_16bit_is_rounded_to_8bit_for_webp_and_jpeg(tmp_path: Path) -> None:
    pixels = random_pixels(8, 8, 3, np.uint16)
    pixels[0, 0] = [128, 129, 65535]  # 128/257 rounds down, 129/257 rounds up
    path = tmp_path / "out.webp"
    notices = write_image(path, pixels, quality=100)  # lossless WebP: the rounding is all that changes
    expected = np.round(pixels.astype(np.float64) / 257).astype(np.uint8)
    assert expected[0, 0].tolist() == [0, 1, 255]
    np.testing.assert_array_equal(read_image(path).pixels, expected)
    assert any("8 bits" in n for n in notices)
    assert any("8 bits" in n for n in write_image(tmp_path / "out.jpg", pixels))


def test_webp_greyscale_written_as_rgb(tmp_path: Path) -> None:
    grey = random_pixels(6, 7, 1)
    path = tmp_path / "grey.webp"
    write_image(path, grey, quality=100)
    np.testing.assert_array_equal(read_image(path).pixels, np.repeat(grey, 3, axis=2))


def test_jpeg_refuses_transparency_but_drops_opaque_alpha(tmp_path: Path) -> None:
    rgba = random_pixels(8, 8, 4)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 254
    target = tmp_path / "out.jpg"
    with pytest.raises(InputError, match="out.jpg") as info:
        write_image(target, rgba)
    assert "png" in str(info.value)
    assert listing(tmp_path) == []

    rgba[0, 0, 3] = 255
    notices = write_image(target, rgba)
    assert any("alpha" in n for n in notices)
    with Image.open(target) as im:
        assert im.format == "JPEG" and im.mode == "RGB"


def test_jpeg_quality_changes_the_file(tmp_path: Path) -> None:
    pixels = read_image(BENCHMARK_PNGS[0]).pixels if BENCHMARK_PNGS else random_pixels(64, 64, 3)
    low, high = tmp_path / "low.jpg", tmp_path / "high.jpg"
    write_image(low, pixels, quality=40)
    write_image(high, pixels)
    assert low.stat().st_size < high.stat().st_size
    with pytest.raises(InputError, match="x.jpg"):
        write_image(tmp_path / "x.jpg", pixels, quality=0)


def test_explicit_format_overrides_extension(tmp_path: Path) -> None:
    path = tmp_path / "named.png"
    write_image(path, random_pixels(4, 4, 3), format="jpg")
    assert path.read_bytes()[:3] == b"\xff\xd8\xff"
    with pytest.raises(InputError, match="named.gif"):
        write_image(tmp_path / "named.gif", random_pixels(4, 4, 3))


# --------------------------------------------------------------------------------------------------
# Bad input


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(InputError, match="folder.png"):
        read_image(folder)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty.png"):
        read_image(path)


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(InputError, match="notes.png.*not an image"):
        read_image(path)


def test_unsupported_formats(tmp_path: Path) -> None:
    svg = tmp_path / "drawing.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>')
    with pytest.raises(InputError, match="drawing.svg"):
        read_image(svg)
    floats = tmp_path / "floats.tif"
    Image.fromarray(np.zeros((4, 4), dtype=np.float32)).save(floats)
    with pytest.raises(InputError, match="floats.tif.*floating-point"):
        read_image(floats)


def encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def source_pixels() -> np.ndarray:
    return read_image(BENCHMARK_PNGS[0]).pixels if BENCHMARK_PNGS else random_pixels(96, 96, 3)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_files(tmp_path: Path, fmt: str, keep: float) -> None:
    data = encoded(source_pixels(), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match=f"cut.{fmt.lower()}"):
        read_image(path)


def test_truncated_file_is_refused_even_if_pillow_is_told_to_allow_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = encoded(source_pixels(), "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.png"):
        read_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_truncated_16bit_png(tmp_path: Path) -> None:
    path = tmp_path / "rgb16.png"
    write_image(path, random_pixels(64, 64, 3, np.uint16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="rgb16.png"):
        read_image(path)


def test_header_only_png(tmp_path: Path) -> None:
    path = tmp_path / "stub.png"
    path.write_bytes(encoded(random_pixels(8, 8, 3), "PNG")[:40])
    with pytest.raises(InputError, match="stub.png.*truncated or corrupt"):
        read_image(path)


def test_corrupt_png_data(tmp_path: Path) -> None:
    data = bytearray(encoded(source_pixels(), "PNG"))
    middle = len(data) // 2
    data[middle : middle + 64] = b"\xff" * 64
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt.png"):
        read_image(path)


# --------------------------------------------------------------------------------------------------
# Decompression-bomb limit


def test_pixel_limit_refuses_large_image(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.fromarray(random_pixels(20, 30, 3)).save(path)
    with pytest.raises(InputError) as info:
        read_image(path, max_pixels=599)
    message = str(info.value)
    assert "big.png" in message and "30x20" in message and "--max-pixels" in message
    assert "\n" not in message
    assert read_image(path, max_pixels=600).pixels.shape == (20, 30, 3)


def test_no_limit_overrides_pillows_own_bomb_check(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "big.png"
    Image.fromarray(random_pixels(20, 30, 3)).save(path)
    # 600 pixels is more than twice this limit: Pillow alone would raise DecompressionBombError.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path, max_pixels=None).pixels.shape == (20, 30, 3)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # warning range for Pillow
        assert read_image(path, max_pixels=1000).pixels.shape == (20, 30, 3)
    assert Image.MAX_IMAGE_PIXELS == 500
    with pytest.raises(InputError, match="big.png"):
        read_image(path, max_pixels=10)


def test_default_limit() -> None:
    assert DEFAULT_MAX_PIXELS == 64_000_000


# --------------------------------------------------------------------------------------------------
# Atomic writes


def test_write_into_missing_folder_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "out.png"
    with pytest.raises(InputError, match="out.png"):
        write_image(target, random_pixels(4, 4, 3))
    assert listing(tmp_path) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_write_into_read_only_folder_leaves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(InputError, match="out.png"):
            write_image(folder / "out.png", random_pixels(4, 4, 3))
        assert listing(folder) == []
    finally:
        folder.chmod(0o755)


def test_wrong_pixels_leave_existing_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"previous contents")
    with pytest.raises(ValueError):
        write_image(target, np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        write_image(target, np.zeros((4, 4, 5), dtype=np.uint8))
    assert target.read_bytes() == b"previous contents"
    assert listing(tmp_path) == ["out.png"]


def test_target_that_is_a_folder(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.mkdir()
    with pytest.raises(InputError, match="out.png"):
        write_image(target, random_pixels(4, 4, 3))
    assert target.is_dir()
    assert listing(tmp_path) == ["out.png"]


def test_oversized_webp_is_refused_before_writing(tmp_path: Path) -> None:
    pixels = np.zeros((1, 16384, 3), dtype=np.uint8)
    with pytest.raises(InputError, match="wide.webp"):
        write_image(tmp_path / "wide.webp", pixels)
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# Extensions


def test_image_extensions() -> None:
    assert {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"} <= IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)


@pytest.mark.parametrize(
    ("fmt", "source", "expected"),
    [
        ("png", "a.jpg", ".png"),
        ("jpg", "a.png", ".jpg"),
        ("JPEG", "a.png", ".jpeg"),
        ("webp", "a.png", ".webp"),
        ("tiff", "a.png", ".tiff"),
        ("same", "a.PNG", ".png"),
        ("same", "a.TIF", ".tif"),
        ("same", "a.jpeg", ".jpeg"),
        ("same", "a.bmp", ".png"),
        ("same", "a.gif", ".png"),
    ],
)
def test_output_extension(fmt: str, source: str, expected: str) -> None:
    assert output_extension(fmt, Path(source)) == expected


def test_output_extension_rejects_unknown_format() -> None:
    with pytest.raises(InputError, match="photo.png"):
        output_extension("gif", Path("photo.png"))
