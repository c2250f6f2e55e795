"""Adapting a DRN model to new low-resolution data without HR ground truth (paper Algorithm 1).

The unpaired setting of the DRN paper: the user has low-resolution images or videos ``S_U`` whose
degradation is unknown, and no HR versions of them. Each step samples ``m`` unpaired LR patches
``x`` from ``S_U`` and ``n`` paired samples ``(x, y)`` from a synthetic paired set ``S_P``, and

* updates the primal network ``P`` on
  ``(1 / (m + n)) * sum_i [ 1{i paired} * L1(P(x_i), y_i) + lambda * L1(D(P(x_i)), x_i) ]``;
* updates the dual model ``D`` on ``lambda * L1(D(P(x_i)), x_i)`` over the same ``m + n`` samples.

Our reading, where the paper leaves room:

* ``D(P(x))`` is the chain of all dual blocks applied to the final output (``DualModel.forward``),
  so the loop closes at the input resolution, the only one an unpaired sample has a target at.
* Both updates use the same forward pass: one backward of the primal objective gives ``P`` its
  gradient and gives ``D`` exactly the gradient of ``lambda * L1(D(P(x)), x)`` (that term is the
  only one that depends on ``D``, and its gradient with respect to ``D``'s weights is the same
  whether ``P(x)`` is detached or not); both optimizers then step. This is Algorithm 1 with the
  dual update seeing the primal output of the current step rather than a second forward pass.
* The loss is the paper's sum divided by ``m + n``, so with the defaults the paired term weighs
  ``n / (m + n)`` and the ratio of unpaired samples ``m / (m + n)`` controls the balance.
* ``S_P`` is made of HR crops from ``paired`` folders, or, when none are given, from the user's own
  frames (the frame taken as HR); the LR side is their MATLAB-bicubic down-scaling, rounded to
  8 bits as benchmark LR files are.
* The dual model must know the real degradation for the loop to teach the primal network anything,
  and the unpaired loop does not teach it that. So before the loop the degradation is estimated from
  the frames (:mod:`drn_cli.degradation`; ``degradation="auto"``): frames that look
  bicubic-down-scaled keep the model's (bicubic) dual blocks; otherwise the whole dual chain is
  fitted for ``dual_init_steps`` steps to the estimated operator (a Gaussian blur then decimation)
  on crops of the user's frames, starting from the model's dual blocks. ``"model"`` skips this
  (the paper's Algorithm 1 as written), ``"bicubic"``/``"blur:SIGMA"`` name the operator.
* A model file without dual blocks gets "bicubic-like" ones: a fresh dual block is fitted for
  ``dual_init_steps`` steps to MATLAB's bicubic 2x down-scaling of crops of the user's frames, and
  copied into every stage (each stage is a 2x bicubic down-scaling in the pretrained duals too).

The step loop, schedules, loss-spike guard, multi-process gradient averaging (``torchrun``),
validation, ``metrics.csv``, ``last.ckpt`` and exact ``resume`` are :func:`drn_cli.training.run_loop`'s.
The run directory ends with ``adapted.safetensors`` (primal + dual), usable wherever a model file is.

What to expect (``benchmarks/adapt.py``, ``benchmarks/RESULTS.md``): a clear gain where the
degradation differs measurably from bicubic (nearest-neighbour down-sampling: +0.5..0.6 dB with the
defaults), nothing where it is statistically close to bicubic (a Gaussian of sigma 1.6 at x4): the
sub-pixel sampling phase, which cannot be told from LR data, is then all that differs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.optim import Adam, Optimizer

from .arch import DRN, DownBlock, DRNConfig, DualModel
from .bicubic import imresize
from .checkpoint import save_model
from .degradation import BICUBIC, Degradation, estimate_degradation, parse_degradation
from .errors import InputError
from .imagefile import IMAGE_EXTENSIONS, read_image
from .losses import l1_loss
from .train_data import load_images, random_crop
from .training import (
    CHECKPOINT_NAME,
    RUNTIME_FIELDS,
    TRAIN_SCALES,
    DistInfo,
    LoopSpec,
    OptionsDict,
    ProgressInfo,
    StepContext,
    StepResult,
    TrainResult,
    _pick_device,
    cosine_schedule,
    read_train_state,
    run_loop,
    setup_distributed,
)

__all__ = ["ADAPTED_NAME", "AdaptOptions", "FrameSet", "adapt", "fit_bicubic_dual", "fit_dual", "load_unpaired"]

#: The model file an adaptation run ends with.
ADAPTED_NAME = "adapted.safetensors"
#: File extensions taken as videos when a folder is scanned (a file given directly may be any video).
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".3gp"}
)
#: Side of the square crops the bicubic-like dual blocks are fitted on (smaller frames use their size).
_DUAL_FIT_PATCH = 64
#: Output side of the crops a whole dual chain is fitted on (the input is this times the scale).
_DUAL_FIT_OUT = 16
_DUAL_FIT_BATCH = 8
_DUAL_FIT_LR = 3e-3


@dataclass
class AdaptOptions(OptionsDict):
    """Everything :func:`adapt` needs; each field is one ``drn adapt`` option.

    Defaults: ``lr`` 1e-5, a tenth of the training rate (the usual fine-tuning step: the model is
    already good on bicubic data and must not drift); ``dual_weight`` 0.1 as in the paper; a
    quarter of each batch unpaired (``m`` 4, ``n`` 12) so the paired term anchors the model;
    500 steps; the degradation estimated from the frames (``benchmarks/adapt.py`` has the figures).
    """

    _KIND = "adaptation"

    #: Unpaired LR data: folders of frames/images (and videos inside them), image files, video files.
    unpaired: list[str] = field(default_factory=list)
    #: Upscaling factor; None: the model's own (4 for a built-in name).
    scale: int | None = None
    #: Built-in model to start from (a family such as "drn-s" or a full name such as "drn-s-x4").
    model: str = "drn-s"
    #: A model file to start from instead of ``model``.
    weights: str | None = None
    #: Folders (or files) of HR images for the paired set; empty: synthetic pairs from the unpaired frames.
    paired: list[str] = field(default_factory=list)
    #: Run directory (created; must not hold another run unless ``resume``).
    out: str = "runs/adapt"
    steps: int = 500
    #: m: unpaired LR patches per step per process.
    unpaired_batch: int = 4
    #: n: paired (LR, HR) samples per step per process.
    paired_batch: int = 12
    #: HR crop size in pixels (unpaired LR crops are ``patch_size / scale``); divisible by the scale.
    patch_size: int = 96
    #: Fine-tuning learning rate of the primal network (cosine-annealed to ``min_lr``).
    lr: float = 1e-5
    min_lr: float = 1e-7
    #: Learning rate of the dual blocks; None: the same as ``lr``.
    dual_lr: float | None = None
    #: lambda, the weight of the closed-loop (dual) loss.
    dual_weight: float = 0.1
    #: Frames taken from each video.
    frames_per_video: int = 64
    #: Take every n-th frame of a video; None: spread ``frames_per_video`` over the whole video.
    every: int | None = None
    #: How the frames were down-scaled, which the dual blocks are fitted to before the loop: "auto"
    #: (estimated from the frames, see :mod:`drn_cli.degradation`), "model" (keep the model's dual
    #: blocks), "bicubic" or "blur:SIGMA" (Gaussian blur of SIGMA input pixels, then decimation).
    degradation: str = "auto"
    #: Steps of fitting the dual blocks to the degradation, or bicubic-like ones when the model has
    #: none (0: never fit; refuse models without dual blocks).
    dual_init_steps: int = 2000
    #: Skip a step whose loss exceeds this multiple of the recent mean (0: never).
    skip_threshold: float = 10.0
    #: Evaluation data set (a folder with HR/ and LR_bicubic/, or HR only) for validation PSNR/SSIM.
    val: str | None = None
    val_every: int = 100
    save_every: int = 100
    log_every: int = 10
    seed: int = 0
    #: Continue the run in ``out`` exactly where its ``last.ckpt`` left off.
    resume: bool = False
    device: str | None = None
    #: Stop after this step (saving ``last.ckpt``) even though the schedule runs to ``steps``.
    stop_at: int | None = None


# --------------------------------------------------------------------------------------------
# Unpaired data: frames from image folders and videos, held in memory
# --------------------------------------------------------------------------------------------


@dataclass
class FrameSet:
    """Decoded unpaired frames (H x W x 3 uint8 RGB) and where they came from."""

    frames: list[np.ndarray]
    #: One label per frame: ``path`` for an image, ``path#index`` for a video frame.
    origins: list[str]
    images: int = 0
    videos: int = 0

    def usable(self, min_side: int) -> list[np.ndarray]:
        """The frames whose shorter side is at least ``min_side`` pixels."""
        return [f for f in self.frames if min(f.shape[:2]) >= min_side]


def _to_rgb8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    channels = pixels.shape[2]
    if channels in (1, 2):
        pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def _video_every(path: Path, frames_per_video: int) -> int:
    from .video import probe_video

    count = probe_video(path).frame_count
    return max(1, count // frames_per_video) if count > 0 else 1


def _read_video(path: Path, frames_per_video: int, every: int | None) -> list[np.ndarray]:
    from .video import iter_frames

    step = every if every is not None else _video_every(path, frames_per_video)
    frames = list(iter_frames(path, every=step, max_frames=frames_per_video))
    if not frames:
        raise InputError(f"video {path} has no decodable frames")
    return frames


def _scan(folder: Path) -> list[Path]:
    wanted = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in wanted)


def load_unpaired(sources: Sequence[str | Path], *, frames_per_video: int = 64, every: int | None = None) -> FrameSet:
    """Decode the unpaired LR data into memory.

    Each source is a folder (its images and videos, recursively), an image file or a video file
    (any format ffmpeg reads). Videos are streamed with :func:`drn_cli.video.iter_frames`: up to
    ``frames_per_video`` frames, every ``every``-th one, or (``every=None``) spread evenly over the
    whole video; nothing is written to disk. Images are converted to 8-bit RGB.

    Raises :class:`InputError` for a missing source, an unreadable image or video, or no frames.
    """
    if not sources:
        raise InputError("no unpaired data was given (use --unpaired with folders, images or videos)")
    if frames_per_video < 1:
        raise InputError(f"frames per video must be at least 1, got {frames_per_video}")
    if every is not None and every < 1:
        raise InputError(f"every must be at least 1, got {every}")
    out = FrameSet(frames=[], origins=[])
    for source in sources:
        src = Path(source)
        if not src.exists():
            raise InputError(f"unpaired source {src} does not exist")
        files = _scan(src) if src.is_dir() else [src]
        if src.is_dir() and not files:
            raise InputError(f"folder {src} holds no images or videos")
        for path in files:
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                out.frames.append(_to_rgb8(read_image(path).pixels))
                out.origins.append(str(path))
                out.images += 1
            else:
                for i, frame in enumerate(_read_video(path, frames_per_video, every)):
                    out.frames.append(frame)
                    out.origins.append(f"{path}#{i}")
                out.videos += 1
    return out


# --------------------------------------------------------------------------------------------
# Bicubic-like dual blocks
# --------------------------------------------------------------------------------------------


def _crop_batch(images: Sequence[np.ndarray], count: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """``count`` random augmented ``size`` crops of randomly chosen images, a uint8 N x 3 x S x S tensor."""
    crops = [random_crop(images[int(rng.integers(0, len(images)))], size, rng) for _ in range(count)]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


def _init_bicubic_like(block: DownBlock) -> None:
    """Set a DownBlock to a linear approximation of the bicubic 2x down-scaling, per colour channel.

    MATLAB's 2x bicubic kernel has 8 taps centred half a pixel after the even input pixel. The
    block's stride-2 3x3 conv followed by a 3x3 conv spans 7 input pixels around the even pixel;
    the separable weights below are the least-squares factorisation of the kernel into a
    non-negative 3-tap stride-2 filter (so the LeakyReLU sees non-negative images and stays
    linear) and a 3-tap filter at the low resolution. Gradient fitting then refines it.
    """
    stride2 = torch.tensor([0.158, 0.471, 0.440])
    low_res = torch.tensor([-0.076, 0.935, 0.094])
    first, second = block.dual_module[0][0], block.dual_module[1]
    n_feats = first.weight.shape[0]
    per_colour = [len(range(c, n_feats, 3)) for c in range(3)]
    with torch.no_grad():
        first.weight.zero_()
        second.weight.zero_()
        for i in range(n_feats):
            c = i % 3
            first.weight[i, c] = torch.outer(stride2, stride2)
            second.weight[c, i] = torch.outer(low_res, low_res) / per_colour[c]


def _fit(
    module: torch.nn.Module,
    target: Callable[[torch.Tensor], torch.Tensor],
    frames: Sequence[np.ndarray],
    size: int,
    steps: int,
    rng: np.random.Generator,
    device: torch.device | str,
    on_step: Callable[[int, int], None] | None = None,
) -> float:
    """Train ``module`` to map random ``size`` crops of ``frames`` to ``target(crop)``; held-out PSNR (dB).

    ``on_step(done, steps)`` is called every 50 steps.
    """
    usable = [f for f in frames if min(f.shape[:2]) >= size]
    optimizer = Adam(module.parameters(), lr=_DUAL_FIT_LR)
    schedule = cosine_schedule(optimizer, steps, _DUAL_FIT_LR * 0.01)
    module.train()
    for i in range(steps):
        hr = _crop_batch(usable, _DUAL_FIT_BATCH, size, rng).to(device).float()
        loss = l1_loss(module(hr), target(hr))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if on_step is not None and ((i + 1) % 50 == 0 or i + 1 == steps):
            on_step(i + 1, steps)
    with torch.no_grad():
        hr = _crop_batch(usable, 2 * _DUAL_FIT_BATCH, size, rng).to(device).float()
        mse = float(torch.mean((module(hr) - target(hr)) ** 2))
    return 10 * math.log10(255.0**2 / mse) if mse > 0 else math.inf


def _fit_size(frames: Sequence[np.ndarray], wanted: int, multiple: int, what: str) -> int:
    """The crop side for fitting: ``wanted``, or the largest frame's shorter side, cut to a multiple."""
    size = min(wanted, max((min(f.shape[:2]) for f in frames), default=0)) // multiple * multiple
    if size < 4 * multiple:
        raise InputError(f"the frames are too small to fit {what} (need at least {4 * multiple} pixels)")
    return size


