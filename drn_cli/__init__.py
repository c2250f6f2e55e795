"""drn-cli: super-resolution with Dual Regression Networks (Guo et al., CVPR 2020).

Python API (imported lazily, so ``drn --help`` does not pay for importing torch):

* :func:`load_model` -- a built-in name or a model file to a ready DRN module;
* :func:`load_dual` -- the dual (down-sampling) blocks that belong to a model;
* :func:`evaluate` -- PSNR/SSIM on a benchmark folder.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

_EXPORTS = {
    "load_model": "loading",
    "load_dual": "loading",
    "evaluate": "evaluate",
    "imresize": "bicubic",
    "DRN": "arch",
    "DRNConfig": "arch",
    "DualModel": "arch",
    "DrnError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'drn_cli' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
