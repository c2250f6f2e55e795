"""Evaluation: the paper's bicubic rows, dataset layouts and the user errors they can raise."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drn_cli.datasets import load_eval_dataset, read_rgb
from drn_cli.errors import InputError
from drn_cli.evaluate import evaluate
from drn_cli.metrics import psnr_y, ssim_y

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BENCH = SHARED / "data" / "benchmark"


@pytest.fixture(scope="module")
def bench() -> Path:
    if not BENCH.is_dir():
        pytest.skip(f"shared benchmark data not found at {BENCH}")
    return BENCH


# Paper (DRN, Table 1) bicubic PSNR / SSIM; Y channel, shave = scale.
PAPER_BICUBIC = [
    ("Set5", 4, 28.42, 0.810, 5),
    ("Set14", 4, 26.10, 0.702, 14),
    ("B100", 4, 25.96, 0.667, 100),
    ("Set5", 8, 24.39, 0.657, 5),
    ("Set14", 8, 23.19, 0.568, 14),
]


@pytest.mark.parametrize(("name", "scale", "psnr", "ssim", "count"), PAPER_BICUBIC)
def test_bicubic_reproduces_paper(bench: Path, name: str, scale: int, psnr: float, ssim: float, count: int) -> None:
    result = evaluate(bench / name, scale, "bicubic")
    assert result.dataset == name and result.scale == scale and result.model == "bicubic"
    assert result.images == count == len(result.per_image)
    assert abs(result.psnr - psnr) <= 0.02
    assert abs(result.ssim - ssim) <= 0.005
    assert result.psnr == pytest.approx(np.mean([r.psnr for r in result.per_image]))


class NearestUp(torch.nn.Module):
    """A stand-in network: nearest-neighbour upscaling plus an offset, optionally returning a list."""

    def __init__(self, scale: int, offset: float = 0.0, as_list: bool = False) -> None:
        super().__init__()
        self.scale, self.offset, self.as_list = scale, offset, as_list
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        assert x.dtype == torch.float32 and x.shape[1] == 3 and float(x.max()) > 1
        y = torch.nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest") + self.offset
        return [x, y] if self.as_list else y


def test_module_model_progress_and_saving(bench: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    out_dir = tmp_path / "out" / "sr"
    model = NearestUp(4, as_list=True)
    model.train()
    result = evaluate(
        bench / "Set5", 4, model, model_name="nearest", save_dir=out_dir, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(i, 5) for i in range(1, 6)]
    assert model.training  # mode restored
    assert result.model == "nearest"
    assert sorted(p.name for p in out_dir.iterdir()) == [
        f"{n}_x4.png" for n in ("baby", "bird", "butterfly", "head", "woman")
    ]
    for rec in result.per_image:
        lr = read_rgb(bench / "Set5" / "LR_bicubic" / "X4" / f"{rec.name}x4.png")
        expected_sr = lr.repeat(4, axis=0).repeat(4, axis=1)
        saved = read_rgb(out_dir / f"{rec.name}_x4.png")
        assert np.array_equal(saved, expected_sr)
        hr = read_rgb(bench / "Set5" / "HR" / f"{rec.name}.png")[: saved.shape[0], : saved.shape[1]]
        assert rec.psnr == pytest.approx(psnr_y(expected_sr, hr, 4), abs=1e-12)
        assert rec.ssim == pytest.approx(ssim_y(expected_sr, hr, 4), abs=1e-12)
    json.dumps(result.to_dict(), allow_nan=False)


def test_output_is_clamped(bench: Path) -> None:
    result = evaluate(bench / "Set5", 4, NearestUp(4, offset=1000.0))
    for rec in result.per_image:
        hr = read_rgb(bench / "Set5" / "HR" / f"{rec.name}.png")[: rec.height, : rec.width]
        white = np.full_like(hr, 255)
        assert rec.psnr == pytest.approx(psnr_y(white, hr, 4), abs=1e-12)


def test_wrong_output_size_is_an_input_error(bench: Path) -> None:
    with pytest.raises(InputError, match="baby"):
        evaluate(bench / "Set5", 4, NearestUp(2))


def test_unknown_model_and_scale_mismatch(bench: Path) -> None:
    with pytest.raises(InputError):
        evaluate(bench / "Set5", 4, "lanczos")
    ds = load_eval_dataset(bench / "Set5", 4)
    with pytest.raises(InputError, match="x2"):
        evaluate(ds, 2, "bicubic")


def test_identical_output_gives_inf_and_null_json(tmp_path: Path) -> None:
    # A flat HR makes bicubic exact, so PSNR is infinite; to_dict must still be valid JSON.
    Image.fromarray(np.full((32, 32, 3), 77, np.uint8)).save(tmp_path / "flat.png")
    result = evaluate(tmp_path, 4, "bicubic")
    assert math.isinf(result.psnr)
    assert result.to_dict()["psnr"] is None
    json.dumps(result.to_dict(), allow_nan=False)


# --- layouts ------------------------------------------------------------------------------------


def test_hr_only_folder_matches_edsr_layout(bench: Path, tmp_path: Path) -> None:
    for name in ("baby", "bird", "butterfly"):
        shutil.copy(bench / "Set5" / "HR" / f"{name}.png", tmp_path / f"{name}.png")
    for scale, tol in ((4, 1e-9), (8, 0.05)):  # X8 files were made by a float pipeline (<= 2 levels off)
        ds = load_eval_dataset(tmp_path, scale)
        assert ds.layout == "hr-only" and ds.name == tmp_path.name and len(ds) == 3
        assert all(s.lr_path is None for s in ds)
        mine = evaluate(ds, scale, "bicubic")
        edsr = {r.name: r for r in evaluate(bench / "Set5", scale, "bicubic").per_image}
        for rec in mine.per_image:
            assert rec.psnr == pytest.approx(edsr[rec.name].psnr, abs=tol)
            assert rec.ssim == pytest.approx(edsr[rec.name].ssim, abs=tol / 10)


def test_hr_folder_of_edsr_set_generates_lr(bench: Path) -> None:
    ds = load_eval_dataset(bench / "Set5" / "HR", 4)
    assert ds.name == "Set5" and ds.layout == "hr-only"
    lr, hr = ds.samples[0].load()
    expected_lr = read_rgb(bench / "Set5" / "LR_bicubic" / "X4" / "babyx4.png")
    assert np.array_equal(lr, expected_lr)


def test_greyscale_hr_is_rgb_and_cropped(bench: Path) -> None:
    ds = load_eval_dataset(bench / "Set14", 4)
    assert ds.layout == "edsr"
    bridge = next(s for s in ds if s.name == "bridge")
    assert Image.open(bridge.hr_path).mode == "L"
    lr, hr = bridge.load()
    assert hr.dtype == np.uint8 and hr.shape == (lr.shape[0] * 4, lr.shape[1] * 4, 3)
    assert np.array_equal(hr[:, :, 0], hr[:, :, 2])
    comic = next(s for s in ds if s.name == "comic")
    lr, hr = comic.load()  # 250x361 HR -> 62x90 LR, HR cropped to 248x360
    assert lr.shape == (90, 62, 3) and hr.shape == (360, 248, 3)


# --- errors ---------------------------------------------------------------------------------------


def _mini_edsr(bench: Path, root: Path, names: tuple[str, ...] = ("baby", "bird")) -> Path:
    (root / "HR").mkdir(parents=True)
    (root / "LR_bicubic" / "X4").mkdir(parents=True)
    for n in names:
        shutil.copy(bench / "Set5" / "HR" / f"{n}.png", root / "HR" / f"{n}.png")
        shutil.copy(bench / "Set5" / "LR_bicubic" / "X4" / f"{n}x4.png", root / "LR_bicubic" / "X4" / f"{n}x4.png")
    return root


def _raises_naming(path: Path, fn, *args, **kwargs) -> None:
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert str(path) in message, message
    assert "\n" not in message


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    _raises_naming(tmp_path / "nope", load_eval_dataset, tmp_path / "nope", 4)
    (tmp_path / "file.png").write_bytes(b"")
    _raises_naming(tmp_path / "file.png", load_eval_dataset, tmp_path / "file.png", 4)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    _raises_naming(empty, load_eval_dataset, empty, 4)
    _raises_naming(empty, evaluate, empty, 4, "bicubic")


def test_edsr_missing_scale_folder(bench: Path, tmp_path: Path) -> None:
    root = _mini_edsr(bench, tmp_path / "mini")
    _raises_naming(root / "LR_bicubic" / "X2", load_eval_dataset, root, 2)


def test_edsr_missing_lr_file(bench: Path, tmp_path: Path) -> None:
    root = _mini_edsr(bench, tmp_path / "mini")
    shutil.copy(bench / "Set5" / "HR" / "head.png", root / "HR" / "head.png")
    _raises_naming(root / "LR_bicubic" / "X4" / "headx4.png", load_eval_dataset, root, 4)


def test_edsr_lr_size_mismatch(bench: Path, tmp_path: Path) -> None:
    root = _mini_edsr(bench, tmp_path / "mini")
    wrong = root / "LR_bicubic" / "X4" / "birdx4.png"
    shutil.copy(bench / "Set5" / "LR_bicubic" / "X2" / "birdx2.png", wrong)  # twice too large
    _raises_naming(wrong, load_eval_dataset, root, 4)
    # HR smaller than LR * s (HR cut down by 8 rows).
    shutil.copy(bench / "Set5" / "LR_bicubic" / "X4" / "birdx4.png", wrong)
    hr = read_rgb(root / "HR" / "bird.png")
    Image.fromarray(hr[:-8]).save(root / "HR" / "bird.png")
    _raises_naming(wrong, load_eval_dataset, root, 4)


def test_unreadable_images(bench: Path, tmp_path: Path) -> None:
    root = _mini_edsr(bench, tmp_path / "mini")
    bad_lr = root / "LR_bicubic" / "X4" / "babyx4.png"
    bad_lr.write_bytes(b"this is not a png")
    _raises_naming(bad_lr, load_eval_dataset, root, 4)

    folder = tmp_path / "hr_only"
    folder.mkdir()
    shutil.copy(bench / "Set5" / "HR" / "bird.png", folder / "bird.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    _raises_naming(folder / "broken.jpg", load_eval_dataset, folder, 4)

    # A truncated PNG has a valid header, so it fails only when decoded, during evaluation.
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    data = (bench / "Set5" / "HR" / "bird.png").read_bytes()
    (trunc / "bird.png").write_bytes(data[: len(data) // 2])
    _raises_naming(trunc / "bird.png", evaluate, trunc, 4, "bicubic")


def test_hr_smaller_than_scale(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((3, 10, 3), np.uint8)).save(tmp_path / "tiny.png")
    _raises_naming(tmp_path / "tiny.png", load_eval_dataset, tmp_path, 4)


def test_save_dir_is_a_file(bench: Path, tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    _raises_naming(target, evaluate, bench / "Set5", 4, "bicubic", save_dir=target)
