"""Finding, downloading and checking model files.

A file is looked for, in order, in the drn-cli cache, in a Hugging Face Hub repository (only when one is
configured with ``DRN_HUB_REPO`` or ``hub_repo``) and at the official release URL. Whatever the source,
a file is returned only after its content matches the digest in the registry.

Environment variables:

``DRN_CACHE_DIR``
    Folder for downloaded weights (default: the platform's user cache folder, see :func:`cache_dir`).
``DRN_HUB_REPO``
    A Hub repository (``owner/name``) holding the files under their release names. The usual Hugging
    Face variables apply to it: ``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HOME``/``HF_HUB_CACHE``,
    ``HF_HUB_OFFLINE``.
``DRN_RELEASE_URL``
    A base URL replacing the official release folder, for mirrors (the file name is appended).
``DRN_OFFLINE``
    When true (like ``HF_HUB_OFFLINE``), no network access: only cached files are used.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import inspect
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drn_cli._version import __version__
from drn_cli.atomic import atomic_path
from drn_cli.errors import WeightsError
from drn_cli.registry import RemoteFile

#: Called as ``progress(done_bytes, total_bytes_or_None)`` while a file downloads.
ProgressCallback = Callable[[int, int | None], None]

#: Seconds to wait for a connection or for the next piece of data before giving up on a URL.
DOWNLOAD_TIMEOUT_S = 30.0

_CHUNK = 1 << 20
_ALGORITHMS = ("gitsha1", "sha256")


class _SourceFailed(Exception):
    """One source could not deliver a good file; the message is a short reason for the final error."""


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``DRN_OFFLINE`` forbids network access."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("DRN_OFFLINE")


def _user_cache_root() -> Path:
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
        return base / "drn-cli" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "drn-cli"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "drn-cli"


def cache_dir() -> Path:
    """Folder holding downloaded weights: ``$DRN_CACHE_DIR`` if set, else ``<user cache>/drn-cli/weights``.

    The user cache is ``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS and
    ``%LOCALAPPDATA%\\drn-cli\\Cache`` on Windows. The folder is not created here.
    """
    env = os.environ.get("DRN_CACHE_DIR", "").strip()
    if env:
        return Path(env).expanduser().absolute()
    return _user_cache_root() / "weights"


def _parse_digest(digest: str) -> tuple[str, str]:
    algorithm, sep, value = digest.partition(":")
    algorithm, value = algorithm.strip().lower(), value.strip().lower()
    expected_len = 40 if algorithm == "gitsha1" else 64
    if (
        not sep
        or algorithm not in _ALGORITHMS
        or len(value) != expected_len
        or any(c not in "0123456789abcdef" for c in value)
    ):
        raise WeightsError(f"Digest '{digest}' is not of the form gitsha1:<40 hex digits> or sha256:<64 hex digits>.")
    return algorithm, value


def _normalized(digest: str) -> str:
    algorithm, value = _parse_digest(digest)
    return f"{algorithm}:{value}"


def file_digest(path: str | os.PathLike[str], algorithm: str) -> str:
    """Digest of a file as ``"<algorithm>:<hex>"``, reading it in chunks.

    ``algorithm`` is ``"sha256"`` or ``"gitsha1"`` (the git blob id: sha1 of ``b"blob <size>\\0"`` followed by
    the content, which is what ``git hash-object`` prints). Raises :class:`WeightsError` if the file
    cannot be read.
    """
    path = Path(path)
    if algorithm not in _ALGORITHMS:
        raise WeightsError(f"Unknown digest algorithm '{algorithm}'; use gitsha1 or sha256.")
    try:
        with open(path, "rb") as f:
            if algorithm == "gitsha1":
                h = hashlib.sha1()
                h.update(b"blob %d\0" % os.fstat(f.fileno()).st_size)
            else:
                h = hashlib.sha256()
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise WeightsError(f"Cannot read {path}: {e.strerror or e}.") from e
    return f"{algorithm}:{h.hexdigest()}"


def verify(path: str | os.PathLike[str], digest: str) -> bool:
    """True if the file's content matches ``digest`` (``"gitsha1:<hex>"`` or ``"sha256:<hex>"``).

    Raises :class:`WeightsError` if the digest is malformed or the file cannot be read.
    """
    expected = _normalized(digest)
    return file_digest(path, expected.partition(":")[0]) == expected


def release_url(file: RemoteFile) -> str:
    """Where to download ``file`` from: its official URL, or ``$DRN_RELEASE_URL/<filename>`` when set."""
    base = os.environ.get("DRN_RELEASE_URL", "").strip()
    if base:
        return f"{base.rstrip('/')}/{urllib.parse.quote(file.filename)}"
    return file.url


def _short_os_error(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return f"timed out after {DOWNLOAD_TIMEOUT_S:g} s"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _download_url(url: str, target: Path, file: RemoteFile, progress: ProgressCallback | None) -> None:
    """Stream ``url`` to ``target`` through a temporary file, checking the digest before the rename."""
    expected = _normalized(file.digest)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _SourceFailed(f"cannot create the cache folder {target.parent} ({_short_os_error(e)})") from e
    request = urllib.request.Request(url, headers={"User-Agent": f"drn-cli/{__version__}"})
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else file.size
                done = 0
                if progress is not None:
                    progress(done, total)
                with open(tmp, "wb") as out:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
            if length and length.isdigit() and done != int(length):
                raise _SourceFailed(f"the connection closed after {done} of {length} bytes")
            actual = file_digest(tmp, expected.partition(":")[0])
            if actual != expected:
                raise _SourceFailed(f"the downloaded file has digest {actual}, expected {expected}")
    except urllib.error.HTTPError as e:
        raise _SourceFailed(f"HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        reason = e.reason
        raise _SourceFailed(_short_os_error(reason) if isinstance(reason, BaseException) else str(reason)) from e
    except http.client.HTTPException as e:
        # IncompleteRead and friends: the server broke the HTTP exchange part-way.
        raise _SourceFailed(f"the server sent a broken response ({type(e).__name__})") from e
    except (OSError, ValueError) as e:
        # ValueError: a malformed DRN_RELEASE_URL (unknown scheme and the like).
        raise _SourceFailed(_short_os_error(e)) from e


def _progress_bar_class(progress: ProgressCallback) -> type:
    """A minimal stand-in for the tqdm class ``hf_hub_download`` accepts, forwarding to ``progress``."""

    class _Bar:
        def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kwargs: Any) -> None:
            self.total = total
            self.n = initial
            progress(self.n, self.total)

        def __enter__(self) -> _Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def update(self, n: int = 1) -> None:
            self.n += n
            progress(self.n, self.total)

        def close(self) -> None:
            return None

    return _Bar


def _evict_from_hf_cache(path: Path) -> None:
    """Remove a file returned by ``hf_hub_download``: the snapshot link and the blob it points to."""
    blob = path.resolve() if path.is_symlink() else None
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    if blob is not None:
        with contextlib.suppress(FileNotFoundError):
            blob.unlink()


def _hub_reason(e: Exception, offline: bool) -> str:
    from huggingface_hub import errors as hf_errors

    if isinstance(e, hf_errors.GatedRepoError):
        return "the repository is gated (accept its terms on the Hub and set HF_TOKEN)"
    if isinstance(e, hf_errors.RepositoryNotFoundError):
        return "repository not found (or private and HF_TOKEN is not set)"
    if isinstance(e, hf_errors.RevisionNotFoundError):
        return "revision not found"
    if isinstance(e, hf_errors.RemoteEntryNotFoundError):
        return "the repository has no such file"
    if isinstance(e, hf_errors.LocalEntryNotFoundError):
        if offline:
            return "not in the Hugging Face cache and offline mode is on"
        cause = e.__cause__
        detail = f" ({str(cause).splitlines()[0]})" if cause is not None and str(cause) else ""
        return f"the Hub could not be reached{detail} and the file is not in the Hugging Face cache"
    if isinstance(e, hf_errors.HfHubHTTPError) and e.response is not None:
        return f"HTTP {e.response.status_code}"
    first_line = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {first_line}" if first_line else type(e).__name__


def _fetch_from_hub(file: RemoteFile, repo: str, progress: ProgressCallback | None) -> Path:
    """Get ``file`` through the Hugging Face cache (downloading it if needed) and check it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = is_offline()
    expected = _normalized(file.digest)
    kwargs: dict[str, Any] = {}
    if progress is not None and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        kwargs["tqdm_class"] = _progress_bar_class(progress)

    notes: list[str] = []
    # The digest pins the content, so any cached copy that verifies is the right one: look in the
    # Hugging Face cache first and spare the metadata request (and its timeout when the network is down).
    for local_only in (True, False):
        if not local_only and offline:
            notes.append("not in the Hugging Face cache and offline mode is on")
            break
        try:
            path = Path(hf_hub_download(repo_id=repo, filename=file.filename, local_files_only=local_only, **kwargs))
        except LocalEntryNotFoundError as e:
            if local_only:
                continue
            raise _SourceFailed("; ".join([*notes, _hub_reason(e, offline)])) from e
        except Exception as e:  # any other failure becomes the reason reported for this source
            raise _SourceFailed("; ".join([*notes, _hub_reason(e, offline)])) from e
        actual = file_digest(path, expected.partition(":")[0])
        if actual == expected:
            return path
        _evict_from_hf_cache(path)
        notes.append(f"the file has digest {actual}, expected {expected} (removed from the Hugging Face cache)")
    raise _SourceFailed("; ".join(notes))