def fit_bicubic_dual(
    config: DRNConfig,
    frames: Sequence[np.ndarray],
    steps: int,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[DualModel, float]:
    """Dual blocks that imitate MATLAB's bicubic 2x down-scaling, fitted on crops of ``frames``.

    One :class:`~drn_cli.arch.DownBlock`, started from a linear approximation of the bicubic kernel,
    is trained with Adam (cosine-annealed) for ``steps`` steps to map random crops to their
    ``imresize(crop, 0.5)``, then copied into every stage. Returns the
    dual model and its PSNR (dB, RGB, 0..255) against the bicubic result on held-out crops.
    Raises :class:`InputError` when no frame is large enough to crop from.
    """
    size = _fit_size(frames, _DUAL_FIT_PATCH, 2, "bicubic-like dual blocks")
    rng = np.random.default_rng([seed, 0xD0A1])
    dual = DualModel(config).to(device)
    block = dual.blocks[0]
    _init_bicubic_like(block)
    psnr = _fit(block, lambda hr: imresize(hr, scale=0.5), frames, size, steps, rng, device, on_step)
    for other in dual.blocks[1:]:
        other.load_state_dict(block.state_dict())
    return dual, psnr


def fit_dual(
    config: DRNConfig,
    degradation: Degradation,
    frames: Sequence[np.ndarray],
    steps: int,
    *,
    start: DualModel | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[DualModel, float]:
    """Dual blocks whose chain imitates ``degradation`` at the model's scale, fitted on crops of ``frames``.

    Starts from a copy of ``start`` (e.g. the pretrained duals) or from bicubic-like blocks, and
    trains the whole chain with Adam (cosine-annealed) for ``steps`` steps to map random crops to
    ``degradation.apply(crop, scale)`` (``on_step(done, steps)`` every 50 steps). Returns the dual
    model and its held-out PSNR (dB, RGB, 0..255) against the operator. Raises
    :class:`InputError` when no frame is large enough to crop from.
    """
    scale = config.scale
    size = _fit_size(frames, _DUAL_FIT_OUT * scale, scale, "the dual blocks")
    dual = DualModel(config)
    if start is not None:
        dual.load_state_dict(start.state_dict())
    else:
        for block in dual.blocks:
            _init_bicubic_like(block)
    dual.to(device)
    rng = np.random.default_rng([seed, 0xDE6A])
    psnr = _fit(dual, lambda hr: degradation.apply(hr, scale), frames, size, steps, rng, device, on_step)
    return dual, psnr


# --------------------------------------------------------------------------------------------
# Adaptation
# --------------------------------------------------------------------------------------------

#: Options that may differ when a run is resumed (they do not change the computation).
_RUNTIME_FIELDS = tuple(f for f in RUNTIME_FIELDS if f != "workers")


def _check_options(o: AdaptOptions) -> None:
    if o.scale is not None and o.scale not in TRAIN_SCALES:
        raise InputError(f"adaptation supports scales {' and '.join(map(str, TRAIN_SCALES))}, not {o.scale}")
    if o.steps < 1:
        raise InputError(f"steps must be at least 1, got {o.steps}")
    if o.unpaired_batch < 0 or o.paired_batch < 0 or o.unpaired_batch + o.paired_batch < 1:
        raise InputError(
            "the unpaired and paired batch sizes must be >= 0 and not both 0, "
            f"got {o.unpaired_batch} and {o.paired_batch}"
        )
    if o.patch_size < 1:
        raise InputError(f"patch size must be positive, got {o.patch_size}")
    for name in ("lr", "dual_lr"):
        value = getattr(o, name)
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise InputError(f"{name.replace('_', ' ')} must be a positive number, got {value}")
    if not (0 <= o.min_lr <= o.lr):
        raise InputError(f"the minimum learning rate must be in 0..lr, got {o.min_lr}")
    if not (o.dual_weight >= 0 and math.isfinite(o.dual_weight)):
        raise InputError(f"lambda must be a finite number >= 0, got {o.dual_weight}")
    parse_degradation(o.degradation)
    if o.dual_init_steps < 0:
        raise InputError(f"dual init steps must be >= 0, got {o.dual_init_steps}")
    for name in ("val_every", "save_every", "log_every"):
        if getattr(o, name) < 1:
            raise InputError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(o, name)}")
    if o.skip_threshold < 0:
        raise InputError(f"skip threshold must be >= 0, got {o.skip_threshold}")
    if o.val is not None and not Path(o.val).is_dir():
        raise InputError(f"validation data set {o.val} is not a folder")
    if not o.unpaired:
        raise InputError("no unpaired data was given (use --unpaired with folders, images or videos)")


def _check_patch(patch_size: int, scale: int) -> None:
    if patch_size < scale or patch_size % scale:
        raise InputError(f"patch size {patch_size} must be a positive multiple of the scale {scale}")


def _model_spec(options: AdaptOptions) -> str:
    return options.weights if options.weights is not None else options.model


def _initial_models(options: AdaptOptions) -> tuple[DRN, DualModel | None, str]:
    """The pretrained primal network and its dual blocks (None when it has none), and their source."""
    from .loading import load_dual, load_model

    spec = _model_spec(options)
    scale = options.scale if options.scale is not None or options.weights is not None else 4
    primal = load_model(spec, scale=scale, device="cpu")
    dual = load_dual(spec, primal.config)
    return primal, dual, f"from {spec}" if dual is not None else ""


def _resume_options(options: AdaptOptions) -> tuple[AdaptOptions, dict[str, Any]]:
    ckpt = Path(options.out) / CHECKPOINT_NAME
    if not ckpt.is_file():
        raise InputError(f"cannot resume: {ckpt} does not exist")
    config = json.loads(read_train_state(ckpt)["config"])
    if config.get("kind") != "adapt":
        raise InputError(f"cannot resume: {Path(options.out)} holds a training run, not an adaptation run")
    stored = AdaptOptions.from_dict(config["options"])
    return dataclasses.replace(stored, **{k: getattr(options, k) for k in _RUNTIME_FIELDS}), config


def _prepare_dual(
    options: AdaptOptions,
    config: DRNConfig,
    loaded: DualModel | None,
    loaded_source: str,
    frames: Sequence[np.ndarray],
    device: torch.device,
    progress: Callable[[ProgressInfo], None] | None,
) -> tuple[DualModel, str, str]:
    """The dual blocks the loop starts from, where they came from, and a note on the degradation.

    ``--degradation auto`` estimates the degradation from the frames; bicubic (what the pretrained
    duals imitate) keeps the model's dual blocks, anything else has them fitted to it. A model
    without dual blocks gets bicubic-like ones first.
    """
    choice = parse_degradation(options.degradation)
    scale, steps = config.scale, options.dual_init_steps

    def stage(text: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(
            ProgressInfo(step=done, total=total, losses={}, lr=0.0, samples_per_s=0.0, skipped=0, stage=text)
        )

    target: Degradation | None
    if choice == "auto":
        try:
            estimate = estimate_degradation(frames, scale)
        except InputError as exc:  # frames too small or flat: adapting still works, with the model's duals
            target, note = None, f"degradation: not estimated ({exc}); the model's dual blocks are kept"
        else:
            target = estimate.degradation
            note = f"degradation: {estimate.describe(scale)}"
            if target != BICUBIC and steps == 0:
                note += "; not fitted (--dual-init-steps 0), the model's dual blocks are kept"
                target = None
    elif choice == "model":
        target, note = None, "degradation: the model's dual blocks are kept (--degradation model)"
    else:
        assert isinstance(choice, Degradation)
        target, note = choice, f"degradation: {choice.describe(scale)} (--degradation {choice})"

    if target is None or target == BICUBIC:
        if loaded is not None:
            return loaded, loaded_source, note
        if steps == 0:
            raise InputError(
                f"the model {_model_spec(options)} has no dual blocks and fitting them is disabled "
                "(--dual-init-steps 0); give a model file with dual blocks or allow fitting"
            )
        on_step = stage("fitting bicubic-like dual blocks")
        dual, fit_psnr = fit_bicubic_dual(config, frames, steps, seed=options.seed, device=device, on_step=on_step)
        source = f"bicubic-like, fitted for {steps} steps on your frames ({fit_psnr:.1f} dB against MATLAB bicubic 2x)"
        return dual, source, note
    if steps == 0:
        raise InputError(f"--degradation {target} needs the dual blocks fitted, but --dual-init-steps is 0")
    on_step = stage(f"fitting the dual blocks to {target}")
    dual, fit_psnr = fit_dual(
        config, target, frames, steps, start=loaded, seed=options.seed, device=device, on_step=on_step
    )
    start = loaded_source if loaded is not None else "from bicubic-like blocks"
    source = f"fitted to {target} for {steps} steps on your frames, starting {start} ({fit_psnr:.1f} dB against it)"
    return dual, source, note


def adapt(options: AdaptOptions, progress: Callable[[ProgressInfo], None] | None = None) -> TrainResult:
    """Adapt a pretrained DRN model to unpaired LR data (paper Algorithm 1); see :class:`AdaptOptions`.

    Writes into ``options.out``: ``config.json``, ``metrics.csv``, ``last.ckpt`` (exact resume),
    ``last.safetensors`` and, when the run finishes, ``adapted.safetensors`` (primal + dual blocks);
    with ``val`` also ``best.safetensors``. ``TrainResult.notes`` say which paired set and which
    dual blocks were used. Raises :class:`InputError`/:class:`WeightsError` for unusable options,
    data or models, before anything is written.
    """
    stored_config: dict[str, Any] | None = None
    run_dir = Path(options.out)
    if options.resume:
        options, stored_config = _resume_options(options)
    elif (run_dir / CHECKPOINT_NAME).exists():
        raise InputError(f"{run_dir} already holds a run; resume it or choose another output folder")
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"output path {run_dir} exists and is not a folder")
    _check_options(options)

    dist_info = setup_distributed(options.device)
    try:
        return _adapt(options, progress, dist_info, stored_config)
    finally:
        if dist_info.initialised_here:
            dist.destroy_process_group()


def _adapt(
    options: AdaptOptions,
    progress: Callable[[ProgressInfo], None] | None,
    dist_info: DistInfo,
    stored_config: dict[str, Any] | None,
) -> TrainResult:
    device = _pick_device(options, dist_info)  # type: ignore[arg-type]  # reads .device only
    torch.manual_seed(options.seed)
    np.random.seed(options.seed % 2**32)
    random.seed(options.seed)

    frames = load_unpaired(options.unpaired, frames_per_video=options.frames_per_video, every=options.every)
    if not frames.frames:
        raise InputError(f"no frames found in {', '.join(map(str, options.unpaired))}")

    if stored_config is not None:
        mc = stored_config["model"]
        config = DRNConfig(int(mc["scale"]), int(mc["n_blocks"]), int(mc["n_feats"]))
        primal, dual, dual_source = DRN(config), DualModel(config), str(stored_config["dual_init"])
    else:
        primal, loaded_dual, dual_source = _initial_models(options)
        config = primal.config
        if options.scale is not None and options.scale != config.scale:
            raise InputError(
                f"the model {_model_spec(options)} is x{config.scale}, but scale {options.scale} was asked"
            )
        if config.scale not in TRAIN_SCALES:
            raise InputError(f"adaptation supports x4 and x8 models; {_model_spec(options)} is x{config.scale}")
    scale, m, n = config.scale, options.unpaired_batch, options.paired_batch
    _check_patch(options.patch_size, scale)
    lr_patch = options.patch_size // scale

    unpaired = frames.usable(lr_patch)
    if m > 0 and not unpaired:
        largest = max(min(f.shape[:2]) for f in frames.frames)
        raise InputError(
            f"all {len(frames.frames)} unpaired frames are smaller than the {lr_patch}-pixel LR patch "
            f"(patch size {options.patch_size} / scale {scale}; the largest frame side is {largest}); "
            "use a smaller --patch-size"
        )
    data_note = f"unpaired data: {len(unpaired)} frames ({frames.images} image(s), {frames.videos} video(s))"
    if len(unpaired) < len(frames.frames):
        data_note += f"; {len(frames.frames) - len(unpaired)} smaller than the {lr_patch}-pixel LR patch skipped"

    if options.paired:
        paired_set = load_images(options.paired, options.patch_size)
        hr_images = paired_set.images
        paired_note = f"paired data: {len(hr_images)} HR image(s) from {', '.join(options.paired)} with bicubic LR"
        if paired_set.too_small:
            paired_note += f" ({len(paired_set.too_small)} smaller than the patch skipped)"
    else:
        hr_images = frames.usable(options.patch_size)
        if n > 0 and not hr_images:
            raise InputError(
                f"no unpaired frame is at least {options.patch_size} pixels on its shorter side, so no synthetic "
                "pairs can be made; use a smaller --patch-size or give --paired HR folders"
            )
        paired_note = (
            f"paired data: synthetic pairs from {len(hr_images)} of your frames "
            f"(frame as HR, its bicubic x{scale} down-scaling as LR)"
        )
    if n == 0:
        paired_note = "paired data: none (paired batch 0)"

    if stored_config is None:
        main_progress = progress if dist_info.rank == 0 else None
        dual, dual_source, degradation_note = _prepare_dual(
            options, config, loaded_dual, dual_source, unpaired or frames.frames, device, main_progress
        )
    else:
        degradation_note = str(stored_config.get("degradation", "degradation: not recorded"))
    notes = [data_note, paired_note, degradation_note, f"dual blocks: {dual_source}"]
    primal.to(device)
    dual.to(device)

    dual_lr = options.dual_lr if options.dual_lr is not None else options.lr
    optimizers: dict[str, Optimizer] = {"primal": Adam(primal.parameters(), lr=options.lr)}
    for i, block in enumerate(dual.blocks):
        optimizers[f"dual{i}"] = Adam(block.parameters(), lr=dual_lr)
    min_ratio = options.min_lr / options.lr
    schedulers = {
        k: cosine_schedule(o, options.steps, o.param_groups[0]["lr"] * min_ratio) for k, o in optimizers.items()
    }
    step_optimizers = list(optimizers.values())

    def batches(start: int) -> Iterator[tuple[torch.Tensor | None, torch.Tensor | None]]:
        # Every batch is fixed by (seed, step, rank) alone, so a resumed run draws the same data.
        for step in range(start, options.steps):
            rng = np.random.default_rng([options.seed, step, dist_info.rank])
            lr_u = _crop_batch(unpaired, m, lr_patch, rng) if m > 0 else None
            hr_p = _crop_batch(hr_images, n, options.patch_size, rng) if n > 0 else None
            yield lr_u, hr_p

    lam = options.dual_weight

    def step_fn(batch: tuple[torch.Tensor | None, torch.Tensor | None], ctx: StepContext) -> StepResult:
        lr_u, hr_p = batch
        inputs = []
        hr = None
        if hr_p is not None:
            hr = hr_p.to(device).float()
            inputs.append(imresize(hr, scale=1.0 / scale).round().clamp(0, 255))
        if lr_u is not None:
            inputs.append(lr_u.to(device).float())
        x = torch.cat(inputs)
        sr = primal(x)
        loss_dual = l1_loss(dual(sr), x)
        loss_paired = l1_loss(sr[:n], hr) if hr is not None else loss_dual.new_zeros(())
        total = (n * loss_paired + lam * (m + n) * loss_dual) / (m + n)
        losses = {"loss": total.item(), "loss_paired": loss_paired.item(), "loss_dual": loss_dual.item()}
        if not ctx.accept(total):
            return StepResult(losses, applied=False)
        ctx.backward(total)
        return StepResult(losses, ctx.update(step_optimizers))

    validate = None
    if options.val is not None:
        from .datasets import load_eval_dataset
        from .evaluate import evaluate

        val_set = load_eval_dataset(Path(options.val), scale)

        def validate() -> tuple[float, float]:
            res = evaluate(val_set, scale, primal, model_name="adapting", device=device)
            return res.psnr, res.ssim

    run_dir = Path(options.out)

    def save_models(path: Path) -> None:
        # run_loop names the finished model final.safetensors; an adaptation run calls it adapted.
        if path.name == "final.safetensors":
            path = path.with_name(ADAPTED_NAME)
        save_model(path, primal, dual, name=run_dir.name, trained_by="drn adapt", base_model=_model_spec(options))

    run_config = {
        "kind": "adapt",
        "options": options.to_dict(),
        "model": {"scale": scale, "n_blocks": config.n_blocks, "n_feats": config.n_feats},
        "dual_init": dual_source,
        "degradation": degradation_note,
        "paired": paired_note,
        "world_size": dist_info.world_size,
        "device": str(device),
        "unpaired_frames": len(unpaired),
        "paired_images": len(hr_images),
    }
    spec = LoopSpec(
        run_dir=run_dir,
        total_steps=options.steps,
        modules={"primal": primal, "dual": dual},
        optimizers=optimizers,
        schedulers=schedulers,
        step_fn=step_fn,
        batches=batches,
        loss_names=("loss", "loss_paired", "loss_dual"),
        samples_per_step=(m + n) * dist_info.world_size,
        save_models=save_models,
        config=run_config,
        device=device,
        dist=dist_info,
        validate=validate,
        val_every=options.val_every,
        save_every=options.save_every,
        log_every=options.log_every,
        skip_threshold=options.skip_threshold,
        resume=options.resume,
        stop_at=options.stop_at,
        progress=progress,
        lr_key="primal",
        notes=notes,
    )
    result = run_loop(spec)
    if result.finished:
        result.notes.append(f"adapted model: {run_dir / ADAPTED_NAME}")
    return result
