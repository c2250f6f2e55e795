"""Training throughput of `drn train` (the library's ``train()``), in training samples per second.

Runs a short training job per configuration on the shared T91 + BSDS200 images, through the same
``train()`` the CLI calls (data loading, LR pyramid, primal + dual losses, optimizer steps and
logging included), and reports the steady-state rate: the first ``--warmup`` steps are not timed.
One sample is one HR patch (with its LR pyramid).

    python benchmarks/train.py                          # tiny x4/x8 (the bundled models' shapes) and DRN-S x4
    python benchmarks/train.py --threads 1 --steps 20   # as the bundled models were trained
    python benchmarks/train.py --device cuda --batch-size 16 --patch-size 192
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from drn_cli.arch import DRN, DRNConfig, count_parameters  # noqa: E402
from drn_cli.training import ProgressInfo, TrainOptions, train  # noqa: E402

#: name -> (scale, n_blocks, n_feats)
CONFIGS = {
    "tiny-x4": (4, 4, 8),
    "tiny-x8": (8, 4, 4),
    "drn-s-x4": (4, 30, 16),
}


def measure(
    name: str, steps: int, warmup: int, batch_size: int, patch_size: int, device: str, workers: int
) -> dict[str, object]:
    """Train ``steps`` steps of one configuration and time the steps after ``warmup``."""
    scale, n_blocks, n_feats = CONFIGS[name]
    stamps: list[float] = []

    def progress(_: ProgressInfo) -> None:
        stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        options = TrainOptions(
            hr_dirs=[str(SHARED / "data/train/T91"), str(SHARED / "data/train/BSDS200")],
            scale=scale,
            n_blocks=n_blocks,
            n_feats=n_feats,
            out=str(Path(tmp) / "run"),
            steps=steps,
            batch_size=batch_size,
            patch_size=patch_size,
            save_every=10**9,
            log_every=10**9,
            workers=workers,
            device=device,
        )
        train(options, progress=progress)
    timed = stamps[warmup - 1 :] if warmup > 0 else stamps
    seconds = timed[-1] - timed[0]
    rate = (len(timed) - 1) * batch_size / seconds if seconds > 0 else float("nan")
    params = count_parameters(DRN(DRNConfig(scale, n_blocks, n_feats)))
    return {
        "config": name,
        "scale": scale,
        "n_blocks": n_blocks,
        "n_feats": n_feats,
        "params": params,
        "batch_size": batch_size,
        "patch_size": patch_size,
        "timed_steps": len(timed) - 1,
        "samples_per_s": round(rate, 2),
        "s_per_step": round(seconds / max(1, len(timed) - 1), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patch-size", type=int, default=96)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON line per configuration")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} thread(s), device {args.device}"
    )
    for name in args.configs:
        row = measure(name, args.steps, args.warmup, args.batch_size, args.patch_size, args.device, args.workers)
        if args.json:
            print(json.dumps(row))
        else:
            print(
                f"{name:10s} params {row['params']:>9,d}  batch {args.batch_size} x {args.patch_size}px  "
                f"{row['samples_per_s']:8.2f} samples/s  ({row['s_per_step']:.3f} s/step)"
            )


if __name__ == "__main__":
    main()