def cached_path(file: RemoteFile, *, hub_repo: str | None = None) -> Path | None:
    """Where ``file`` already lies locally (drn-cli cache, then Hugging Face cache), or ``None``.

    Looks only (no network, no hashing), so it is cheap enough for listings; :func:`fetch` still verifies
    the content before use. The Hugging Face cache is searched only for ``hub_repo`` (default
    ``$DRN_HUB_REPO``).
    """
    target = cache_dir() / file.filename
    if target.is_file():
        return target
    repo = (hub_repo or os.environ.get("DRN_HUB_REPO", "")).strip()
    if not repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id=repo, filename=file.filename)
    except ValueError:  # a malformed repository id: nothing can be cached under it
        return None
    return Path(found) if isinstance(found, str) else None


def fetch(
    file: RemoteFile,
    *,
    hub_repo: str | None = None,
    progress: ProgressCallback | None = None,
    model: str | None = None,
) -> Path:
    """Return a local path to ``file`` whose content matches its digest, downloading it if needed.

    Sources, in order: the drn-cli cache (:func:`cache_dir`, no network); the Hugging Face Hub repository
    ``hub_repo`` (default ``$DRN_HUB_REPO``; none by default), through ``hf_hub_download`` and its cache;
    the release URL (:func:`release_url`), saved into the drn-cli cache. The URL is skipped when offline
    (:func:`is_offline`). ``progress(done, total)`` is called while bytes arrive. ``model`` (e.g.
    ``"drn-s-x4"``) only makes the advice in errors precise.

    Raises :class:`WeightsError` listing every source tried and why it failed, with what to do next.
    """
    folder = cache_dir()
    target = folder / file.filename
    tried: list[str] = []

    if target.is_file():
        if verify(target, file.digest):
            return target
        # A corrupt copy can never be used; drop it so that a download can take its place.
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        tried.append(f"drn-cli cache {folder}: the cached copy did not match {file.digest} and was removed")
    else:
        tried.append(f"drn-cli cache {folder}: not present")

    repo = (hub_repo or os.environ.get("DRN_HUB_REPO", "")).strip()
    if repo:
        try:
            return _fetch_from_hub(file, repo, progress)
        except _SourceFailed as e:
            tried.append(f"Hugging Face Hub repository {repo}: {e}")

    url = release_url(file)
    if is_offline():
        tried.append(f"{url}: skipped because HF_HUB_OFFLINE or DRN_OFFLINE is set")
    else:
        try:
            _download_url(url, target, file, progress)
            return target
        except _SourceFailed as e:
            tried.append(f"{url}: {e}")

    name = model or "NAME"
    raise WeightsError(
        f"Could not get {file.filename} (tried {'; '.join(tried)}): pass --weights FILE, or run "
        f"`drn weights download {name}` on a machine with internet access and copy its cache folder to "
        f"{folder}, or set DRN_HUB_REPO (and HF_ENDPOINT for a mirror) to a Hub repository holding the file."
    )
