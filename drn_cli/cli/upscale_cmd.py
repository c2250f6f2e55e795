"""``drn upscale``: super-resolve image files."""

from __future__ import annotations

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


def upscale_command(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns.")],
    scale: ScaleOpt = None,
    model: Annotated[str, typer.Option("-m", "--model", help="drn-s, drn-l, or a full built-in name.")] = "drn-s",
    weights: WeightsOpt = None,
    output: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("-o", "--output", help="Output file (one input) or folder (created if missing)."),
    ] = None,
    recursive: Annotated[bool, typer.Option("-r", "--recursive", help="Descend into sub-folders.")] = False,
    suffix: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--suffix", help="Appended to output names (default: _x<scale>)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="png, jpg, webp, tiff or same.")] = "same",
    quality: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--quality", help="JPEG/WebP quality 1-100 (WebP 100 = lossless)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    outscale: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option("--outscale", help="Any final scale (e.g. 2, 3, 6): model, then an antialiased downscale."),
    ] = None,
    alpha: Annotated[str, typer.Option("--alpha", help="Alpha channel: model or bicubic.")] = "model",
    tile: Annotated[int, typer.Option("--tile", help="Tile size in LR pixels (0 = automatic).")] = 0,
    tta: Annotated[bool, typer.Option("--tta", help="x8 self-ensemble (flips and rotations averaged).")] = False,
    max_pixels: Annotated[
        int, typer.Option("--max-pixels", help="Refuse larger inputs (decompression-bomb guard); 0 = no limit.")
    ] = 64_000_000,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    hub_repo: HubRepoOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Upscale images with DRN; outputs are written beside the inputs unless -o is given."""
    from ..engine import Upscaler
    from ..upscale import collect_inputs, model_scale_for, plan_outputs, upscale_files

    reporter = Reporter(quiet=quiet, json_mode=json_out)
    if weights is None:
        scale = model_scale_for(outscale) if outscale is not None else (scale or 4)
    files = collect_inputs(inputs, recursive=recursive)
    net = load_model_for_cli(reporter, model=model, weights=weights, scale=scale, device="cpu", hub_repo=hub_repo)
    if outscale is not None:
        model_scale_for(outscale, [net.config.scale])
    plan = plan_outputs(files, output=output, scale=outscale or net.config.scale, suffix=suffix, fmt=fmt)
    upscaler = Upscaler(net, device=device, precision=precision, tile=tile, tta=tta)

    failed = skipped = 0
    with reporter.progress() as bar:
        images = bar.add_task("images", total=len(plan))
        tiles = bar.add_task("tiles", total=None, visible=False)

        def on_start(item, index: int) -> None:
            bar.update(images, description=f"images ({item.path.name})")
            bar.reset(tiles, visible=False)

        def on_tile(done: int, total: int) -> None:
            bar.update(tiles, completed=done, total=total, visible=total > 1)

        def on_result(result) -> None:
            nonlocal failed, skipped
            bar.advance(images)
            reporter.emit(result.to_dict())
            if result.status == "failed":
                failed += 1
                reporter.warn(result.error)
            elif result.status == "skipped":
                skipped += 1
                reporter.info(f"skipped: {result.error}")
            else:
                for notice in result.notices:
                    reporter.info(f"{result.input}: {notice}")

        results = upscale_files(
            plan,
            upscaler,
            overwrite=overwrite,
            on_start=on_start,
            on_result=on_result,
            on_tile=on_tile,
            outscale=outscale,
            alpha=alpha,
            fmt=None if fmt == "same" else fmt,
            quality=quality,
            max_pixels=max_pixels or None,
        )
    done = sum(r.status == "ok" for r in results)
    seconds = sum(r.seconds for r in results)
    reporter.info(f"{done} upscaled, {skipped} skipped, {failed} failed ({seconds:.1f} s)")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("upscale")(upscale_command)
