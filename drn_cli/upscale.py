"""Upscaling images: the library behind ``drn upscale``.

* :func:`upscale` -- one PIL image or numpy array in, the upscaled one out (the Python API);
* :func:`upscale_pixels` -- the same on decoded pixels with any channel layout and bit depth;
* :func:`collect_inputs` / :func:`plan_outputs` / :func:`upscale_files` -- the batch job over files.

Pixels go through the model as float 0..255 in every case: 16-bit sources are divided by 257 and
multiplied back afterwards, so no precision is lost to an 8-bit round trip. Greyscale runs through
the model as three equal channels and comes back as one; alpha either runs through the model the
same way (default) or is interpolated with the MATLAB-compatible bicubic.
"""

from __future__ import annotations

import glob
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bicubic import imresize
from .engine import TileCallback, Upscaler
from .errors import DrnError, InputError
from .imagefile import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, read_image, write_image
from .loading import load_model

ALPHA_MODES = ("model", "bicubic")
MODEL_SCALES = (4, 8)


def model_scale_for(outscale: float, available: Iterable[int] = MODEL_SCALES) -> int:
    """The smallest model scale that reaches ``outscale`` (which is then reached by downscaling)."""
    if not math.isfinite(outscale) or outscale <= 0:
        raise DrnError(f"--outscale must be a positive number, got {outscale}")
    fitting = sorted(s for s in available if s >= outscale)
    if not fitting:
        raise DrnError(f"--outscale {outscale:g} is larger than the largest model scale ({max(available)})")
    return fitting[0]


def make_upscaler(
    model: str | Path = "drn-s",
    *,
    scale: int = 4,
    device: str | torch.device | None = None,
    precision: str = "auto",
    tile: int = 0,
    tta: bool = False,
    hub_repo: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Upscaler:
    """Load ``model`` (a built-in name or a file) and wrap it in an :class:`Upscaler`."""
    net = load_model(model, scale=scale, device="cpu", hub_repo=hub_repo, progress=progress)
    return Upscaler(net, device=device, precision=precision, tile=tile, tta=tta)


def _run_rgb(upscaler: Upscaler, rgb: np.ndarray, on_tile: TileCallback | None) -> np.ndarray:
    return upscaler.upscale_rgb(rgb, on_tile)


def _run_grey(upscaler: Upscaler, grey: np.ndarray, on_tile: TileCallback | None) -> np.ndarray:
    out = upscaler.upscale_rgb(np.repeat(grey[..., None], 3, axis=2), on_tile)
    return out.mean(axis=2)


def _bicubic(plane: np.ndarray, scale: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32))[None, None]
    return imresize(t, scale=scale)[0, 0].numpy()


