"""Evaluation data sets: pairs of high-resolution (HR) and low-resolution (LR) images.

Two folder layouts are understood:

* **EDSR layout**: ``root/HR/<name>.<ext>`` with ``root/LR_bicubic/X<s>/<name>x<s>.png`` (the LR
  files made by MATLAB's bicubic ``imresize``). HR images need not be cropped: the HR is cropped
  top-left to ``LR * s``, and the LR must be exactly ``floor(HR / s)`` on each side.
* **HR only**: a folder of images (png, jpg, jpeg, bmp, tif, tiff, webp). The LR is made here with
  the MATLAB-compatible bicubic from the HR cropped to a multiple of ``s``. Pointing at the ``HR``
  folder of an EDSR-layout set does this too (useful where a scale has no LR files).

Every image is returned as uint8 RGB (greyscale and palette images are converted).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .bicubic import imresize_uint8
from .errors import InputError

__all__ = ["IMAGE_EXTENSIONS", "EvalDataset", "EvalSample", "list_images", "load_eval_dataset", "read_rgb"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError as exc:
        raise InputError(f"Image {path} does not exist.") from exc
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"Image {path} cannot be read ({exc}).") from exc


def _image_size(path: Path) -> tuple[int, int]:
    """Return ``(width, height)`` from the file header without decoding the pixels."""
    with _open(path) as img:
        return img.size


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as a uint8 ``H x W x 3`` RGB array, converting greyscale/palette/alpha images.

    Raises:
        InputError: the file is missing or is not a readable image.
    """
    path = Path(path)
    with _open(path) as img:
        try:
            img.load()
            if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                # 16-bit greyscale: map 0..65535 onto 0..255 instead of letting convert() clip.
                arr = np.asarray(img).astype(np.float64)
                grey = np.clip(np.floor(arr / 257.0 + 0.5), 0, 255).astype(np.uint8)
                return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            return np.array(rgb, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as exc:
            raise InputError(f"Image {path} cannot be decoded ({exc}).") from exc


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (by extension, hidden files skipped), sorted by name."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


@dataclass(frozen=True)
class EvalSample:
    """One evaluation image: its HR file and either its LR file or ``None`` (LR made by bicubic)."""

    name: str
    hr_path: Path
    lr_path: Path | None
    scale: int

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(lr, hr)`` as uint8 RGB arrays, with HR cropped top-left to exactly ``LR * scale``.

        Raises:
            InputError: an image cannot be read, or the LR size is not ``floor(HR / scale)``.
        """
        s = self.scale
        hr = read_rgb(self.hr_path)
        h, w = hr.shape[:2]
        if self.lr_path is None:
            if h < s or w < s:
                raise InputError(f"HR image {self.hr_path} ({w}x{h}) is smaller than the scale factor {s}.")
            hr = np.ascontiguousarray(hr[: h - h % s, : w - w % s])
            return imresize_uint8(hr, scale=1.0 / s), hr
        lr = read_rgb(self.lr_path)
        _check_sizes(self.lr_path, (lr.shape[1], lr.shape[0]), self.hr_path, (w, h), s)
        lh, lw = lr.shape[:2]
        return lr, np.ascontiguousarray(hr[: lh * s, : lw * s])


@dataclass
class EvalDataset:
    """A named set of evaluation samples at one scale (``name`` is the data set's folder name)."""

    name: str
    scale: int
    root: Path
    samples: list[EvalSample] = field(default_factory=list)
    layout: str = "edsr"  # "edsr" (LR files given) or "hr-only" (LR made by bicubic)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[EvalSample]:
        return iter(self.samples)


def _check_sizes(lr_path: Path, lr_size: tuple[int, int], hr_path: Path, hr_size: tuple[int, int], scale: int) -> None:
    want = (hr_size[0] // scale, hr_size[1] // scale)
    if lr_size != want:
        raise InputError(
            f"LR image {lr_path} is {lr_size[0]}x{lr_size[1]} but HR image {hr_path} "
            f"({hr_size[0]}x{hr_size[1]}) at x{scale} needs {want[0]}x{want[1]} (floor(HR / {scale}))."
        )


def _sample_names(paths: list[Path]) -> list[str]:
    """Use file stems as names, falling back to full file names where two stems collide."""
    stems = [p.stem for p in paths]
    return [p.stem if stems.count(p.stem) == 1 else p.name for p in paths]


def load_eval_dataset(root: Path, scale: int) -> EvalDataset:
    """Find the evaluation images in ``root`` (EDSR layout or a folder of HR images) for ``scale``.

    File existence and image sizes (read from the file headers) are checked here; pixels are
    read later by :meth:`EvalSample.load`.

    Raises:
        InputError: the folder is missing or holds no images, an LR file or the ``X<scale>`` folder
            is missing, an image is unreadable, or an LR size does not match its HR.
    """
    root = Path(root)
    if not isinstance(scale, int) or scale < 1:
        raise InputError(f"Scale factor {scale!r} for {root} must be a positive integer.")
    if not root.exists():
        raise InputError(f"Dataset folder {root} does not exist.")
    if not root.is_dir():
        raise InputError(f"Dataset path {root} is not a folder.")

    hr_dir = root / "HR"
    lr_root = root / "LR_bicubic"
    if hr_dir.is_dir() and lr_root.is_dir():
        return _load_edsr(root, hr_dir, lr_root, scale)
    # An EDSR set's HR folder keeps the set's name; its LR is then made by bicubic.
    is_edsr_hr = root.name == "HR" and (root.parent / "LR_bicubic").is_dir()
    name = root.parent.name if is_edsr_hr else root.name
    if hr_dir.is_dir():
        root = hr_dir  # HR folder without LR_bicubic: generate the LR
    return _load_hr_only(name, root, scale)


def _load_edsr(root: Path, hr_dir: Path, lr_root: Path, scale: int) -> EvalDataset:
    lr_dir = lr_root / f"X{scale}"
    if not lr_dir.is_dir():
        raise InputError(
            f"Dataset {root} has no LR folder {lr_dir} for x{scale}; "
            f"point at {hr_dir} instead to make the LR images by bicubic downscaling."
        )
    hr_paths = list_images(hr_dir)
    if not hr_paths:
        raise InputError(f"HR folder {hr_dir} contains no images ({', '.join(IMAGE_EXTENSIONS)}).")
    samples = []
    for name, hr_path in zip(_sample_names(hr_paths), hr_paths, strict=True):
        candidates = [lr_dir / f"{hr_path.stem}x{scale}{ext}" for ext in (".png", hr_path.suffix)]
        lr_path = next((p for p in candidates if p.is_file()), None)
        if lr_path is None:
            raise InputError(f"HR image {hr_path} has no LR file {candidates[0]}.")
        _check_sizes(lr_path, _image_size(lr_path), hr_path, _image_size(hr_path), scale)
        samples.append(EvalSample(name=name, hr_path=hr_path, lr_path=lr_path, scale=scale))
    return EvalDataset(name=root.name, scale=scale, root=root, samples=samples, layout="edsr")


def _load_hr_only(name: str, folder: Path, scale: int) -> EvalDataset:
    hr_paths = list_images(folder)
    if not hr_paths:
        raise InputError(f"Folder {folder} contains no images ({', '.join(IMAGE_EXTENSIONS)}).")
    samples = []
    for sample_name, hr_path in zip(_sample_names(hr_paths), hr_paths, strict=True):
        w, h = _image_size(hr_path)
        if w < scale or h < scale:
            raise InputError(f"HR image {hr_path} ({w}x{h}) is smaller than the scale factor {scale}.")
        samples.append(EvalSample(name=sample_name, hr_path=hr_path, lr_path=None, scale=scale))
    return EvalDataset(name=name, scale=scale, root=folder, samples=samples, layout="hr-only")
