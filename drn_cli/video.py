"""Video super-resolution: decode, upscale frame batches, encode, all streamed through pipes.

The pipeline has three stages running at once, joined by small bounded queues, so the
slowest stage (normally the network) sets the pace and memory stays flat:

1. a reader thread runs ffmpeg to decode the video stream to raw RGB on a pipe; ffmpeg's
   ``showinfo`` filter reports every frame's exact timestamp on stderr, paired in order;
2. the calling thread runs the :class:`FrameUpscaler` on batches of frames;
3. a writer thread feeds the upscaled frames to an ffmpeg encoder per segment.

**Timestamps.** Raw video on a pipe has no timestamps, so the writer wraps the frames in a
minimal Matroska stream written here (``V_UNCOMPRESSED`` RGB, nanosecond timestamps, one
cluster per frame). The encoder reads it with ``-fps_mode passthrough`` and an encoder time
base equal to the input's, so every output frame gets the input frame's own timestamp, which
also keeps variable frame rate clips exactly as they were.

**Segments and resume.** Frames are cut into segments of ``segment_frames`` frames. Each
segment is encoded to its own NUT file in ``<output>.drn-work/``; when its encoder has
finished, the file is synced and recorded in ``manifest.json``. A resumed run seeks the
decoder to just before the last finished frame and skips by timestamp. At the end the
segments are joined with ffmpeg's concat demuxer (exact per-segment durations given, so
timestamps are unchanged) and muxed with the input's audio and subtitle streams by stream
copy, re-encoded only where the output container cannot hold them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import numpy as np

from .atomic import atomic_path
from .errors import InputError
from .ffmpeg import (
    NOPTS,
    VideoInfo,
    check_readable,
    chroma_alignment,
    encoder_pix_fmts,
    ffmpeg_exe,
    file_arg,
    format_fraction,
    last_error,
    parse_error_line,
    parse_showinfo_frame,
    parse_showinfo_time_base,
    popen_kwargs,
    probe_video,
    quick_probe,
    run_ffmpeg,
    size_notices,
)

__all__ = [
    "FrameUpscaler",
    "VideoInfo",
    "VideoProgress",
    "VideoResult",
    "iter_frames",
    "probe_video",
    "upscale_video",
]

MANIFEST_VERSION = 1
#: Seconds of video per segment when ``segment_frames`` is not given.
DEFAULT_SEGMENT_SECONDS = 10.0
#: How far before a target time the decoder seeks; frames before the target are skipped.
_SEEK_MARGIN = Fraction(2)
#: Half a microsecond: container start times are printed in whole microseconds.
_TIME_TOLERANCE = Fraction(1, 2_000_000)
_QUEUE_BATCHES = 2
_SCALE_FLAGS = "bicubic+accurate_rnd+full_chroma_int"

#: ffmpeg colour-space names -> swscale matrix names.
_SWS_MATRIX = {
    "bt709": "bt709",
    "bt470bg": "bt601",
    "smpte170m": "smpte170m",
    "smpte240m": "smpte240m",
    "fcc": "fcc",
    "bt2020nc": "bt2020",
    "bt2020c": "bt2020",
}
_TEXT_SUBTITLES = {
    "subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text", "microdvd", "subviewer",
    "subviewer1", "sami", "realtext", "jacosub", "mpl2", "pjs", "vplayer", "stl",
}  # fmt: skip


@runtime_checkable
class FrameUpscaler(Protocol):
    """Anything that upscales a batch of RGB frames by an integer factor.

    ``__call__`` takes an ``N x H x W x 3`` uint8 RGB array and returns ``N x sH x sW x 3``
    uint8, where ``s`` is :attr:`scale`. An upscaler may also carry a ``fingerprint`` string
    (for example a hash of its weights); resume then refuses work made by a different model.
    """

    scale: int

    def __call__(self, frames: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class VideoProgress:
    """Progress report passed to the ``progress`` callback after every batch."""

    #: Frames finished so far, including those finished by an earlier, resumed run.
    frames_done: int
    #: Expected total (an estimate when ``start``/``end`` are used); None when unknown.
    total_frames: int | None
    #: Frames per second processed in this run.
    fps: float
    #: Seconds since this run started.
    elapsed: float


@dataclass
class VideoResult:
    """What :func:`upscale_video` produced."""

    input: Path
    output: Path
    frames: int
    #: The input's nominal frame rate, exact, e.g. ``"24000/1001"`` (kept in the output).
    fps: str
    width_in: int
    height_in: int
    width_out: int
    height_out: int
    scale: int
    #: Wall-clock seconds of this run.
    seconds: float
    #: Seconds from the first output frame to the end of the last.
    duration: float
    codec: str
    pix_fmt: str
    vfr: bool
    segments: int
    #: Frames taken over from an interrupted run (``resume=True``).
    resumed_frames: int = 0
    #: What happened to each audio/subtitle stream, e.g. ``"audio #1 mp3: copied"``.
    streams: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["input"] = str(self.input)
        d["output"] = str(self.output)
        return d


# --------------------------------------------------------------------------------------------
# Minimal Matroska writer for raw RGB frames with exact timestamps


def _ebml_size(n: int) -> bytes:
    for length in range(1, 9):
        if n < (1 << (7 * length)) - 1:
            return (n | (1 << (7 * length))).to_bytes(length, "big")
    raise ValueError(f"EBML element too large: {n} bytes")


def _element(element_id: bytes, payload: bytes) -> bytes:
    return element_id + _ebml_size(len(payload)) + payload


def _uint_element(element_id: bytes, value: int) -> bytes:
    return _element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


class _RawMatroskaWriter:
    """Writes RGB24 frames as an unknown-length Matroska stream with nanosecond timestamps."""

    def __init__(self, stream: IO[bytes], width: int, height: int, default_duration_ns: int) -> None:
        self._stream = stream
        self._frame_bytes = width * height * 3
        ebml = _element(
            b"\x1a\x45\xdf\xa3",
            _uint_element(b"\x42\x86", 1)  # EBMLVersion
            + _uint_element(b"\x42\xf7", 1)  # EBMLReadVersion
            + _uint_element(b"\x42\xf2", 4)  # EBMLMaxIDLength
            + _uint_element(b"\x42\xf3", 8)  # EBMLMaxSizeLength
            + _element(b"\x42\x82", b"matroska")  # DocType
            + _uint_element(b"\x42\x87", 4)  # DocTypeVersion
            + _uint_element(b"\x42\x85", 2),  # DocTypeReadVersion
        )
        segment_unknown_size = b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff"
        info = _element(
            b"\x15\x49\xa9\x66",
            _uint_element(b"\x2a\xd7\xb1", 1)  # TimestampScale: 1 ns
            + _element(b"\x4d\x80", b"drn-cli")  # MuxingApp
            + _element(b"\x57\x41", b"drn-cli"),  # WritingApp
        )
        video = _element(
            b"\xe0",
            _uint_element(b"\xb0", width)
            + _uint_element(b"\xba", height)
            + _element(b"\x2e\xb5\x24", b"RGB\x18"),  # ColourSpace FourCC: packed RGB24
        )
        track = _element(
            b"\xae",
            _uint_element(b"\xd7", 1)  # TrackNumber
            + _uint_element(b"\x73\xc5", 1)  # TrackUID
            + _uint_element(b"\x83", 1)  # TrackType: video
            + _element(b"\x86", b"V_UNCOMPRESSED")
            + _uint_element(b"\x9c", 0)  # FlagLacing
            # DefaultDuration gives ffmpeg the nominal frame rate (and the last frame's length).
            + _uint_element(b"\x23\xe3\x83", max(1, default_duration_ns))
            + video,
        )
        stream.write(ebml + segment_unknown_size + info + _element(b"\x16\x54\xae\x6b", track))

    def write(self, frame: np.ndarray, timestamp_ns: int) -> None:
        timestamp = _uint_element(b"\xe7", timestamp_ns)
        block_header = b"\x81\x00\x00\x80"  # track 1, relative timestamp 0, keyframe
        block_size = len(block_header) + self._frame_bytes
        simple_block_head = b"\xa3" + _ebml_size(block_size) + block_header
        cluster_size = len(timestamp) + len(simple_block_head) + self._frame_bytes
        self._stream.write(b"\x1f\x43\xb6\x75" + _ebml_size(cluster_size) + timestamp + simple_block_head)
        self._stream.write(memoryview(np.ascontiguousarray(frame)).cast("B"))


# --------------------------------------------------------------------------------------------
# Decoding


class _Decoder:
    """One ffmpeg process decoding the video stream to RGB24 with per-frame timestamps."""

    def __init__(
        self, info: VideoInfo, seek: Fraction | None, *, select_every: int = 1, timestamps: bool = True
    ) -> None:
        self.width, self.height = info.width, info.height
        self.frame_bytes = self.width * self.height * 3
        self.time_base = info.time_base
        self.errors: list[tuple[int, str]] = []
        self.frames_announced = 0
        self._timestamps: queue.Queue[tuple[int, int] | None] = queue.Queue()
        self.with_timestamps = timestamps
        # showinfo logs each frame's exact pts at info level; the reader pairs them in order.
        vf = ["showinfo=checksum=0"] if timestamps else []
        loglevel = "info" if timestamps else "warning"
        if select_every > 1:
            vf.insert(0, f"select=not(mod(n\\,{select_every}))")
        vf += [f"scale=w={self.width}:h={self.height}:flags={_SCALE_FLAGS}", "format=rgb24"]
        args = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", f"repeat+level+{loglevel}",
            "-noautorotate", "-copyts",
        ]  # fmt: skip
        if seek is not None and seek > 0:
            args += ["-noaccurate_seek", "-ss", f"{float(seek):.6f}"]
        args += ["-i", file_arg(info.path), "-map", f"0:{info.video_index}", "-vf", ",".join(vf)]
        args += ["-fps_mode", "passthrough", "-f", "rawvideo", "pipe:1"]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **popen_kwargs(),
        )
        self._stderr_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_thread.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        try:
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip()
                if "Parsed_showinfo" in line:
                    if (stamp := parse_showinfo_frame(line)) is not None:
                        self.frames_announced += 1
                        self._timestamps.put(stamp)
                    elif (tb := parse_showinfo_time_base(line)) is not None:
                        self.time_base = tb
                    # The demuxer logs from its own thread; its message can land inside a showinfo
                    # line, without its "[error]" prefix.
                    if (report := _truncation_report(line)) is not None:
                        self.errors.append((self.frames_announced, report))
                    continue
                if (message := parse_error_line(line)) is not None:
                    self.errors.append((self.frames_announced, message))
        finally:
            self._timestamps.put(None)

    def read(self, into: np.ndarray) -> tuple[int, int] | None:
        """Read the next frame into ``into`` (H x W x 3 uint8); its (pts, duration), or None at the end."""
        assert self.proc.stdout is not None
        view = memoryview(into).cast("B")
        got = 0
        while got < self.frame_bytes:
            n = self.proc.stdout.readinto(view[got:])
            if not n:
                return None  # end of stream (a partial frame means ffmpeg died mid-frame)
            got += n
        if not self.with_timestamps:
            return NOPTS, 0
        try:
            # showinfo logs a frame before ffmpeg writes it, so its line is due any moment.
            stamp = self._timestamps.get(timeout=120)
        except queue.Empty:
            stamp = None
        if stamp is None:
            raise RuntimeError("ffmpeg produced a frame without a showinfo timestamp")
        return stamp

    def close(self, *, kill: bool) -> int:
        """Stop (``kill``) or wait for ffmpeg; returns its exit code."""
        if kill and self.proc.poll() is None:
            self.proc.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        rc = self.proc.wait()
        self._stderr_thread.join(timeout=10)
        return rc


def iter_frames(path: str | os.PathLike[str], *, every: int = 1, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield a video's frames as ``H x W x 3`` uint8 RGB arrays, decoded on the fly.

    ``every=n`` yields frames 0, n, 2n, ... (ffmpeg drops the others before conversion);
    ``max_frames`` stops after that many. Frames come in stored orientation (no rotation
    applied) at the stored pixel size (SAR not applied), as the upscaler sees them.
    Raises :class:`InputError` for anything that is not a readable video.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    info = quick_probe(path)
    if max_frames is not None and max_frames <= 0:
        return
    decoder = _Decoder(info, None, select_every=every, timestamps=False)
    yielded = 0
    finished = False
    try:
        while max_frames is None or yielded < max_frames:
            frame = np.empty((info.height, info.width, 3), np.uint8)
            if decoder.read(frame) is None:
                finished = True
                break
            yielded += 1
            yield frame
    finally:
        rc = decoder.close(kill=not finished)
    if finished and yielded == 0 and rc != 0:
        raise InputError(f"{path} could not be decoded ({'; '.join(m for _, m in decoder.errors[-1:])}).")


# --------------------------------------------------------------------------------------------
# Planning: encoder settings, streams, work folder


@dataclass
class _EncodePlan:
    codec: str
    pix_fmt: str
    width: int  # encoded size (after any crop)
    height: int
    full_width: int  # upscaler output size
    full_height: int
    video_filter: str
    codec_args: list[str]
    notices: list[str]


def _plan_encode(
    info: VideoInfo,
    scale: int,
    codec: str,
    crf: int | None,
    preset: str | None,
    pix_fmt: str | None,
    bitrate: str | None,
) -> _EncodePlan:
    notices: list[str] = []
    supported = encoder_pix_fmts(codec)
    source_fmt = info.pix_fmt.replace("yuvj", "yuv")
    if pix_fmt is not None:
        if supported and pix_fmt not in supported:
            raise InputError(
                f"Encoder {codec} cannot write pixel format {pix_fmt} for {info.path.name} "
                f"(it supports: {' '.join(supported)})."
            )
        chosen = pix_fmt
    elif source_fmt in supported or not supported:
        chosen = source_fmt
    elif "yuv420p" in supported:
        chosen = "yuv420p"
    else:
        chosen = supported[0]
    if info.bit_depth > 8:
        notices.append(f"The {info.bit_depth}-bit input is upscaled with 8-bit RGB precision.")

    full_w, full_h = info.width * scale, info.height * scale
    align_w, align_h = chroma_alignment(chosen)
    width, height = full_w - full_w % align_w, full_h - full_h % align_h
    filters = []
    if (width, height) != (full_w, full_h):
        notices.append(
            f"{full_w}x{full_h} cannot be encoded as {chosen} (it needs a width divisible by {align_w} "
            f"and a height divisible by {align_h}); the output is cropped to {width}x{height}."
        )
        filters.append(f"crop={width}:{height}:0:0")
    notices += size_notices(codec, width, height)

    is_rgb_out = chosen.startswith(("gbr", "rgb", "bgr", "argb", "abgr", "rgba", "bgra", "x2rgb", "gray"))
    color_range = "pc" if info.pix_fmt.startswith("yuvj") else info.color_range
    scale_opts = [f"flags={_SCALE_FLAGS}"]
    if not is_rgb_out:
        if info.color_space in _SWS_MATRIX:
            scale_opts.append(f"out_color_matrix={_SWS_MATRIX[info.color_space]}")
        if color_range in ("tv", "pc"):
            scale_opts.append(f"out_range={color_range}")
    filters += [f"scale={':'.join(scale_opts)}", f"format={chosen}"]
    # Tags go on the frames (setparams): ffmpeg takes the encoder's colour tags from them.
    params = []
    if not is_rgb_out:
        if color_range in ("tv", "pc"):
            params.append(f"range={color_range}")
        if info.color_space:
            params.append(f"colorspace={info.color_space}")
    if info.color_primaries:
        params.append(f"color_primaries={info.color_primaries}")
    if info.color_transfer:
        params.append(f"color_trc={info.color_transfer}")
    if params:
        filters.append("setparams=" + ":".join(params))
    if info.sar is not None:
        filters.append(f"setsar={info.sar.numerator}/{info.sar.denominator}")

    args = ["-c:v", codec]
    if bitrate is not None:
        args += ["-b:v", bitrate]
    elif crf is not None:
        args += ["-crf", str(crf)]
        if codec in ("libvpx-vp9", "libvpx"):
            args += ["-b:v", "0"]  # constant-quality mode needs the bitrate cap off
    if preset is not None:
        args += ["-preset", preset]
    return _EncodePlan(codec, chosen, width, height, full_w, full_h, ",".join(filters), args, notices)


def _preflight(plan: _EncodePlan, output: Path, work: Path) -> None:
    """Encode one black frame at the real size into the output's container, to fail early."""
    target = work / f"preflight{output.suffix}"
    proc = run_ffmpeg(
        ["-loglevel", "error", "-f", "lavfi", "-i", f"color=c=black:s={plan.full_width}x{plan.full_height}:r=25",
         "-frames:v", "1", "-vf", f"format=rgb24,{plan.video_filter}", *plan.codec_args, "-y", file_arg(target)]
    )  # fmt: skip
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    if proc.returncode != 0:
        raise InputError(
            f"ffmpeg cannot write {plan.codec} video at {plan.width}x{plan.height} into {output.name} "
            f"({last_error(proc.stderr)})."
        )


