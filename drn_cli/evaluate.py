"""Benchmark a super-resolution model (or the bicubic baseline) on an evaluation data set.

The protocol is the DRN paper's: the model gets the LR image as float32 in ``0..255``; its output
is clamped to ``0..255`` and rounded to uint8; the HR is cropped to ``LR * scale``; PSNR and SSIM
are measured on the Y channel with a border of ``scale`` pixels removed (see :mod:`drn_cli.metrics`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_path
from .bicubic import imresize
from .datasets import EvalDataset, load_eval_dataset
from .errors import InputError
from .metrics import psnr_y, ssim_y

__all__ = ["EvalResult", "ImageResult", "evaluate", "to_uint8"]


@dataclass
class ImageResult:
    """Scores for one image."""

    name: str
    psnr: float
    ssim: float
    seconds: float  # time spent in the model (or bicubic) for this image
    height: int  # of the HR image the SR was compared with
    width: int


@dataclass
class EvalResult:
    """Mean scores of one model on one data set at one scale, with the per-image results."""

    dataset: str
    scale: int
    model: str
    images: int
    psnr: float
    ssim: float
    seconds: float  # wall time of the whole evaluation, loading and scoring included
    per_image: list[ImageResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; a non-finite PSNR (identical images) becomes ``None``."""
        out = asdict(self)
        for rec in [out, *out["per_image"]]:
            for key in ("psnr", "ssim"):
                if not math.isfinite(rec[key]):
                    rec[key] = None
        return out


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """Turn a ``3 x H x W`` (or ``1 x 3 x H x W``) float tensor in 0..255 into a uint8 ``H x W x 3`` array.

    Values are clamped to 0..255 and rounded half to even (``torch.round``), as the PyTorch SR code bases do.
    """
    if t.dim() == 4:
        t = t[0]
    return t.detach().clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _model_device(model: torch.nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def evaluate(
    dataset: Path | EvalDataset,
    scale: int,
    model: torch.nn.Module | str,
    *,
    model_name: str | None = None,
    device: str | torch.device | None = None,
    save_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Super-resolve every LR image of ``dataset`` and score it against its HR.

    Args:
        dataset: a data set folder (see :func:`drn_cli.datasets.load_eval_dataset`) or a loaded one.
        scale: the upscaling factor; must match a loaded ``dataset``'s scale.
        model: a module mapping N x 3 x h x w float32 in 0..255 to N x 3 x sh x sw, or ``"bicubic"``
            for the MATLAB-compatible bicubic baseline.
        model_name: name recorded in the result (default: ``"bicubic"`` or the module's class name).
        device: where to run; a module is moved there. Default: the module's own device (CPU for bicubic).
        save_dir: if given, each SR image is written atomically as ``<save_dir>/<name>_x<scale>.png``.
        progress: called as ``progress(done, total)`` after each image.

    Returns:
        The mean PSNR/SSIM over the images and the per-image scores.

    Raises:
        InputError: bad data set, unusable ``save_dir``, or a model output of the wrong size.
    """
    ds = dataset if isinstance(dataset, EvalDataset) else load_eval_dataset(Path(dataset), scale)
    if ds.scale != scale:
        raise InputError(f"Dataset {ds.root} was loaded for x{ds.scale} but evaluation asked for x{scale}.")
    is_bicubic = isinstance(model, str)
    if is_bicubic and model != "bicubic":
        raise InputError(f"Unknown model {model!r} for evaluating {ds.root}; give a network or 'bicubic'.")
    name = model_name or ("bicubic" if is_bicubic else type(model).__name__)

    if device is not None:
        dev = torch.device(device)
    elif is_bicubic:
        dev = torch.device("cpu")
    else:
        dev = _model_device(model)

    if save_dir is not None:
        save_dir = Path(save_dir)
        if save_dir.exists() and not save_dir.is_dir():
            raise InputError(f"Output path {save_dir} exists and is not a folder.")
        try:
            save_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"Output folder {save_dir} cannot be created ({exc}).") from exc

    was_training = False
    if not is_bicubic:
        was_training = model.training
        model.to(dev)
        model.eval()

    start = time.perf_counter()
    results: list[ImageResult] = []
    total = len(ds.samples)
    try:
        with torch.inference_mode():
            for done, sample in enumerate(ds.samples, start=1):
                lr, hr = sample.load()
                x = torch.from_numpy(lr).to(dev).permute(2, 0, 1)[None].float()
                t0 = time.perf_counter()
                y = imresize(x, scale=float(scale)) if is_bicubic else model(x)
                if isinstance(y, (list, tuple)):  # multi-output networks: the last is the final SR
                    y = y[-1]
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                seconds = time.perf_counter() - t0
                want = (1, 3, hr.shape[0], hr.shape[1])
                if tuple(y.shape) != want:
                    raise InputError(
                        f"Model {name} turned {sample.lr_path or sample.hr_path} into a tensor of shape "
                        f"{tuple(y.shape)} where x{scale} needs {want}."
                    )
                sr = to_uint8(y)
                results.append(
                    ImageResult(
                        name=sample.name,
                        psnr=psnr_y(sr, hr, scale),
                        ssim=ssim_y(sr, hr, scale),
                        seconds=seconds,
                        height=hr.shape[0],
                        width=hr.shape[1],
                    )
                )
                if save_dir is not None:
                    target = save_dir / f"{sample.name}_x{scale}.png"
                    with atomic_path(target) as tmp:
                        Image.fromarray(sr).save(tmp, format="PNG")
                if progress is not None:
                    progress(done, total)
    finally:
        if not is_bicubic and was_training:
            model.train()

    return EvalResult(
        dataset=ds.name,
        scale=scale,
        model=name,
        images=len(results),
        psnr=float(np.mean([r.psnr for r in results])) if results else math.nan,
        ssim=float(np.mean([r.ssim for r in results])) if results else math.nan,
        seconds=time.perf_counter() - start,
        per_image=results,
    )
