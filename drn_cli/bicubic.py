"""MATLAB-compatible bicubic resizing (``imresize(img, scale, 'bicubic')``) in torch.

Super-resolution benchmarks make their low-resolution inputs with MATLAB's ``imresize``, and the
papers report the bicubic baseline with it too, so matching it matters for comparable numbers.
What MATLAB does, and what is reproduced here:

* Keys' cubic kernel with ``a = -0.5``, support 4 pixels.
* When shrinking (``scale < 1``) the kernel is stretched by ``1 / scale`` (and scaled down by
  ``scale``), which low-pass filters the image (antialiasing).
* Output pixel ``x`` (1-based) samples input coordinate ``u = x / scale + 0.5 * (1 - 1 / scale)``.
* Pixels outside the image are taken by mirroring (``1 2 3 ... n n ... 3 2 1``), the edge pixel
  repeated, and every output pixel's weights are normalised to sum to one.
* With a scale factor the output size is ``ceil(in * scale)``; with a target size the scale of
  each axis is ``out / in``.

The resize is separable; each axis becomes a small dense matrix (cached per size, dtype and device)
that is applied with a matrix product, so it is differentiable and runs on any device. Long axes
are done block by block, each block of output pixels multiplying only the input pixels it uses.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

__all__ = [
    "bicubic_downscale",
    "bicubic_upscale",
    "imresize",
    "imresize_uint8",
    "output_size",
    "resize_weights",
]

# Axes longer than this are resized block by block (the weight matrix is banded); shorter ones
# use one dense product, which is faster when most of the matrix is within the band anyway.
_DENSE_MAX_INPUT = 1024
# Input pixels per block of the banded path (the block's output rows cover about this many).
_BAND_INPUT = 256


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, as in MATLAB's ``imresize``."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def _contributions(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Return MATLAB's (indices, weights) for one axis, each ``out_len x taps``, 0-based indices."""
    width = 4.0
    if scale < 1:
        width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based, may leave the image
    dist = u[:, None] - idx
    weights = scale * _cubic(scale * dist) if scale < 1 else _cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric padding: map 1-based positions onto 1..n n..1, periodic with period 2n.
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx0 = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    return idx0, weights


def output_size(in_len: int, scale: float) -> int:
    """MATLAB's output length ``ceil(in_len * scale)``, robust to float noise such as ``510 * (1/3)``."""
    exact = in_len * scale
    nearest = round(exact)
    if abs(exact - nearest) < 1e-9 * max(1.0, abs(exact)):
        return int(nearest)
    return int(math.ceil(exact))


def resize_weights(in_len: int, out_len: int, scale: float | None = None) -> np.ndarray:
    """Dense ``out_len x in_len`` float64 matrix that resizes one axis exactly as MATLAB does.

    ``scale`` defaults to ``out_len / in_len`` (MATLAB's behaviour when a size is given).
    """
    if scale is None:
        scale = out_len / in_len
    idx, w = _contributions(in_len, out_len, scale)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), idx.shape[1])
    np.add.at(mat, (rows, idx.ravel()), w.ravel())
    return mat


@functools.lru_cache(maxsize=128)
def _dense_cached(in_len: int, out_len: int, scale: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # Built outside inference mode: a cached inference tensor could not be used later for training.
    with torch.inference_mode(False):
        return torch.from_numpy(resize_weights(in_len, out_len, scale)).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=128)
def _banded_cached(
    in_len: int, out_len: int, scale: float, dtype: torch.dtype, device: torch.device
) -> tuple[tuple[int, int, int, int, torch.Tensor], ...]:
    """Cut the weight matrix into row blocks, each with only the input columns it touches.

    Returns ``(out_start, out_stop, in_start, in_stop, block)`` tuples; the blocks tile the output.
    """
    mat = resize_weights(in_len, out_len, scale)
    rows = max(16, round(_BAND_INPUT * scale))
    blocks = []
    with torch.inference_mode(False):
        for o0 in range(0, out_len, rows):
            o1 = min(out_len, o0 + rows)
            cols = np.nonzero(np.any(mat[o0:o1] != 0, axis=0))[0]
            i0, i1 = int(cols[0]), int(cols[-1]) + 1
            block = torch.from_numpy(np.ascontiguousarray(mat[o0:o1, i0:i1])).to(device=device, dtype=dtype)
            blocks.append((o0, o1, i0, i1, block))
    return tuple(blocks)


def _resize_axis(x: torch.Tensor, dim: int, out_len: int, scale: float) -> torch.Tensor:
    """Resize ``x`` (N x C x H x W) along ``dim`` (2 or 3)."""
    in_len = x.shape[dim]
    if in_len == out_len and scale == 1.0:
        return x
    if in_len <= _DENSE_MAX_INPUT:
        mat = _dense_cached(in_len, out_len, scale, x.dtype, x.device)
        return torch.matmul(mat, x) if dim == 2 else torch.matmul(x, mat.t())
    # Long axis: the matrix is banded, so multiply each block of output rows by its input window.
    parts = []
    for _o0, _o1, i0, i1, block in _banded_cached(in_len, out_len, scale, x.dtype, x.device):
        window = x.narrow(dim, i0, i1 - i0)
        parts.append(torch.matmul(block, window) if dim == 2 else torch.matmul(window, block.t()))
    return torch.cat(parts, dim=dim)


