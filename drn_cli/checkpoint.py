"""Reading and writing DRN model files.

Accepted inputs, chosen by content rather than trusted extension:

* official ``torch.save(model.state_dict())`` files (``.pt``/``.pth``), read with
  ``torch.load(weights_only=True)`` so no arbitrary code can run;
* wrappers around a state dict (``{"state_dict": ...}``, ``{"params": ...}``, ``{"model": ...}``),
  DataParallel ``module.`` prefixes and the official trainer's ``model.`` prefix;
* the official dual files (a list of per-stage state dicts);
* our own ``.safetensors`` files, which may carry the dual blocks under ``dual.`` and the
  configuration in their metadata, optionally with a ``config.json`` beside them.

Everything is canonicalised to the official key names, the configuration is inferred from tensor
shapes, and the network is loaded with ``strict=True``; a mismatch is explained in one sentence.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ._version import __version__
from .arch import DRN, DRNConfig, DualModel
from .atomic import atomic_path
from .errors import WeightsError

StateDict = dict[str, torch.Tensor]

MODEL_FILENAME = "model.safetensors"
CONFIG_FILENAME = "config.json"
_WRAPPER_KEYS = ("state_dict", "params_ema", "params", "model", "net", "generator")
_DUAL_PREFIX = "dual."


@dataclass
class Checkpoint:
    """A model file's contents, canonicalised: primal and (optional) dual weights and config."""

    primal: StateDict
    dual: StateDict | None
    config: DRNConfig
    metadata: dict[str, str]
    source: str


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _read_raw(path: Path) -> tuple[object, dict[str, str]]:
    if not path.exists():
        raise WeightsError(f"{path}: no such file")
    if path.is_dir():
        inner = path / MODEL_FILENAME
        if not inner.is_file():
            raise WeightsError(f"{path} is a folder without a {MODEL_FILENAME}")
        path = inner
    if path.stat().st_size == 0:
        raise WeightsError(f"{path} is empty, not a checkpoint")
    if _is_safetensors(path):
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path} is a damaged safetensors file ({_short(exc)})") from None
        sidecar = path.parent / CONFIG_FILENAME
        if sidecar.is_file():
            try:
                metadata.update({k: str(v) for k, v in json.loads(sidecar.read_text()).items()})
            except (OSError, ValueError) as exc:
                raise WeightsError(f"{sidecar} is not valid JSON ({_short(exc)})") from None
        return tensors, metadata
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic[:2] != b"PK" and magic[:1] != b"\x80":
        raise WeightsError(f"{path} is not a PyTorch (.pt/.pth) or safetensors checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True), {}
    except pickle.UnpicklingError:
        raise WeightsError(
            f"{path} holds Python objects other than tensors; it is not unpickled, for safety "
            "(convert it to a plain state dict or safetensors)"
        ) from None
    except Exception as exc:  # torch raises many types for truncated or damaged archives
        raise WeightsError(f"{path} is a damaged or truncated checkpoint ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first if len(first) <= 160 else first[:157] + "..."


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_prefix(sd: StateDict, prefix: str) -> StateDict:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def canonicalize(obj: object, source: str) -> tuple[StateDict, StateDict | None]:
    """Unwrap and rename a loaded object into (primal, dual) state dicts with official names.

    The dual state dict uses :class:`DualModel` names (``blocks.<i>.dual_module...``).
    A file that holds only dual blocks returns an empty primal dict.
    """
    if isinstance(obj, (list, tuple)) and obj and all(_is_state_dict(d) for d in obj):
        dual: StateDict = {}
        for i, block in enumerate(obj):
            for k, v in _strip_prefix(block, "module.").items():
                dual[f"blocks.{i}.{k}"] = v
        return {}, dual
    for _ in range(3):  # nested wrappers, e.g. {"model": {"state_dict": ...}}
        if isinstance(obj, dict) and not _is_state_dict(obj):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], dict)), None)
            if inner is None:
                break
            obj = inner
    if not _is_state_dict(obj):
        raise WeightsError(f"{source} holds no state dict of tensors (is it a model checkpoint?)")
    sd = _strip_prefix(_strip_prefix(dict(obj), "module."), "model.")
    primal = {k: v for k, v in sd.items() if not k.startswith(_DUAL_PREFIX)}
    dual = {k[len(_DUAL_PREFIX) :]: v for k, v in sd.items() if k.startswith(_DUAL_PREFIX)}
    return primal, (dual or None)


