"""End-to-end `drn upscale` throughput against the bare model forward, untiled and tiled.

For each model: the bare forward (``model(x)`` on a tensor already in memory: the ceiling) and the
end-to-end job (decode PNG, upscale, encode PNG, atomic write, via the same library call the CLI
makes) on the same images in the same run. Figures are output megapixels per second; the ratio is
end-to-end / bare forward. ``--memory`` also runs one large image in a child process and reports
its peak resident memory (host) and, on CUDA, peak accelerator memory.

    python benchmarks/upscale.py                      # DRN-S x4 and x8 (official layout, golden weights)
    python benchmarks/upscale.py --memory 2048        # + peak memory for a 2048x2048 input at x4
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from drn_cli.engine import Upscaler  # noqa: E402
from drn_cli.loading import load_model  # noqa: E402
from drn_cli.upscale import InputFile, upscale_files  # noqa: E402

MODELS = {"drn-s-x4": SHARED / "reference/golden/drn-s-x4.pt", "drn-s-x8": SHARED / "reference/golden/drn-s-x8.pt"}


def _photos(folder: Path, size: int, count: int) -> list[Path]:
    """``count`` real photo crops of ``size`` x ``size`` written as PNG files."""
    sources = sorted((SHARED / "data/benchmark/B100/HR").glob("*.png"))
    paths = []
    for i in range(count):
        img = Image.open(sources[i]).convert("RGB")
        crop = img.crop((0, 0, size, size)) if min(img.size) >= size else img.resize((size, size))
        path = folder / f"in{i}.png"
        crop.save(path)
        paths.append(path)
    return paths


def _bare(upscaler: Upscaler, paths: list[Path], tile: int | None) -> float:
    """Seconds for the model alone on pre-decoded tensors (tile None: whole image)."""
    tensors = [torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32)).permute(2, 0, 1)[None] for p in paths]
    start = time.perf_counter()
    with torch.inference_mode():
        for x in tensors:
            if tile is None:
                upscaler.model(x.to(upscaler.device, upscaler.dtype)).float().cpu()
            else:
                upscaler.upscale_tensor(x)
    if upscaler.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _end_to_end(upscaler: Upscaler, paths: list[Path], out: Path) -> float:
    plan = [(InputFile(p, Path(p.name)), out / f"{p.stem}_up.png") for p in paths]
    start = time.perf_counter()
    results = upscale_files(plan, upscaler, overwrite=True)
    assert all(r.status == "ok" for r in results), results
    return time.perf_counter() - start


def throughput(name: str, size: int, count: int, tile: int, device: str, precision: str) -> list[dict]:
    net = load_model(MODELS[name], device="cpu")
    net.name = name
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = _photos(tmp, size, count)
        mp = count * (size * net.scale) ** 2 / 1e6
        for label, t in (("untiled", None), (f"tile {tile}", tile)):
            up = Upscaler(net, device=device, precision=precision, tile=t or 0)
            if t is None:
                up.plan_tile = lambda h, w: None  # force whole-image inference for the untiled row
            _bare(up, paths[:1], None)  # warm-up
            bare = _bare(up, paths, None)
            e2e = _end_to_end(up, paths, tmp)
            rows.append(
                {
                    "model": name,
                    "mode": label,
                    "device": str(up.device),
                    "precision": precision,
                    "input": f"{count} x {size}x{size}",
                    "bare_forward_mp_s": round(mp / bare, 3),
                    "end_to_end_mp_s": round(mp / e2e, 3),
                    "ratio": round(bare / e2e, 3),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _memory_child(size: int, model: str, device: str, tile: int) -> None:
    """Run in a child process: upscale one size x size photo, print peak host (and CUDA) memory."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "big.png"
        img = Image.open(sorted((SHARED / "data/benchmark/B100/HR").glob("*.png"))[0]).convert("RGB")
        img.resize((size, size), Image.BICUBIC).save(src)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        net = load_model(MODELS[model], device="cpu")
        up = Upscaler(net, device=device, tile=tile)
        start = time.perf_counter()
        upscale_files([(InputFile(src, Path(src.name)), tmp / "out.png")], up, max_pixels=None)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out_mb = (size * net.scale) ** 2 * 3 / 2**20
        result = {
            "model": model,
            "input": f"{size}x{size}",
            "output_rgb8_mib": round(out_mb),
            "tile": up.last_tile,
            "peak_host_rss_mib": round(peak / 1024),
            "rss_before_mib": round(base / 1024),
            "seconds": round(seconds, 1),
        }
        if up.device.type == "cuda":
            result["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
        print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--size", type=int, default=96, help="LR side of each test image")
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--tile", type=int, default=48)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--memory", type=int, default=0, help="also measure peak memory at this input size (x4)")
    parser.add_argument("--memory-tile", type=int, default=0)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(args.memory, args.models[0], args.device, args.memory_tile)
        return
    torch.set_num_threads(torch.get_num_threads())
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}"
    )
    for name in args.models:
        throughput(name, args.size, args.count, args.tile, args.device, args.precision)
    if args.memory:
        cmd = [
            sys.executable,
            __file__,
            "--memory-child",
            "--memory",
            str(args.memory),
            "--models",
            "drn-s-x4",
            "--device",
            args.device,
            "--memory-tile",
            str(args.memory_tile),
        ]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
