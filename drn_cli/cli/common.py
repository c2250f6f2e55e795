"""What every subcommand shares: consoles, progress bars, --quiet and --json handling."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

#: Human output (messages, progress, tables) goes to stderr, so stdout carries only --json lines.
err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__fspath__"):
        return str(value)
    return value


class Reporter:
    """Routes a command's output according to ``--quiet`` and ``--json``.

    * ``emit(obj)``: one JSON object per line on stdout (only with --json).
    * ``info``/``warn``: one-line messages on stderr (info silenced by --quiet).
    * ``progress(...)``: a Rich progress bar on stderr, or a do-nothing one when quiet.
    """

    def __init__(self, *, quiet: bool = False, json_mode: bool = False) -> None:
        self.quiet = quiet
        self.json_mode = json_mode

    def emit(self, obj: dict[str, Any]) -> None:
        if self.json_mode:
            sys.stdout.write(json.dumps(_jsonable(obj)) + "\n")
            sys.stdout.flush()

    def info(self, message: str) -> None:
        if not self.quiet:
            err_console.print(message, markup=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        err_console.print(f"warning: {message}", markup=False, soft_wrap=True, style="yellow")

    def show(self, renderable: Any) -> None:
        """A table or summary for people: stdout normally, stderr when stdout is for JSON."""
        if self.quiet:
            return
        (err_console if self.json_mode else out_console).print(renderable)

    @contextlib.contextmanager
    def progress(self, *, transfer: bool = False) -> Iterator[Progress]:
        columns: list[Any] = [TextColumn("{task.description}"), BarColumn()]
        if transfer:
            columns += [DownloadColumn(), TransferSpeedColumn()]
        else:
            columns += [MofNCompleteColumn(), TaskProgressColumn()]
        columns += [TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=err_console, disable=self.quiet, transient=False) as bar:
            yield bar


def download_callback(progress: Progress, label: str):
    """A ``(done, total)`` callback drawing a download in ``progress``; no bar until bytes flow."""
    tasks: list[Any] = []

    def update(done: int, total: int | None) -> None:
        if not tasks:
            tasks.append(progress.add_task(label, total=total))
        progress.update(tasks[0], completed=done, total=total)

    return update


# Options shared by several subcommands (typed once, used everywhere).
ScaleOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option("-s", "--scale", help="Upscaling factor (default: 4, or the --weights file's own)."),
]
ModelOpt = Annotated[
    str,
    typer.Option("-m", "--model", help="Built-in model: drn-s, drn-l (or a full name, see `drn weights list`)."),
]
WeightsOpt = Annotated[
    Optional[Path],  # noqa: UP045 - typer needs Optional here on Python 3.10
    typer.Option("--weights", help="Use a local .pt/.pth/.safetensors model file (or converted folder) instead."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="auto, fp32, fp16 or bf16.")]
HubRepoOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--hub-repo",
        envvar="DRN_HUB_REPO",
        help="Hugging Face Hub repository to fetch built-in weights from.",
    ),
]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="No progress bars or messages.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable results on stdout, one JSON object per line.")]


def load_model_for_cli(
    reporter: Reporter,
    *,
    model: str,
    weights: Path | None,
    scale: int | None,
    device: str,
    hub_repo: str | None,
):
    """Load the model a command asked for, drawing any download as a progress bar."""
    from ..loading import load_model

    if weights is not None:
        return load_model(weights, scale=scale, device=device)
    with reporter.progress(transfer=True) as bar:
        callback = download_callback(bar, f"downloading {model}")
        return load_model(model, scale=scale, device=device, hub_repo=hub_repo, progress=callback)
