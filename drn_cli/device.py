"""Choosing the compute device and precision."""

from __future__ import annotations

import warnings

import torch

from .errors import DrnError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``auto``/None picks CUDA, then MPS, then the CPU; explicit devices are checked to exist."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise DrnError(f"unknown device '{device}' (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DrnError(f"device '{device}' requested but this PyTorch build sees no CUDA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DrnError(f"device '{device}' does not exist ({torch.cuda.device_count()} CUDA device(s))")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DrnError("device 'mps' requested but Apple MPS is not available here")
    return dev


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype for ``precision`` on ``device``.

    ``auto`` is fp32 everywhere for now: the 0.05 dB-of-fp32 check that would allow a half
    precision by default has not yet been run on a GPU (see benchmarks/RESULTS.md). fp16 asked for
    on a CPU falls back to fp32 with a warning (CPU fp16 convolutions are slow or missing); bf16 on a
    CPU is honoured, since PyTorch supports it there.
    """
    precision = precision.lower()
    if precision not in PRECISIONS:
        raise DrnError(f"unknown precision '{precision}' (use {', '.join(PRECISIONS)})")
    if precision == "auto":
        return torch.float32
    if device.type == "cpu" and precision == "fp16":
        warnings.warn("fp16 is not used on the CPU; computing in fp32 instead", stacklevel=2)
        return torch.float32
    return _DTYPES[precision]
