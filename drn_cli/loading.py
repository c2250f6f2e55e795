"""``load_model``: from a model name or a file to a ready ``torch.nn.Module``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from .arch import DRN, DRNConfig, DualModel
from .checkpoint import build_dual, build_primal, read_checkpoint, read_dual_checkpoint
from .device import resolve_device
from .download import fetch, verify
from .errors import WeightsError
from .registry import BUILTIN_MODELS, BuiltinModel, resolve_builtin

DownloadProgress = Callable[[int, int | None], None]
_FILE_SUFFIXES = (".pt", ".pth", ".safetensors", ".ckpt", ".bin")


def _looks_like_path(spec: str | Path) -> bool:
    if isinstance(spec, Path):
        return True
    return "/" in spec or "\\" in spec or spec.lower().endswith(_FILE_SUFFIXES) or Path(spec).exists()


def _builtin_primal_path(model: BuiltinModel, hub_repo: str | None, progress: DownloadProgress | None) -> Path:
    bundled = model.bundled_path()
    if bundled is not None:
        if not bundled.is_file():
            raise WeightsError(f"the bundled file of {model.name} is missing from this installation ({bundled})")
        if not verify(bundled, model.primal.digest):
            raise WeightsError(f"the bundled file {bundled} does not match {model.primal.digest}; reinstall drn-cli")
        return bundled
    return fetch(model.primal, hub_repo=hub_repo, progress=progress, model=model.name)


def load_model(
    spec: str | Path,
    *,
    scale: int | None = None,
    device: str | torch.device | None = None,
    hub_repo: str | None = None,
    progress: DownloadProgress | None = None,
) -> DRN:
    """Load a DRN primal network, ready for inference.

    ``spec`` is a built-in name (``"drn-s-x4"``, or ``"drn-s"`` with ``scale``) or a path to a
    ``.pt``/``.pth``/``.safetensors`` file or a converted model folder. Built-in weights are
    fetched on first use (see :func:`drn_cli.download.fetch`) and verified. The returned module is
    in eval mode on ``device`` (``None``/``"auto"``: the best available); ``forward(x)`` maps an
    N x 3 x H x W float tensor in 0..255 to the N x 3 x sH x sW output (unclamped), and
    ``forward_pyramid(x)`` gives every scale's output. ``model.name`` says what was loaded.
    """
    if _looks_like_path(spec):
        ckpt = read_checkpoint(spec, scale=scale)
        net = build_primal(ckpt.primal, ckpt.config, ckpt.source)
        net.name = ckpt.metadata.get("name") or Path(spec).stem
    else:
        model = resolve_builtin(str(spec), scale)
        path = _builtin_primal_path(model, hub_repo, progress)
        ckpt = read_checkpoint(path, scale=model.scale)
        expected = DRNConfig(model.scale, model.n_blocks, model.n_feats)
        if ckpt.config != expected:
            raise WeightsError(f"{path} holds {ckpt.config}, not the {expected} that {model.name} should be")
        net = build_primal(ckpt.primal, ckpt.config, str(path))
        net.name = model.name
    return net.eval().to(resolve_device(device))


def load_dual(
    spec: str | Path,
    config: DRNConfig,
    *,
    hub_repo: str | None = None,
    progress: DownloadProgress | None = None,
) -> DualModel | None:
    """The dual (down-sampling) blocks that belong to a model, or ``None`` if it has none.

    Built-in official models fetch their ``*_dual_model.pt``; bundled models and our own files
    carry the blocks inside the model file.
    """
    if _looks_like_path(spec):
        ckpt = read_checkpoint(spec)
        return None if ckpt.dual is None else build_dual(ckpt.dual, config, ckpt.source)
    model = resolve_builtin(str(spec), config.scale)
    if model.bundled is not None:
        return load_dual(_builtin_primal_path(model, hub_repo, progress), config)
    if model.dual is None:
        return None
    path = fetch(model.dual, hub_repo=hub_repo, progress=progress, model=model.name)
    return read_dual_checkpoint(path, config)


__all__ = ["BUILTIN_MODELS", "load_dual", "load_model"]
