"""Training data: HR images decoded once into memory, random augmented crops, the bicubic LR pyramid.

Reproducibility is built into the sampling rather than into RNG state: the crop for *global
sample index* ``i`` (image, position, flip and rotation) is drawn from a generator seeded with
``(seed, i)``. Step ``s`` of rank ``r`` with per-rank batch ``B`` in a run of ``W`` processes uses
indices ``(s * W + r) * B + j``. So every sample is fixed by the seed alone, whatever the number of
data-loader workers, and resuming at step ``s`` only needs ``s``: no sampler or worker state.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

from .bicubic import imresize
from .errors import InputError

IMAGE_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class ImageSet:
    """Decoded HR training images (H x W x 3 uint8 arrays) and what was left out."""

    images: list[np.ndarray]
    paths: list[Path]
    too_small: list[Path]

    @property
    def pixels(self) -> int:
        return sum(im.shape[0] * im.shape[1] for im in self.images)


def find_images(dirs: Sequence[str | Path]) -> list[Path]:
    """Image files (by extension) directly inside or below each folder, sorted per folder."""
    if not dirs:
        raise InputError("no training image folder was given")
    found: list[Path] = []
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise InputError(f"training folder {d} does not exist")
        if d.is_file():
            if d.suffix.lower() not in IMAGE_EXTENSIONS:
                raise InputError(f"{d} is neither a folder nor an image file")
            found.append(d)
            continue
        found.extend(sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
    return found


def load_images(dirs: Sequence[str | Path], patch_size: int) -> ImageSet:
    """Decode every image of ``dirs`` to RGB uint8; images smaller than ``patch_size`` are skipped.

    Raises :class:`InputError` when there are no images, an image cannot be decoded, or none is
    at least ``patch_size`` pixels on both sides.
    """
    paths = find_images(dirs)
    if not paths:
        raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(map(str, dirs))}")
    images, kept, small, small_sides = [], [], [], []
    for p in paths:
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"training image {p} cannot be read ({exc})") from None
        if min(arr.shape[:2]) < patch_size:
            small.append(p)
            small_sides.append(min(arr.shape[:2]))
            continue
        images.append(np.ascontiguousarray(arr))
        kept.append(p)
    if not images:
        largest = max(small_sides)
        raise InputError(
            f"all {len(small)} training images are smaller than the {patch_size}-pixel patch "
            f"(the largest has a {largest}-pixel short side); use a smaller patch size"
        )
    return ImageSet(images=images, paths=kept, too_small=small)


def random_crop(image: np.ndarray, patch_size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``patch_size`` square of ``image`` under one of the 8 flips/90-degree rotations."""
    h, w = image.shape[:2]
    top = int(rng.integers(0, h - patch_size + 1))
    left = int(rng.integers(0, w - patch_size + 1))
    patch = image[top : top + patch_size, left : left + patch_size]
    transform = int(rng.integers(0, 8))
    if transform & 1:
        patch = patch[:, ::-1]
    if transform & 2:
        patch = patch[::-1]
    if transform & 4:
        patch = patch.transpose(1, 0, 2)
    return np.ascontiguousarray(patch)


class PatchDataset(Dataset):
    """Map-style dataset: index ``i`` -> a 3 x P x P uint8 tensor fixed by ``(seed, i)``.

    Images are drawn uniformly (each image equally often, whatever its size), as in the usual
    SR training setups. The dataset is unbounded; the sampler decides which indices are used.
    """

    def __init__(self, images: Sequence[np.ndarray], patch_size: int, seed: int) -> None:
        self.images = list(images)
        self.patch_size = patch_size
        self.seed = seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, int(index)])
        image = self.images[int(rng.integers(0, len(self.images)))]
        patch = random_crop(image, self.patch_size, rng)
        return torch.from_numpy(patch).permute(2, 0, 1).contiguous()


class StepSampler(Sampler[int]):
    """Global sample indices for steps ``start..stop-1`` of one rank (see the module docstring)."""

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.start, self.stop = start, stop
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.stop):
            base = (step * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.batch_size


def _worker_init(_: int) -> None:
    # Workers only crop and flip; one thread each avoids oversubscribing the cores.
    torch.set_num_threads(1)


def patch_loader(
    dataset: PatchDataset,
    start_step: int,
    stop_step: int,
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader yielding one uint8 N x 3 x P x P batch per step from ``start_step`` on."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=StepSampler(start_step, stop_step, batch_size, rank, world_size),
        num_workers=workers,
        worker_init_fn=_worker_init if workers > 0 else None,
        pin_memory=pin_memory,
        drop_last=False,
        persistent_workers=False,
    )


def lr_pyramid(hr: torch.Tensor, scale: int, quantize: bool = True) -> list[torch.Tensor]:
    """``[x_0, ..., x_P]``: MATLAB-bicubic down-scalings of ``hr`` by ``2**(P-k)``, lowest first.

    ``hr`` is an N x 3 x H x W float tensor in 0..255 with H and W divisible by ``scale``. With
    ``quantize`` the down-scaled levels are rounded and clipped to 0..255, as the benchmark LR
    images (uint8 PNGs made with MATLAB) are, so training sees the inputs the model is tested on.
    """
    phases = int(math.log2(scale))
    levels = [hr]
    for k in range(phases - 1, -1, -1):
        x = imresize(hr, scale=1.0 / 2 ** (phases - k))
        if quantize:
            x = x.round().clamp(0, 255)
        levels.append(x)
    return levels[::-1]
