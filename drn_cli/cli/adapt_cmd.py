"""``drn adapt``: fine-tune a model on unpaired low-resolution frames or videos (paper Algorithm 1)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import JsonOpt, QuietOpt, Reporter
from .train_cmd import _is_main_process, run_training

_Opt = Optional  # typer reads Optional[...] on Python 3.10 where `X | None` annotations are strings


def adapt_command(
    paths: Annotated[
        _Opt[list[str]], typer.Argument(help="More unpaired data (same as --unpaired).", show_default=False)
    ] = None,
    unpaired: Annotated[
        _Opt[list[str]],
        typer.Option("--unpaired", "-u", help="LR data without HR: a folder of frames/images, an image or a video."),
    ] = None,
    scale: Annotated[
        _Opt[int], typer.Option("-s", "--scale", help="4 or 8 (default: 4, or the --weights file's own).")
    ] = None,
    model: Annotated[
        str, typer.Option("-m", "--model", help="Built-in model to adapt: drn-s, drn-l or a full name.")
    ] = ("drn-s"),
    weights: Annotated[_Opt[str], typer.Option("--weights", help="Adapt this model file instead.")] = None,
    paired: Annotated[
        _Opt[list[str]],
        typer.Option(
            "--paired", help="HR image folder for the paired set (default: synthetic pairs from your frames)."
        ),
    ] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="Run directory.")] = "runs/adapt",
    steps: Annotated[int, typer.Option("--steps")] = 500,
    unpaired_batch: Annotated[int, typer.Option("--unpaired-batch", help="m: unpaired patches per step.")] = 4,
    paired_batch: Annotated[int, typer.Option("--paired-batch", help="n: paired samples per step.")] = 12,
    patch_size: Annotated[int, typer.Option("--patch-size", help="HR crop size (divisible by the scale).")] = 96,
    lr: Annotated[float, typer.Option("--lr", help="Fine-tuning learning rate.")] = 1e-5,
    min_lr: Annotated[float, typer.Option("--min-lr", help="End of the cosine schedule.")] = 1e-7,
    dual_lr: Annotated[
        _Opt[float], typer.Option("--dual-lr", help="Learning rate of the dual blocks (default: --lr).")
    ] = None,
    dual_weight: Annotated[
        float, typer.Option("--lambda", "--dual-weight", help="Weight of the closed-loop (dual) loss.")
    ] = 0.1,
    frames_per_video: Annotated[int, typer.Option("--frames-per-video", help="Frames taken from each video.")] = 64,
    every: Annotated[
        _Opt[int], typer.Option("--every", help="Take every n-th video frame (default: spread over the video).")
    ] = None,
    degradation: Annotated[
        str,
        typer.Option(
            "--degradation",
            help="How your frames were down-scaled, for the dual blocks: auto (estimated from the frames), "
            "model (keep the model's dual blocks), bicubic, or blur:SIGMA (Gaussian blur, then decimation).",
        ),
    ] = "auto",
    dual_init_steps: Annotated[
        int, typer.Option("--dual-init-steps", help="Steps fitting the dual blocks to the degradation (0: never).")
    ] = 2000,
    skip_threshold: Annotated[
        float, typer.Option("--skip-threshold", help="Skip steps whose loss exceeds this x the recent mean.")
    ] = 10.0,
    val: Annotated[_Opt[str], typer.Option("--val", help="Validation data set folder.")] = None,
    val_every: Annotated[int, typer.Option("--val-every")] = 100,
    save_every: Annotated[int, typer.Option("--save-every")] = 100,
    log_every: Annotated[int, typer.Option("--log-every")] = 10,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly.")] = False,
    device: Annotated[_Opt[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N.")] = None,
    stop_at: Annotated[
        _Opt[int], typer.Option("--stop-at", help="Stop (resumably) after this step.", hidden=True)
    ] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Adapt a model to your own LR frames or videos, no HR needed (DRN's unpaired dual regression).

    Writes RUN_DIR/adapted.safetensors, usable with --weights by upscale, video and eval.
    """
    from ..adapt import AdaptOptions, adapt

    options = AdaptOptions(
        unpaired=[*(unpaired or []), *(paths or [])],
        scale=scale,
        model=model,
        weights=weights,
        paired=list(paired or []),
        out=out,
        steps=steps,
        unpaired_batch=unpaired_batch,
        paired_batch=paired_batch,
        patch_size=patch_size,
        lr=lr,
        min_lr=min_lr,
        dual_lr=dual_lr,
        dual_weight=dual_weight,
        frames_per_video=frames_per_video,
        every=every,
        degradation=degradation,
        dual_init_steps=dual_init_steps,
        skip_threshold=skip_threshold,
        val=val,
        val_every=val_every,
        save_every=save_every,
        log_every=log_every,
        seed=seed,
        resume=resume,
        device=None if device in (None, "auto") else device,
        stop_at=stop_at,
    )
    run_training(adapt, options, Reporter(quiet=quiet or not _is_main_process(), json_mode=json_out))


def register(app: typer.Typer) -> None:
    """Add ``drn adapt`` to the ``drn`` application."""
    app.command("adapt")(adapt_command)
