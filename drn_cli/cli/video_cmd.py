"""``drn video``: stream a video through DRN, keeping sound, timing and metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (
    DeviceOpt,
    HubRepoOpt,
    JsonOpt,
    PrecisionOpt,
    QuietOpt,
    Reporter,
    ScaleOpt,
    WeightsOpt,
    load_model_for_cli,
)

_Opt = Optional  # typer reads Optional[...] on Python 3.10


def default_video_output(source: Path, scale: int) -> Path:
    """``clip.mp4`` -> ``clip_x4.mp4`` (AVI and other old containers become .mkv, which holds any codec)."""
    ext = source.suffix.lower() if source.suffix.lower() in (".mp4", ".mkv", ".mov", ".webm") else ".mkv"
    return source.with_name(f"{source.stem}_x{scale}{ext}")


def video_command(
    source: Annotated[Path, typer.Argument(help="Input video file.")],
    scale: ScaleOpt = None,
    model: Annotated[str, typer.Option("-m", "--model", help="drn-s, drn-l, drn-tiny or a full name.")] = "drn-s",
    weights: WeightsOpt = None,
    output: Annotated[_Opt[Path], typer.Option("-o", "--output", help="Output file (default: <name>_x<s>).")] = None,
    codec: Annotated[str, typer.Option("--codec", help="ffmpeg video encoder.")] = "libx264",
    crf: Annotated[_Opt[int], typer.Option("--crf", help="Constant rate factor (quality).")] = 18,
    preset: Annotated[_Opt[str], typer.Option("--preset", help="Encoder preset.")] = "medium",
    pix_fmt: Annotated[_Opt[str], typer.Option("--pix-fmt", help="Output pixel format.")] = None,
    bitrate: Annotated[_Opt[str], typer.Option("--bitrate", help="Target bitrate, e.g. 8M (instead of CRF).")] = None,
    start: Annotated[_Opt[float], typer.Option("--start", help="Start time in seconds.")] = None,
    end: Annotated[_Opt[float], typer.Option("--end", help="End time in seconds.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Frames per model call (CUDA).")] = 4,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted job.")] = False,
    keep_partial: Annotated[
        bool, typer.Option("--keep-partial", help="On a corrupt input or interruption, keep what was made.")
    ] = False,
    tile: Annotated[int, typer.Option("--tile", help="Tile size in LR pixels (0 = automatic).")] = 0,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    hub_repo: HubRepoOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Upscale every frame of a video with DRN; audio, subtitles and timing are kept."""
    from ..engine import Upscaler
    from ..errors import InputError
    from ..video import upscale_video

    reporter = Reporter(quiet=quiet, json_mode=json_out)
    if not source.is_file():
        raise InputError(f"{source}: no such file")
    if weights is None:
        scale = scale or 4
    net = load_model_for_cli(reporter, model=model, weights=weights, scale=scale, device="cpu", hub_repo=hub_repo)
    upscaler = Upscaler(net, device=device, precision=precision, tile=tile)
    target = output or default_video_output(source, net.config.scale)
    with reporter.progress() as bar:
        task = bar.add_task("frames", total=None)

        def progress(p) -> None:
            bar.update(task, completed=p.frames_done, total=p.total_frames, description=f"frames ({p.fps:.2f} fps)")

        result = upscale_video(
            source,
            target,
            upscaler,
            codec=codec,
            crf=crf,
            preset=preset,
            pix_fmt=pix_fmt,
            bitrate=bitrate,
            start=start,
            end=end,
            batch_size=batch_size,
            resume=resume,
            keep_partial=keep_partial,
            progress=progress,
            notice=reporter.warn,
        )
    summary = result.to_dict()
    summary["model"] = upscaler.name
    reporter.emit(summary)
    reporter.info(
        f"{result.output}: {result.frames} frames {result.width_out}x{result.height_out} at {result.fps} fps "
        f"({result.seconds:.1f} s)"
    )


def register(app: typer.Typer) -> None:
    app.command("video")(video_command)
