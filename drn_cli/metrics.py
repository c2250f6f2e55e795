"""PSNR and SSIM with the conventions of the super-resolution literature (and the DRN paper).

* Only the luma channel is compared: Y of ITU-R BT.601 as MATLAB's ``rgb2ycbcr`` computes it,
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` for ``R, G, B`` in ``0..255``. Y is kept in
  float64 and not rounded. A greyscale (``H x W``) image is taken as ``R = G = B``.
* A border of ``shave`` pixels (the scale factor, by convention) is removed on every side first.
* The data range is 255: ``PSNR = 10 log10(255^2 / MSE)``; identical images give ``inf``.
* SSIM follows Wang et al. (2004) ``ssim_index.m``: an 11 x 11 Gaussian window with sigma 1.5,
  ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``, 'valid' filtering (no padding, no downsampling), and
  the mean of the SSIM map.

Inputs are uint8 ``H x W x 3`` RGB arrays (or uint8 ``H x W`` greyscale) of the same shape.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["gaussian_window", "psnr_y", "rgb_to_y", "ssim_y"]

_Y_COEFFS = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Return the float64 BT.601 luma (16..235 for 0..255 input) of a uint8 RGB or greyscale image."""
    arr = np.asarray(img)
    if arr.ndim == 2:
        return 16.0 + arr.astype(np.float64) * _Y_COEFFS.sum()
    if arr.ndim == 3 and arr.shape[2] == 3:
        return 16.0 + arr.astype(np.float64) @ _Y_COEFFS
    raise ValueError(f"expected an H x W or H x W x 3 image, got shape {arr.shape}")


def _prepare(sr: np.ndarray, hr: np.ndarray, shave: int) -> tuple[np.ndarray, np.ndarray]:
    sr, hr = np.asarray(sr), np.asarray(hr)
    if sr.shape != hr.shape:
        raise ValueError(f"images differ in shape: {sr.shape} vs {hr.shape}")
    if shave < 0:
        raise ValueError(f"shave must be >= 0, got {shave}")
    y_sr, y_hr = rgb_to_y(sr), rgb_to_y(hr)
    if shave:
        y_sr = y_sr[shave:-shave, shave:-shave]
        y_hr = y_hr[shave:-shave, shave:-shave]
    if y_sr.size == 0:
        raise ValueError(f"image of shape {sr.shape} has nothing left after shaving {shave} pixels")
    return y_sr, y_hr


def psnr_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """PSNR in dB between the Y channels of ``sr`` and ``hr`` after removing ``shave`` border pixels."""
    y_sr, y_hr = _prepare(sr, hr, shave)
    mse = float(np.mean((y_sr - y_hr) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """1-D normalised Gaussian; its outer product is MATLAB's ``fspecial('gaussian', size, sigma)``."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a float64 image with ``outer(g, g)``."""
    half = len(g) // 2
    out = cv2.sepFilter2D(np.ascontiguousarray(img), cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)
    return out[half : img.shape[0] - half, half : img.shape[1] - half]


def ssim_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """Mean SSIM (Wang et al.) between the Y channels of ``sr`` and ``hr`` after shaving the border."""
    y_sr, y_hr = _prepare(sr, hr, shave)
    g = gaussian_window()
    if min(y_sr.shape) < len(g):
        raise ValueError(f"image of shape {y_sr.shape} after shaving is smaller than the SSIM window")
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    mu1 = _filter_valid(y_sr, g)
    mu2 = _filter_valid(y_hr, g)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = _filter_valid(y_sr * y_sr, g) - mu1_sq
    s2 = _filter_valid(y_hr * y_hr, g) - mu2_sq
    s12 = _filter_valid(y_sr * y_hr, g) - mu12
    ssim_map = ((2.0 * mu12 + c1) * (2.0 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())
