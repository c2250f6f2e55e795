"""``drn eval``: PSNR/SSIM of a model (or bicubic) on benchmark data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import (
    DeviceOpt,
    HubRepoOpt,
    JsonOpt,
    QuietOpt,
    Reporter,
    ScaleOpt,
    WeightsOpt,
    load_model_for_cli,
)


def eval_command(
    datasets: Annotated[list[Path], typer.Argument(help="Data set folders (EDSR layout or HR images only).")],
    scale: ScaleOpt = None,
    model: Annotated[
        str, typer.Option("-m", "--model", help="drn-s, drn-l, a full built-in name, or bicubic.")
    ] = "drn-s",
    weights: WeightsOpt = None,
    save_dir: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--save-dir", help="Also write the SR images here."),
    ] = None,
    device: DeviceOpt = "auto",
    hub_repo: HubRepoOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Measure PSNR and SSIM (Y channel, border = scale) as the DRN paper reports them."""
    from ..datasets import load_eval_dataset
    from ..evaluate import evaluate

    reporter = Reporter(quiet=quiet, json_mode=json_out)
    if weights is None:
        scale = scale or 4
        for path in datasets:  # check every folder before any download
            load_eval_dataset(path, scale)
    if weights is None and model.lower() == "bicubic":
        net, name = "bicubic", "bicubic"
    else:
        net = load_model_for_cli(reporter, model=model, weights=weights, scale=scale, device=device, hub_repo=hub_repo)
        name, scale = net.name, net.config.scale
    loaded = [load_eval_dataset(path, scale) for path in datasets]
    table = Table(title=f"x{scale} {name}")
    for col in ("dataset", "images", "PSNR (dB)", "SSIM", "seconds"):
        table.add_column(col, justify="left" if col == "dataset" else "right")
    for dataset in loaded:
        target = None if save_dir is None else save_dir / dataset.name
        with reporter.progress() as bar:
            task = bar.add_task(f"{dataset.name} x{scale}", total=len(dataset))
            result = evaluate(
                dataset,
                scale,
                net,
                model_name=name,
                save_dir=target,
                progress=lambda done, total, task=task: bar.update(task, completed=done, total=total),
            )
        summary = result.to_dict()
        summary.pop("per_image", None)
        reporter.emit(summary)
        table.add_row(
            result.dataset,
            str(result.images),
            f"{result.psnr:.2f}",
            f"{result.ssim:.4f}",
            f"{result.seconds:.1f}",
        )
    reporter.show(table)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
