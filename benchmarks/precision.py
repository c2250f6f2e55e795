"""PSNR and speed of each compute precision: how much does fp16/bf16 cost against fp32?

Runs the same upscaler (``drn_cli.engine.Upscaler``, what `drn upscale` uses) on a benchmark set's
LR images once per precision and reports mean PSNR-Y (border = scale) and seconds. This is the check
behind ``--precision auto``: a half precision may become the default on a device only if it stays
within 0.05 dB of fp32 here.

    python benchmarks/precision.py                                        # drn-tiny-x4, Set5, CPU
    python benchmarks/precision.py --model drn-s-x4 --device cuda --precisions fp32 fp16 bf16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from drn_cli.datasets import load_eval_dataset  # noqa: E402
from drn_cli.engine import Upscaler  # noqa: E402
from drn_cli.loading import load_model  # noqa: E402
from drn_cli.metrics import psnr_y  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="drn-tiny-x4")
    parser.add_argument("--dataset", type=Path, default=SHARED / "data/benchmark/Set5")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    args = parser.parse_args()

    net = load_model(args.model, device="cpu")
    data = load_eval_dataset(args.dataset, net.scale)
    pairs = [sample.load() for sample in data.samples]
    for precision in args.precisions:
        up = Upscaler(net, device=args.device, precision=precision)
        start = time.perf_counter()
        scores = []
        for lr, hr in pairs:
            sr = up(lr[None])[0]
            scores.append(psnr_y(sr, hr, net.scale))
        if up.device.type == "cuda":
            torch.cuda.synchronize()
        row = {
            "date": time.strftime("%Y-%m-%d"),
            "model": args.model,
            "dataset": args.dataset.name,
            "device": str(up.device),
            "precision": precision,
            "dtype": str(up.dtype).removeprefix("torch."),
            "psnr_y": round(float(np.mean(scores)), 4),
            "seconds": round(time.perf_counter() - start, 2),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
