"""`drn upscale` end to end: naming, formats, fidelity, determinism and every kind of bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drn_cli.cli import main
from drn_cli.engine import Upscaler
from drn_cli.loading import load_model
from drn_cli.upscale import upscale

from .conftest import BENCHMARK, GOLDEN

TINY4 = str(GOLDEN / "tiny-x4.pt")
TINY8 = str(GOLDEN / "tiny-x8.pt")
BIRD = BENCHMARK / "Set5" / "LR_bicubic" / "X4" / "birdx4.png"  # 72 x 72
BUTTERFLY = BENCHMARK / "Set5" / "LR_bicubic" / "X4" / "butterflyx4.png"  # 64 x 64


def run(*args: str) -> int:
    return main(["upscale", *args])


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _reference_sr(path: Path, weights: str = TINY4) -> np.ndarray:
    """The expected output computed directly with the network, independent of the upscale pipeline."""
    net = load_model(weights, device="cpu")
    x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]
    with torch.inference_mode():
        y = net(x)[0].clamp(0, 255).round().byte()
    return y.permute(1, 2, 0).numpy()


def test_single_file_beside_input_matches_network(tmp_path: Path, capsys) -> None:
    src = tmp_path / "bird.png"
    src.write_bytes(BIRD.read_bytes())
    before = src.read_bytes()
    assert run(str(src), "--weights", TINY4, "-q") == 0
    out = tmp_path / "bird_x4.png"
    assert _files(tmp_path) == ["bird.png", "bird_x4.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(out)), _reference_sr(BIRD))
    assert src.read_bytes() == before  # the input is never modified


def test_output_dir_json_and_formats(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert run(str(BIRD), str(BUTTERFLY), "--weights", TINY4, "-o", str(out), "--format", "jpg", "--json") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["output"]).name for r in lines] == ["birdx4_x4.jpg", "butterflyx4_x4.jpg"]
    assert all(r["status"] == "ok" and r["model"] == "tiny-x4" for r in lines)
    assert (lines[0]["width"], lines[0]["out_width"]) == (72, 288)
    assert Image.open(out / "birdx4_x4.jpg").format == "JPEG"


def test_existing_output_skipped_unless_overwrite(tmp_path: Path, capsys) -> None:
    target = tmp_path / "o.png"
    target.write_bytes(b"keep me")
    assert run(str(BIRD), "--weights", TINY4, "-o", str(target)) == 0
    assert target.read_bytes() == b"keep me"
    assert "exists" in capsys.readouterr().err
    assert run(str(BIRD), "--weights", TINY4, "-o", str(target), "--overwrite", "-q") == 0
    assert Image.open(target).size == (288, 288)


def test_folder_recursive_mirrors_structure(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "a.png").write_bytes(BIRD.read_bytes())
    (src / "sub" / "b.png").write_bytes(BUTTERFLY.read_bytes())
    (src / "notes.txt").write_text("not an image")
    assert run(str(src), "--weights", TINY4, "-o", str(tmp_path / "out"), "-q") == 0
    assert _files(tmp_path / "out") == ["a_x4.png"]
    assert run(str(src), "--weights", TINY4, "-o", str(tmp_path / "out2"), "-r", "-q") == 0
    assert (tmp_path / "out2" / "sub" / "b_x4.png").is_file()


def test_outscale_any_factor(tmp_path: Path) -> None:
    assert run(str(BIRD), "--weights", TINY8, "--outscale", "3", "-o", str(tmp_path / "o.png"), "-q") == 0
    assert Image.open(tmp_path / "o.png").size == (216, 216)
    assert run(str(BIRD), "--weights", TINY4, "--outscale", "6", "-o", str(tmp_path / "p.png"), "-q") == 1


def test_greyscale_rgba_and_16bit_fidelity(tmp_path: Path) -> None:
    up = Upscaler(load_model(TINY4, device="cpu"), device="cpu")
    rgb = np.asarray(Image.open(BUTTERFLY).convert("RGB"))
    grey = np.asarray(Image.open(BUTTERFLY).convert("L"))
    out = upscale(grey, upscaler=up)
    assert out.shape == (256, 256) and out.dtype == np.uint8
    rgba = np.dstack([rgb, np.linspace(0, 255, 64 * 64).reshape(64, 64).astype(np.uint8)])
    model_alpha = upscale(rgba, upscaler=up)
    bicubic_alpha = upscale(rgba, upscaler=up, alpha="bicubic")
    assert model_alpha.shape == (256, 256, 4)
    np.testing.assert_array_equal(model_alpha[..., :3], bicubic_alpha[..., :3])
    assert not np.array_equal(model_alpha[..., 3], bicubic_alpha[..., 3])
    # 16-bit: no 8-bit bottleneck. The same picture at 16 bits with sub-8-bit detail added must
    # give a 16-bit output whose low byte carries information, and agree with the 8-bit run / 257.
    rgb16 = rgb.astype(np.uint16) * 257 + np.random.default_rng(0).integers(0, 200, rgb.shape, dtype=np.uint16)
    out16 = upscale(rgb16, upscaler=up)
    assert out16.dtype == np.uint16 and out16.shape == (256, 256, 3)
    assert len(np.unique(out16 % 257)) > 100
    out8 = upscale(rgb, upscaler=up)
    assert np.abs(out16 / 257.0 - out8).max() < 3


def test_metadata_kept_and_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "photo.jpg"
    img = Image.open(BIRD).convert("RGB")
    exif = Image.Exif()
    exif[0x010F] = "drn-test-camera"
    img.save(src, quality=95, dpi=(72, 72), exif=exif.tobytes())
    assert run(str(src), "--weights", TINY4, "-o", str(tmp_path / "a.png"), "-q") == 0
    assert run(str(src), "--weights", TINY4, "-o", str(tmp_path / "b.png"), "-q") == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    out = Image.open(tmp_path / "a.png")
    assert out.getexif().get(0x010F) == "drn-test-camera"
    assert tuple(round(v) for v in out.info["dpi"]) == (288, 288)


def test_python_api_pil_roundtrip() -> None:
    img = Image.open(BIRD).convert("RGB")
    out = upscale(img, model=TINY4)
    assert isinstance(out, Image.Image) and out.size == (288, 288)
    np.testing.assert_array_equal(np.asarray(out), _reference_sr(BIRD))


# ------------------------------------------------------------------------------------------------
# Bad input: one line naming the file, no traceback, no partial output, the others still processed


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "drn_cli", "upscale", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_bad_inputs_reported_and_others_processed(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "good.png").write_bytes(BIRD.read_bytes())
    (src / "empty.png").write_bytes(b"")
    (src / "text.png").write_text("this is not a PNG")
    data = BUTTERFLY.read_bytes()
    (src / "truncated.png").write_bytes(data[: len(data) // 2])
    (src / "corrupt.png").write_bytes(data[:100] + bytes(200) + data[300:])
    out = tmp_path / "out"
    proc = _cli(str(src), "--weights", TINY4, "-o", str(out))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    for name in ("empty.png", "text.png", "truncated.png", "corrupt.png"):
        lines = [line for line in proc.stderr.splitlines() if name in line]
        assert lines, f"no message for {name}: {proc.stderr}"
    assert _files(out) == ["good_x4.png"]
    assert "1 upscaled, 0 skipped, 4 failed" in proc.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["missing.png"], "missing.png"),
        (["emptydir"], "no images"),
        (["big.png", "--max-pixels", "1000"], "max-pixels"),
        (["ok.png", "-o", "ok.png"], "input"),
        (["ok.png", "--weights", "ok.png"], "checkpoint"),
        (["ok.png", "-s", "8"], "x4 model, but scale 8"),
    ],
)
def test_one_line_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "ok.png").write_bytes(BIRD.read_bytes())
    (tmp_path / "big.png").write_bytes(BUTTERFLY.read_bytes())
    if "--weights" not in args:
        args = [*args, "--weights", TINY4]
    before = set(_files(tmp_path))
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr
    assert set(_files(tmp_path)) == before
    assert (tmp_path / "ok.png").read_bytes() == BIRD.read_bytes()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_output_folder(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    proc = _cli(str(BIRD), "--weights", TINY4, "-o", str(ro / "x.png"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr


def test_unwritable_output_location(tmp_path: Path) -> None:
    """An output 'folder' that is really a file cannot be created: one line, non-zero, nothing written."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    proc = _cli(str(BIRD), "--weights", TINY4, "-o", str(blocker / "sub" / "x.png"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "blocker" in proc.stderr
    assert _files(tmp_path) == ["blocker"]


def test_ctrl_c_mid_batch_leaves_no_partial_file(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(40):
        (src / f"img{i:02d}.png").write_bytes(BIRD.read_bytes())
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "drn_cli", "upscale", str(src), "--weights", TINY8, "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir())):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err, err[-3000:]
    names = _files(out)
    assert 0 < len(names) < 40
    assert all(n.endswith("_x8.png") and not n.startswith(".") for n in names)
    for n in names:
        Image.open(out / n).load()  # every file left is complete


def test_16bit_png_file_stays_16bit(tmp_path: Path) -> None:
    """A 16-bit PNG on disk gives a 16-bit PNG out, carrying detail below 8 bits."""
    import cv2

    rgb = np.asarray(Image.open(BUTTERFLY).convert("RGB")).astype(np.uint16) * 257
    rgb += np.random.default_rng(1).integers(0, 250, rgb.shape, dtype=np.uint16)
    src = tmp_path / "deep.png"
    cv2.imwrite(str(src), rgb[..., ::-1].copy())
    assert run(str(src), "--weights", TINY4, "-q") == 0
    out = cv2.imread(str(tmp_path / "deep_x4.png"), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == (256, 256, 3)
    assert len(np.unique(out % 257)) > 100