@dataclass
class _StreamAction:
    index: int
    kind: str
    codec_args: list[str]  # ["copy"] or an encoder with options
    note: str


def _fallback_codec(kind: str, codec: str, ext: str) -> list[str] | None:
    ext = ext.lower()
    if kind == "audio":
        if ext == ".webm":
            return ["libopus", "-b:a", "160k"]
        if ext == ".avi":
            return ["libmp3lame", "-b:a", "192k"]
        return ["aac", "-b:a", "192k"]
    if codec not in _TEXT_SUBTITLES:
        return None  # bitmap subtitles cannot be converted to text
    if ext in (".mp4", ".m4v", ".mov", ".3gp"):
        return ["mov_text"]
    if ext == ".webm":
        return ["webvtt"]
    if ext in (".mkv", ".mka"):
        return ["ass"] if codec in ("ass", "ssa") else ["subrip"]
    return None


def _plan_streams(info: VideoInfo, output: Path, work: Path) -> list[_StreamAction]:
    """Stream-copy every audio/subtitle stream the output container accepts; convert the rest."""
    actions = []
    for s in info.streams:
        if s.kind == "attachment" and output.suffix.lower() in (".mkv", ".mka"):
            actions.append(_StreamAction(s.index, s.kind, ["copy"], f"attachment #{s.index}: copied"))
        elif s.kind in ("attachment", "data") or (s.kind == "video" and s.index != info.video_index):
            actions.append(_StreamAction(s.index, s.kind, [], f"{s.kind} #{s.index} {s.codec}: dropped"))
    streams = [s for s in info.streams if s.kind in ("audio", "subtitle")]
    if not streams:
        return actions

    def trial(indices: list[int], codec_args: list[str] | None = None) -> bool:
        target = work / f"trial{output.suffix}"
        args = ["-loglevel", "error", "-t", "1", "-i", file_arg(info.path)]
        for i in indices:
            args += ["-map", f"0:{i}"]
        args += ["-c", "copy"] if codec_args is None else ["-c", *codec_args]
        proc = run_ffmpeg([*args, "-y", file_arg(target)])
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        return proc.returncode == 0

    ok_all = trial([s.index for s in streams])
    for s in streams:
        label = f"{s.kind} #{s.index} {s.codec}"
        if ok_all or trial([s.index]):
            actions.append(_StreamAction(s.index, s.kind, ["copy"], f"{label}: copied"))
            continue
        fallback = _fallback_codec(s.kind, s.codec, output.suffix)
        if fallback is not None and trial([s.index], fallback):
            actions.append(
                _StreamAction(
                    s.index,
                    s.kind,
                    fallback,
                    f"{label}: re-encoded to {fallback[0]} because {output.suffix} cannot hold {s.codec}",
                )
            )
        else:
            actions.append(
                _StreamAction(s.index, s.kind, [], f"{label}: dropped because {output.suffix} cannot hold it")
            )
    return actions