def _resize_to(img: np.ndarray, height: int, width: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    return imresize(t.double(), size=(height, width))[0].permute(1, 2, 0).float().numpy()


def upscale_pixels(
    pixels: np.ndarray,
    upscaler: Upscaler,
    *,
    outscale: float | None = None,
    alpha: str = "model",
    on_tile: TileCallback | None = None,
) -> np.ndarray:
    """Upscale decoded pixels: H x W or H x W x C (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA).

    uint8 in gives uint8 out, uint16 gives uint16. With ``outscale`` the model's output is
    downscaled (antialiased bicubic) to exactly ``round(H * outscale) x round(W * outscale)``.
    """
    if alpha not in ALPHA_MODES:
        raise DrnError(f"--alpha must be one of {', '.join(ALPHA_MODES)}, got {alpha!r}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"pixels must be uint8 or uint16, not {pixels.dtype}")
    squeeze = pixels.ndim == 2
    img = pixels[..., None] if squeeze else pixels
    h, w, c = img.shape
    if c not in (1, 2, 3, 4):
        raise InputError(f"cannot upscale an image with {c} channels")
    peak = 65535.0 if pixels.dtype == np.uint16 else 255.0
    x = img.astype(np.float32) * (255.0 / peak)

    colour = c - 1 if c in (2, 4) else c
    if colour == 3:
        planes = [_run_rgb(upscaler, x[..., :3], on_tile)]
    else:
        planes = [_run_grey(upscaler, x[..., 0], on_tile)[..., None]]
    if c in (2, 4):
        a = x[..., c - 1]
        a_up = _run_grey(upscaler, a, None) if alpha == "model" else _bicubic(a, upscaler.scale)
        planes.append(a_up[..., None])
    out = np.concatenate(planes, axis=2)
    if outscale is not None and outscale != upscaler.scale:
        out = _resize_to(out, max(1, round(h * outscale)), max(1, round(w * outscale)))
    out = np.clip(np.rint(out * (peak / 255.0)), 0, peak).astype(pixels.dtype)
    return out[..., 0] if squeeze else out


def upscale(
    image: Any,
    scale: int = 4,
    model: str | Path = "drn-s",
    *,
    device: str | torch.device | None = None,
    precision: str = "auto",
    tile: int = 0,
    tta: bool = False,
    outscale: float | None = None,
    alpha: str = "model",
    upscaler: Upscaler | None = None,
) -> Any:
    """Upscale a PIL image or a numpy array (H x W or H x W x C, uint8 or uint16) with DRN.

    Returns the same kind of object. ``model`` is a built-in family/name (``"drn-s"``,
    ``"drn-l-x8"``) or a model file; pass a ready ``upscaler`` to reuse a loaded model.
    """
    if upscaler is None:
        if outscale is not None:
            scale = model_scale_for(outscale)
        upscaler = make_upscaler(model, scale=scale, device=device, precision=precision, tile=tile, tta=tta)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None  # noqa: N806
    if Image is not None and isinstance(image, Image.Image):
        if image.mode not in ("L", "LA", "RGB", "RGBA", "I;16"):
            image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
        arr = np.asarray(image)
        result = upscale_pixels(arr, upscaler, outscale=outscale, alpha=alpha)
        return Image.fromarray(result)
    if isinstance(image, np.ndarray):
        return upscale_pixels(image, upscaler, outscale=outscale, alpha=alpha)
    raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")


# --------------------------------------------------------------------------------------------------
# The batch job over files


@dataclass(frozen=True)
class InputFile:
    """An input image and the path (relative to the folder it was found in) used to name its output."""

    path: Path
    relative: Path


def collect_inputs(inputs: Iterable[str | Path], *, recursive: bool = False) -> list[InputFile]:
    """Expand files, folders (``recursive`` to descend) and glob patterns into image files.

    A named file is taken as given (even with an unusual extension, so a bad file gets a clear
    error of its own); folders and patterns contribute files with image extensions only.
    """
    found: list[InputFile] = []
    seen: set[Path] = set()

    def add(path: Path, relative: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(InputFile(path, relative))

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            images = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not images:
                raise InputError(
                    f"{path}: no images found in this folder" + ("" if recursive else " (try --recursive)")
                )
            for p in images:
                add(p, p.relative_to(path))
        elif path.exists():
            add(path, Path(path.name))
        elif glob.has_magic(str(item)):
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=recursive) if Path(p).is_file())
            if not matches:
                raise InputError(f"{item}: no files match this pattern")
            for p in matches:
                add(p, Path(p.name))
        else:
            raise InputError(f"{path}: no such file or folder")
    return found


def scale_label(scale: float) -> str:
    """``4`` -> ``"x4"``, ``2.5`` -> ``"x2.5"``."""
    return f"x{scale:g}"


def plan_outputs(
    inputs: list[InputFile],
    *,
    output: str | Path | None,
    scale: float,
    suffix: str | None = None,
    fmt: str = "same",
) -> list[tuple[InputFile, Path]]:
    """Decide every output path.

    ``output`` is a file for a single input (unless it is an existing folder, ends with a separator
    or has no extension), else a folder (created later); without it outputs go beside their inputs
    as ``<stem><suffix><ext>``, suffix ``_x<scale>`` by default.
    """
    from .imagefile import output_extension

    suffix = f"_{scale_label(scale)}" if suffix is None else suffix
    as_dir = False
    if output is not None:
        as_dir = len(inputs) > 1 or str(output).endswith(("/", "\\")) or Path(output).is_dir()
        as_dir = as_dir or not Path(output).suffix
        output = Path(output)
    plan = []
    for item in inputs:
        ext = output_extension(fmt, item.path)
        name = item.relative.with_name(item.relative.stem + suffix + ext)
        if output is None:
            target = item.path.with_name(name.name)
        elif as_dir:
            target = output / name
        else:
            target = output
        plan.append((item, target))
    return plan


@dataclass
class FileResult:
    """What happened to one input file."""

    input: str
    output: str
    status: str  # "ok", "skipped" or "failed"
    model: str
    width: int | None = None
    height: int | None = None
    out_width: int | None = None
    out_height: int | None = None
    seconds: float = 0.0
    tile: int | None = None
    error: str | None = None
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def upscale_file(
    source: Path,
    target: Path,
    upscaler: Upscaler,
    *,
    outscale: float | None = None,
    alpha: str = "model",
    fmt: str | None = None,
    quality: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    on_tile: TileCallback | None = None,
) -> FileResult:
    """Read, upscale and atomically write one image; raises :class:`DrnError` on bad input."""
    start = time.perf_counter()
    image = read_image(source, max_pixels=max_pixels)
    out = upscale_pixels(image.pixels, upscaler, outscale=outscale, alpha=alpha, on_tile=on_tile)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{target.parent}: cannot create the output folder ({exc.strerror})") from None
    factor = outscale if outscale is not None else upscaler.scale
    notices = list(image.notices)
    notices += write_image(target, out, like=image, format=fmt, quality=quality, scale=factor)
    return FileResult(
        input=str(source),
        output=str(target),
        status="ok",
        model=upscaler.name,
        width=image.width,
        height=image.height,
        out_width=int(out.shape[1]),
        out_height=int(out.shape[0]),
        seconds=round(time.perf_counter() - start, 4),
        tile=upscaler.last_tile,
        notices=notices,
    )


def upscale_files(
    plan: list[tuple[InputFile, Path]],
    upscaler: Upscaler,
    *,
    overwrite: bool = False,
    on_start: Callable[[InputFile, int], None] | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    on_tile: TileCallback | None = None,
    **options: Any,
) -> list[FileResult]:
    """Run :func:`upscale_file` over a plan; a failing image is recorded and the rest still run.

    ``options`` go to :func:`upscale_file` (outscale, alpha, fmt, quality, max_pixels). An existing
    output is skipped unless ``overwrite``; an output that would replace an input never is.
    Ctrl-C propagates (after the current file's temporary output has been removed).
    """
    inputs = {item.path.resolve() for item, _ in plan}
    planned: set[Path] = set()
    results = []
    for index, (item, target) in enumerate(plan):
        if on_start is not None:
            on_start(item, index)
        result = FileResult(input=str(item.path), output=str(target), status="failed", model=upscaler.name)
        resolved = target.resolve()
        if resolved in inputs:
            result.error = f"{target}: output path is an input file; refusing to overwrite it"
        elif resolved in planned:
            result.error = f"{target}: another input in this batch already writes this output"
        elif target.exists() and not overwrite:
            result.status = "skipped"
            result.error = f"{target} exists (use --overwrite to replace it)"
        else:
            try:
                result = upscale_file(item.path, target, upscaler, on_tile=on_tile, **options)
            except DrnError as exc:
                result.error = str(exc)
        planned.add(resolved)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
