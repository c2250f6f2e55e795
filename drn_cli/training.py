"""Training DRN with dual regression (paper Eq. 1), and the loop machinery other trainers reuse.

Two layers:

* :func:`run_loop` is model-agnostic. It owns the step loop, learning-rate schedules, loss-spike
  and NaN guarding, gradient averaging across processes, validation, ``metrics.csv`` and
  TensorBoard logging, progress reports and the run directory's checkpoints (``last.ckpt`` for an
  exact resume, model files through a callback). A trainer supplies a :class:`LoopSpec`: its
  modules, optimizers, schedulers, a data factory ``batches(start_step)`` and a *step function*
  ``step_fn(batch, ctx)`` that computes losses and updates weights through the
  :class:`StepContext` helpers (``ctx.accept``, ``ctx.backward``, ``ctx.update``). ``drn adapt``
  (primal then dual updates on unpaired data) plugs in a different step function and data.
* :func:`train` wires the supervised DRN objective into it from a :class:`TrainOptions`.

Multi-process data parallelism: under ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` set) the
process group is initialised (NCCL on CUDA, gloo on the CPU), every rank starts from rank 0's
weights, draws its own shard of every global batch, and gradients are averaged across ranks
before each optimizer step; this is what ``DistributedDataParallel`` computes, done explicitly so
that any step function (several backward passes, parameters left unused by a loss) works without
DDP's wrapper constraints. The loss-spike decision uses the across-rank mean loss, so all ranks
skip the same steps and stay identical. Rank 0 alone writes files and reports progress.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import random
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim import Adam, Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler

from .arch import DRN, DRNConfig, DualModel
from .atomic import atomic_path
from .checkpoint import read_dual_checkpoint, save_model
from .errors import DrnError, InputError, WeightsError
from .losses import LOSS_KINDS, dual_loss, make_criterion, primal_loss
from .train_data import PatchDataset, load_images, lr_pyramid, patch_loader

__all__ = [
    "FAMILIES",
    "DistInfo",
    "LoopSpec",
    "ProgressInfo",
    "StepContext",
    "StepResult",
    "TrainOptions",
    "TrainResult",
    "cosine_schedule",
    "read_train_state",
    "resolve_model_config",
    "run_loop",
    "train",
]

CHECKPOINT_NAME = "last.ckpt"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.csv"
CHECKPOINT_FORMAT = "drn-cli-train-state"
CHECKPOINT_VERSION = 1
TRAIN_SCALES = (4, 8)
AMP_MODES = ("bf16", "fp16")
#: (n_blocks, n_feats) of the paper's model families per scale.
FAMILIES: dict[str, dict[int, tuple[int, int]]] = {
    "drn-s": {4: (30, 16), 8: (30, 8)},
    "drn-l": {4: (40, 20), 8: (36, 10)},
}
#: Options that may differ when a run is resumed (they do not change the computation).
RUNTIME_FIELDS = ("out", "resume", "device", "workers", "stop_at")
#: Accepted losses remembered for the loss-spike test, and how many are needed before it applies.
_GUARD_WINDOW = 100
_GUARD_MIN_HISTORY = 10


# --------------------------------------------------------------------------------------------
# Options and results
# --------------------------------------------------------------------------------------------


_O = TypeVar("_O", bound="OptionsDict")


class OptionsDict:
    """``to_dict``/``from_dict`` for the options dataclasses of ``drn train`` and ``drn adapt``."""

    _KIND = "training"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_O], data: dict[str, Any]) -> _O:
        """Inverse of :meth:`to_dict`; unknown keys are an :class:`InputError`."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"unknown {cls._KIND} option(s): {', '.join(unknown)}")
        return cls(**data)


