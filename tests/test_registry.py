"""The built-in model registry: names, architectures, files and name resolution."""

from __future__ import annotations

import re

import pytest

from drn_cli.errors import WeightsError
from drn_cli.registry import BUILTIN_MODELS, OFFICIAL_RELEASE_URL, BuiltinModel, RemoteFile, resolve_builtin

# From the project's reference notes (official release v0.1).
EXPECTED = {
    "drn-s-x4": ("drn-s", 4, 30, 16, "DRNS4x.pt", "d558b3fcb9844b6d3811178662ba38c377746145"),
    "drn-s-x8": ("drn-s", 8, 30, 8, "DRNS8x.pt", "d9e14798ca9af4d1acc8acdab074e868dca4d5e2"),
    "drn-l-x4": ("drn-l", 4, 40, 20, "DRNL4x.pt", "70b596564ca6736409a925f488735aa47a506eb2"),
    "drn-l-x8": ("drn-l", 8, 36, 10, "DRNL8x.pt", "0ad1ac0e66dcd5fa38a0480f41f2379f6e0d45e4"),
}
DUAL_SHA256 = {
    "DRNS4x_dual_model.pt": ("fde40e0a55353f266c38c5f2db7783c6b980342085f9141e3aae6ca4dcdb8adb", 8120),
    "DRNS8x_dual_model.pt": ("eede38ca08c4f8c98cbf236ed04ae6bff9ac7867e781812376f1b16781cae96e", 6853),
    "DRNL4x_dual_model.pt": ("b012d7fed5d1552f70b1e32c578ed95540565b449fdaececa3eb19d2cffb53b0", 9848),
    "DRNL8x_dual_model.pt": ("8c054937c585a7e60bbb4501b86d597290859fd1959f2fa2a98f34b4b54efdba", 8155),
}


def test_official_models() -> None:
    assert [n for n in BUILTIN_MODELS if not n.startswith("drn-tiny")] == list(EXPECTED)
    for name, (family, scale, n_blocks, n_feats, filename, blob) in EXPECTED.items():
        m = BUILTIN_MODELS[name]
        assert isinstance(m, BuiltinModel) and m.name == name
        assert (m.family, m.scale, m.n_blocks, m.n_feats) == (family, scale, n_blocks, n_feats)
        assert m.primal == RemoteFile(filename, f"gitsha1:{blob}", f"{OFFICIAL_RELEASE_URL}/{filename}")
        assert m.dual is not None
        sha, size = DUAL_SHA256[m.dual.filename]
        assert m.dual.filename == filename.replace(".pt", "_dual_model.pt")
        assert m.dual.digest == f"sha256:{sha}" and m.dual.size == size
        assert m.dual.url == f"https://github.com/guoyongcs/DRN/releases/download/v0.1/{m.dual.filename}"
        assert m.files == (m.primal, m.dual)
        assert m.bundled is None and m.bundled_path() is None
        assert f"x{scale}" in m.description


def test_digests_are_well_formed() -> None:
    for m in BUILTIN_MODELS.values():
        for f in m.files:
            assert re.fullmatch(r"gitsha1:[0-9a-f]{40}|sha256:[0-9a-f]{64}", f.digest), f


def test_descriptors_are_frozen() -> None:
    m = BUILTIN_MODELS["drn-s-x4"]
    with pytest.raises(AttributeError):
        m.scale = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "scale", "expected"),
    [
        ("drn-s-x4", None, "drn-s-x4"),
        ("drn-s-x4", 4, "drn-s-x4"),
        ("DRN_L_X8", None, "drn-l-x8"),
        (" drn-l-x4 ", 4, "drn-l-x4"),
        ("drn-s", 4, "drn-s-x4"),
        ("drn-s", 8, "drn-s-x8"),
        ("DRN-L", 8, "drn-l-x8"),
    ],
)
def test_resolve_builtin(name: str, scale: int | None, expected: str) -> None:
    assert resolve_builtin(name, scale) is BUILTIN_MODELS[expected]


def test_resolve_unknown_lists_valid_names() -> None:
    with pytest.raises(WeightsError) as err:
        resolve_builtin("edsr-x4", None)
    msg = str(err.value)
    assert "edsr-x4" in msg
    for name in BUILTIN_MODELS:
        assert name in msg


def test_resolve_scale_contradiction() -> None:
    with pytest.raises(WeightsError, match=r"drn-s-x4 upscales x4 but scale 8 was requested; use drn-s-x8"):
        resolve_builtin("drn-s-x4", 8)
    with pytest.raises(WeightsError, match=r"scale 3 was requested; valid models are drn-s-x4, drn-s-x8"):
        resolve_builtin("drn-l-x8", 3)


def test_resolve_family_needs_a_valid_scale() -> None:
    with pytest.raises(WeightsError, match=r"drn-s needs a scale; choose one of drn-s-x4, drn-s-x8"):
        resolve_builtin("drn-s", None)
    with pytest.raises(WeightsError, match=r"drn-l has no x2 model; choose one of drn-l-x4, drn-l-x8"):
        resolve_builtin("drn-l", 2)


def test_messages_are_one_line() -> None:
    for args in (("nope", None), ("drn-s", None), ("drn-s", 3), ("drn-l-x4", 8)):
        with pytest.raises(WeightsError) as err:
            resolve_builtin(*args)
        assert "\n" not in str(err.value) and str(err.value).endswith(".")


def test_bundled_models_ship_with_the_package() -> None:
    """drn-tiny-x4/x8 are found without any download, match their pinned sha256, and load."""
    import hashlib

    from drn_cli.loading import load_dual, load_model

    for scale, (n_blocks, n_feats) in {4: (4, 8), 8: (4, 4)}.items():
        m = resolve_builtin("drn-tiny", scale)
        path = m.bundled_path()
        assert path is not None and path.is_file()
        assert m.primal.digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        net = load_model("drn-tiny", scale=scale, device="cpu")
        assert (net.config.scale, net.config.n_blocks, net.config.n_feats) == (scale, n_blocks, n_feats)
        assert net.name == f"drn-tiny-x{scale}"
        assert load_dual(m.name, net.config) is not None
