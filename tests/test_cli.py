"""The `drn` command line: help, eval, weights (list/path/convert/download), one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drn_cli import __version__
from drn_cli.checkpoint import read_checkpoint
from drn_cli.cli import main
from drn_cli.loading import load_dual, load_model

from .conftest import BENCHMARK, GOLDEN, REFERENCE
from .test_download import FakeServer, env, server  # noqa: F401 - pytest fixtures

SET5 = BENCHMARK / "Set5"


def drn(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "drn_cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def test_help_and_version() -> None:
    proc = drn("--help")
    assert proc.returncode == 0
    for name in ("upscale", "eval", "train", "weights"):
        assert name in proc.stdout
    assert drn("--version").stdout.strip() == f"drn-cli {__version__}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("upscale", "x.png", "--no-such-option"), "No such option"),
        (("train",), "Missing argument"),
        (("no-such-command",), "No such command"),
        (("eval", "x", "-s", "many"), "Invalid value"),
    ],
)
def test_usage_errors_are_reported_without_traceback(args: tuple[str, ...], message: str) -> None:
    proc = drn(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_eval_bicubic_json(capsys) -> None:
    assert main(["eval", str(SET5), str(BENCHMARK / "Set14"), "-s", "4", "-m", "bicubic", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["dataset"] for r in rows] == ["Set5", "Set14"]
    assert abs(rows[0]["psnr"] - 28.42) <= 0.02 and abs(rows[1]["psnr"] - 26.10) <= 0.02
    assert rows[0]["images"] == 5 and rows[0]["model"] == "bicubic" and 0.80 < rows[0]["ssim"] < 0.82


def test_eval_with_weights_file_and_save_dir(tmp_path: Path, capsys) -> None:
    """--weights: the scale comes from the file; saved SR images are the network's rounded output."""
    out = tmp_path / "sr"
    assert main(["eval", str(SET5), "--weights", str(GOLDEN / "tiny-x4.pt"), "--json", "--save-dir", str(out)]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["scale"] == 4 and row["model"] == "tiny-x4" and row["images"] == 5
    saved = np.asarray(Image.open(out / "Set5" / "bird_x4.png"))
    net = load_model(GOLDEN / "tiny-x4.pt", device="cpu")
    lr = np.asarray(Image.open(SET5 / "LR_bicubic" / "X4" / "birdx4.png"), dtype=np.float32)
    with torch.inference_mode():
        ref = net(torch.from_numpy(lr).permute(2, 0, 1)[None])[0].clamp(0, 255).round().byte().permute(1, 2, 0)
    np.testing.assert_array_equal(saved, ref.numpy())


def _mismatched_dataset(root: Path) -> Path:
    (root / "HR").mkdir(parents=True)
    (root / "LR_bicubic" / "X4").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(root / "HR" / "a.png")
    Image.new("RGB", (20, 16)).save(root / "LR_bicubic" / "X4" / "ax4.png")
    return root


@pytest.mark.parametrize("case", ["missing", "mismatch", "wrong-scale", "truncated", "not-checkpoint"])
def test_eval_bad_input_one_line(tmp_path: Path, case: str) -> None:
    args = {
        "missing": ["eval", str(tmp_path / "nope"), "-m", "bicubic"],
        "mismatch": ["eval", str(_mismatched_dataset(tmp_path / "ds")), "-m", "bicubic"],
        "wrong-scale": ["eval", str(SET5), "-s", "8", "--weights", str(GOLDEN / "tiny-x4.pt")],
        "truncated": ["eval", str(SET5), "--weights", str(tmp_path / "t.pt")],
        "not-checkpoint": ["eval", str(SET5), "--weights", str(SET5 / "HR" / "bird.png")],
    }[case]
    data = (GOLDEN / "tiny-x4.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 3])
    proc = drn(*args)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("drn: error:")]
    assert len(errors) == 1, proc.stderr


def test_weights_list_and_path(env: Path, capsys) -> None:  # noqa: F811
    assert main(["weights", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    names = {r["name"] for r in rows}
    assert {"drn-s-x4", "drn-s-x8", "drn-l-x4", "drn-l-x8"} <= names
    assert main(["weights", "path", "drn-l-x8"]) == 1
    assert "not downloaded yet" in capsys.readouterr().err


def test_weights_convert_roundtrip(tmp_path: Path) -> None:
    """An official-format primal + dual becomes safetensors + config.json that --weights reads."""
    out = tmp_path / "converted"
    dual = REFERENCE / "weights" / "DRNS4x_dual_model.pt"
    # the golden drn-s-x4 file has the DRN-S x4 layout, so the official DRN-S x4 dual blocks fit it
    assert main(["weights", "convert", str(GOLDEN / "drn-s-x4.pt"), str(out), "--dual", str(dual), "-q"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["scale"] == 4 and config["n_blocks"] == 30 and config["n_feats"] == 16 and config["has_dual"]
    ck = read_checkpoint(out)
    original = torch.load(GOLDEN / "drn-s-x4.pt", weights_only=True)
    assert all(torch.equal(ck.primal[k], original[k]) for k in original)
    official_dual = torch.load(dual, weights_only=True, map_location="cpu")  # saved from CUDA tensors
    assert torch.equal(ck.dual["blocks.1.dual_module.1.weight"], official_dual[1]["dual_module.1.weight"])


def test_builtin_dual_fetched_from_release_mirror(env: Path, server: FakeServer, monkeypatch) -> None:  # noqa: F811
    """The official dual file, served over HTTP on 127.0.0.1, is fetched, verified and used offline after."""
    name = "DRNS4x_dual_model.pt"
    server.release[name] = (REFERENCE / "weights" / name).read_bytes()
    monkeypatch.setenv("DRN_RELEASE_URL", server.url + "/release")
    net = load_model(GOLDEN / "drn-s-x4.pt", device="cpu")
    dual = load_dual("drn-s-x4", net.config)
    assert dual is not None and (env / name).is_file()
    server.stop()
    monkeypatch.setenv("DRN_OFFLINE", "1")
    assert load_dual("drn-s-x4", net.config) is not None


def test_corrupt_builtin_download_fails_cleanly(env: Path, server: FakeServer, tmp_path: Path) -> None:  # noqa: F811
    """A mirror serving wrong bytes for DRNS4x.pt: one-line error naming the digest, nothing cached."""
    server.release["DRNS4x.pt"] = b"not the official checkpoint" * 100
    import os

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "drn_cli",
            "upscale",
            str(SET5 / "LR_bicubic" / "X4" / "birdx4.png"),
            "-o",
            str(tmp_path / "o.png"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "DRN_RELEASE_URL": server.url + "/release"},
        timeout=300,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "d558b3fcb9844b6d3811178662ba38c377746145" in proc.stderr
    assert not any(env.iterdir()) if env.exists() else True
    assert not (tmp_path / "o.png").exists()


def test_video_command_end_to_end(tmp_path: Path, capsys) -> None:
    """`drn video` with a model file: frames, size, audio kept; the JSON summary on stdout."""
    from drn_cli.ffmpeg import probe_video

    from .conftest import VIDEO

    out = tmp_path / "clip_x4.mkv"
    args = ["video", str(VIDEO / "makeup_vlog_320x240_audio.avi"), "--weights", str(GOLDEN / "tiny-x4.pt")]
    assert main([*args, "-o", str(out), "--end", "0.2", "--preset", "ultrafast", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # the AVI's frames sit at 0.04 s, 0.08 s, ... (first at 0.04): four of them fall before 0.2 s
    assert summary["frames"] == 4 and summary["model"] == "tiny-x4" and summary["fps"] == "25/1"
    info = probe_video(out, count_frames=True)
    assert (info.width, info.height) == (1280, 960)
    assert info.frame_count == 4
    assert any(s.kind == "audio" for s in info.streams)
    # bad input: not a video, and output equal to input
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    proc = drn("video", str(text), "--weights", str(GOLDEN / "tiny-x4.pt"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "notes.mp4" in proc.stderr
    proc = drn("video", str(out), "--weights", str(GOLDEN / "tiny-x4.pt"), "-o", str(out))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
