"""``drn train``: dual regression training (single process, or DDP under torchrun)."""

from __future__ import annotations

import math
import os
from typing import Annotated, Optional

import typer

from .common import JsonOpt, QuietOpt, Reporter

_Opt = Optional  # typer reads Optional[...] on Python 3.10 where `X | None` annotations are strings


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def train_command(
    hr_dirs: Annotated[list[str], typer.Argument(help="Folders of HR training images (any size).")],
    scale: Annotated[int, typer.Option("-s", "--scale", help="4 or 8.")] = 4,
    model: Annotated[str, typer.Option("-m", "--model", help="Architecture family: drn-s or drn-l.")] = "drn-s",
    n_blocks: Annotated[_Opt[int], typer.Option("--n-blocks", help="Custom number of RCABs per stage.")] = None,
    n_feats: Annotated[_Opt[int], typer.Option("--n-feats", help="Custom base feature width.")] = None,
    init: Annotated[_Opt[str], typer.Option("--init", help="Start from a built-in model or a model file.")] = None,
    init_dual: Annotated[
        _Opt[str], typer.Option("--init-dual", help="Dual blocks to start from (e.g. an official *_dual_model.pt).")
    ] = None,
    out: Annotated[str, typer.Option("--out", help="Run directory.")] = "runs/train",
    steps: Annotated[int, typer.Option("--steps")] = 100_000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step per process.")] = 16,
    patch_size: Annotated[int, typer.Option("--patch-size", help="HR crop size (divisible by the scale).")] = 192,
    lr: Annotated[float, typer.Option("--lr")] = 1e-4,
    min_lr: Annotated[float, typer.Option("--min-lr", help="End of the cosine schedule.")] = 1e-7,
    dual_weight: Annotated[float, typer.Option("--dual-weight", help="lambda of the dual loss.")] = 0.1,
    progressive: Annotated[
        bool, typer.Option("--progressive/--no-progressive", help="Supervise intermediate outputs.")
    ] = True,
    loss: Annotated[str, typer.Option("--loss", help="l1 or gs (gradient-sensitive).")] = "l1",
    skip_threshold: Annotated[
        float, typer.Option("--skip-threshold", help="Skip steps whose loss exceeds this x the recent mean.")
    ] = 10.0,
    val: Annotated[_Opt[str], typer.Option("--val", help="Validation data set folder.")] = None,
    val_every: Annotated[int, typer.Option("--val-every")] = 1000,
    save_every: Annotated[int, typer.Option("--save-every")] = 1000,
    log_every: Annotated[int, typer.Option("--log-every", help="Steps per metrics.csv row.")] = 10,
    amp: Annotated[_Opt[str], typer.Option("--amp", help="bf16 or fp16 mixed precision (CUDA only).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    workers: Annotated[int, typer.Option("--workers", help="Data-loader worker processes.")] = 2,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly.")] = False,
    device: Annotated[_Opt[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N.")] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a DRN model with the dual regression loss (paper Eq. 1); resumable, DDP-ready."""
    from ..training import TrainOptions, train

    options = TrainOptions(
        hr_dirs=hr_dirs,
        scale=scale,
        model=model,
        n_blocks=n_blocks,
        n_feats=n_feats,
        init=init,
        init_dual=init_dual,
        out=out,
        steps=steps,
        batch_size=batch_size,
        patch_size=patch_size,
        lr=lr,
        min_lr=min_lr,
        dual_weight=dual_weight,
        progressive=progressive,
        loss=loss,
        skip_threshold=skip_threshold,
        val=val,
        val_every=val_every,
        save_every=save_every,
        log_every=log_every,
        amp=amp,
        seed=seed,
        workers=workers,
        resume=resume,
        device=None if device in (None, "auto") else device,
    )
    run_training(train, options, Reporter(quiet=quiet or not _is_main_process(), json_mode=json_out))


def run_training(fn, options, reporter: Reporter) -> None:
    """Drive a training-style library call with a Rich progress bar; shared by train and adapt."""
    from ..errors import Interrupted
    from ..training import TrainingInterrupted

    with reporter.progress() as bar:
        task = bar.add_task("loading model and data", total=options.steps)

        def progress(info) -> None:
            if info.stage is not None:
                bar.update(task, completed=info.step, total=info.total, description=info.stage)
                return
            terms = " ".join(f"{k} {v:.4f}" for k, v in info.losses.items() if math.isfinite(v))
            val = f" val {info.val_psnr:.2f} dB" if info.val_psnr is not None else ""
            bar.update(
                task,
                completed=info.step,
                total=info.total,
                description=f"step {info.step} {terms} lr {info.lr:.2e} {info.samples_per_s:.1f} samples/s{val}",
            )

        try:
            result = fn(options, progress=progress)
        except TrainingInterrupted as exc:
            raise Interrupted(str(exc)) from None
    summary = {
        "run_dir": str(result.run_dir),
        "step": result.step,
        "total_steps": result.total_steps,
        "finished": result.finished,
        "skipped_steps": result.skipped,
        "seconds": round(result.wall_s, 1),
        "samples_per_s": round(result.samples_per_s, 2),
        "best_psnr": result.best_psnr,
        "best_step": result.best_step,
        "notes": list(result.notes),
    }
    if _is_main_process():
        reporter.emit(summary)
        for note in result.notes:
            reporter.info(note)
        reporter.info(f"run saved in {result.run_dir} (step {result.step}/{result.total_steps})")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
