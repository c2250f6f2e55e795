"""Descriptors of the built-in models: what to fetch, how to check it, and how to build the network.

The registry holds data only (no torch, no network) so that listing models is instant. Downloading lives
in :mod:`drn_cli.download`; building the network from ``scale``/``n_blocks``/``n_feats`` lives in
:mod:`drn_cli.arch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drn_cli.errors import WeightsError

#: Where the authors of DRN publish their checkpoints (release v0.1 of github.com/guoyongcs/DRN).
OFFICIAL_RELEASE_URL = "https://github.com/guoyongcs/DRN/releases/download/v0.1"

_PACKAGE_DIR = Path(__file__).resolve().parent
#: Where model files shipped with drn-cli are found (see ``BuiltinModel.bundled``): inside an installed
#: wheel (``drn_cli/bundled``, mapped from the repository's ``weights/`` folder by pyproject.toml), or in
#: the repository itself for a source checkout or an editable install.
BUNDLED_DIRS = (_PACKAGE_DIR / "bundled", _PACKAGE_DIR.parent / "weights")


@dataclass(frozen=True)
class RemoteFile:
    """A model file that can be downloaded and checked.

    ``digest`` is ``"gitsha1:<hex>"`` (the id ``git hash-object`` prints) or ``"sha256:<hex>"``; a file is
    only ever used after its content matches it. ``url`` is the official address; mirrors replace its
    base with ``$DRN_RELEASE_URL``. ``size`` in bytes, when known, gives downloads a total for progress.
    """

    filename: str
    digest: str
    url: str
    size: int | None = None


@dataclass(frozen=True)
class BuiltinModel:
    """A named model the CLI knows how to obtain: its architecture and its weight files.

    ``primal`` is the super-resolution network (the only file needed to upscale); ``dual`` holds the
    dual (down-sampling) blocks, used by evaluation and fine-tuning, and may be absent.
    ``bundled`` names a file in :data:`BUNDLED_DIRS` shipped with the package: such a model is loaded
    from there and never downloaded; ``primal.digest`` still pins its content.
    """

    name: str
    family: str
    scale: int
    n_blocks: int
    n_feats: int
    primal: RemoteFile
    dual: RemoteFile | None
    description: str
    bundled: str | None = None

    @property
    def files(self) -> tuple[RemoteFile, ...]:
        """All remote files of this model, primal first."""
        return (self.primal,) if self.dual is None else (self.primal, self.dual)

    def bundled_path(self) -> Path | None:
        """Path of the shipped copy of the model file, or ``None`` when the model is not bundled."""
        if self.bundled is None:
            return None
        for folder in BUNDLED_DIRS:
            if (folder / self.bundled).is_file():
                return folder / self.bundled
        return BUNDLED_DIRS[0] / self.bundled


def _release_file(filename: str, digest: str, size: int | None = None) -> RemoteFile:
    return RemoteFile(filename=filename, digest=digest, url=f"{OFFICIAL_RELEASE_URL}/{filename}", size=size)


def _official(
    family: str,
    scale: int,
    n_blocks: int,
    n_feats: int,
    primal_gitsha1: str,
    dual_sha256: str,
    dual_size: int,
    paper_set5_psnr: float,
) -> BuiltinModel:
    tag = f"DRN{family[-1].upper()}{scale}x"
    return BuiltinModel(
        name=f"{family}-x{scale}",
        family=family,
        scale=scale,
        n_blocks=n_blocks,
        n_feats=n_feats,
        primal=_release_file(f"{tag}.pt", f"gitsha1:{primal_gitsha1}"),
        dual=_release_file(f"{tag}_dual_model.pt", f"sha256:{dual_sha256}", dual_size),
        description=f"official {family.upper()} x{scale}, paper Set5 {paper_set5_psnr:.2f} dB",
    )


# Primal digests: git blob ids of the release files; dual digests: sha256 of the release files
# (both recorded in the project's reference notes).
BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        _official(
            "drn-s",
            4,
            30,
            16,
            "d558b3fcb9844b6d3811178662ba38c377746145",
            "fde40e0a55353f266c38c5f2db7783c6b980342085f9141e3aae6ca4dcdb8adb",
            8120,
            32.68,
        ),
        _official(
            "drn-s",
            8,
            30,
            8,
            "d9e14798ca9af4d1acc8acdab074e868dca4d5e2",
            "eede38ca08c4f8c98cbf236ed04ae6bff9ac7867e781812376f1b16781cae96e",
            6853,
            27.41,
        ),
        _official(
            "drn-l",
            4,
            40,
            20,
            "70b596564ca6736409a925f488735aa47a506eb2",
            "b012d7fed5d1552f70b1e32c578ed95540565b449fdaececa3eb19d2cffb53b0",
            9848,
            32.74,
        ),
        _official(
            "drn-l",
            8,
            36,
            10,
            "0ad1ac0e66dcd5fa38a0480f41f2379f6e0d45e4",
            "8c054937c585a7e60bbb4501b86d597290859fd1959f2fa2a98f34b4b54efdba",
            8155,
            27.43,
        ),
    )
}


def _bundled(scale: int, n_blocks: int, n_feats: int, sha256: str, set5_psnr: float) -> BuiltinModel:
    filename = f"drn-tiny-x{scale}.safetensors"
    return BuiltinModel(
        name=f"drn-tiny-x{scale}",
        family="drn-tiny",
        scale=scale,
        n_blocks=n_blocks,
        n_feats=n_feats,
        primal=RemoteFile(filename=filename, digest=f"sha256:{sha256}", url=""),
        dual=None,  # the dual blocks are inside the model file
        description=f"x{scale} trained with drn train, Set5 {set5_psnr:.2f} dB",
        bundled=filename,
    )


# Trained on this project's data with `drn train`; the record is in the repository's weights/README.md.
BUILTIN_MODELS.update(
    {
        m.name: m
        for m in (
            _bundled(4, 4, 8, "44ebd402681c786048bf47cb7ce768f8acdc918c60ea7e2095afeffb2d883316", 30.27),
            _bundled(8, 4, 4, "2e95a8126843fd1b06d25b2940ca4f53041221cca22cd1090cea6ab030f02cff", 25.78),
        )
    }
)


def _names() -> str:
    return ", ".join(BUILTIN_MODELS)


def resolve_builtin(name: str, scale: int | None = None) -> BuiltinModel:
    """Find a built-in model by full name (``"drn-s-x4"``) or by family (``"drn-s"``) plus ``scale``.

    Case and ``_``/``-`` are not significant. Raises :class:`WeightsError` when the name is unknown, when a
    family is given without a scale or with a scale it has no model for, or when ``scale`` contradicts
    the scale in a full name.
    """
    key = name.strip().lower().replace("_", "-")
    model = BUILTIN_MODELS.get(key)
    if model is not None:
        if scale is not None and scale != model.scale:
            alt = BUILTIN_MODELS.get(f"{model.family}-x{scale}")
            hint = f"use {alt.name}" if alt is not None else f"valid models are {_names()}"
            raise WeightsError(f"Model {model.name} upscales x{model.scale} but scale {scale} was requested; {hint}.")
        return model

    family_models = [m for m in BUILTIN_MODELS.values() if m.family == key]
    if not family_models:
        raise WeightsError(f"Unknown model '{name}'; valid models are {_names()}.")
    choices = ", ".join(m.name for m in family_models)
    if scale is None:
        raise WeightsError(f"Model family {key} needs a scale; choose one of {choices}.")
    for m in family_models:
        if m.scale == scale:
            return m
    raise WeightsError(f"Model family {key} has no x{scale} model; choose one of {choices}.")
