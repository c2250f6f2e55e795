"""How were these frames down-scaled? Estimating the degradation from low-resolution frames alone.

``drn adapt``'s closed loop can only teach the primal network what the dual model knows about the
real degradation, and the unpaired loop itself does not teach the dual that (``benchmarks/adapt.py``
measured it). So before adapting, the degradation is estimated from the user's LR frames and the
dual blocks are fitted to it.

The estimate rests on the scale invariance of natural images: if frames ``x`` were made from
sharper images by an operator ``K``, then ``K(x)`` (the frames down-scaled once more the same way)
looks as sharp, relative to its own pixel grid, as ``x`` does. Sharpness is measured on luma as
``log(sum |Laplacian|^2 / sum |gradient|^2)``, pooled over the frames: for a scale-invariant image
this does not depend on the scale, only on how much the down-scaler attenuates and aliases the
frequencies near the Nyquist limit. Every candidate ``K`` is scored by how far the sharpness of
``K(x)`` lies from that of ``x``; the closest wins. Frames too small to be down-scaled by the full
scale once more (x8 frames under 64 pixels) are down-scaled by a smaller power of two, with the
Gaussian that keeps the same self-similarity.

Candidates: MATLAB's bicubic (what the models were trained on, and what their dual blocks imitate),
and a Gaussian blur of standard deviation ``sigma`` (in input pixels) followed by decimation,
``sigma`` on a grid from 0 (point sampling) upwards. Bicubic is kept unless a Gaussian candidate
matches clearly better (by ``margin``): data that look like bicubic keep the pretrained duals.

The sampling phase (which input pixel an output pixel sits on) cannot be told from LR data: a
shifted image is as natural as the original. Every candidate therefore samples on bicubic's
centred grid, output pixel ``i`` at input position ``s * i + (s - 1) / 2``, the grid the models
were trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .bicubic import imresize
from .errors import InputError
from .metrics import rgb_to_y

__all__ = [
    "BICUBIC",
    "Degradation",
    "DegradationEstimate",
    "estimate_degradation",
    "gaussian_downscale",
    "parse_degradation",
]

#: Gaussian widths tried by :func:`estimate_degradation`, in input pixels per unit of scale
#: (x4: 0, 0.2, ..., 4 pixels; bicubic's kernel is as wide as the scale, too).
SIGMA_STEPS = tuple(round(0.05 * i, 2) for i in range(21))
#: A Gaussian candidate must match this much better than bicubic to replace it.
MARGIN = 0.1
#: The sharpness measure needs this many pixels on the re-down-scaled side (so frames need at least
#: this times the re-down-scaling factor, which is the scale or a smaller power of two down to 2).
_MIN_OUT_SIDE = 8
#: Frames are centre-cropped to at most this side before measuring (enough statistics, bounded cost).
_MAX_SIDE = 512
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)


@dataclass(frozen=True)
class Degradation:
    """A down-scaling operator: MATLAB bicubic, or a centred Gaussian blur followed by decimation."""

    kind: str  # "bicubic" or "blur"
    #: Standard deviation of the Gaussian in input pixels ("blur" only; 0: point sampling).
    sigma: float = 0.0

    def __str__(self) -> str:
        return "bicubic" if self.kind == "bicubic" else f"blur:{self.sigma:g}"

    def describe(self, scale: int) -> str:
        """Words for a note: what the operator does at ``scale``."""
        if self.kind == "bicubic":
            return f"MATLAB bicubic x{scale} down-scaling"
        blur = "no blur (point sampling)" if self.sigma == 0 else f"Gaussian blur sigma {self.sigma:g} px"
        return f"{blur}, then x{scale} decimation"

    def apply(self, images: torch.Tensor, scale: int) -> torch.Tensor:
        """Down-scale N x C x H x W ``images`` by ``scale`` (sides are cut to multiples of it)."""
        if self.kind == "bicubic":
            h, w = images.shape[-2] // scale * scale, images.shape[-1] // scale * scale
            return imresize(images[..., :h, :w], scale=1.0 / scale)
        return gaussian_downscale(images, scale, self.sigma)


BICUBIC = Degradation("bicubic")


def parse_degradation(text: str) -> str | Degradation:
    """``"auto"`` and ``"model"`` as they are; ``"bicubic"`` and ``"blur:SIGMA"`` as a :class:`Degradation`.

    Raises :class:`InputError` for anything else.
    """
    value = text.strip().lower()
    if value in ("auto", "model"):
        return value
    if value == "bicubic":
        return BICUBIC
    if value.startswith("blur:"):
        try:
            sigma = float(value[len("blur:") :])
        except ValueError:
            sigma = math.nan
        if math.isfinite(sigma) and 0 <= sigma <= 10:
            return Degradation("blur", sigma)
    raise InputError(f"unknown degradation {text!r}: use auto, model, bicubic or blur:SIGMA (SIGMA 0..10 pixels)")


def _gaussian_taps(sigma: float, phase: float) -> tuple[torch.Tensor, int]:
    """1-D weights ``w`` and first offset ``lo``: output ``i`` is ``sum_k w[k] * x[s * i + lo + k]``."""
    if sigma == 0:
        lo = math.floor(phase)
        frac = phase - lo
        # Point sampling at a half-pixel position is the mean of the two pixels around it.
        weights = [1.0] if frac == 0 else [1.0 - frac, frac]
        return torch.tensor(weights, dtype=torch.float64), lo
    radius = math.ceil(3 * sigma)
    lo, hi = math.floor(phase - radius), math.ceil(phase + radius)
    positions = torch.arange(lo, hi + 1, dtype=torch.float64)
    weights = torch.exp(-((positions - phase) ** 2) / (2 * sigma**2))
    return weights / weights.sum(), lo


def gaussian_downscale(images: torch.Tensor, scale: int, sigma: float) -> torch.Tensor:
    """Gaussian blur (``sigma`` input pixels; 0: none) then ``scale``-fold decimation on the centred grid.

    Output pixel ``i`` is the blurred input at ``scale * i + (scale - 1) / 2``; borders are mirrored
    (repeated, for an image narrower than the kernel).
    ``images`` is N x C x H x W; the output is N x C x (H // scale) x (W // scale), same dtype.
    """
    weights, lo = _gaussian_taps(sigma, (scale - 1) / 2)
    n, c, h, w = images.shape
    out_h, out_w = h // scale, w // scale
    taps = len(weights)
    before, after = max(0, -lo), max(0, lo + taps - scale)
    # Mirroring needs the image to be wider than the padding; narrower ones repeat their edge pixels.
    mode = "reflect" if max(before, after) < min(h, w) else "replicate"
    padded = F.pad(images, (before, after, before, after), mode=mode) if before or after else images
    start = lo + before
    padded = padded[..., start:, start:]
    kernel = weights.to(images.dtype).to(images.device)
    rows = F.conv2d(padded, kernel.view(1, 1, 1, taps).expand(c, 1, 1, taps), stride=(1, scale), groups=c)
    out = F.conv2d(rows[..., :out_w], kernel.view(1, 1, taps, 1).expand(c, 1, taps, 1), stride=(scale, 1), groups=c)
    return out[..., :out_h, :]


def _luma(frame: np.ndarray) -> torch.Tensor:
    """A centre crop (at most ``_MAX_SIDE``) of a uint8 RGB frame as a 1 x 1 x H x W float64 luma tensor."""
    h, w = frame.shape[:2]
    top, left = max(0, (h - _MAX_SIDE) // 2), max(0, (w - _MAX_SIDE) // 2)
    return torch.from_numpy(rgb_to_y(frame[top : top + _MAX_SIDE, left : left + _MAX_SIDE, :3]))[None, None]


def _energies(image: torch.Tensor) -> tuple[float, float]:
    """Sum of squared Laplacian and of squared gradient over the interior of a 1 x 1 x H x W image."""
    lap = F.conv2d(image, _LAPLACIAN.view(1, 1, 3, 3))  # valid: the rows/columns 1..-2
    dx = image[..., 1:-1, 1:] - image[..., 1:-1, :-1]
    dy = image[..., 1:, 1:-1] - image[..., :-1, 1:-1]
    return float((lap**2).sum()), float((dx**2).sum() + (dy**2).sum())


def _sharpness(images: Sequence[torch.Tensor]) -> float:
    lap = grad = 0.0
    for image in images:
        a, b = _energies(image)
        lap, grad = lap + a, grad + b
    if grad <= 0:
        return math.nan
    return math.log(max(lap, 1e-12) / grad)


def _factor(frames: Sequence[np.ndarray], scale: int) -> int:
    """The re-down-scaling factor: ``scale``, or the largest smaller power of two some frame allows (0: none)."""
    largest = max((min(f.shape[:2]) for f in frames), default=0)
    factor = scale
    while factor >= 2:
        if largest >= _MIN_OUT_SIDE * factor:
            return factor
        factor //= 2
    return 0


def _at_factor(candidate: Degradation, scale: int, factor: int) -> Degradation:
    """The candidate as applied at a re-down-scaling ``factor`` smaller than ``scale``.

    Frames blurred by sigma then decimated by ``scale`` carry a blur of ``sigma / scale`` of their own
    pixels; re-down-scaling by ``factor`` keeps that self-similar for a Gaussian of
    ``sigma / scale * sqrt(factor**2 - 1)``. Bicubic stays bicubic (its kernel scales with the factor).
    """
    if factor == scale or candidate.kind == "bicubic":
        return candidate
    return Degradation("blur", candidate.sigma / scale * math.sqrt(factor**2 - 1))


@dataclass(frozen=True)
class DegradationEstimate:
    """The result of :func:`estimate_degradation`."""

    degradation: Degradation
    #: How far each candidate's re-down-scaled sharpness lies from the frames' own (lower: closer).
    mismatch: dict[str, float]
    frames_used: int
    #: The chosen blur is the widest tried: the frames may be blurrier still (e.g. already upscaled).
    at_widest: bool = False
    #: The factor the frames were re-down-scaled by: the scale, or less for frames too small for it.
    factor: int = 0

    def describe(self, scale: int) -> str:
        """One line for the run's notes."""
        best_blur = min((k for k in self.mismatch if k != "bicubic"), key=self.mismatch.__getitem__)
        widest = "; the widest blur tried, the frames may be blurrier still" if self.at_widest else ""
        factor = f" re-down-scaled x{self.factor} (too small for x{scale})" if 0 < self.factor < scale else ""
        return (
            f"estimated from {self.frames_used} frame(s){factor}: {self.degradation.describe(scale)} "
            f"(sharpness mismatch {self.mismatch[str(self.degradation)]:.3f}; bicubic {self.mismatch['bicubic']:.3f}, "
            f"best blur {best_blur} {self.mismatch[best_blur]:.3f}{widest})"
        )


def estimate_degradation(
    frames: Sequence[np.ndarray],
    scale: int,
    *,
    sigmas: Sequence[float] | None = None,
    margin: float = MARGIN,
    max_frames: int = 64,
) -> DegradationEstimate:
    """Estimate how uint8 RGB ``frames`` were down-scaled by ``scale`` (see the module docstring).

    ``sigmas``: the Gaussian widths to try (default ``SIGMA_STEPS`` times ``scale``). The frames are
    re-down-scaled by ``scale`` when some are at least 8 x ``scale`` pixels on their shorter side,
    else by the largest power of two that allows (see :func:`_at_factor`); up to ``max_frames`` of
    the frames large enough (spread evenly) are used, centre-cropped to 512 pixels. Returns bicubic unless a Gaussian
    candidate's mismatch is lower by more than ``margin``. Raises :class:`InputError` when no frame
    is large enough or the frames are flat.
    """
    factor = _factor(frames, scale)
    if factor == 0:
        raise InputError(f"no frame is large enough to estimate the degradation (need {_MIN_OUT_SIDE * 2} pixels)")
    usable = [f for f in frames if min(f.shape[:2]) >= _MIN_OUT_SIDE * factor]
    if len(usable) > max_frames:
        usable = [usable[int(i)] for i in np.linspace(0, len(usable) - 1, max_frames)]
    lumas = [_luma(f) for f in usable]
    own = _sharpness(lumas)
    if not math.isfinite(own):
        raise InputError("the frames are flat (no edges), so their degradation cannot be estimated")
    if sigmas is None:
        sigmas = [round(step * scale, 2) for step in SIGMA_STEPS]
    candidates = [BICUBIC, *(Degradation("blur", float(s)) for s in sigmas)]
    mismatch = {
        str(c): abs(_sharpness([_at_factor(c, scale, factor).apply(y, factor) for y in lumas]) - own)
        for c in candidates
    }
    mismatch = {k: (v if math.isfinite(v) else math.inf) for k, v in mismatch.items()}
    best = min(candidates[1:], key=lambda c: mismatch[str(c)])
    chosen = best if mismatch[str(best)] + margin < mismatch["bicubic"] else BICUBIC
    at_widest = chosen.kind == "blur" and chosen.sigma == max(sigmas)
    return DegradationEstimate(chosen, mismatch, len(usable), at_widest, factor)
