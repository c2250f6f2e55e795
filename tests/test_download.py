"""Fetching and verifying model files against a real HTTP server on 127.0.0.1.

The server plays two roles: a release folder (``/release/<file>``, used through ``DRN_RELEASE_URL``) and a
small Hugging Face Hub (the ``/resolve`` requests ``hf_hub_download`` makes, and the three API calls an
upload makes). ``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` once, when it
is imported, so everything that talks to the fake Hub runs in a fresh Python process with those
variables set, exactly as a user's shell would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from drn_cli import download
from drn_cli.download import cache_dir, cached_path, fetch, file_digest, release_url, verify
from drn_cli.errors import WeightsError
from drn_cli.hub import push_model_dir
from drn_cli.registry import RemoteFile

REPO_ROOT = Path(__file__).resolve().parents[1]
HUB_REPO = "acme/drn-weights"
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<op>preupload|commit)/(?P<rev>[^/]+)$")


def gitsha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeServer:
    """A threaded HTTP server serving a release folder and a minimal Hub, recording every request."""

    def __init__(self) -> None:
        self.release: dict[str, bytes] = {}
        self.hub: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        self.truncate: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output clean
                pass

            def do_HEAD(self) -> None:
                server._record(self)
                server._get(self, with_body=False)

            def do_GET(self) -> None:
                server._record(self)
                server._get(self, with_body=True)

            def do_POST(self) -> None:
                server._record(self)
                server._post(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        self._running = True

    def stop(self) -> None:
        if self._running:
            self._running = False
            self.httpd.shutdown()
            self.httpd.server_close()
            self._thread.join()

    def _record(self, h: BaseHTTPRequestHandler) -> None:
        self.requests.append((h.command, unquote(urlsplit(h.path).path)))

    def commit_of(self, repo: str) -> str:
        files = self.hub[repo]
        return hashlib.sha1(json.dumps({k: gitsha1(v) for k, v in sorted(files.items())}).encode()).hexdigest()

    @staticmethod
    def _reply(
        h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str], with_body: bool = True
    ) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        if "Content-Length" not in headers:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if with_body:
            h.wfile.write(body)

    def _get(self, h: BaseHTTPRequestHandler, with_body: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        if path.startswith("/release/"):
            name = path.removeprefix("/release/")
            data = self.release.get(name)
            if data is None:
                self._reply(h, 404, b"not found", {}, with_body)
            elif name in self.truncate:
                # Announce the full length, send half of it, then close the connection.
                self._reply(h, 200, data[: len(data) // 2], {"Content-Length": str(len(data))}, with_body)
                h.close_connection = True
            else:
                self._reply(h, 200, data, {"Content-Type": "application/octet-stream"}, with_body)
            return
        m = _RESOLVE.match(path)
        if m is None:
            self._reply(h, 404, b"", {}, with_body)
            return
        files = self.hub.get(m["repo"])
        if files is None:
            self._reply(h, 404, b"", {"X-Error-Code": "RepoNotFound"}, with_body)
            return
        commit = self.commit_of(m["repo"])
        data = files.get(m["file"])
        if data is None:
            self._reply(h, 404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, with_body)
            return
        # What hf_hub_download needs: the commit (X-Repo-Commit), a content id (ETag, the git blob id of a
        # regular file) and the size. No X-Xet-Hash header, so the client never takes the Xet path.
        headers = {"X-Repo-Commit": commit, "ETag": f'"{gitsha1(data)}"', "Content-Type": "application/octet-stream"}
        self._reply(h, 200, data, headers, with_body)

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        path = unquote(urlsplit(h.path).path)
        body = h.rfile.read(int(h.headers.get("Content-Length", "0")))
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo = f"{payload['organization']}/{payload['name']}"
            out = json.dumps({"url": f"{self.url}/{repo}", "name": repo}).encode()
            # Like the Hub, an existing repository is a 409 that still carries its URL.
            self._reply(h, 409 if repo in self.hub else 200, out, {"Content-Type": "application/json"})
            self.hub.setdefault(repo, {})
            return
        m = _API.match(path)
        if m is None or m["repo"] not in self.hub:
            self._reply(h, 404, b"", {"X-Error-Code": "RepoNotFound"})
            return
        if m["op"] == "preupload":
            # Ask for every file inline ("regular"), which keeps LFS and Xet out of the exchange.
            files = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in json.loads(body)["files"]
            ]
            self._reply(h, 200, json.dumps({"files": files}).encode(), {"Content-Type": "application/json"})
            return
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                value = item["value"]
                assert value["encoding"] == "base64"
                self.hub[m["repo"]][value["path"]] = base64.b64decode(value["content"])
        commit = self.commit_of(m["repo"])
        out = {
            "commitUrl": f"{self.url}/{m['repo']}/commit/{commit}",
            "commitOid": commit,
            "pullRequestUrl": None,
        }
        self._reply(h, 200, json.dumps(out).encode(), {"Content-Type": "application/json"})


@pytest.fixture
def server() -> Iterator[FakeServer]:
    s = FakeServer()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean environment: drn-cli cache in tmp_path, no Hub repository, online, no proxy for 127.0.0.1."""
    for name in ("DRN_HUB_REPO", "DRN_RELEASE_URL", "DRN_OFFLINE", "HF_HUB_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    cache = tmp_path / "drn-cache"
    monkeypatch.setenv("DRN_CACHE_DIR", str(cache))
    return cache


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def remote(name: str, data: bytes, kind: str = "gitsha1") -> RemoteFile:
    digest = f"gitsha1:{gitsha1(data)}" if kind == "gitsha1" else f"sha256:{sha256(data)}"
    return RemoteFile(filename=name, digest=digest, url=f"https://github.invalid/{name}", size=len(data))


# --- verify ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, (1 << 20) + 17])
def test_verify_matches_git_and_hashlib(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    git_id = subprocess.run(
        ["git", "hash-object", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert file_digest(path, "gitsha1") == f"gitsha1:{git_id}"
    assert file_digest(path, "sha256") == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert verify(path, f"gitsha1:{git_id}")
    assert verify(path, f"SHA256:{hashlib.sha256(data).hexdigest().upper()}")
    assert not verify(path, f"gitsha1:{'0' * 40}")
    assert not verify(path, f"sha256:{hashlib.sha256(data + b'x').hexdigest()}")


@pytest.mark.parametrize("digest", ["abc", "md5:" + "0" * 32, "sha256:" + "0" * 40, "gitsha1:" + "z" * 40])
def test_verify_rejects_malformed_digest(tmp_path: Path, digest: str) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    with pytest.raises(WeightsError, match="not of the form"):
        verify(path, digest)


def test_verify_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="Cannot read"):
        verify(tmp_path / "nope.pt", "sha256:" + "0" * 64)


# --- cache_dir --------------------------------------------------------------------------------------


def test_cache_dir_env_and_platform_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRN_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("DRN_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "drn-cli" / "weights"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert cache_dir() == tmp_path / "home" / ".cache" / "drn-cli" / "weights"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "drn-cli" / "weights"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert cache_dir() == tmp_path / "home" / "Library" / "Caches" / "drn-cli" / "weights"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert cache_dir() == tmp_path / "local" / "drn-cli" / "Cache" / "weights"
    package_dir = Path(download.__file__).resolve().parent
    assert package_dir not in cache_dir().resolve().parents


def test_release_url_override(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = RemoteFile(
        "DRNS4x.pt", "sha256:" + "0" * 64, "https://github.com/guoyongcs/DRN/releases/download/v0.1/DRNS4x.pt"
    )
    assert release_url(f) == f.url
    monkeypatch.setenv("DRN_RELEASE_URL", "http://mirror.example/drn/")
    assert release_url(f) == "http://mirror.example/drn/DRNS4x.pt"


# --- release URL ------------------------------------------------------------------------------------


def test_download_from_release_url_then_offline(env: Path, server: FakeServer, monkeypatch) -> None:
    data = os.urandom(3 * (1 << 20) + 5)  # several chunks
    server.release["DRNS4x.pt"] = data
    monkeypatch.setenv("DRN_RELEASE_URL", f"{server.url}/release")
    f = remote("DRNS4x.pt", data)
    calls: list[tuple[int, int | None]] = []

    path = fetch(f, progress=lambda done, total: calls.append((done, total)))

    assert path == env / "DRNS4x.pt"
    assert path.read_bytes() == data
    assert sorted(p.name for p in env.iterdir()) == ["DRNS4x.pt"]
    assert calls[0] == (0, len(data)) and calls[-1] == (len(data), len(data)) and len(calls) >= 4
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert server.requests == [("GET", "/release/DRNS4x.pt")]

    assert cached_path(f) == path
    assert cached_path(remote("other.pt", b"")) is None
    server.stop()
    assert fetch(f) == path  # from the cache, without network
    monkeypatch.setenv("DRN_OFFLINE", "1")
    assert fetch(f) == path


def test_corrupted_download_leaves_nothing(env: Path, server: FakeServer, monkeypatch) -> None:
    good = os.urandom(5000)
    server.release["DRNL4x.pt"] = good[:-1] + bytes([good[-1] ^ 1])
    monkeypatch.setenv("DRN_RELEASE_URL", f"{server.url}/release")
    f = remote("DRNL4x.pt", good, kind="sha256")

    with pytest.raises(WeightsError) as err:
        fetch(f, model="drn-l-x4")

    msg = str(err.value)
    assert f.digest in msg
    assert f"sha256:{sha256(server.release['DRNL4x.pt'])}" in msg
    assert list(env.iterdir()) == []  # no file, no temporary file


def test_truncated_download_leaves_nothing(env: Path, server: FakeServer, monkeypatch) -> None:
    data = os.urandom(100_000)
    server.release["DRNS8x.pt"] = data
    server.truncate.add("DRNS8x.pt")
    monkeypatch.setenv("DRN_RELEASE_URL", f"{server.url}/release")

    with pytest.raises(WeightsError, match="DRNS8x.pt"):
        fetch(remote("DRNS8x.pt", data))
    assert list(env.iterdir()) == []


def test_corrupt_cached_file_is_replaced(env: Path, server: FakeServer, monkeypatch) -> None:
    data = os.urandom(2000)
    server.release["DRNS4x.pt"] = data
    monkeypatch.setenv("DRN_RELEASE_URL", f"{server.url}/release")
    env.mkdir()
    (env / "DRNS4x.pt").write_bytes(b"garbage")

    path = fetch(remote("DRNS4x.pt", data))

    assert path.read_bytes() == data
    assert server.requests == [("GET", "/release/DRNS4x.pt")]


def test_nothing_reachable_names_every_source(env: Path, monkeypatch) -> None:
    dead = closed_port_url()
    monkeypatch.setenv("DRN_RELEASE_URL", dead)
    f = remote("DRNS4x.pt", b"weights")

    with pytest.raises(WeightsError) as err:
        fetch(f, model="drn-s-x4")

    msg = str(err.value)
    assert f"drn-cli cache {env}: not present" in msg
    assert f"{dead}/DRNS4x.pt: Connection refused" in msg
    assert "--weights FILE" in msg
    assert "drn weights download drn-s-x4" in msg
    assert "DRN_HUB_REPO" in msg and "HF_ENDPOINT" in msg
    assert "\n" not in msg
    assert not env.exists() or list(env.iterdir()) == []


def test_http_404_and_offline_reasons(env: Path, server: FakeServer, monkeypatch) -> None:
    monkeypatch.setenv("DRN_RELEASE_URL", f"{server.url}/release")
    f = remote("DRNL8x.pt", b"weights")
    with pytest.raises(WeightsError, match=r"/release/DRNL8x.pt: HTTP 404"):
        fetch(f)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="skipped because HF_HUB_OFFLINE or DRN_OFFLINE is set"):
        fetch(f)
    assert len(server.requests) == 1


# --- Hugging Face Hub (in fresh processes) ------------------------------------------------------------

_FETCH_SCRIPT = """
import json, sys
from drn_cli.download import cached_path, fetch
from drn_cli.errors import WeightsError
from drn_cli.registry import RemoteFile

results = []
for item in json.loads(sys.argv[1]):
    f = RemoteFile(filename=item["name"], digest=item["digest"], url="https://github.invalid/" + item["name"])
    calls = []
    try:
        path = fetch(f, hub_repo=item.get("repo"), progress=lambda d, t: calls.append([d, t]))
        results.append({"path": path, "calls": calls, "cached": cached_path(f, hub_repo=item.get("repo"))})
    except WeightsError as e:
        results.append({"error": str(e), "cached": cached_path(f, hub_repo=item.get("repo"))})
print(json.dumps(results, default=str))
"""


def run_fetches(items: list[dict[str, str]], env_vars: dict[str, str]) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "DRN_"))}
    env.update(env_vars)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", _FETCH_SCRIPT, json.dumps(items)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def hub_env(tmp_path: Path, server_url: str, **extra: str) -> dict[str, str]:
    return {
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": server_url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "DRN_HUB_REPO": HUB_REPO,
        "DRN_CACHE_DIR": str(tmp_path / "drn-cache"),
        "DRN_RELEASE_URL": f"{server_url}/release",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        **extra,
    }


def test_hub_download_corruption_and_offline(tmp_path: Path, server: FakeServer) -> None:
    good, wanted, served_bad, url_only = (os.urandom(n) for n in (70_000, 3000, 3000, 1234))
    server.hub[HUB_REPO] = {"DRNS4x.pt": good, "DRNS4x_dual_model.pt": served_bad}
    server.release["DRNL4x.pt"] = url_only
    items = [
        {"name": "DRNS4x.pt", "digest": f"gitsha1:{gitsha1(good)}"},
        {"name": "DRNS4x_dual_model.pt", "digest": f"sha256:{sha256(wanted)}"},
        {"name": "DRNL4x.pt", "digest": f"sha256:{sha256(url_only)}"},  # not on the Hub: release URL
        {"name": "DRNS8x.pt", "digest": f"sha256:{sha256(b'x')}", "repo": "nobody/missing"},
    ]
    env_vars = hub_env(tmp_path, server.url)
    hub_cache = tmp_path / "hf" / "hub" / f"models--{HUB_REPO.replace('/', '--')}"

    ok, bad, via_url, missing = run_fetches(items, env_vars)

    # 1. A good file comes through the Hugging Face cache and stays there (not copied).
    path = Path(ok["path"])
    assert path.read_bytes() == good
    assert path.parent.parent == hub_cache / "snapshots"
    assert path.resolve() == hub_cache / "blobs" / gitsha1(good)
    assert ok["calls"][-1] == [len(good), len(good)]
    assert ok["cached"] == ok["path"]
    assert ("HEAD", f"/{HUB_REPO}/resolve/main/DRNS4x.pt") in server.requests
    assert ("GET", f"/{HUB_REPO}/resolve/main/DRNS4x.pt") in server.requests
    assert not (tmp_path / "drn-cache" / "DRNS4x.pt").exists()
    assert not any("xet" in p.lower() for _, p in server.requests)

    # 2. A corrupt Hub file is removed from the Hugging Face cache (link and blob) and reported.
    msg = bad["error"]
    assert f"Hugging Face Hub repository {HUB_REPO}: the file has digest sha256:{sha256(served_bad)}" in msg
    assert f"expected sha256:{sha256(wanted)} (removed from the Hugging Face cache)" in msg
    assert f"{server.url}/release/DRNS4x_dual_model.pt: HTTP 404" in msg
    assert not (hub_cache / "blobs" / gitsha1(served_bad)).exists()
    assert not list((hub_cache / "snapshots").glob("*/DRNS4x_dual_model.pt"))
    assert not (tmp_path / "drn-cache" / "DRNS4x_dual_model.pt").exists()
    assert bad["cached"] is None

    # 3. A file the Hub does not have falls back to the release URL.
    assert Path(via_url["path"]) == tmp_path / "drn-cache" / "DRNL4x.pt"
    assert Path(via_url["path"]).read_bytes() == url_only
    assert via_url["cached"] == via_url["path"]

    # 4. An unknown repository is a short reason, then the URL is tried.
    msg = missing["error"]
    assert "Hugging Face Hub repository nobody/missing: repository not found" in msg
    assert f"{server.url}/release/DRNS8x.pt: HTTP 404" in msg
    assert "drn-cli cache" in msg and "--weights FILE" in msg
    assert missing["cached"] is None

    # 5. Offline with the server gone: the good file is still found; the bad one explains why not.
    server.stop()
    before = len(server.requests)
    ok2, bad2 = run_fetches(items[:2], hub_env(tmp_path, server.url, HF_HUB_OFFLINE="1"))
    assert Path(ok2["path"]) == path and ok2["cached"] == ok["path"]
    assert "offline mode is on" in bad2["error"]
    assert "skipped because HF_HUB_OFFLINE or DRN_OFFLINE is set" in bad2["error"]
    assert len(server.requests) == before


# --- push ------------------------------------------------------------------------------------------


def test_push_requires_converted_folder(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="is not a folder"):
        push_model_dir(tmp_path / "nope", HUB_REPO)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match="has no model.safetensors;"):
        push_model_dir(folder, HUB_REPO)
    (folder / "config.json").unlink()
    with pytest.raises(WeightsError, match="has no model.safetensors or config.json;"):
        push_model_dir(folder, HUB_REPO)


_PUSH_SCRIPT = """
import sys
from pathlib import Path
from drn_cli.hub import push_model_dir
print(push_model_dir(Path(sys.argv[1]), sys.argv[2], token="hf_fake"))
"""


def test_push_to_fake_hub(tmp_path: Path, server: FakeServer) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    weights, config = os.urandom(4096), b'{"scale": 4}'
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_bytes(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(hub_env(tmp_path, server.url))
    env["PYTHONPATH"] = str(REPO_ROOT)

    for _ in range(2):  # the second push finds the repository already there
        done = subprocess.run(
            [sys.executable, "-c", _PUSH_SCRIPT, str(folder), HUB_REPO],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{server.url}/{HUB_REPO}"
        assert server.hub[HUB_REPO] == {"model.safetensors": weights, "config.json": config}
