"""PSNR/SSIM on Y against direct per-pixel computations and closed-form values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drn_cli.metrics import psnr_y, rgb_to_y, ssim_y


def _y_pixel(r: int, g: int, b: int) -> float:
    return 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255


def _y_loop(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            px = img[i, j]
            out[i, j] = _y_pixel(int(px), int(px), int(px)) if img.ndim == 2 else _y_pixel(*map(int, px))
    return out


def _naive_psnr(a: np.ndarray, b: np.ndarray, shave: int) -> float:
    ya, yb = _y_loop(a), _y_loop(b)
    h, w = ya.shape
    total, n = 0.0, 0
    for i in range(shave, h - shave):
        for j in range(shave, w - shave):
            total += (ya[i, j] - yb[i, j]) ** 2
            n += 1
    return 10 * math.log10(255**2 / (total / n))


def _naive_ssim(a: np.ndarray, b: np.ndarray, shave: int) -> float:
    """Wang et al. SSIM with an explicit 11x11 Gaussian window slid over every 'valid' position."""
    ya, yb = _y_loop(a), _y_loop(b)
    if shave:
        ya, yb = ya[shave:-shave, shave:-shave], yb[shave:-shave, shave:-shave]
    k = np.array([[math.exp(-((i - 5) ** 2 + (j - 5) ** 2) / (2 * 1.5**2)) for j in range(11)] for i in range(11)])
    k /= k.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(ya.shape[0] - 10):
        for j in range(ya.shape[1] - 10):
            pa, pb = ya[i : i + 11, j : j + 11], yb[i : i + 11, j : j + 11]
            ma, mb = (k * pa).sum(), (k * pb).sum()
            va = (k * (pa - ma) ** 2).sum()
            vb = (k * (pb - mb) ** 2).sum()
            cov = (k * (pa - ma) * (pb - mb)).sum()
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    hr = rng.integers(0, 256, size=(26, 31, 3), dtype=np.uint8)
    noise = rng.integers(-20, 21, size=hr.shape)
    sr = np.clip(hr.astype(int) + noise, 0, 255).astype(np.uint8)
    return sr, hr


def test_y_known_values() -> None:
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_y(img)[0], [16, 235, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-12)


@pytest.mark.parametrize("shave", [0, 2, 4])
def test_psnr_matches_direct_computation(pair: tuple[np.ndarray, np.ndarray], shave: int) -> None:
    sr, hr = pair
    assert psnr_y(sr, hr, shave) == pytest.approx(_naive_psnr(sr, hr, shave), abs=1e-10)


@pytest.mark.parametrize("shave", [0, 3])
def test_ssim_matches_direct_computation(pair: tuple[np.ndarray, np.ndarray], shave: int) -> None:
    sr, hr = pair
    assert ssim_y(sr, hr, shave) == pytest.approx(_naive_ssim(sr, hr, shave), abs=1e-10)


def test_greyscale_input_matches_rgb(pair: tuple[np.ndarray, np.ndarray]) -> None:
    sr, hr = pair[0][:, :, 0], pair[1][:, :, 0]
    sr3, hr3 = np.repeat(sr[:, :, None], 3, axis=2), np.repeat(hr[:, :, None], 3, axis=2)
    assert psnr_y(sr, hr, 1) == pytest.approx(psnr_y(sr3, hr3, 1), abs=1e-12)
    assert ssim_y(sr, hr, 1) == pytest.approx(ssim_y(sr3, hr3, 1), abs=1e-12)
    assert psnr_y(sr, hr, 1) == pytest.approx(_naive_psnr(sr, hr, 1), abs=1e-10)


def test_identical_images() -> None:
    img = np.random.default_rng(1).integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
    assert psnr_y(img, img, 4) == math.inf
    assert ssim_y(img, img, 4) == pytest.approx(1.0, abs=1e-12)


def test_constant_offset_known_values() -> None:
    # Two flat grey images d levels apart: Y differs by d * 219 / 255 everywhere.
    a = np.full((30, 30, 3), 100, dtype=np.uint8)
    b = np.full((30, 30, 3), 110, dtype=np.uint8)
    dy = 10 * 219 / 255
    assert psnr_y(a, b, 4) == pytest.approx(20 * math.log10(255 / dy), abs=1e-10)
    # Flat images have no variance, so SSIM reduces to the luminance term.
    ya, yb = 16 + 100 * 219 / 255, 16 + 110 * 219 / 255
    c1 = (0.01 * 255) ** 2
    assert ssim_y(a, b, 4) == pytest.approx((2 * ya * yb + c1) / (ya**2 + yb**2 + c1), abs=1e-12)


def test_shave_removes_border_errors() -> None:
    hr = np.full((20, 20, 3), 50, dtype=np.uint8)
    sr = hr.copy()
    sr[:3] = 200  # damage only the top 3 rows
    assert psnr_y(sr, hr, 3) == math.inf
    assert psnr_y(sr, hr, 2) < 30


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        psnr_y(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 11, 3), np.uint8), 0)
    with pytest.raises(ValueError):
        ssim_y(np.zeros((12, 12, 3), np.uint8), np.zeros((12, 12, 3), np.uint8), 2)  # 8x8 < window