def _settings_digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class _Segment:
    index: int
    file: str
    frames: int
    first_frame: int
    first_pts: int
    last_pts: int
    end_pts: int


class _Manifest:
    """The work folder's record of settings and finished segments; saved atomically."""

    def __init__(self, path: Path, settings: dict[str, Any], segments: list[_Segment] | None = None) -> None:
        self.path = path
        self.settings = settings
        self.digest = _settings_digest(settings)
        self.segments = segments or []
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> _Manifest | None:
        try:
            data = json.loads(path.read_text())
            if data.get("version") != MANIFEST_VERSION:
                return None
            segments = [_Segment(**s) for s in data["segments"]]
            return cls(path, data["settings"], segments)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.segments)

    def add(self, segment: _Segment) -> None:
        with self._lock:
            self.segments.append(segment)
            self.save()

    def save(self) -> None:
        data = {
            "version": MANIFEST_VERSION,
            "digest": self.digest,
            "settings": self.settings,
            "segments": [asdict(s) for s in self.segments],
        }
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)


@contextlib.contextmanager
def _locked(work: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, run unguarded
        yield
        return
    fd = os.open(work / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"Another drn run is already writing {work}.") from None
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# The pipeline


@dataclass
class _Batch:
    frames: np.ndarray
    pts: list[int]
    durations: list[int]


@dataclass
class _EndOfFrames:
    pass


#: How ffmpeg's demuxers say that the input file ends before its data does.
_TRUNCATION_PHRASES = ("File ended prematurely", "partial file", "Truncating")


def _truncation_report(text: str) -> str | None:
    """The truncation message in ``text`` (from its phrase to the end), or None."""
    for phrase in _TRUNCATION_PHRASES:
        if (at := text.find(phrase)) >= 0:
            return text[at:].strip()
    return None


@dataclass
class _DecodeStatus:
    frames: int = 0
    last_time: float | None = None
    rc: int = 0
    #: (frames decoded before it, message) for each error-level line of the decoder.
    errors: list[tuple[int, str]] = field(default_factory=list)
    dropped_non_increasing: int = 0
    restarted_without_seek: bool = False

    def corruption(self) -> str | None:
        """Why the input counts as corrupt, or None.

        Errors before the first frame are tolerated: streams cut mid-GOP (TS recordings)
        routinely start with undecodable frames. A demuxer's report that the file ends early is
        not: ffmpeg's demuxer runs ahead of the decoder in its own thread, so it can log
        "File ended prematurely" before the first frame is announced.
        """
        late = [m for n, m in self.errors if n > 0 or (self.frames > 0 and _truncation_report(m))]
        if late:
            return late[0]
        if self.rc != 0:
            return self.errors[-1][1] if self.errors else f"ffmpeg exit code {self.rc}"
        if self.frames == 0 and self.errors:
            return self.errors[0][1]
        return None

    def notices(self) -> list[str]:
        out = []
        if self.dropped_non_increasing:
            out.append(f"Dropped {self.dropped_non_increasing} frames whose timestamps did not increase.")
        if self.restarted_without_seek:
            out.append("Seeking in the input was inexact, so it was decoded from the beginning instead.")
        early = [m for n, m in self.errors if n == 0]
        if early and self.frames and self.corruption() is None:
            out.append(f"The decoder reported errors before the first frame ({early[0]}); usually harmless.")
        return out


class _Stop(Exception):
    """Internal: a stage noticed that the pipeline is being torn down."""


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    while True:
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            if stop.is_set():
                raise _Stop from None


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                raise _Stop from None


class _Reader(threading.Thread):
    """Decodes, selects (start/end/resume) and batches frames."""

    def __init__(
        self,
        info: VideoInfo,
        out: queue.Queue[Any],
        stop: threading.Event,
        *,
        batch_size: int,
        start: Fraction | None,
        end: Fraction | None,
        after_pts: int | None,
    ) -> None:
        super().__init__(daemon=True, name="drn-decode")
        self.info, self.out, self.stop = info, out, stop
        self.batch_size = batch_size
        self.start_t, self.end_t, self.after_pts = start, end, after_pts
        self.file_start = Fraction(repr(info.start_time))
        self.status = _DecodeStatus()
        self.error: BaseException | None = None
        self.decoder: _Decoder | None = None

    def kill(self) -> None:
        """Stop the decoder at once (its pipe then ends and the thread exits)."""
        decoder = self.decoder
        if decoder is not None and decoder.proc.poll() is None:
            decoder.proc.kill()

    def _seek_target(self) -> Fraction | None:
        targets = []
        if self.after_pts is not None:
            targets.append(self.after_pts * self.info.time_base - self.file_start)
        elif self.start_t is not None:
            targets.append(self.start_t)
        if not targets or targets[0] - _SEEK_MARGIN <= 0:
            return None
        return targets[0] - _SEEK_MARGIN

    def run(self) -> None:
        try:
            self._run()
        except _Stop:
            pass
        except BaseException as exc:  # handed to the main thread
            self.error = exc
            self.stop.set()
        finally:
            if self.decoder is not None:
                self.decoder.close(kill=True)

    def _run(self) -> None:
        info, h, w = self.info, self.info.height, self.info.width
        seek = self._seek_target()
        status = self.status
        last_kept = self.after_pts
        batch = np.empty((self.batch_size, h, w, 3), np.uint8)
        pts_list: list[int] = []
        durs: list[int] = []
        prev_end: int | None = None
        first = True
        ended_by_end = False
        self.decoder = decoder = _Decoder(info, seek)
        while True:
            if self.stop.is_set():
                raise _Stop
            slot = len(pts_list)
            stamp = decoder.read(batch[slot])
            if stamp is None:
                break
            pts, dur = stamp
            tb = decoder.time_base
            if tb != info.time_base and pts != NOPTS:  # never seen, but keep one time base throughout
                pts, dur, tb = round(pts * tb / info.time_base), round(dur * tb / info.time_base), info.time_base
            if pts == NOPTS:
                pts = prev_end if prev_end is not None else 0
            prev_end = pts + max(dur, 0)
            t = pts * tb - self.file_start
            if first:
                first = False
                if seek is not None and t > seek + _TIME_TOLERANCE:
                    # The demuxer landed after the requested point: frames may be missing,
                    # so decode from the beginning instead and skip by timestamp.
                    decoder.close(kill=True)
                    self.decoder = decoder = _Decoder(info, None)
                    seek, first, prev_end = None, True, None
                    status.restarted_without_seek = True
                    continue
            if self.end_t is not None and t >= self.end_t - _TIME_TOLERANCE:
                ended_by_end = True
                break
            if self.start_t is not None and t < self.start_t - _TIME_TOLERANCE:
                continue
            if last_kept is not None and pts <= last_kept:
                if self.after_pts is None or pts > self.after_pts or status.frames > 0:
                    status.dropped_non_increasing += 1
                continue
            last_kept = pts
            pts_list.append(pts)
            durs.append(dur if dur > 0 else 0)
            status.frames += 1
            status.last_time = float(t)
            if len(pts_list) == self.batch_size:
                _put(self.out, _Batch(batch, pts_list, durs), self.stop)
                batch = np.empty((self.batch_size, h, w, 3), np.uint8)
                pts_list, durs = [], []
        if pts_list:
            _put(self.out, _Batch(batch[: len(pts_list)], pts_list, durs), self.stop)
        rc = decoder.close(kill=ended_by_end)
        status.rc = 0 if ended_by_end else rc
        status.errors = list(decoder.errors)
        self.decoder = None
        _put(self.out, _EndOfFrames(), self.stop)


class _Writer(threading.Thread):
    """Encodes upscaled frames, one ffmpeg process and NUT file per segment."""

    def __init__(
        self,
        inp: queue.Queue[Any],
        stop: threading.Event,
        *,
        plan: _EncodePlan,
        info: VideoInfo,
        work: Path,
        manifest: _Manifest,
        segment_frames: int,
    ) -> None:
        super().__init__(daemon=True, name="drn-encode")
        self.inp, self.stop, self.plan, self.info = inp, stop, plan, info
        self.work, self.manifest, self.segment_frames = work, manifest, segment_frames
        self.next_frame = manifest.frames
        self.error: BaseException | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._mkv: _RawMatroskaWriter | None = None
        self._stderr: deque[str] = deque(maxlen=20)
        self._seg: dict[str, Any] | None = None
        self._finishing = False
        rate = info.frame_rate if info.frame_rate > 0 else Fraction(25)
        self._default_duration_ns = round(Fraction(10**9) / rate)

    def run(self) -> None:
        try:
            while True:
                item = _get(self.inp, self.stop)
                if isinstance(item, _EndOfFrames):
                    self._finish_segment()
                    return
                for frame, pts, dur in zip(item.frames, item.pts, item.durations, strict=True):
                    if self.stop.is_set():
                        raise _Stop
                    self._write(frame, pts, dur)
        except _Stop:
            pass
        except BaseException as exc:
            self.error = exc
            self.stop.set()
        finally:
            self._abort_segment()

    def kill(self) -> None:
        """Stop the current segment's encoder; its unfinished file is removed by the thread.

        A segment whose input is complete and whose encoder is only flushing is left to
        finish, so an interruption loses as little work as possible.
        """
        proc = self._proc
        if proc is not None and proc.poll() is None and not self._finishing:
            proc.kill()

    def _write(self, frame: np.ndarray, pts: int, dur: int) -> None:
        index = self.next_frame // self.segment_frames
        if self._seg is not None and self._seg["index"] != index:
            self._finish_segment()
        if self._seg is None:
            self._start_segment(index, pts)
        assert self._seg is not None and self._mkv is not None
        tb = self.info.time_base
        ns = round((pts - self._seg["first_pts"]) * tb * 10**9)
        try:
            self._mkv.write(frame, ns)
        except (BrokenPipeError, OSError) as exc:
            raise self._encoder_failure() from exc
        self._seg["frames"] += 1
        self._seg["last_pts"] = pts
        self._seg["end_pts"] = pts + (dur if dur > 0 else round(1 / (self.info.frame_rate * tb)))
        self.next_frame += 1

    def _start_segment(self, index: int, first_pts: int) -> None:
        name = f"seg_{index:05d}.nut"
        tmp = self.work / f"seg_{index:05d}.tmp.nut"
        tb = self.info.time_base
        args = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
            "-f", "matroska", "-i", "pipe:0", "-map", "0:v:0", "-vf", self.plan.video_filter,
            "-fps_mode", "passthrough", "-enc_time_base", f"{tb.numerator}:{tb.denominator}",
            *self.plan.codec_args, "-f", "nut", "-y", file_arg(tmp),
        ]  # fmt: skip
        self._stderr.clear()
        self._proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen_kwargs()
        )
        threading.Thread(target=self._drain, args=(self._proc,), daemon=True).start()
        assert self._proc.stdin is not None
        self._mkv = _RawMatroskaWriter(
            self._proc.stdin, self.plan.full_width, self.plan.full_height, self._default_duration_ns
        )
        self._seg = {
            "index": index, "file": name, "tmp": tmp, "frames": 0, "first_frame": self.next_frame,
            "first_pts": first_pts, "last_pts": first_pts, "end_pts": first_pts,
        }  # fmt: skip

    def _drain(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            self._stderr.append(raw.decode("utf-8", "replace").rstrip())

    def _encoder_failure(self) -> InputError:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        msg = last_error("\n".join(self._stderr)) if self._stderr else "the encoder stopped"
        return InputError(f"ffmpeg failed while encoding video for {self.info.path.name} ({msg}).")

    def _finish_segment(self) -> None:
        if self._seg is None or self._proc is None:
            return
        proc, seg = self._proc, self._seg
        self._finishing = True
        try:
            assert proc.stdin is not None
            proc.stdin.close()
        except (BrokenPipeError, OSError) as exc:
            raise self._encoder_failure() from exc
        finally:
            rc = proc.wait()
            self._finishing = False
        if rc != 0:
            raise self._encoder_failure()
        tmp: Path = seg["tmp"]
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.work / seg["file"])
        _fsync_dir(self.work)
        self.manifest.add(_Segment(**{k: v for k, v in seg.items() if k != "tmp"}))
        self._proc = self._seg = self._mkv = None

    def _abort_segment(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            with contextlib.suppress(OSError):
                if self._proc.stdin is not None:
                    self._proc.stdin.close()
            self._proc.wait()
        if self._seg is not None:
            with contextlib.suppress(FileNotFoundError):
                self._seg["tmp"].unlink()
        self._proc = self._seg = self._mkv = None


def _check_upscaled(out: Any, n: int, h: int, w: int, scale: int) -> np.ndarray:
    expected = (n, h * scale, w * scale, 3)
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != expected:
        got = f"{type(out).__name__} {getattr(out, 'dtype', '?')} {getattr(out, 'shape', '?')}"
        raise ValueError(f"upscaler returned {got}; expected uint8 array of shape {expected}")
    return out


def _us(seconds: Fraction) -> int:
    """Round to whole microseconds, halves away from zero (as ffmpeg's rescaling does)."""
    scaled = seconds * 1_000_000
    return int(scaled + Fraction(1, 2)) if scaled >= 0 else -int(-scaled + Fraction(1, 2))


def _us_text(us: int) -> str:
    sign = "-" if us < 0 else ""
    us = abs(us)
    return f"{sign}{us // 1_000_000}.{us % 1_000_000:06d}"


def _assemble(
    *,
    info: VideoInfo,
    segments: list[_Segment],
    actions: list[_StreamAction],
    work: Path,
    target: Path,
    output: Path,
    trimmed_start: bool,
    cut_end: bool,
) -> None:
    """Join the segments and mux them with the input's kept streams into ``target`` (a temp of ``output``)."""
    tb = info.time_base
    file_start = Fraction(repr(info.start_time))
    origin = segments[0].first_pts
    lines = ["ffconcat version 1.0"]
    for i, seg in enumerate(segments):
        nxt = segments[i + 1].first_pts if i + 1 < len(segments) else seg.end_pts
        # Durations whose running sums are the exact (microsecond) starts of the next segments.
        dur = _us((nxt - origin) * tb) - _us((seg.first_pts - origin) * tb)
        lines += [f"file '{seg.file}'", f"duration {_us_text(dur)}"]
    concat = work / "concat.txt"
    concat.write_text("\n".join(lines) + "\n")

    t_first = origin * tb - file_start
    video_end = segments[-1].end_pts * tb - file_start
    audio_start = t_first if trimmed_start else Fraction(0)
    video_offset = t_first - audio_start

    args = ["-loglevel", "error"]
    if info.rotation:
        args += ["-display_rotation", f"{info.rotation:g}"]
    if video_offset:
        args += ["-itsoffset", _us_text(_us(video_offset))]
    args += ["-f", "concat", "-safe", "0", "-i", file_arg(concat)]
    if trimmed_start:
        args += ["-ss", _us_text(_us(audio_start))]
    if cut_end:
        args += ["-t", _us_text(_us(video_end - audio_start))]
    args += ["-i", file_arg(info.path)]
    args += ["-map", "0:v:0", "-c:0", "copy"]
    out_index = 1
    for action in actions:
        if not action.codec_args:
            continue
        args += ["-map", f"1:{action.index}", f"-c:{out_index}", *action.codec_args]
        if trimmed_start:
            # Stream copy otherwise keeps the packets before the seek point (negative times).
            args += [f"-copypriorss:{out_index}", "0"]
        out_index += 1
    args += ["-map_metadata", "1", "-map_chapters", "1"]
    if info.video_stream.language:
        args += ["-metadata:s:0", f"language={info.video_stream.language}"]
    if target.suffix.lower() in (".mp4", ".m4v", ".mov"):
        args += ["-movflags", "+faststart"]
    proc = run_ffmpeg([*args, "-y", file_arg(target)])
    if proc.returncode != 0:
        raise InputError(f"ffmpeg could not write {output} ({last_error(proc.stderr)}).")


def _check_output(inp: Path, output: Path) -> None:
    if output.resolve() == inp.resolve() or (output.exists() and os.path.samefile(output, inp)):
        raise InputError(f"Output {output} is the input file; choose another output path.")
    if output.is_dir():
        raise InputError(f"Output {output} is a folder; give a file name such as {output / 'out.mp4'}.")
    if not output.suffix:
        raise InputError(f"Output {output} has no extension to choose a container (use .mp4, .mkv, ...).")
    parent = output.resolve().parent
    if not parent.is_dir():
        raise InputError(f"Cannot write {output}: folder {parent} does not exist.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"Cannot write {output}: folder {parent} is not writable.")


def _make_work_dir(work: Path, output: Path) -> None:
    try:
        if work.exists() and not work.is_dir():
            work.unlink()
        work.mkdir(exist_ok=True)
    except OSError as exc:
        raise InputError(f"Cannot write {output}: could not create {work} ({exc.strerror or exc}).") from None


def _clear_work_dir(work: Path) -> None:
    for entry in work.iterdir():
        if entry.name == "lock":
            continue
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _prepare_work(work: Path, settings: dict[str, Any], resume: bool, notices: list[str], output: Path) -> _Manifest:
    """Load the manifest to resume, or start a fresh one (the folder exists and is locked)."""
    manifest_path = work / "manifest.json"
    digest = _settings_digest(settings)
    old = _Manifest.load(manifest_path)
    if resume and old is not None and old.digest == digest:
        # Keep the leading run of segments whose files are really there.
        good: list[_Segment] = []
        for seg in old.segments:
            if seg.index != len(good) or not (work / seg.file).is_file():
                break
            good.append(seg)
        keep = {s.file for s in good} | {"lock", "manifest.json"}
        for entry in work.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        manifest = _Manifest(manifest_path, settings, good)
        manifest.save()
        if good:
            notices.append(f"Resumed after {manifest.frames} finished frames ({len(good)} segments).")
        else:
            notices.append("Nothing finished to resume yet; starting from the beginning.")
        return manifest
    if resume and old is not None:
        changed = sorted(k for k in settings if settings.get(k) != old.settings.get(k))
        raise InputError(
            f"Cannot resume {output}: {work} holds work made with different settings "
            f"({', '.join(changed) or 'format'}); run without resume to start over."
        )
    if old is not None and old.segments:
        if old.digest != digest:
            notices.append(f"Replaced unfinished work in {work.name} that used different settings.")
        else:
            notices.append(f"Replaced unfinished work in {work.name} (pass resume=True to continue it instead).")
    elif resume:
        notices.append("Nothing to resume; starting from the beginning.")
    _clear_work_dir(work)
    manifest = _Manifest(manifest_path, settings)
    manifest.save()
    return manifest


def upscale_video(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    upscaler: FrameUpscaler,
    *,
    codec: str = "libx264",
    crf: int | None = 18,
    preset: str | None = "medium",
    pix_fmt: str | None = None,
    bitrate: str | None = None,
    start: float | None = None,
    end: float | None = None,
    batch_size: int = 4,
    resume: bool = False,
    keep_partial: bool = False,
    progress: Callable[[VideoProgress], None] | None = None,
    notice: Callable[[str], None] | None = None,
    segment_frames: int | None = None,
) -> VideoResult:
    """Upscale a video's frames with ``upscaler`` and write ``output``.

    Audio and subtitle streams are stream-copied (converted only when the output container
    cannot hold them, as the result's ``streams`` says), and frame timestamps, SAR, rotation
    and colour metadata are kept. ``start``/``end`` (seconds from the start of the file)
    process part of the clip, cutting audio to match. ``bitrate`` (e.g. ``"8M"``) switches to
    average-bitrate mode and ``crf`` is then ignored. ``pix_fmt`` defaults to the input's
    when the encoder supports it, else yuv420p.

    Work goes into ``<output>.drn-work/`` in segments of ``segment_frames`` frames (about 10
    seconds by default). After an interruption, ``resume=True`` continues from the last
    finished segment; without it, an earlier work folder is replaced. The output is written
    atomically: if processing fails or is interrupted, nothing is left at ``output`` unless
    ``keep_partial`` is true, in which case the finished part is written there before the
    error is re-raised.

    Notices (warnings such as a cropped size, a level limit, a converted stream or replaced
    work) are collected in the result and also passed to ``notice`` as soon as they are known,
    so a caller can show them before the long part starts.

    Raises :class:`InputError` (one sentence) for unusable input or output, including a
    corrupt or truncated input, which is raised after processing what decodes.
    """
    t0 = time.monotonic()
    inp, out = Path(input), Path(output)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if start is not None and start < 0:
        raise InputError(f"Start time {start} for {inp} is negative.")
    if end is not None and (end <= 0 or (start is not None and end <= start)):
        raise InputError(f"End time {end} for {inp} is not after the start time {start or 0}.")
    check_readable(inp)
    _check_output(inp, out)
    info = probe_video(inp)
    scale = int(upscaler.scale)
    if scale < 1:
        raise ValueError(f"upscaler.scale must be >= 1, got {scale}")
    plan = _plan_encode(info, scale, codec, crf, preset, pix_fmt, bitrate)
    notices = _Notices(notice)
    notices += plan.notices

    file_start = Fraction(repr(info.start_time))
    start_f = Fraction(repr(float(start))) if start else None
    end_f = Fraction(repr(float(end))) if end is not None else None
    if start_f is not None and info.video_duration is not None:
        video_end = Fraction(repr(info.video_start or 0.0)) - file_start + Fraction(repr(info.video_duration))
        if start_f >= video_end:
            raise InputError(f"Start time {start} is past the end of {inp} ({float(video_end):.3f} s).")
    rate = info.frame_rate if info.frame_rate > 0 else Fraction(25)
    seg_frames = segment_frames or max(1, round(rate * Fraction(repr(DEFAULT_SEGMENT_SECONDS))))
    stat = inp.stat()
    settings = {
        "input": str(inp.resolve()),
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "upscaler": getattr(upscaler, "fingerprint", None)
        or f"{type(upscaler).__module__}.{type(upscaler).__qualname__}",
        "scale": scale,
        "codec": codec,
        "crf": crf if bitrate is None else None,
        "preset": preset,
        "pix_fmt": plan.pix_fmt,
        "bitrate": bitrate,
        "start": start,
        "end": end,
        "segment_frames": seg_frames,
        "video_filter": plan.video_filter,
    }
    work = out.with_name(out.name + ".drn-work")
    _make_work_dir(work, out)
    with _locked(work):
        keep_work = True  # an earlier run's segments survive a failure before we know better
        try:
            manifest = _prepare_work(work, settings, resume, notices, out)
            keep_work = bool(manifest.segments)
            _preflight(plan, out, work)
            actions = _plan_streams(info, out, work)
            notices += [a.note for a in actions if a.codec_args != ["copy"]]
            resumed = manifest.frames
            pipeline = _Pipeline(
                info=info, plan=plan, upscaler=upscaler, manifest=manifest, work=work, batch_size=batch_size,
                start=start_f, end=end_f, segment_frames=seg_frames,
            )  # fmt: skip
            try:
                status = pipeline.run(progress, _estimate_total(info, start_f, end_f), t0)
            except BaseException:
                keep_work = bool(manifest.segments)  # finished segments wait for resume=True
                if keep_partial and manifest.segments:
                    with contextlib.suppress(Exception):
                        _write_output(
                            info, manifest.segments, actions, work, out, trimmed_start=bool(start_f), cut_end=True
                        )
                raise
            notices += status.notices()
            segments = manifest.segments
            problem = status.corruption()
            if problem is not None or not segments:
                keep_work = False
                _raise_bad_decode(inp, out, status, problem, start, end, keep_partial, manifest, actions, info, work)
            _write_output(info, segments, actions, work, out, trimmed_start=bool(start_f), cut_end=end_f is not None)
            keep_work = False
        finally:
            if not keep_work:
                shutil.rmtree(work, ignore_errors=True)
    return VideoResult(
        input=inp,
        output=out,
        frames=manifest.frames,
        fps=format_fraction(info.frame_rate),
        width_in=info.width,
        height_in=info.height,
        width_out=plan.width,
        height_out=plan.height,
        scale=scale,
        seconds=time.monotonic() - t0,
        duration=float((segments[-1].end_pts - segments[0].first_pts) * info.time_base),
        codec=codec,
        pix_fmt=plan.pix_fmt,
        vfr=info.vfr,
        segments=len(segments),
        resumed_frames=resumed,
        streams=[a.note for a in actions],
        notices=list(notices),
    )


def _raise_bad_decode(
    inp: Path,
    out: Path,
    status: _DecodeStatus,
    problem: str | None,
    start: float | None,
    end: float | None,
    keep_partial: bool,
    manifest: _Manifest,
    actions: list[_StreamAction],
    info: VideoInfo,
    work: Path,
) -> None:
    """Raise the InputError for an input that decoded badly (writing the partial output if asked)."""
    if not manifest.segments:
        if problem:
            raise InputError(f"{inp} is corrupt: no frame could be decoded ({problem}).")
        until = f"{end} s" if end is not None else "the end"
        raise InputError(f"{inp} has no frames between {start or 0} s and {until}.")
    where = f"{status.last_time:.3f} s" if status.last_time is not None else "the start"
    kept = ""
    if keep_partial:
        _write_output(info, manifest.segments, actions, work, out, trimmed_start=start is not None, cut_end=True)
        kept = f"; the {manifest.frames} frames that decoded were written to {out}"
    raise InputError(f"{inp} is corrupt or truncated: decoding stopped at {where} after '{problem}'{kept}.")


class _Notices(list[str]):
    """A list of notices that also reports each one to a callback as it arrives."""

    def __init__(self, callback: Callable[[str], None] | None) -> None:
        super().__init__()
        self._callback = callback

    def append(self, item: str) -> None:
        super().append(item)
        if self._callback is not None:
            self._callback(item)

    def __iadd__(self, items: Iterable[str]) -> _Notices:  # type: ignore[override,misc]
        for item in items:
            self.append(item)
        return self


def _estimate_total(info: VideoInfo, start: Fraction | None, end: Fraction | None) -> int | None:
    if start is None and end is None:
        return info.frame_count
    if info.video_duration is None:
        return None
    begin = Fraction(repr(info.video_start or 0.0)) - Fraction(repr(info.start_time))
    stop = begin + Fraction(repr(info.video_duration))
    lo = max(begin, start or begin)
    hi = min(stop, end) if end is not None else stop
    rate = info.avg_frame_rate or info.frame_rate
    return max(0, round((hi - lo) * rate)) if rate else None


def _write_output(
    info: VideoInfo,
    segments: list[_Segment],
    actions: list[_StreamAction],
    work: Path,
    out: Path,
    *,
    trimmed_start: bool,
    cut_end: bool,
) -> None:
    try:
        with atomic_path(out) as tmp:
            _assemble(
                info=info, segments=segments, actions=actions, work=work, target=tmp, output=out,
                trimmed_start=trimmed_start, cut_end=cut_end,
            )  # fmt: skip
    except OSError as exc:
        raise InputError(f"Cannot write {out} ({exc.strerror or exc}).") from None


class _Pipeline:
    """Runs reader, upscaler (in the calling thread) and writer; tears all down on any error."""

    def __init__(
        self,
        *,
        info: VideoInfo,
        plan: _EncodePlan,
        upscaler: FrameUpscaler,
        manifest: _Manifest,
        work: Path,
        batch_size: int,
        start: Fraction | None,
        end: Fraction | None,
        segment_frames: int,
    ) -> None:
        self.info, self.plan, self.upscaler, self.manifest = info, plan, upscaler, manifest
        self.stop = threading.Event()
        q_in: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_BATCHES)
        q_out: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_BATCHES)
        self.q_in, self.q_out = q_in, q_out
        after = manifest.segments[-1].last_pts if manifest.segments else None
        self.reader = _Reader(info, q_in, self.stop, batch_size=batch_size, start=start, end=end, after_pts=after)
        self.writer = _Writer(
            q_out, self.stop, plan=plan, info=info, work=work, manifest=manifest, segment_frames=segment_frames
        )

    def run(self, progress: Callable[[VideoProgress], None] | None, total: int | None, t0: float) -> _DecodeStatus:
        scale = self.plan.full_width // self.info.width
        done, session, t_run = self.manifest.frames, 0, time.monotonic()
        self.reader.start()
        self.writer.start()
        try:
            while True:
                item = _get(self.q_in, self.stop)
                if isinstance(item, _EndOfFrames):
                    _put(self.q_out, item, self.stop)
                    break
                n = len(item.pts)
                upscaled = _check_upscaled(self.upscaler(item.frames), n, self.info.height, self.info.width, scale)
                _put(self.q_out, _Batch(upscaled, item.pts, item.durations), self.stop)
                done += n
                session += n
                if progress is not None:
                    elapsed = time.monotonic() - t_run
                    fps = session / elapsed if elapsed > 0 else 0.0
                    progress(VideoProgress(done, total, fps, time.monotonic() - t0))
            while self.writer.is_alive() and not self.stop.is_set():
                self.writer.join(timeout=0.1)
        except _Stop:
            pass  # a worker failed; its error is raised below
        except BaseException:
            self._abort()
            raise
        error = self.reader.error or self.writer.error
        if error is not None:
            self._abort()
            raise error
        self.reader.join(timeout=30)
        return self.reader.status

    def _abort(self) -> None:
        self.stop.set()
        self.reader.kill()
        self.writer.kill()
        self.reader.join(timeout=30)
        self.writer.join(timeout=30)