def imresize(img: torch.Tensor, scale: float | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Resize like MATLAB's ``imresize(img, scale, 'bicubic')`` (or ``imresize(img, size, ...)``).

    Args:
        img: ``N x C x H x W`` or ``C x H x W`` floating-point tensor (any value range).
        scale: a single factor for both axes; the output is ``ceil(H * scale) x ceil(W * scale)``.
        size: ``(out_h, out_w)``; used instead of ``scale`` (give exactly one of them).

    Returns:
        The resized tensor, same dtype, device and number of dimensions; not rounded or clamped.
        Gradients flow through it.
    """
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale and size")
    if not torch.is_floating_point(img):
        raise TypeError(f"imresize needs a floating-point tensor, got {img.dtype}")
    if img.dim() not in (3, 4):
        raise ValueError(f"imresize needs a C x H x W or N x C x H x W tensor, got shape {tuple(img.shape)}")
    squeeze = img.dim() == 3
    x = img.unsqueeze(0) if squeeze else img
    in_h, in_w = x.shape[-2:]
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        scale_h = scale_w = float(scale)
        out_h, out_w = output_size(in_h, scale_h), output_size(in_w, scale_w)
    else:
        out_h, out_w = int(size[0]), int(size[1])
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"size must be positive, got {size}")
        scale_h, scale_w = out_h / in_h, out_w / in_w
    if in_h == 0 or in_w == 0 or out_h == 0 or out_w == 0:
        raise ValueError(f"cannot resize an image of size {in_h}x{in_w} to {out_h}x{out_w}")
    # MATLAB resizes the axis with the smaller scale first; for floats the order only changes
    # rounding noise, but doing the shrinking axis first is also the cheaper order.
    if scale_h <= scale_w:
        x = _resize_axis(x, 2, out_h, scale_h)
        x = _resize_axis(x, 3, out_w, scale_w)
    else:
        x = _resize_axis(x, 3, out_w, scale_w)
        x = _resize_axis(x, 2, out_h, scale_h)
    return x.squeeze(0) if squeeze else x


def bicubic_downscale(img: torch.Tensor, factor: int) -> torch.Tensor:
    """MATLAB ``imresize(img, 1/factor, 'bicubic')``: output ``ceil(H / factor) x ceil(W / factor)``.

    Benchmarks crop the image to a multiple of ``factor`` first so that the output is exactly ``1/factor``.
    """
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    return imresize(img, scale=1.0 / factor)


def bicubic_upscale(img: torch.Tensor, factor: int) -> torch.Tensor:
    """MATLAB ``imresize(img, factor, 'bicubic')``: output ``factor*H x factor*W``."""
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    return imresize(img, scale=float(factor))


def _round_uint8(x: np.ndarray) -> np.ndarray:
    """MATLAB's conversion of doubles to uint8: round half away from zero, saturate to 0..255."""
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def imresize_uint8(img: np.ndarray, scale: float | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """``imresize`` of a uint8 ``H x W`` or ``H x W x C`` array, bit-compatible in intent with MATLAB.

    MATLAB resizes a uint8 image one axis at a time and stores each pass as uint8, so the result
    is rounded (half away from zero) after the first axis as well as at the end; this does the same.
    """
    if img.dtype != np.uint8:
        raise TypeError(f"imresize_uint8 needs a uint8 array, got {img.dtype}")
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize_uint8 needs an H x W or H x W x C array, got shape {img.shape}")
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale and size")
    in_h, in_w = img.shape[:2]
    if scale is not None:
        scale_h = scale_w = float(scale)
        out_h, out_w = output_size(in_h, scale_h), output_size(in_w, scale_w)
    else:
        out_h, out_w = int(size[0]), int(size[1])
        scale_h, scale_w = out_h / in_h, out_w / in_w
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float64))
    x = x[None, None] if img.ndim == 2 else x.permute(2, 0, 1)[None]
    x = x.contiguous()

    def rounded(t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(_round_uint8(t.numpy()).astype(np.float64))

    if scale_h <= scale_w:
        x = rounded(_resize_axis(x, 2, out_h, scale_h))
        x = rounded(_resize_axis(x, 3, out_w, scale_w))
    else:
        x = rounded(_resize_axis(x, 3, out_w, scale_w))
        x = rounded(_resize_axis(x, 2, out_h, scale_h))
    out = x[0, 0] if img.ndim == 2 else x[0].permute(1, 2, 0)
    return np.ascontiguousarray(out.numpy().astype(np.uint8))
