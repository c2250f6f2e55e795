"""Estimating the degradation of LR frames (``drn_cli.degradation``) on real images with known degradations.

The LR sets are made here from the Set14 HR images with independent code (array slicing,
OpenCV's Gaussian blur, our MATLAB-exact bicubic), so the estimator is checked against the
degradation that really made them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from drn_cli.bicubic import imresize_uint8
from drn_cli.datasets import list_images, read_rgb
from drn_cli.degradation import BICUBIC, Degradation, estimate_degradation, gaussian_downscale, parse_degradation
from drn_cli.errors import InputError

from .conftest import SHARED

SET14_HR = SHARED / "data" / "benchmark" / "Set14" / "HR"


@pytest.fixture(scope="module")
def set14_hr() -> list[np.ndarray]:
    images = [read_rgb(p) for p in list_images(Path(SET14_HR))]
    return [im[: im.shape[0] // 4 * 4, : im.shape[1] // 4 * 4] for im in images]


def _opencv_blur_decimate(hr: np.ndarray, sigma: float, scale: int, phase: int) -> np.ndarray:
    blurred = cv2.GaussianBlur(hr.astype(np.float64), (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    return np.clip(np.round(blurred[phase::scale, phase::scale]), 0, 255).astype(np.uint8)


def test_gaussian_downscale_matches_opencv_on_an_odd_scale() -> None:
    # At scale 3 the centred grid falls on whole pixels (1, 4, 7, ...), where OpenCV can be compared directly.
    image = read_rgb(next(iter(list_images(Path(SET14_HR)))))[:99, :126].astype(np.float64)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None]
    for sigma in (0.8, 1.5):
        radius = int(np.ceil(3 * sigma))
        ref = cv2.GaussianBlur(image, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_REFLECT_101)
        ours = gaussian_downscale(tensor, 3, sigma)[0].permute(1, 2, 0).numpy()
        assert ours.shape == (33, 42, 3)
        np.testing.assert_allclose(ours, ref[1::3, 1::3], atol=1e-9)


def test_point_sampling_on_an_even_scale_is_the_mean_of_the_two_centre_pixels() -> None:
    image = torch.arange(64 * 48, dtype=torch.float64).reshape(1, 1, 48, 64) % 251
    out = gaussian_downscale(image, 4, 0.0)
    centre = image[..., 1::4, 1::4] + image[..., 2::4, 1::4] + image[..., 1::4, 2::4] + image[..., 2::4, 2::4]
    assert out.shape == (1, 1, 12, 16)
    torch.testing.assert_close(out, centre / 4)


def test_a_kernel_wider_than_the_image_still_works() -> None:
    image = torch.full((1, 3, 12, 12), 100.0)
    out = gaussian_downscale(image, 4, 5.0)  # radius 15 > 12 pixels: edges are repeated
    assert out.shape == (1, 3, 3, 3)
    torch.testing.assert_close(out, torch.full_like(out, 100.0))


def test_estimate_finds_point_sampling_in_nearest_neighbour_frames(set14_hr: list[np.ndarray]) -> None:
    estimate = estimate_degradation([hr[2::4, 2::4] for hr in set14_hr], 4)
    assert estimate.degradation.kind == "blur" and estimate.degradation.sigma <= 0.8
    assert estimate.frames_used == 14
    assert estimate.mismatch["bicubic"] > estimate.mismatch[str(estimate.degradation)] + 0.1


def test_estimate_keeps_bicubic_for_bicubic_frames(set14_hr: list[np.ndarray]) -> None:
    assert estimate_degradation([imresize_uint8(hr, scale=0.25) for hr in set14_hr], 4).degradation == BICUBIC


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]


def test_estimate_survives_jpeg_compression(set14_hr: list[np.ndarray]) -> None:
    # Footage is compressed: quality 75 JPEG must not turn bicubic into a blur or hide point sampling.
    bicubic = [imresize_uint8(hr, scale=0.25) for hr in set14_hr]
    assert estimate_degradation([_jpeg(f, 75) for f in bicubic], 4).degradation == BICUBIC
    nearest = estimate_degradation([_jpeg(np.ascontiguousarray(hr[2::4, 2::4]), 75) for hr in set14_hr], 4)
    assert nearest.degradation.kind == "blur" and nearest.degradation.sigma <= 0.8


@pytest.mark.parametrize("sigma", [2.4, 3.2])
def test_estimate_measures_the_width_of_a_gaussian_blur(set14_hr: list[np.ndarray], sigma: float) -> None:
    # Decimated at another phase than the estimator's own grid: the width does not depend on it.
    estimate = estimate_degradation([_opencv_blur_decimate(hr, sigma, 4, 2) for hr in set14_hr], 4)
    assert estimate.degradation.kind == "blur"
    assert abs(estimate.degradation.sigma - sigma) <= 0.4
    assert "then x4 decimation" in estimate.describe(4)
    assert not estimate.at_widest


def test_frames_too_small_for_the_scale_are_measured_at_a_smaller_factor(set14_hr: list[np.ndarray]) -> None:
    # x8 LR frames of at most 60 pixels cannot be down-scaled x8 once more (8 pixels left); x4 can.
    hr8 = [hr[: hr.shape[0] // 8 * 8, : hr.shape[1] // 8 * 8] for hr in set14_hr]
    blurred = estimate_degradation([_opencv_blur_decimate(hr, 1.6, 8, 4)[:60, :60] for hr in hr8], 8)
    assert blurred.factor == 4 and "re-down-scaled x4 (too small for x8)" in blurred.describe(8)
    assert blurred.degradation.kind == "blur" and abs(blurred.degradation.sigma - 1.6) <= 0.4
    nearest = estimate_degradation([np.ascontiguousarray(hr[4::8, 4::8][:60, :60]) for hr in hr8], 8)
    assert nearest.degradation.kind == "blur" and nearest.degradation.sigma <= 0.8


def test_frames_blurrier_than_every_candidate_are_flagged(set14_hr: list[np.ndarray]) -> None:
    estimate = estimate_degradation([_opencv_blur_decimate(hr, 3.2, 4, 2) for hr in set14_hr], 4, sigmas=[0, 1, 2])
    assert estimate.degradation == Degradation("blur", 2.0) and estimate.at_widest
    assert "the widest blur tried" in estimate.describe(4)


def test_estimate_refuses_frames_too_small_or_flat() -> None:
    with pytest.raises(InputError, match="large enough"):
        estimate_degradation([np.zeros((12, 30, 3), np.uint8)], 4)  # 16 pixels needed even at x2
    with pytest.raises(InputError, match="flat"):
        estimate_degradation([np.full((64, 64, 3), 77, np.uint8)], 4)


def test_parse_degradation() -> None:
    assert parse_degradation("auto") == "auto"
    assert parse_degradation("Model") == "model"
    assert parse_degradation("bicubic") == BICUBIC
    assert parse_degradation("blur:1.5") == Degradation("blur", 1.5)
    assert str(Degradation("blur", 0.0)) == "blur:0"
    for bad in ("sharp", "blur:", "blur:-1", "blur:nan", "blur:99"):
        with pytest.raises(InputError, match="unknown degradation"):
            parse_degradation(bad)