@dataclass
class TrainOptions(OptionsDict):
    """Everything :func:`train` needs; each field is one ``drn train`` option.

    Defaults follow the official training setup (Adam 1e-4, cosine to 1e-7, dual weight 0.1,
    L1 loss with progressive supervision) except the batch and patch size, which are smaller so a
    single GPU (or a patient CPU) can run it.
    """

    #: Folders (or single files) of HR training images of any size.
    hr_dirs: list[str] = field(default_factory=list)
    scale: int = 4
    #: Model family ("drn-s" or "drn-l"); ``n_blocks``/``n_feats`` override its values.
    model: str = "drn-s"
    n_blocks: int | None = None
    n_feats: int | None = None
    #: Model to start from: a built-in name ("drn-s-x4") or a model file; sets the architecture.
    init: str | None = None
    #: Dual blocks to start from (e.g. an official ``*_dual_model.pt``) when ``init`` carries none.
    init_dual: str | None = None
    #: Run directory (created; must not hold another run unless ``resume``).
    out: str = "runs/train"
    steps: int = 100_000
    #: Images per step per process.
    batch_size: int = 16
    #: HR crop size in pixels; must be divisible by the scale.
    patch_size: int = 192
    lr: float = 1e-4
    min_lr: float = 1e-7
    #: Weight lambda of the dual (closed-loop) loss; 0 trains the primal network alone.
    dual_weight: float = 0.1
    #: Supervise every intermediate output with the bicubic down-scaled target too.
    progressive: bool = True
    #: "l1" or "gs" (gradient-sensitive loss).
    loss: str = "l1"
    #: Skip a step whose loss exceeds this multiple of the mean of recent losses (0: never).
    skip_threshold: float = 10.0
    #: Evaluation data set (a folder with HR/ and LR_bicubic/) for validation PSNR/SSIM.
    val: str | None = None
    val_every: int = 1000
    save_every: int = 1000
    log_every: int = 10
    #: Mixed precision on CUDA: "bf16", "fp16" or None; ignored (with a warning) elsewhere.
    amp: str | None = None
    seed: int = 0
    #: Data-loader worker processes (0: load in the training process).
    workers: int = 2
    #: Continue the run in ``out`` exactly where its ``last.ckpt`` left off.
    resume: bool = False
    device: str | None = None
    #: Stop after this step (saving ``last.ckpt``) even though the schedule runs to ``steps``.
    stop_at: int | None = None


@dataclass
class ProgressInfo:
    """What the progress callback gets after every step (rank 0 only)."""

    step: int
    total: int
    #: Loss terms of this step (NaN where the step was skipped before computing them).
    losses: dict[str, float]
    lr: float
    #: Training throughput over the recent steps (all processes together).
    samples_per_s: float
    #: Steps skipped so far (loss spikes and non-finite values).
    skipped: int
    val_psnr: float | None = None
    val_ssim: float | None = None
    best_psnr: float | None = None
    #: Set while a preparation stage runs before the first step (``drn adapt`` fitting its dual
    #: blocks): what it is; ``step``/``total`` then count that stage's own steps.
    stage: str | None = None


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    run_dir: Path
    step: int
    total_steps: int
    finished: bool
    skipped: int
    wall_s: float
    #: Mean throughput of this invocation (all processes together).
    samples_per_s: float
    best_psnr: float | None
    best_step: int | None
    last_val: tuple[float, float] | None
    modules: dict[str, nn.Module]
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Distributed helpers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a multi-process run (world_size 1 when single-process)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_hint: str | None = None) -> DistInfo:
    """Initialise the process group from torchrun's environment variables, if present."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), local_rank, dist.get_world_size(), False)
    use_cuda = torch.cuda.is_available() and (device_hint is None or device_hint.startswith(("cuda", "auto")))
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=timedelta(hours=2))
    return DistInfo(rank, local_rank, world, True)


def _broadcast_modules(modules: Iterable[nn.Module]) -> None:
    for module in modules:
        for t in (*module.parameters(), *module.buffers()):
            dist.broadcast(t.data, src=0)


def _all_reduce_mean(tensors: Sequence[torch.Tensor], world_size: int) -> None:
    """Average ``tensors`` across ranks in place, in one flat all-reduce per dtype."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat)
        flat /= world_size
        offset = 0
        for t in group:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n


# --------------------------------------------------------------------------------------------
# The generic loop
# --------------------------------------------------------------------------------------------


@dataclass
class StepResult:
    """What a step function reports: its loss terms and whether the update was applied."""

    losses: dict[str, float]
    applied: bool = True


