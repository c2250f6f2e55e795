"""Shared test fixtures: paths into ../shared and small real inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
GOLDEN = REFERENCE / "golden"
BENCHMARK = SHARED / "data" / "benchmark"
VIDEO = SHARED / "data" / "video"
TRAIN = SHARED / "data" / "train"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not SHARED.is_dir():
        skip = pytest.mark.skip(reason=f"shared test data not found at {SHARED}")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def golden_manifest() -> dict:
    return json.loads((GOLDEN / "manifest.json").read_text())


def real_lr(name: str = "baboon", scale: int = 4, size: tuple[int, int] | None = None) -> np.ndarray:
    """A real LR photo from Set14 (H x W x 3 float32 in 0..255), optionally cropped to (h, w)."""
    img = np.asarray(
        Image.open(BENCHMARK / "Set14" / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png").convert("RGB")
    )
    if size is not None:
        img = img[: size[0], : size[1]]
    return img.astype(np.float32)
