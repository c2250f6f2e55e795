"""Compatibility with the official DRN release: layouts, parameter counts, golden outputs, dual blocks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from drn_cli.arch import DRN, DRNConfig, count_parameters
from drn_cli.checkpoint import build_primal, read_checkpoint, read_dual_checkpoint
from drn_cli.loading import load_model
from drn_cli.metrics import psnr_y

from .conftest import BENCHMARK, GOLDEN, REFERENCE

LAYOUT = json.loads((REFERENCE / "official_state_dict_layout.json").read_text())
OFFICIAL = {"DRN-S x4": (4, 30, 16), "DRN-S x8": (8, 30, 8), "DRN-L x4": (4, 40, 20), "DRN-L x8": (8, 36, 10)}
PAPER_PARAMS_M = {"DRN-S x4": 4.80, "DRN-S x8": 5.40, "DRN-L x4": 9.83, "DRN-L x8": 10.00}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_state_dict_layout_matches_official(name: str) -> None:
    """Full configurations: every key, shape and order as in the official release; paper parameter counts."""
    net = DRN(DRNConfig(*OFFICIAL[name]))
    ours = [(k, list(v.shape)) for k, v in net.state_dict().items()]
    theirs = [(k, shape) for k, shape in LAYOUT[name]["keys"]]
    assert ours == theirs
    assert count_parameters(net) == LAYOUT[name]["params_requires_grad"]
    assert round(count_parameters(net) / 1e6, 2) == PAPER_PARAMS_M[name]


@pytest.mark.parametrize("case", ["drn-s-x4", "drn-s-x8", "tiny-x4", "tiny-x8"])
def test_golden_outputs_reproduced(case: str, golden_manifest: dict) -> None:
    """Every output of the official implementation, for both inputs, to within 1e-3."""
    meta = golden_manifest[case]
    net = load_model(GOLDEN / f"{case}.pt", scale=meta["scale"], device="cpu")
    assert (net.config.n_blocks, net.config.n_feats) == (meta["n_blocks"], meta["n_feats"])
    arrays = np.load(GOLDEN / f"{case}.npz")
    for inp in ("butterfly", "odd"):
        x = torch.from_numpy(arrays[f"{inp}_input"])[None]
        with torch.inference_mode():
            outs = net.forward_pyramid(x)
            final = net(x)
        expected = [k for k in arrays.files if k.startswith(f"{inp}_out")]
        assert len(outs) == len(expected) == net.config.phases + 1
        for i, out in enumerate(outs):
            ref = torch.from_numpy(arrays[f"{inp}_out{i}"])
            assert out.shape[1:] == ref.shape
            assert (out[0] - ref).abs().max().item() < 1e-3, f"{case} {inp} out{i}"
        assert torch.equal(final, outs[-1])


def _read_rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize(
    ("family", "scale", "min_db"),
    [("S", 4, 48.0), ("L", 4, 48.0), ("S", 8, 36.5), ("L", 8, 38.0)],
)
def test_official_dual_checkpoints(family: str, scale: int, min_db: float) -> None:
    """The official dual blocks load, and chained on Set5 HR reproduce the MATLAB-bicubic LR."""
    name = f"DRN-{family} x{scale}"
    config = DRNConfig(*OFFICIAL[name])
    dual = read_dual_checkpoint(REFERENCE / "weights" / f"DRN{family}{scale}x_dual_model.pt", config).eval()
    scores = []
    for hr_path in sorted((BENCHMARK / "Set5" / "HR").glob("*.png")):
        lr = _read_rgb(BENCHMARK / "Set5" / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png")
        hr = _read_rgb(hr_path)[: lr.shape[0] * scale, : lr.shape[1] * scale]
        x = torch.from_numpy(hr.astype(np.float32)).permute(2, 0, 1)[None]
        with torch.inference_mode():
            down = dual(x)[0].clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
        scores.append(psnr_y(down, lr, 0))
    assert float(np.mean(scores)) >= min_db


def test_checkpoint_canonicalisation(tmp_path) -> None:
    """Wrapped, DataParallel-prefixed and safetensors copies of one checkpoint all load to the same weights."""
    sd = torch.load(GOLDEN / "tiny-x4.pt", weights_only=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "wrapped.pth")
    torch.save({"params": dict(sd)}, tmp_path / "params.pth")
    ref = read_checkpoint(GOLDEN / "tiny-x4.pt")
    for name in ("wrapped.pth", "params.pth"):
        ck = read_checkpoint(tmp_path / name)
        assert ck.config == ref.config == DRNConfig(4, 3, 8)
        assert all(torch.equal(ck.primal[k], sd[k]) for k in sd)
    from drn_cli.checkpoint import save_model

    save_model(tmp_path / "m.safetensors", build_primal(ref.primal, ref.config, "x"))
    ck = read_checkpoint(tmp_path / "m.safetensors")
    assert ck.config == ref.config and ck.metadata["scale"] == "4"
    assert all(torch.equal(ck.primal[k], sd[k]) for k in sd)