def infer_config(primal: StateDict, source: str) -> DRNConfig:
    """Scale, n_blocks and n_feats of a DRN state dict, read from its tensor shapes."""
    head = primal.get("head.weight")
    if head is None or head.dim() != 4 or head.shape[1] != 3:
        sample = ", ".join(sorted(primal)[:3]) or "none"
        raise WeightsError(f"{source} is not a DRN checkpoint (no 'head.weight'; first keys: {sample})")
    phases = len({m.group(1) for k in primal if (m := re.match(r"down\.(\d+)\.", k))})
    n_blocks = len({m.group(1) for k in primal if (m := re.match(r"up_blocks\.0\.(\d+)\.body\.0\.weight$", k))})
    if phases not in (1, 2, 3) or n_blocks < 1:
        raise WeightsError(
            f"{source} is not a DRN checkpoint ({phases} down-sampling stages, {n_blocks} residual blocks)"
        )
    try:
        return DRNConfig(scale=2**phases, n_blocks=n_blocks, n_feats=int(head.shape[0]))
    except ValueError as exc:
        raise WeightsError(f"{source}: unsupported DRN configuration ({exc})") from None


def _explain_mismatch(expected: StateDict, got: StateDict, source: str, config: DRNConfig) -> str | None:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [k for k in expected if k in got and got[k].shape != expected[k].shape]
    what = []
    if missing:
        what.append(f"{len(missing)} missing parameter(s) such as '{missing[0]}'")
    if unexpected:
        what.append(f"{len(unexpected)} unexpected parameter(s) such as '{unexpected[0]}'")
    if wrong:
        k = wrong[0]
        what.append(f"'{k}' has shape {tuple(got[k].shape)} instead of {tuple(expected[k].shape)}")
    if not what:
        return None
    return (
        f"{source} does not fit the DRN architecture it looks like (x{config.scale}, "
        f"{config.n_blocks} blocks, {config.n_feats} features): {'; '.join(what)}"
    )


def build_primal(primal: StateDict, config: DRNConfig, source: str) -> DRN:
    """A :class:`DRN` with ``primal`` loaded strictly."""
    net = DRN(config)
    problem = _explain_mismatch(net.state_dict(), primal, source, config)
    if problem:
        raise WeightsError(problem)
    net.load_state_dict(primal, strict=True)
    return net


def build_dual(dual: StateDict, config: DRNConfig, source: str) -> DualModel:
    """A :class:`DualModel` with ``dual`` loaded strictly (official lists are already renamed)."""
    net = DualModel(config)
    n_stages = len({k.split(".")[1] for k in dual if k.startswith("blocks.")})
    if n_stages != config.phases:
        raise WeightsError(f"{source} has {n_stages} dual block(s) but a x{config.scale} model needs {config.phases}")
    feats = dual.get("blocks.0.dual_module.0.0.weight")
    if feats is not None and feats.shape[0] != config.n_feats:
        raise WeightsError(
            f"{source} has dual blocks with {feats.shape[0]} features but the model has {config.n_feats}"
        )
    try:
        net.load_state_dict(dual, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{source}: dual blocks do not load ({_short(exc)})") from None
    return net


def read_checkpoint(path: str | Path, *, scale: int | None = None) -> Checkpoint:
    """Read any supported model file and check it against the requested ``scale``."""
    path = Path(path)
    raw, metadata = _read_raw(path)
    primal, dual = canonicalize(raw, str(path))
    if not primal:
        raise WeightsError(f"{path} holds only dual (down-sampling) blocks, not a primal DRN model")
    config = infer_config(primal, str(path))
    if scale is not None and scale != config.scale:
        raise WeightsError(f"{path} is a x{config.scale} model, but scale {scale} was requested")
    return Checkpoint(primal=primal, dual=dual, config=config, metadata=metadata, source=str(path))


def read_dual_checkpoint(path: str | Path, config: DRNConfig) -> DualModel:
    """Load an official ``*_dual_model.pt`` file (or any file with dual blocks) for ``config``."""
    raw, _ = _read_raw(Path(path))
    _, dual = canonicalize(raw, str(path))
    if not dual:
        raise WeightsError(f"{path} holds no dual (down-sampling) blocks")
    return build_dual(dual, config, str(path))


def model_metadata(config: DRNConfig, **extra: str) -> dict[str, str]:
    """The metadata we store with every model we write."""
    meta = {
        "architecture": "drn",
        "scale": str(config.scale),
        "n_blocks": str(config.n_blocks),
        "n_feats": str(config.n_feats),
        "written_by": f"drn-cli {__version__}",
    }
    meta.update(extra)
    return meta


def save_model(path: str | Path, primal: DRN, dual: DualModel | None = None, **metadata: str) -> Path:
    """Write primal (and dual) weights to one safetensors file, atomically."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in primal.state_dict().items()}
    if dual is not None:
        for k, v in dual.state_dict().items():
            tensors[_DUAL_PREFIX + k] = v.detach().to("cpu", torch.float32).contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=model_metadata(primal.config, **metadata))
    return path


def write_model_dir(directory: str | Path, primal: DRN, dual: DualModel | None = None, **metadata: str) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``directory`` (the Hub-ready layout)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_model(directory / MODEL_FILENAME, primal, dual, **metadata)
    config = model_metadata(primal.config, **metadata)
    config = {k: (int(v) if k in ("scale", "n_blocks", "n_feats") else v) for k, v in config.items()}
    config["has_dual"] = dual is not None
    with atomic_path(directory / CONFIG_FILENAME) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    return directory
