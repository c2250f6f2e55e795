"""Ablation of the dual regression loss: lambda 0 vs 0.1, with and without progressive supervision.

Trains the same small model with the same budget and seed four times through ``drn_cli.training.train``
(the function behind ``drn train``), then evaluates each final model on Set5 and Set14 (x4) with the
paper's protocol. Runs go two at a time, one thread each.

    python benchmarks/ablation.py --steps 600 --out /tmp/ablation
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "lambda 0.1, progressive": (0.1, True),
    "lambda 0, progressive": (0.0, True),
    "lambda 0.1, final output only": (0.1, False),
    "lambda 0, final output only": (0.0, False),
}


def _options(out: Path, steps: int, dual_weight: float, progressive: bool) -> dict:
    return {
        "hr_dirs": [str(SHARED / "data/train/T91"), str(SHARED / "data/train/BSDS200")],
        "scale": 4,
        "n_blocks": 4,
        "n_feats": 8,
        "out": str(out),
        "steps": steps,
        "batch_size": 16,
        "patch_size": 96,
        "lr": 1e-3,
        "min_lr": 1e-7,
        "dual_weight": dual_weight,
        "progressive": progressive,
        "save_every": steps,
        "seed": 0,
        "workers": 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", type=Path, default=Path("/tmp/drn-ablation"))
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    jobs = []
    for i, (dual_weight, progressive) in enumerate(VARIANTS.values()):
        run = args.out / f"run{i}"
        if not (run / "final.safetensors").exists():
            opts = args.out / f"run{i}.json"
            opts.write_text(json.dumps(_options(run, args.steps, dual_weight, progressive)))
            jobs.append([sys.executable, "-m", "drn_cli.training", str(opts)])
    start = time.time()
    running: list[subprocess.Popen] = []
    for cmd in jobs:
        while len(running) >= args.parallel:
            running = [p for p in running if p.poll() is None]
            time.sleep(2)
        running.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL))
    for p in running:
        p.wait()
    minutes = (time.time() - start) / 60

    from drn_cli.evaluate import evaluate
    from drn_cli.loading import load_model

    print(
        f"# {platform.node()}, {time.strftime('%Y-%m-%d')}: tiny x4 (4 blocks, 8 feats), {args.steps} steps of "
        f"16 x 96px, lr 1e-3 cosine, seed 0; {minutes:.0f} min of training"
    )
    print("| variant | Set5 PSNR / SSIM | Set14 PSNR / SSIM |")
    print("| --- | --- | --- |")
    for i, name in enumerate(VARIANTS):
        net = load_model(args.out / f"run{i}" / "final.safetensors", device="cpu")
        cells = []
        for ds in ("Set5", "Set14"):
            r = evaluate(SHARED / "data/benchmark" / ds, 4, net)
            cells.append(f"{r.psnr:.2f} / {r.ssim:.4f}")
        print(f"| {name} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
