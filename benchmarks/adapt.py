"""Does `drn adapt` help on degradations the model never saw? PSNR/SSIM before and after adaptation.

For every HR image of the chosen benchmark sets (cropped top-left to a multiple of the scale ``s``)
LR versions are made, the first two of which the bicubic-trained model has never seen:

* ``nearest``: nearest-neighbour down-sampling: the pixel at offset ``s // 2`` of every ``s x s``
  cell (MATLAB's and Pillow's nearest-neighbour phase for an integer factor);
* ``blur``: a 7x7 Gaussian blur with sigma 1.6 (mirrored borders), then decimation: every ``s``-th
  pixel, at the same phase ``s // 2`` (``--blur-sigma`` changes the width);
* ``bicubic``: the control, MATLAB bicubic (what the model was trained on): adapting on it should
  change nothing.

For each degradation the model is adapted with :func:`drn_cli.adapt.adapt` using *only* that
degradation's LR images (all sets together) as unpaired data, no HR; with ``--unpaired-sets`` the
unpaired data are instead other images (e.g. BSDS200) degraded the same way, so the evaluated images
are never seen. The HR images are used for
scoring only: PSNR/SSIM on Y with a border of ``s`` pixels shaved (:func:`drn_cli.evaluate.evaluate`)
before and after, on the degraded sets and on the clean MATLAB-bicubic LR of the shared benchmarks.
The LR images and runs live in a temporary folder (``--work`` to keep them).

    python benchmarks/adapt.py --model /tmp/drnrun/x4/best.safetensors
    python benchmarks/adapt.py --model drn-tiny-x4 --steps 300 --json-out adapt.json
    python benchmarks/adapt.py --model M --paired ../shared/data/train/T91    # HR paired set instead
    python benchmarks/adapt.py --model drn-tiny-x8 --scale 8 --sets Set5 Set14   # B100 has no x8 LR
    python benchmarks/adapt.py --model drn-tiny-x4 --unpaired-sets BSDS200   # adapt on other images

The results and what they mean are in ``benchmarks/RESULTS.md`` (section "drn adapt").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from drn_cli.adapt import ADAPTED_NAME, AdaptOptions, adapt  # noqa: E402
from drn_cli.bicubic import imresize_uint8  # noqa: E402
from drn_cli.datasets import EvalDataset, EvalSample, list_images, load_eval_dataset, read_rgb  # noqa: E402
from drn_cli.evaluate import evaluate  # noqa: E402
from drn_cli.loading import load_model  # noqa: E402

DEGRADATIONS = ("nearest", "blur", "bicubic")
BLUR_SIZE = 7
BLUR_SIGMA = 1.6


def degrade(hr: np.ndarray, scale: int, kind: str, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """The LR version of a uint8 RGB ``hr`` (sides multiples of ``scale``) under ``kind``.

    ``sigma``: the blur's (the kernel is 7x7 for the default 1.6, ``2 * ceil(3 * sigma) + 1`` wide otherwise).
    """
    phase = scale // 2
    if kind == "nearest":
        return np.ascontiguousarray(hr[phase::scale, phase::scale])
    if kind == "bicubic":  # the control: the degradation the model was trained on
        return imresize_uint8(hr, scale=1.0 / scale)
    if kind == "blur":
        size = BLUR_SIZE if sigma == BLUR_SIGMA else 2 * math.ceil(3 * sigma) + 1
        blurred = cv2.GaussianBlur(hr.astype(np.float64), (size, size), sigma, borderType=cv2.BORDER_REFLECT_101)
        return np.ascontiguousarray(np.clip(np.round(blurred[phase::scale, phase::scale]), 0, 255).astype(np.uint8))
    raise ValueError(f"unknown degradation {kind!r}")


def hr_folder(name: str) -> Path:
    """The HR images of a shared set: a benchmark (``Set5``, ...) or a training set (``T91``, ``BSDS200``)."""
    benchmark = SHARED / "data" / "benchmark" / name / "HR"
    return benchmark if benchmark.is_dir() else SHARED / "data" / "train" / name


def make_degraded_sets(
    sets: list[str], scale: int, kind: str, folder: Path, sigma: float = BLUR_SIGMA
) -> dict[str, EvalDataset]:
    """Write the ``kind`` LR images of every set under ``folder/<set>/``; evaluation sets pairing them with HR."""
    out: dict[str, EvalDataset] = {}
    for name in sets:
        lr_dir = folder / name
        lr_dir.mkdir(parents=True, exist_ok=True)
        samples = []
        for hr_path in list_images(hr_folder(name)):
            hr = read_rgb(hr_path)
            h, w = hr.shape[:2]
            lr = degrade(hr[: h - h % scale, : w - w % scale], scale, kind, sigma)
            lr_path = lr_dir / f"{hr_path.stem}x{scale}.png"
            Image.fromarray(lr).save(lr_path)
            samples.append(EvalSample(name=hr_path.stem, hr_path=hr_path, lr_path=lr_path, scale=scale))
        out[name] = EvalDataset(name=f"{name}-{kind}", scale=scale, root=lr_dir, samples=samples)
    return out


def score(model: torch.nn.Module, dataset: EvalDataset | Path, scale: int) -> tuple[float, float]:
    res = evaluate(dataset, scale, model)
    return round(res.psnr, 3), round(res.ssim, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="built-in name or model file to adapt")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"])
    parser.add_argument("--degradations", nargs="+", default=list(DEGRADATIONS), choices=DEGRADATIONS)
    parser.add_argument(
        "--unpaired-sets",
        nargs="+",
        default=[],
        help="adapt on these sets' degraded LR instead of the evaluated ones (e.g. BSDS200: held-out footage)",
    )
    defaults = AdaptOptions()
    parser.add_argument(
        "--degradation",
        default=defaults.degradation,
        help="adapt's --degradation (default auto: estimated from the LR images; model: the old behaviour)",
    )
    parser.add_argument("--blur-sigma", type=float, default=BLUR_SIGMA, help="the blur degradation's sigma")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--dual-lr", type=float, default=defaults.dual_lr)
    parser.add_argument("--lambda", dest="dual_weight", type=float, default=defaults.dual_weight)
    parser.add_argument("--unpaired-batch", type=int, default=defaults.unpaired_batch)
    parser.add_argument("--paired-batch", type=int, default=defaults.paired_batch)
    parser.add_argument("--patch-size", type=int, default=48, help="HR pixels (default 48: the LR images are small)")
    parser.add_argument("--paired", nargs="*", default=[], help="HR folders for the paired set (default: synthetic)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    # One thread: the tiny models gain little from more, and on a shared CPU more threads slow down badly.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's choice)")
    parser.add_argument("--work", type=Path, default=None, help="keep LR images and runs here")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON report to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="drn-adapt-bench-")
        work = Path(tmp.name)
    else:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    is_file = Path(args.model).exists()
    base = load_model(args.model, scale=args.scale, device="cpu")
    clean = {s: load_eval_dataset(SHARED / "data" / "benchmark" / s, args.scale) for s in args.sets}
    base_clean = {s: score(base, ds, args.scale) for s, ds in clean.items()}

    report: dict[str, object] = {
        "model": args.model,
        "scale": args.scale,
        "blur_sigma": args.blur_sigma,
        "unpaired_sets": args.unpaired_sets or args.sets,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "runs": [],
    }
    rows = []
    for kind in args.degradations:
        sets = make_degraded_sets(args.sets, args.scale, kind, work / kind, args.blur_sigma)
        unpaired = work / kind
        if args.unpaired_sets:  # held-out footage: adapt on other images with the same degradation
            unpaired = work / f"{kind}-unpaired"
            make_degraded_sets(args.unpaired_sets, args.scale, kind, unpaired, args.blur_sigma)
        before = {s: score(base, ds, args.scale) for s, ds in sets.items()}
        options = AdaptOptions(
            unpaired=[str(unpaired)],
            scale=args.scale,
            model=args.model if not is_file else "drn-s",
            weights=args.model if is_file else None,
            paired=list(args.paired),
            out=str(work / "runs" / kind),
            steps=args.steps,
            unpaired_batch=args.unpaired_batch,
            paired_batch=args.paired_batch,
            patch_size=args.patch_size,
            lr=args.lr,
            dual_lr=args.dual_lr,
            dual_weight=args.dual_weight,
            degradation=args.degradation,
            seed=args.seed,
            save_every=10**9,
            log_every=10,
        )
        t_adapt = time.perf_counter()
        result = adapt(options)
        adapt_s = time.perf_counter() - t_adapt
        adapted = load_model(Path(options.out) / ADAPTED_NAME, device="cpu")
        after = {s: score(adapted, ds, args.scale) for s, ds in sets.items()}
        after_clean = {s: score(adapted, ds, args.scale) for s, ds in clean.items()}
        run = {
            "degradation": kind,
            "options": {k: v for k, v in dataclasses.asdict(options).items() if k not in ("out", "unpaired")},
            "adapt_seconds": round(adapt_s, 1),
            "notes": [n for n in result.notes if not n.startswith("adapted model:")],
            "sets": {},
        }
        for s in args.sets:
            run["sets"][s] = {
                "degraded_before": before[s],
                "degraded_after": after[s],
                "clean_before": base_clean[s],
                "clean_after": after_clean[s],
            }
            rows.append((kind, s, before[s], after[s], base_clean[s], after_clean[s]))
        report["runs"].append(run)
        print(f"# {kind}: adapted in {adapt_s:.0f} s; " + "; ".join(result.notes), file=sys.stderr, flush=True)
    report["total_seconds"] = round(time.perf_counter() - t0, 1)

    print(f"model {args.model}, x{args.scale}; PSNR (dB) / SSIM on Y, shave {args.scale}\n")
    print("| degradation | set | before | after | gain | clean bicubic before | after | change |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind, s, b, a, cb, ca in rows:
        print(
            f"| {kind} | {s} | {b[0]:.2f} / {b[1]:.4f} | {a[0]:.2f} / {a[1]:.4f} | {a[0] - b[0]:+.2f} dB "
            f"| {cb[0]:.2f} / {cb[1]:.4f} | {ca[0]:.2f} / {ca[1]:.4f} | {ca[0] - cb[0]:+.2f} dB |"
        )
    print()
    text = json.dumps(report)
    print(text)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
