"""Adaptation to unpaired data (``drn adapt``): real clips and frame folders, tiny models, few steps.

Every run uses a tiny DRN and a handful of small patches so the whole file stays within the CPU
budget. "Changed" checks compare the saved weights with the weights the run started from.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from drn_cli.adapt import ADAPTED_NAME, AdaptOptions, adapt, fit_bicubic_dual, fit_dual, load_unpaired
from drn_cli.arch import DRN, DRNConfig, DualModel
from drn_cli.bicubic import imresize
from drn_cli.checkpoint import save_model
from drn_cli.degradation import Degradation, gaussian_downscale
from drn_cli.errors import InputError
from drn_cli.loading import load_dual, load_model
from drn_cli.training import ProgressInfo
from drn_cli.video import iter_frames

from .conftest import GOLDEN, ROOT, TRAIN, VIDEO

CLIP = VIDEO / "makeup_vlog_320x240_audio.avi"
GOLDEN_TINY = GOLDEN / "tiny-x4.pt"  # official format, no dual blocks


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny x4 DRN with its dual blocks, saved as drn-cli saves models."""
    torch.manual_seed(1)
    config = DRNConfig(4, 1, 4)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return save_model(path, DRN(config), DualModel(config))


@pytest.fixture(scope="module")
def frame_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six frames of the shared clip written as PNG files (a user's folder of frames)."""
    folder = tmp_path_factory.mktemp("frames")
    for i, frame in enumerate(iter_frames(CLIP, every=25, max_frames=6)):
        Image.fromarray(frame).save(folder / f"frame{i:03d}.png")
    return folder


def small(out: Path, unpaired: list[Path], weights: Path, **kw: object) -> AdaptOptions:
    base: dict[str, object] = dict(
        unpaired=[str(p) for p in unpaired],
        weights=str(weights),
        out=str(out),
        steps=4,
        unpaired_batch=2,
        paired_batch=2,
        patch_size=32,
        lr=1e-3,
        frames_per_video=6,
        dual_init_steps=20,
        save_every=1000,
        log_every=1,
    )
    base.update(kw)
    return AdaptOptions(**base)  # type: ignore[arg-type]


def split(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    primal = {k: v for k, v in tensors.items() if not k.startswith("dual.")}
    dual = {k[len("dual.") :]: v for k, v in tensors.items() if k.startswith("dual.")}
    return primal, dual


def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    assert a.keys() == b.keys()
    return any(not torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------- data


def test_load_unpaired_streams_video_frames_spread_over_the_clip(frame_dir: Path) -> None:
    frames = load_unpaired([CLIP, frame_dir], frames_per_video=5)
    assert (frames.videos, frames.images) == (1, 6)
    assert len(frames.frames) == 11
    assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in frames.frames)
    # every=None spreads the 5 frames over the clip: the same frames as every=164 // 5, decoded independently.
    spread = list(iter_frames(CLIP, every=164 // 5, max_frames=5))
    assert all(np.array_equal(a, b) for a, b in zip(frames.frames[:5], spread, strict=True))
    assert not np.array_equal(frames.frames[0], frames.frames[4])


# ---------------------------------------------------------------------------- adaptation


def test_adapt_frame_folder_updates_primal_and_dual(tmp_path: Path, tiny_model: Path, frame_dir: Path) -> None:
    before_primal, before_dual = split(load_file(str(tiny_model)))
    seen: list[ProgressInfo] = []
    result = adapt(small(tmp_path / "run", [frame_dir], tiny_model), progress=seen.append)

    assert result.finished and result.step == 4
    out = tmp_path / "run" / ADAPTED_NAME
    after_primal, after_dual = split(load_file(str(out)))
    assert changed(before_primal, after_primal)
    assert changed(before_dual, after_dual)
    model = load_model(out, device="cpu")
    assert model.scale == 4
    assert load_dual(out, model.config) is not None
    # No --paired: the synthetic pairs come from the user's own frames, and the result says so.
    assert any("synthetic pairs from 6 of your frames" in n for n in result.notes)
    # Camera frames are blurrier than bicubic down-scaling: the duals are re-fitted to the estimate.
    assert any(n.startswith("degradation: estimated from 6 frame(s): Gaussian blur sigma") for n in result.notes)
    estimated = f"blur:{result.notes[2].split('sigma ')[1].split(' ')[0]}"
    dual_note = f"dual blocks: fitted to {estimated} for 20 steps"
    assert any(n.startswith(dual_note) and f"starting from {tiny_model}" in n for n in result.notes)
    # The fit is reported as a stage before the steps (20 fitting steps: one report at the end).
    assert [(i.stage, i.step, i.total) for i in seen[:1]] == [(f"fitting the dual blocks to {estimated}", 20, 20)]
    assert [i.step for i in seen[1:]] == [1, 2, 3, 4] and all(i.stage is None for i in seen[1:])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["kind"] == "adapt" and "synthetic" in config["paired"]
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("step,loss,loss_paired,loss_dual")


@pytest.mark.parametrize(
    ("degradation", "dual_note"),
    [
        ("model", "dual blocks: bicubic-like, fitted for 20 steps"),
        ("blur:2", "dual blocks: fitted to blur:2 for 20 steps on your frames, starting from bicubic-like blocks"),
    ],
)
def test_adapt_video_with_official_model_without_dual(tmp_path: Path, degradation: str, dual_note: str) -> None:
    """The golden official-format tiny model has no dual blocks: bicubic-like ones are fitted first."""
    before = torch.load(GOLDEN_TINY, weights_only=True)
    paired = [str(TRAIN / "T91" / f"t{i}.bmp") for i in (1, 2, 3)]
    result = adapt(small(tmp_path / "run", [CLIP], GOLDEN_TINY, paired=paired, degradation=degradation))

    out = tmp_path / "run" / ADAPTED_NAME
    after_primal, after_dual = split(load_file(str(out)))
    assert changed({k: before[k] for k in after_primal}, after_primal)
    assert sorted(after_dual) == sorted(DualModel(DRNConfig(4, 3, 8)).state_dict())
    assert any(n.startswith(dual_note) for n in result.notes)
    assert any("paired data: 3 HR image(s)" in n for n in result.notes)
    assert any("1 video(s)" in n for n in result.notes)
    assert load_dual(out, load_model(out, device="cpu").config) is not None


def test_fitted_dual_imitates_bicubic(frame_dir: Path) -> None:
    frames = load_unpaired([frame_dir]).frames
    dual, psnr = fit_bicubic_dual(DRNConfig(4, 1, 4), frames, 50)
    crop = torch.from_numpy(frames[0][40:104, 60:124].copy()).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        mse = float(((dual.blocks[1](crop) - imresize(crop, scale=0.5)) ** 2).mean())
    assert 10 * np.log10(255**2 / mse) > 30
    assert psnr > 30
    assert all(torch.equal(a, b) for a, b in zip(dual.blocks[0].parameters(), dual.blocks[1].parameters(), strict=True))


def test_frames_too_small_to_estimate_keep_the_model_duals(tmp_path: Path, tiny_model: Path, frame_dir: Path) -> None:
    small_frames = tmp_path / "small"
    small_frames.mkdir()
    for i, path in enumerate(sorted(frame_dir.glob("*.png"))[:3]):
        Image.open(path).crop((100, 80, 114, 94)).save(small_frames / f"{i}.png")  # 14 px: < 16 even at x2
    result = adapt(small(tmp_path / "run", [small_frames], tiny_model, patch_size=8, steps=2))
    assert result.finished
    assert "degradation: not estimated (no frame is large enough to estimate the degradation" in result.notes[2]
    assert result.notes[3] == f"dual blocks: from {tiny_model}"


def test_fit_dual_imitates_the_degradation(frame_dir: Path) -> None:
    frames = load_unpaired([frame_dir]).frames
    config = DRNConfig(4, 1, 4)
    start, _ = fit_bicubic_dual(config, frames, 20)  # as a model's pretrained (bicubic) duals would be
    start_state = {k: v.clone() for k, v in start.state_dict().items()}
    blur = Degradation("blur", 2.4)
    dual, psnr = fit_dual(config, blur, frames, 600, start=start)
    assert not changed(start_state, start.state_dict())  # the starting blocks are copied, not trained
    crops = torch.from_numpy(np.stack([f[48:176, 64:256] for f in frames])).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        target = gaussian_downscale(crops, 4, 2.4)
        mse = float(((dual(crops) - target) ** 2).mean())
        mse_bicubic = float(((imresize(crops, scale=0.25) - target) ** 2).mean())
    assert 10 * np.log10(255**2 / mse) > 30 and psnr > 30
    assert mse_bicubic > 2 * mse  # it learned the blur: half the error of bicubic, where it started


def test_resume_continues_exactly(tmp_path: Path, tiny_model: Path, frame_dir: Path) -> None:
    full = adapt(small(tmp_path / "full", [frame_dir], tiny_model))
    first = adapt(small(tmp_path / "cut", [frame_dir], tiny_model, stop_at=2))
    assert not first.finished and not (tmp_path / "cut" / ADAPTED_NAME).exists()
    second = adapt(AdaptOptions(out=str(tmp_path / "cut"), resume=True))
    assert full.finished and second.finished
    a = load_file(str(tmp_path / "full" / ADAPTED_NAME))
    b = load_file(str(tmp_path / "cut" / ADAPTED_NAME))
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)


_RANK_SCRIPT = """
import json, os, sys
from drn_cli.adapt import AdaptOptions, adapt
from drn_cli.checkpoint import save_model
result = adapt(AdaptOptions(**json.loads(sys.argv[1])))
mods = result.modules
save_model(os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.safetensors"), mods["primal"], mods["dual"])
"""


def test_gloo_data_parallel_ranks_stay_identical(tmp_path: Path, tiny_model: Path, frame_dir: Path) -> None:
    """Two CPU processes (torchrun-style environment, gloo) draw different patches yet end identical."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = json.dumps(small(tmp_path / "ddp", [frame_dir], tiny_model, steps=2).to_dict())
    procs = []
    for rank in range(2):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank))
        env.update(LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
        cmd = [sys.executable, "-c", _RANK_SCRIPT, options, str(tmp_path)]
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()[-2000:]
    r0, r1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert not changed(r0, r1)
    assert not changed(r0, load_file(str(tmp_path / "ddp" / ADAPTED_NAME)))
    assert changed(r0, load_file(str(tiny_model)))


# ---------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    from drn_cli.cli import main

    return main(argv)


def test_cli_adapt_then_upscale(tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    argv = ["adapt", "--unpaired", str(CLIP), "-s", "4", "--weights", str(tiny_model), "--out", str(run)]
    argv += ["--steps", "3", "--patch-size", "32", "--unpaired-batch", "2", "--paired-batch", "2"]
    argv += ["--frames-per-video", "4", "--lambda", "0.5", "--json"]
    assert _cli(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["finished"] and summary["step"] == 3
    # The notes (paired data, estimated degradation, dual blocks) are in the JSON result too.
    assert any(n.startswith("degradation: estimated from 4 frame(s)") for n in summary["notes"])
    assert "paired data: synthetic pairs" in captured.err
    assert json.loads((run / "config.json").read_text())["options"]["dual_weight"] == 0.5

    lr = next(iter_frames(CLIP, max_frames=1))[:24, :32]
    Image.fromarray(lr).save(tmp_path / "lr.png")
    up = ["upscale", str(tmp_path / "lr.png"), "--weights", str(run / ADAPTED_NAME), "-o", str(tmp_path / "sr.png")]
    assert _cli(up) == 0
    assert Image.open(tmp_path / "sr.png").size == (128, 96)


# ---------------------------------------------------------------------------- bad input


def test_bad_inputs_fail_cleanly(tmp_path: Path, tiny_model: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    tiny_frames = tmp_path / "tiny"
    tiny_frames.mkdir()
    for i in range(2):
        Image.fromarray(np.full((6, 6, 3), 40 * i, np.uint8)).save(tiny_frames / f"{i}.png")

    cases = [
        (small(tmp_path / "r1", [empty], tiny_model), "holds no images or videos"),
        (small(tmp_path / "r2", [fake], tiny_model), "fake.mp4"),
        (small(tmp_path / "r3", [tmp_path / "missing"], tiny_model), "does not exist"),
        (small(tmp_path / "r4", [tiny_frames], tiny_model), "smaller than the 8-pixel LR patch"),
        (small(tmp_path / "r5", [CLIP], GOLDEN_TINY, dual_init_steps=0), "has no dual blocks"),
        (small(tmp_path / "r6", [CLIP], tiny_model, patch_size=30), "multiple of the scale"),
        (small(tmp_path / "r7", [CLIP], tiny_model, degradation="sharp"), "unknown degradation 'sharp'"),
        (small(tmp_path / "r8", [CLIP], tiny_model, degradation="blur:1", dual_init_steps=0), "dual-init-steps is 0"),
    ]
    for options, message in cases:
        with pytest.raises(InputError, match=message) as info:
            adapt(options)
        assert "\n" not in str(info.value)
        assert not Path(options.out).exists()  # nothing written before the input was checked


def test_cli_bad_input_is_one_line(tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    argv = ["adapt", str(tmp_path / "empty"), "--weights", str(tiny_model), "--out", str(tmp_path / "run")]
    assert _cli(argv) == 1
    # The last stderr line (after the progress bar run_training draws) is the whole error.
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines[-1].startswith("drn: error: folder ") and lines[-1].endswith("holds no images or videos")
    assert sum("error" in line for line in lines) == 1
    assert not (tmp_path / "run").exists()
