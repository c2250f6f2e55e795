"""`drn video` end-to-end frames per second against the model alone on the same frames.

Model-only: the frames are decoded into memory first, then timed through the same upscaler
(``Upscaler.__call__``, what the pipeline calls). End-to-end: ``upscale_video`` on the same part of
the clip (decode, inference, encode and mux running concurrently). The ratio shows how much of
decoding and encoding the pipeline hides.

    python benchmarks/video.py                                   # drn-tiny-x4 on CPU, 2 s of a shared clip
    python benchmarks/video.py --model drn-s-x4 --device cuda --seconds 10
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from drn_cli.engine import Upscaler  # noqa: E402
from drn_cli.loading import load_model  # noqa: E402
from drn_cli.video import iter_frames, upscale_video  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=SHARED / "data/video/armwrestling_340x256.mp4")
    parser.add_argument("--model", default="drn-tiny-x4")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--preset", default="medium")
    args = parser.parse_args()

    net = load_model(args.model, device="cpu")
    up = Upscaler(net, device=args.device, precision=args.precision)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.mkv"
        result = upscale_video(args.clip, out, up, end=args.seconds, batch_size=args.batch_size, preset=args.preset)
        frames = list(iter_frames(args.clip, max_frames=result.frames))
    batch = np.stack(frames[: args.batch_size])
    up(batch)  # warm-up
    start = time.perf_counter()
    for i in range(0, len(frames), args.batch_size):
        up(np.stack(frames[i : i + args.batch_size]))
    if up.device.type == "cuda":
        torch.cuda.synchronize()
    model_s = time.perf_counter() - start
    row = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "clip": args.clip.name,
        "model": args.model,
        "device": str(up.device),
        "precision": args.precision,
        "frames": result.frames,
        "size_out": f"{result.width_out}x{result.height_out}",
        "model_only_fps": round(len(frames) / model_s, 3),
        "end_to_end_fps": round(result.frames / result.seconds, 3),
    }
    row["ratio"] = round(row["end_to_end_fps"] / row["model_only_fps"], 3)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