class StepContext:
    """Helpers a step function uses so guarding, AMP and multi-process training stay uniform.

    A typical step::

        with ctx.autocast():
            loss = ...
        if not ctx.accept(loss):
            return StepResult({"loss": float("nan")}, applied=False)
        ctx.backward(loss)
        applied = ctx.update([optimizer])
    """

    def __init__(
        self,
        device: torch.device,
        dist_info: DistInfo,
        amp_dtype: torch.dtype | None,
        skip_threshold: float,
    ) -> None:
        self.device = device
        self.dist = dist_info
        self.amp_dtype = amp_dtype
        self.skip_threshold = skip_threshold
        self.scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        self.history: deque[float] = deque(maxlen=_GUARD_WINDOW)
        self.skipped_spike = 0
        self.skipped_nonfinite = 0
        self.step = 0

    @property
    def skipped(self) -> int:
        return self.skipped_spike + self.skipped_nonfinite

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision autocast when AMP is on, else a no-op."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def mean_across_ranks(self, value: torch.Tensor) -> float:
        """The mean of a scalar over all ranks (just its value when single-process)."""
        v = value.detach().float().reshape(1).clone()
        if self.dist.enabled:
            dist.all_reduce(v)
            v /= self.dist.world_size
        return float(v.item())

    def accept(self, loss: torch.Tensor, track: bool = True) -> bool:
        """Decide whether to use this loss: False for NaN/inf or a spike (counted as skipped).

        A spike is a loss above ``skip_threshold`` times the mean of the last accepted losses
        (the official code compares with the previous epoch's mean, default threshold 1e6,
        i.e. practically never; 10 catches real blow-ups without touching normal noise). The
        decision uses the across-rank mean, so every rank makes the same one. ``track=False``
        checks a secondary loss without adding it to the history.
        """
        v = self.mean_across_ranks(loss)
        if not math.isfinite(v):
            self.skipped_nonfinite += 1
            return False
        if (
            self.skip_threshold > 0
            and len(self.history) >= _GUARD_MIN_HISTORY
            and v > self.skip_threshold * (sum(self.history) / len(self.history))
        ):
            self.skipped_spike += 1
            return False
        if track:
            self.history.append(v)
        return True

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss`` (scaled when fp16 AMP is on)."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def update(self, optimizers: Sequence[Optimizer]) -> bool:
        """Average gradients across ranks, check them, and step ``optimizers``; clear the gradients.

        Returns False (and steps nothing) when any gradient is NaN/inf, so a bad batch never
        reaches the weights.
        """
        params = [p for opt in optimizers for g in opt.param_groups for p in g["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        if self.dist.enabled and grads:
            _all_reduce_mean(grads, self.dist.world_size)
        if self.scaler is not None:
            for opt in optimizers:
                self.scaler.unscale_(opt)
        finite = bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True
        if finite:
            for opt in optimizers:
                if self.scaler is not None:
                    self.scaler.step(opt)
                else:
                    opt.step()
        else:
            self.skipped_nonfinite += 1
        if self.scaler is not None:
            self.scaler.update()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        return finite

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": list(self.history),
            "skipped_spike": self.skipped_spike,
            "skipped_nonfinite": self.skipped_nonfinite,
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = deque((float(v) for v in state["history"]), maxlen=_GUARD_WINDOW)
        self.skipped_spike = int(state["skipped_spike"])
        self.skipped_nonfinite = int(state["skipped_nonfinite"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


StepFn = Callable[[Any, StepContext], StepResult]


@dataclass
class LoopSpec:
    """A trainer's contribution to :func:`run_loop`.

    ``modules`` are checkpointed and (multi-process) synchronised from rank 0 at the start;
    ``optimizers`` and ``schedulers`` are checkpointed (schedulers step once per step, skipped or
    not); ``batches(start)`` yields one batch per step from step ``start`` (0-based) to the end;
    ``save_models(path)`` writes a model file (``best``/``last``/``final``); ``validate()`` returns
    (psnr, ssim) and runs on rank 0 only. ``config`` goes into ``config.json``.
    """

    run_dir: Path
    total_steps: int
    modules: dict[str, nn.Module]
    optimizers: dict[str, Optimizer]
    schedulers: dict[str, LRScheduler]
    step_fn: StepFn
    batches: Callable[[int], Iterable[Any]]
    loss_names: Sequence[str]
    samples_per_step: int
    save_models: Callable[[Path], None]
    config: dict[str, Any]
    device: torch.device
    dist: DistInfo = field(default_factory=DistInfo)
    validate: Callable[[], tuple[float, float]] | None = None
    val_every: int = 1000
    save_every: int = 1000
    log_every: int = 10
    skip_threshold: float = 10.0
    amp_dtype: torch.dtype | None = None
    resume: bool = False
    stop_at: int | None = None
    progress: Callable[[ProgressInfo], None] | None = None
    #: Name of the scheduler whose learning rate is reported.
    lr_key: str | None = None
    notes: list[str] = field(default_factory=list)


def cosine_schedule(optimizer: Optimizer, steps: int, min_lr: float) -> CosineAnnealingLR:
    """Cosine annealing from the optimizer's lr to ``min_lr`` over ``steps`` steps."""
    return CosineAnnealingLR(optimizer, T_max=max(1, steps), eta_min=min_lr)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _to_lists(random.getstate()),
    }


def _to_lists(obj: Any) -> Any:
    return [_to_lists(o) for o in obj] if isinstance(obj, (tuple, list)) else obj


def _to_tuples(obj: Any) -> Any:
    return tuple(_to_tuples(o) for o in obj) if isinstance(obj, list) else obj


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    random.setstate(_to_tuples(state["python"]))


def read_train_state(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a ``last.ckpt`` safely (tensors and plain containers only)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many types for damaged archives
        raise WeightsError(f"{path} is not a readable training checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path} is not a drn-cli training checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise WeightsError(f"{path} has training-checkpoint version {state.get('version')}, not {CHECKPOINT_VERSION}")
    return state


class _MetricsLog:
    """``metrics.csv`` (and TensorBoard when importable), written by rank 0."""

    def __init__(self, run_dir: Path, loss_names: Sequence[str], start_step: int) -> None:
        self.path = run_dir / METRICS_NAME
        self.columns = ["step", *loss_names, "lr", "samples_per_s", "skipped", "val_psnr", "val_ssim"]
        kept: list[list[str]] = []
        if start_step > 0 and self.path.is_file():
            # Rows written after the checkpoint we resume from are replayed, so drop them.
            with open(self.path, newline="") as f:
                rows = list(csv.reader(f))
            if rows and rows[0] == self.columns:
                kept = [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= start_step]
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.columns)
            writer.writerows(kept)
        self.file = open(self.path, "a", newline="")  # noqa: SIM115 - kept open for the run
        self.writer = csv.writer(self.file)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            SummaryWriter = None  # noqa: N806
        if SummaryWriter is not None:
            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step or None)

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow(["" if row.get(c) is None else _fmt(row.get(c)) for c in self.columns])
        self.file.flush()
        if self.tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _save_train_state(spec: LoopSpec, ctx: StepContext, step: int, best: dict[str, Any]) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "step": step,
        "total_steps": spec.total_steps,
        "modules": {k: m.state_dict() for k, m in spec.modules.items()},
        "optimizers": {k: o.state_dict() for k, o in spec.optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in spec.schedulers.items()},
        "guard": ctx.state_dict(),
        "best": dict(best),
        "rng": _rng_state(),
        "config": json.dumps(spec.config),
    }
    with atomic_path(spec.run_dir / CHECKPOINT_NAME) as tmp:
        torch.save(state, tmp)
    spec.save_models(spec.run_dir / "last.safetensors")


def _current_lr(spec: LoopSpec) -> float:
    if not spec.schedulers:
        opt = next(iter(spec.optimizers.values()))
        return float(opt.param_groups[0]["lr"])
    key = spec.lr_key or next(iter(spec.schedulers))
    return float(spec.schedulers[key].get_last_lr()[0])


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, raised after the last finished step was saved for ``--resume``."""


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[dict[str, bool]]:
    """Turn the first Ctrl-C into a flag that the loop checks between steps.

    A step interrupted half-way (weights updated, optimizer state not yet) cannot be saved for an
    exact resume, so the running step is allowed to finish first; a second Ctrl-C stops at once.
    Only the main thread can own the handler; elsewhere Ctrl-C behaves as usual.
    """
    flag = {"hit": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:
        previous = signal.default_int_handler

    def handler(signum: int, frame: Any) -> None:
        flag["hit"] = True
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def run_loop(spec: LoopSpec) -> TrainResult:
    """Run (or resume) the training loop described by ``spec``; see the module docstring."""
    run_dir = spec.run_dir
    main = spec.dist.is_main
    ctx = StepContext(spec.device, spec.dist, spec.amp_dtype, spec.skip_threshold)
    best: dict[str, Any] = {"psnr": None, "ssim": None, "step": None}
    start = 0
    if spec.resume:
        state = read_train_state(run_dir / CHECKPOINT_NAME, spec.device)
        if state["total_steps"] != spec.total_steps:
            raise InputError(
                f"{run_dir / CHECKPOINT_NAME} belongs to a {state['total_steps']}-step run, "
                f"not {spec.total_steps} steps"
            )
        for k, m in spec.modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in spec.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in spec.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        ctx.load_state_dict(state["guard"])
        best.update(state["best"])
        _set_rng_state(state["rng"])
        start = int(state["step"])
    if spec.dist.enabled:
        _broadcast_modules(spec.modules.values())

    stop = spec.total_steps if spec.stop_at is None else min(spec.total_steps, max(spec.stop_at, start))
    log: _MetricsLog | None = None
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(run_dir / CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps(spec.config, indent=2) + "\n")
        log = _MetricsLog(run_dir, spec.loss_names, start)

    for m in spec.modules.values():
        m.train()
    t_begin = time.perf_counter()
    window_t, window_steps = t_begin, 0
    sums = dict.fromkeys(spec.loss_names, 0.0)
    counts = dict.fromkeys(spec.loss_names, 0)
    last_val: tuple[float, float] | None = None
    step = start
    saved_at = start if spec.resume else -1
    rate = 0.0

    def stop_for_interrupt() -> None:
        if main and saved_at != step:
            _save_train_state(spec, ctx, step, best)
        raise TrainingInterrupted(
            f"interrupted after step {step}/{spec.total_steps}; its state is saved in "
            f"{run_dir / CHECKPOINT_NAME}: continue with --resume"
        )

    with contextlib.ExitStack() as stack:
        interrupt = stack.enter_context(_deferred_interrupt())
        if log is not None:
            stack.callback(log.close)
        batches: Iterator[Any] = iter(spec.batches(start))
        while step < stop:
            try:
                batch = next(batches)
            except Exception:
                # Ctrl-C also reaches data-loader workers, which then vanish mid-batch.
                if interrupt["hit"]:
                    stop_for_interrupt()
                raise
            ctx.step = step
            result = spec.step_fn(batch, ctx)
            with warnings.catch_warnings():
                # A skipped first step makes PyTorch warn about the scheduler/optimizer order.
                warnings.simplefilter("ignore", UserWarning)
                for sched in spec.schedulers.values():
                    sched.step()
            step += 1
            window_steps += 1
            for k, v in result.losses.items():
                if k in sums and math.isfinite(v):
                    sums[k] += v
                    counts[k] += 1

            val_row: dict[str, Any] = {}
            if spec.validate is not None and (step % spec.val_every == 0 or step == spec.total_steps):
                if main:
                    psnr, ssim = spec.validate()
                    last_val = (psnr, ssim)
                    val_row = {"val_psnr": psnr, "val_ssim": ssim}
                    if best["psnr"] is None or psnr > best["psnr"]:
                        best.update(psnr=psnr, ssim=ssim, step=step)
                        spec.save_models(run_dir / "best.safetensors")
                for m in spec.modules.values():
                    m.train()

            now = time.perf_counter()
            if now > window_t:
                rate = window_steps * spec.samples_per_step / (now - window_t)
            if main and (step % spec.log_every == 0 or val_row or step == stop):
                row = {"step": step, "lr": _current_lr(spec), "samples_per_s": rate, "skipped": ctx.skipped}
                row.update({k: (sums[k] / counts[k] if counts[k] else math.nan) for k in spec.loss_names})
                row.update(val_row)
                assert log is not None
                log.write(row)
                sums = dict.fromkeys(spec.loss_names, 0.0)
                counts = dict.fromkeys(spec.loss_names, 0)
                window_t, window_steps = now, 0

            if step % spec.save_every == 0 or step == stop:
                if main:
                    _save_train_state(spec, ctx, step, best)
                saved_at = step
            if main and spec.progress is not None:
                spec.progress(
                    ProgressInfo(
                        step=step,
                        total=spec.total_steps,
                        losses=dict(result.losses),
                        lr=_current_lr(spec),
                        samples_per_s=rate,
                        skipped=ctx.skipped,
                        val_psnr=val_row.get("val_psnr"),
                        val_ssim=val_row.get("val_ssim"),
                        best_psnr=best["psnr"],
                    )
                )
            if interrupt["hit"] and step < stop:
                stop_for_interrupt()
        finished = step >= spec.total_steps
        if main and finished:
            spec.save_models(run_dir / "final.safetensors")
        if main and saved_at != step:
            _save_train_state(spec, ctx, step, best)
    if spec.dist.enabled:
        dist.barrier()  # the other ranks wait for rank 0's files before anyone returns
    wall = time.perf_counter() - t_begin
    done = step - start
    return TrainResult(
        run_dir=run_dir,
        step=step,
        total_steps=spec.total_steps,
        finished=step >= spec.total_steps,
        skipped=ctx.skipped,
        wall_s=wall,
        samples_per_s=done * spec.samples_per_step / wall if wall > 0 else 0.0,
        best_psnr=best["psnr"],
        best_step=best["step"],
        last_val=last_val,
        modules=spec.modules,
        notes=list(spec.notes),
    )


# --------------------------------------------------------------------------------------------
# DRN supervised training
# --------------------------------------------------------------------------------------------


def resolve_model_config(options: TrainOptions) -> DRNConfig:
    """The architecture a new model gets from ``model``/``n_blocks``/``n_feats`` and ``scale``."""
    family = FAMILIES.get(options.model)
    if family is None:
        raise InputError(f"unknown model family '{options.model}' (use {' or '.join(FAMILIES)})")
    n_blocks, n_feats = family[options.scale]
    n_blocks = options.n_blocks if options.n_blocks is not None else n_blocks
    n_feats = options.n_feats if options.n_feats is not None else n_feats
    try:
        return DRNConfig(options.scale, n_blocks, n_feats)
    except ValueError as exc:
        raise InputError(f"invalid model shape: {exc}") from None


def _check_options(o: TrainOptions) -> None:
    if o.scale not in TRAIN_SCALES:
        raise InputError(f"training supports scales {' and '.join(map(str, TRAIN_SCALES))}, not {o.scale}")
    if o.steps < 1:
        raise InputError(f"steps must be at least 1, got {o.steps}")
    if o.batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {o.batch_size}")
    if o.patch_size < o.scale or o.patch_size % o.scale:
        raise InputError(f"patch size {o.patch_size} must be a positive multiple of the scale {o.scale}")
    if not (o.lr > 0 and math.isfinite(o.lr)) or not (0 <= o.min_lr <= o.lr):
        raise InputError(f"learning rates must satisfy 0 <= min_lr <= lr, got lr {o.lr}, min_lr {o.min_lr}")
    if not (o.dual_weight >= 0 and math.isfinite(o.dual_weight)):
        raise InputError(f"dual weight must be a finite number >= 0, got {o.dual_weight}")
    if o.loss not in LOSS_KINDS:
        raise InputError(f"unknown loss '{o.loss}' (use {' or '.join(LOSS_KINDS)})")
    if o.amp is not None and o.amp not in AMP_MODES:
        raise InputError(f"unknown AMP mode '{o.amp}' (use {' or '.join(AMP_MODES)}, or none)")
    for name in ("val_every", "save_every", "log_every"):
        if getattr(o, name) < 1:
            raise InputError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(o, name)}")
    if o.workers < 0:
        raise InputError(f"workers must be >= 0, got {o.workers}")
    if o.skip_threshold < 0:
        raise InputError(f"skip threshold must be >= 0, got {o.skip_threshold}")
    if o.val is not None and not Path(o.val).is_dir():
        raise InputError(f"validation data set {o.val} is not a folder")
    if not o.hr_dirs:
        raise InputError("no training image folder was given")


def _pick_device(options: TrainOptions, dist_info: DistInfo) -> torch.device:
    if options.device is None or options.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist_info.local_rank if dist_info.enabled else 0)
        return torch.device("cpu")
    try:
        device = torch.device(options.device)
    except RuntimeError:
        raise InputError(f"unknown device '{options.device}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device '{options.device}' requested but no CUDA GPU is available")
    if device.type == "cuda" and dist_info.enabled and device.index is None:
        device = torch.device("cuda", dist_info.local_rank)
    return device


def _initial_models(options: TrainOptions) -> tuple[DRN, DualModel, str]:
    """Primal and dual networks to start from, and where the dual came from.

    The dual comes from ``init_dual`` if given, else from ``init`` (our model files carry it;
    built-in official models fetch their official dual file), else it is freshly initialised.
    """
    if options.init is None:
        config = resolve_model_config(options)
        primal = DRN(config)
    else:
        from .loading import load_model

        primal = load_model(options.init, device="cpu").train()
        config = primal.config
        if config.scale != options.scale:
            raise InputError(
                f"the init model {options.init} is a x{config.scale} model, but scale {options.scale} was asked"
            )
        for name in ("n_blocks", "n_feats"):
            want = getattr(options, name)
            if want is not None and want != getattr(config, name):
                raise InputError(f"the init model {options.init} has {name} {getattr(config, name)}, not {want}")
    if options.init_dual is not None:
        return primal, read_dual_checkpoint(options.init_dual, config), f"from {options.init_dual}"
    if options.init is not None:
        from .loading import load_dual

        dual = load_dual(options.init, config)
        if dual is not None:
            return primal, dual, f"from {options.init}"
    return primal, DualModel(config), "new"


def _resume_options(options: TrainOptions) -> tuple[TrainOptions, dict[str, Any]]:
    """The options a resumed run continues with: the stored ones, plus the caller's runtime fields."""
    ckpt = Path(options.out) / CHECKPOINT_NAME
    if not ckpt.is_file():
        raise InputError(f"cannot resume: {ckpt} does not exist")
    state = read_train_state(ckpt)
    config = json.loads(state["config"])
    stored = TrainOptions.from_dict(config["options"])
    merged = dataclasses.replace(stored, **{k: getattr(options, k) for k in RUNTIME_FIELDS})
    return merged, config


def train(options: TrainOptions, progress: Callable[[ProgressInfo], None] | None = None) -> TrainResult:
    """Train (or fine-tune, or resume) a DRN model with dual regression; see :class:`TrainOptions`.

    Each step takes a batch of random HR crops ``y``, builds the MATLAB-bicubic pyramid
    ``x_0..x_P`` and minimises ``loss_primal + dual_weight * loss_dual`` (:mod:`drn_cli.losses`).
    The primal network has one Adam optimizer, each dual block its own (as in the official code);
    all follow a cosine schedule from ``lr`` to ``min_lr`` over ``steps``.

    Writes into ``options.out``: ``config.json``, ``metrics.csv``, ``last.ckpt`` (exact-resume
    state), ``last.safetensors``, ``final.safetensors`` and, with ``val``, ``best.safetensors``
    (model files carry the dual blocks). Raises :class:`InputError` for unusable options or data.
    """
    stored_config: dict[str, Any] | None = None
    run_dir = Path(options.out)
    if options.resume:
        options, stored_config = _resume_options(options)
    elif (run_dir / CHECKPOINT_NAME).exists():
        raise InputError(f"{run_dir} already holds a training run; resume it or choose another output folder")
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"output path {run_dir} exists and is not a folder")
    _check_options(options)

    dist_info = setup_distributed(options.device)
    try:
        return _train(options, progress, dist_info, stored_config)
    finally:
        if dist_info.initialised_here:
            dist.destroy_process_group()


def _train(
    options: TrainOptions,
    progress: Callable[[ProgressInfo], None] | None,
    dist_info: DistInfo,
    stored_config: dict[str, Any] | None,
) -> TrainResult:
    notes: list[str] = []
    device = _pick_device(options, dist_info)
    amp_dtype = None
    if options.amp is not None:
        if device.type == "cuda":
            amp_dtype = torch.bfloat16 if options.amp == "bf16" else torch.float16
        else:
            notes.append(f"AMP ({options.amp}) is only used on CUDA GPUs; training in float32 on {device.type}")
            warnings.warn(notes[-1], stacklevel=3)

    torch.manual_seed(options.seed)
    np.random.seed(options.seed % 2**32)
    random.seed(options.seed)

    if stored_config is not None:
        mc = stored_config["model"]
        config = DRNConfig(int(mc["scale"]), int(mc["n_blocks"]), int(mc["n_feats"]))
        primal, dual, dual_source = DRN(config), DualModel(config), stored_config.get("dual_init", "new")
    else:
        primal, dual, dual_source = _initial_models(options)
        config = primal.config
    primal.to(device)
    dual.to(device)

    images = load_images(options.hr_dirs, options.patch_size)
    if images.too_small:
        notes.append(f"{len(images.too_small)} image(s) smaller than the {options.patch_size}-pixel patch skipped")
    dataset = PatchDataset(images.images, options.patch_size, options.seed)

    def batches(start: int) -> Iterable[torch.Tensor]:
        return patch_loader(
            dataset,
            start,
            options.steps,
            options.batch_size,
            rank=dist_info.rank,
            world_size=dist_info.world_size,
            workers=options.workers,
            pin_memory=device.type == "cuda",
        )

    opt_kw = {"lr": options.lr, "betas": (0.9, 0.999), "eps": 1e-8}
    optimizers: dict[str, Optimizer] = {"primal": Adam(primal.parameters(), **opt_kw)}
    for i, block in enumerate(dual.blocks):
        optimizers[f"dual{i}"] = Adam(block.parameters(), **opt_kw)
    schedulers = {k: cosine_schedule(o, options.steps, options.min_lr) for k, o in optimizers.items()}
    primal_opt = optimizers["primal"]
    dual_opts = [optimizers[f"dual{i}"] for i in range(len(dual.blocks))]

    criterion = make_criterion(options.loss)
    use_dual = options.dual_weight > 0

    def step_fn(batch: torch.Tensor, ctx: StepContext) -> StepResult:
        hr = batch.to(device, non_blocking=True).float()
        pyramid = lr_pyramid(hr, config.scale)
        with ctx.autocast():
            outputs = primal.forward_pyramid(pyramid[0])
            lp = primal_loss(outputs, pyramid, criterion, options.progressive)
            ld = dual_loss(dual.blocks, outputs, pyramid) if use_dual else lp.new_zeros(())
        total = lp + options.dual_weight * ld
        losses = {"loss": total.item(), "loss_primal": lp.item(), "loss_dual": ld.item()}
        if not ctx.accept(total):
            return StepResult(losses, applied=False)
        ctx.backward(total)
        applied = ctx.update([primal_opt, *dual_opts] if use_dual else [primal_opt])
        return StepResult(losses, applied)

    validate = None
    if options.val is not None:
        from .datasets import load_eval_dataset
        from .evaluate import evaluate

        val_set = load_eval_dataset(Path(options.val), config.scale)

        def validate() -> tuple[float, float]:
            res = evaluate(val_set, config.scale, primal, model_name="training", device=device)
            return res.psnr, res.ssim

    def save_models(path: Path) -> None:
        save_model(path, primal, dual, name=Path(options.out).name, trained_by="drn train")

    run_config = {
        "options": options.to_dict(),
        "model": {"scale": config.scale, "n_blocks": config.n_blocks, "n_feats": config.n_feats},
        "dual_init": dual_source,
        "world_size": dist_info.world_size,
        "device": str(device),
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype is not None else None,
        "train_images": len(images.images),
        "train_images_too_small": len(images.too_small),
        "train_pixels": images.pixels,
    }
    spec = LoopSpec(
        run_dir=Path(options.out),
        total_steps=options.steps,
        modules={"primal": primal, "dual": dual},
        optimizers=optimizers,
        schedulers=schedulers,
        step_fn=step_fn,
        batches=batches,
        loss_names=("loss", "loss_primal", "loss_dual"),
        samples_per_step=options.batch_size * dist_info.world_size,
        save_models=save_models,
        config=run_config,
        device=device,
        dist=dist_info,
        validate=validate,
        val_every=options.val_every,
        save_every=options.save_every,
        log_every=options.log_every,
        skip_threshold=options.skip_threshold,
        amp_dtype=amp_dtype,
        resume=options.resume,
        stop_at=options.stop_at,
        progress=progress,
        lr_key="primal",
        notes=notes,
    )
    return run_loop(spec)


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m drn_cli.training OPTIONS.json [--dump-dir DIR]``: run :func:`train` from a JSON file.

    A small runner for scripts and ``torchrun`` (the ``drn train`` CLI is the user-facing way).
    With ``--dump-dir`` every rank writes its final weights to ``DIR/rank<R>.safetensors``.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m drn_cli.training")
    parser.add_argument("options", type=Path)
    parser.add_argument("--dump-dir", type=Path)
    args = parser.parse_args(argv)
    try:
        options = TrainOptions.from_dict(json.loads(args.options.read_text()))
        result = train(options)
    except DrnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.dump_dir is not None:
        rank = int(os.environ.get("RANK", "0"))
        args.dump_dir.mkdir(parents=True, exist_ok=True)
        primal, dual = result.modules["primal"], result.modules["dual"]
        save_model(args.dump_dir / f"rank{rank}.safetensors", primal, dual)  # type: ignore[arg-type]
    summary = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "modules"}
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
