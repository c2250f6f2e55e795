"""Tiled inference must give the whole-image result (within 1 grey level after rounding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drn_cli.engine import Upscaler, count_tiles, tiled_forward
from drn_cli.errors import DrnError
from drn_cli.loading import load_model

from .conftest import GOLDEN, real_lr

CPU = torch.device("cpu")


def _rounded(t: torch.Tensor) -> torch.Tensor:
    return t.clamp(0, 255).round()


@pytest.mark.parametrize(
    ("case", "size", "tiles"),
    [
        ("drn-s-x4", (37, 45), (8, 16, 23)),
        ("drn-s-x8", (29, 26), (8, 13)),
        ("tiny-x4", (96, 80), (8, 17, 32, 64)),
        ("tiny-x8", (60, 52), (8, 24, 40)),
    ],
)
def test_tiled_equals_whole_image(case: str, size: tuple[int, int], tiles: tuple[int, ...]) -> None:
    """Golden (official-format) weights on a real photo: every tile size matches the untiled output."""
    net = load_model(GOLDEN / f"{case}.pt", device="cpu")
    lr = torch.from_numpy(real_lr("baboon", net.scale, size)).permute(2, 0, 1)[None].contiguous()
    with torch.inference_mode():
        whole = net(lr)
        for k, tile in enumerate(tiles):
            assert count_tiles(*size, tile) > 1
            store_skips = k % 2 == 0  # both ways of getting the skip features: stored and recomputed
            tiled = tiled_forward(net, lr, tile, device=CPU, dtype=torch.float32, store_skips=store_skips)
            assert tiled.shape == whole.shape
            assert (_rounded(tiled) - _rounded(whole)).abs().max().item() <= 1, f"tile {tile}"
            assert (tiled - whole).abs().max().item() < 1e-2, f"tile {tile}"


def test_naive_tiling_would_differ() -> None:
    """The reason for the exact scheme: independent tiles change the result (channel attention is global).

    With the golden random weights the gates are not very sensitive, so the naive error is small in
    absolute terms; it is still hundreds of times the exact scheme's floating-point noise.
    """
    net = load_model(GOLDEN / "tiny-x4.pt", device="cpu")
    lr = torch.from_numpy(real_lr("baboon", 4, (64, 64))).permute(2, 0, 1)[None].contiguous()
    with torch.inference_mode():
        whole = net(lr)
        # independent overlapping tiles, each cropped to its interior
        naive = torch.empty_like(whole)
        for y0 in (0, 32):
            for x0 in (0, 32):
                ys, xs = slice(max(0, y0 - 8), y0 + 40), slice(max(0, x0 - 8), x0 + 40)
                out = net(lr[..., ys, xs])
                oy, ox = (y0 - ys.start) * 4, (x0 - xs.start) * 4
                naive[..., y0 * 4 : y0 * 4 + 128, x0 * 4 : x0 * 4 + 128] = out[..., oy : oy + 128, ox : ox + 128]
        exact = tiled_forward(net, lr, 32, device=CPU, dtype=torch.float32)
    naive_err = (naive - whole).abs().max().item()
    exact_err = (exact - whole).abs().max().item()
    assert naive_err > 0.01
    assert naive_err > 100 * exact_err


def test_automatic_tile_under_small_memory_budget() -> None:
    """With a tiny memory budget the automatic plan tiles the image, and the output is unchanged."""
    net = load_model(GOLDEN / "tiny-x4.pt", device="cpu")
    rgb = real_lr("baboon", 4, (70, 90))
    whole = Upscaler(net, device="cpu", tile=0).upscale_rgb(rgb)
    lean = Upscaler(net, device="cpu", tile=0, memory_fraction=1e-5)
    lean._budget = lambda: 40 * 2**20  # a 40 MiB budget, well below what the whole image needs
    out = lean.upscale_rgb(rgb)
    assert lean.last_tile is not None and lean.last_tile < 90
    assert np.abs(np.rint(np.clip(out, 0, 255)) - np.rint(np.clip(whole, 0, 255))).max() <= 1


def test_tta_is_mean_of_eight_transforms() -> None:
    """--tta: averaged over flips/rotations, checked against an independent rot90-based ensemble."""
    net = load_model(GOLDEN / "tiny-x4.pt", device="cpu")
    rgb = real_lr("comic", 4, (24, 20))
    out = Upscaler(net, device="cpu", tta=True).upscale_rgb(rgb)
    lr = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    acc = torch.zeros(1, 3, 96, 80)
    with torch.inference_mode():
        for flip in (False, True):
            base = lr.flip(-1) if flip else lr
            for k in range(4):
                y = net(torch.rot90(base, k, (-2, -1)))
                y = torch.rot90(y, -k, (-2, -1))
                acc += y.flip(-1) if flip else y
    expected = (acc / 8)[0].permute(1, 2, 0).numpy()
    assert np.abs(out - expected).max() < 1e-3


def test_half_precision_on_cpu_does_not_crash() -> None:
    net = load_model(GOLDEN / "tiny-x4.pt", device="cpu")
    rgb = real_lr("comic", 4, (16, 16))
    with pytest.warns(UserWarning, match="fp16"):
        up = Upscaler(net, device="cpu", precision="fp16")
    assert up.dtype == torch.float32
    assert up.upscale_rgb(rgb).shape == (64, 64, 3)


def test_bf16_upscaler_leaves_the_callers_model_untouched() -> None:
    net = load_model(GOLDEN / "tiny-x4.pt", device="cpu")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rgb = real_lr("comic", 4, (16, 16))
    up = Upscaler(net, device="cpu", precision="bf16")
    assert up.upscale_rgb(rgb).shape == (64, 64, 3)
    assert next(up.model.parameters()).dtype == torch.bfloat16
    after = net.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.equal(after[k], v) for k, v in before.items())


def test_image_too_large_for_ram_is_a_clear_error() -> None:
    net = load_model(GOLDEN / "tiny-x4.pt", device="cpu")
    up = Upscaler(net, device="cpu", memory_fraction=1e-9)  # a budget of a few bytes
    with pytest.raises(DrnError, match=r"needs about .* GiB of RAM"):
        up.upscale_rgb(real_lr("comic", 4, (16, 16)))
