"""Thin helpers around the bundled ffmpeg binary: locating it, probing files, encoder facts.

There is no ffprobe in ``imageio-ffmpeg``, so :func:`probe_video` asks ffmpeg itself:

* the input dump (``ffmpeg -i``) lists the container, streams, languages, dispositions and
  the display matrix;
* one output copies every video/audio/subtitle packet to the ``framecrc`` muxer, which prints
  each packet's timestamps in the stream's exact time base (frame count, durations, VFR);
* a second output decodes the first frame through the ``showinfo`` filter, which prints the
  exact time base, ffmpeg's frame-rate guess as a fraction, SAR and colour metadata.

ffmpeg always runs from an argument list, and user paths are passed as ``file:`` URLs so that
names with spaces, quotes, colons or a leading dash are never misread.
"""

from __future__ import annotations

import functools
import math
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from .errors import InputError

NOPTS = -9223372036854775808

#: Demuxers that read a single still image; such inputs are refused as "not a video".
_IMAGE_DEMUXERS = ("image2", "image2pipe")

_INPUT_RE = re.compile(r"^Input #0, (.+?), from '")
_DURATION_RE = re.compile(r"^\s+Duration: (N/A|(\d+):(\d+):(\d+(?:\.\d+)?))(?:, start: (-?\d+(?:\.\d+)?))?")
_STREAM_RE = re.compile(r"^\s+Stream #0:(\d+)(?:\[[^\]]*\])?(?:\(([^)]*)\))?: (\w+): (.*)$")
_ROTATION_RE = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees")
_SIZE_RE = re.compile(r"(?:^|, )(\d+)x(\d+)(?=[ ,]|$)")
_HZ_RE = re.compile(r"(\d+) Hz(?:, ([^,]+))?")
_SI_CONFIG_RE = re.compile(r"config in time_base: (\d+)/(\d+), frame_rate: (\d+)/(\d+)")
_SI_FRAME_RE = re.compile(
    r"\bn:\s*(\d+) pts:\s*(-?\d+|NOPTS) pts_time:\S+\s+duration:\s*(-?\d+|NOPTS)\s.*?"
    r"fmt:(\S+) .*?sar:(\d+)/(\d+) s:(\d+)x(\d+)"
)
_SI_STAMP_RE = re.compile(r"\bn:\s*\d+ pts:\s*(-?\d+|NOPTS) pts_time:\S+\s+duration:\s*(-?\d+|NOPTS)")
_SI_COLOR_RE = re.compile(r"color_range:(\S+) color_space:(\S+) color_primaries:(\S+) color_trc:(\S+)")
_LEVEL_RE = re.compile(r"\[(fatal|error)\] ?(.*)$")
_PREFIX_RE = re.compile(r"^(\[[^\]]*\] ?)+")


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with ``imageio-ffmpeg``."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def file_arg(path: str | os.PathLike[str]) -> str:
    """An ffmpeg URL for a local path that no protocol prefix or leading dash can hijack."""
    return "file:" + os.path.abspath(os.fspath(path))


def popen_kwargs() -> dict[str, Any]:
    """Keep ffmpeg out of the terminal's process group so Ctrl-C reaches only Python.

    Python then stops its children itself and knows exactly which segment was complete.
    """
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def clean_log_line(line: str) -> str:
    """Strip ffmpeg's ``[component @ 0x..] [level]`` prefixes from a log line."""
    return _PREFIX_RE.sub("", line.strip()).strip()


def last_error(stderr: str) -> str:
    """The most informative line of an ffmpeg error log, for a one-sentence message."""
    lines = [clean_log_line(s) for s in stderr.splitlines() if s.strip()]
    boring = ("Exiting with exit code", "Conversion failed", "Error opening output files", "Error opening input files")
    useful = [s for s in lines if s and not s.startswith(boring)]
    for s in useful:
        if "Error opening" in s or "Invalid data" in s or "not supported" in s.lower():
            return s.rstrip(".")
    return (useful[-1] if useful else "unknown ffmpeg error").rstrip(".")


def format_fraction(value: Fraction) -> str:
    """``Fraction(24000, 1001)`` -> ``"24000/1001"``, ``Fraction(25)`` -> ``"25/1"``."""
    return f"{value.numerator}/{value.denominator}"


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a probed file, as ffmpeg numbers it (``index`` is the absolute index)."""

    index: int
    kind: str  # "video", "audio", "subtitle", "data" or "attachment"
    codec: str
    language: str | None = None
    description: str = ""
    default: bool = False
    attached_pic: bool = False
    sample_rate: int | None = None
    channels: str | None = None
    #: Packets seen by the packet scan (None where the scan did not cover this stream).
    packets: int | None = None
    #: Seconds from the first packet's timestamp to the end of the last one.
    duration: float | None = None
    #: Timestamp of the first packet, seconds (container time, not shifted).
    start: float | None = None


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learned about a file and its main video stream."""

    path: Path
    container: str
    #: Container duration in seconds as ffmpeg reports it (None when unknown).
    duration: float | None
    #: Container start time in seconds (timestamps are relative to it for ``start``/``end``).
    start_time: float
    video_index: int
    codec: str
    pix_fmt: str
    width: int
    height: int
    #: Sample (pixel) aspect ratio, e.g. ``Fraction(64, 51)``; None when not set.
    sar: Fraction | None
    #: Display-matrix rotation in degrees (as ffmpeg prints and ``-display_rotation`` takes it).
    rotation: float
    color_range: str | None
    color_space: str | None
    color_primaries: str | None
    color_transfer: str | None
    #: Exact time base of the video stream's timestamps.
    time_base: Fraction
    #: ffmpeg's guess of the nominal frame rate (its ``tbr``), exact, e.g. 24000/1001.
    frame_rate: Fraction
    #: Frames divided by the video's duration, exact where the timestamps allow.
    avg_frame_rate: Fraction | None
    #: Frames in the video stream: packets, or decoded frames when ``frames_counted``.
    frame_count: int
    frames_counted: bool
    #: Seconds from the first frame to the end of the last.
    video_duration: float | None
    #: First frame's timestamp in seconds (container time).
    video_start: float | None
    vfr: bool
    bit_depth: int
    streams: tuple[StreamInfo, ...] = ()
    #: Error lines ffmpeg logged while reading (a hint of corruption or truncation).
    errors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def audio_streams(self) -> list[StreamInfo]:
        return [s for s in self.streams if s.kind == "audio"]

    @property
    def subtitle_streams(self) -> list[StreamInfo]:
        return [s for s in self.streams if s.kind == "subtitle"]

    @property
    def video_stream(self) -> StreamInfo:
        return next(s for s in self.streams if s.index == self.video_index)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (fractions as ``"num/den"`` strings)."""
        d = asdict(self)
        d["path"] = str(self.path)
        d["streams"] = [asdict(s) for s in self.streams]
        d["errors"] = list(self.errors)
        for key in ("sar", "time_base", "frame_rate", "avg_frame_rate"):
            value = getattr(self, key)
            d[key] = None if value is None else format_fraction(value)
        return d


@dataclass
class _Dump:
    container: str = ""
    duration: float | None = None
    start: float = 0.0
    streams: list[dict[str, Any]] = field(default_factory=list)


def _parse_dump(stderr: str) -> _Dump:
    dump = _Dump()
    current: dict[str, Any] | None = None
    for line in stderr.splitlines():
        if m := _INPUT_RE.match(line):
            dump.container = m.group(1)
            continue
        if m := _DURATION_RE.match(line):
            if m.group(1) != "N/A":
                dump.duration = int(m.group(2)) * 3600 + int(m.group(3)) * 60 + float(m.group(4))
            if m.group(5) is not None:
                dump.start = float(m.group(5))
            continue
        if line.startswith(("Stream mapping", "Output #", "Press [q]")):
            break
        if m := _STREAM_RE.match(line):
            detail = m.group(4)
            current = {
                "index": int(m.group(1)),
                "language": m.group(2) if m.group(2) not in (None, "und") else None,
                "kind": m.group(3).lower(),
                "detail": detail,
                "rotation": None,
            }
            dump.streams.append(current)
            continue
        if current is not None and (m := _ROTATION_RE.search(line)):
            current["rotation"] = float(m.group(1))
    return dump


def _stream_from_dump(s: dict[str, Any]) -> StreamInfo:
    detail: str = s["detail"]
    codec = re.split(r"[ ,]", detail, maxsplit=1)[0]
    sample_rate = channels = None
    if s["kind"] == "audio" and (m := _HZ_RE.search(detail)):
        sample_rate = int(m.group(1))
        channels = m.group(2)
    return StreamInfo(
        index=s["index"],
        kind=s["kind"],
        codec=codec,
        language=s["language"],
        description=detail,
        default="(default)" in detail,
        attached_pic="(attached pic)" in detail,
        sample_rate=sample_rate,
        channels=channels,
    )


def _bit_depth(pix_fmt: str) -> int:
    m = re.search(r"(\d+)(le|be)$", pix_fmt)
    if not m:
        return 8
    n = int(m.group(1))
    if n in (9, 10, 12, 14, 16):
        return n
    return 16 if n in (48, 64) else 8


def _parse_framecrc(text: str) -> tuple[dict[int, Fraction], dict[int, list[tuple[int, int, int]]]]:
    """Time bases and ``(pts, dts, duration)`` packets per output stream of a framecrc log."""
    tbs: dict[int, Fraction] = {}
    packets: dict[int, list[tuple[int, int, int]]] = {}
    for line in text.splitlines():
        if line.startswith("#tb "):
            idx, tb = line[4:].split(":", 1)
            num, den = tb.strip().split("/")
            tbs[int(idx)] = Fraction(int(num), int(den))
        elif line and not line.startswith("#"):
            parts = line.split(",")
            if len(parts) < 5:
                continue
            idx, dts, pts, dur = (int(p) for p in parts[:4])
            packets.setdefault(idx, []).append((pts, dts, dur))
    return tbs, packets


def _packet_span(pkts: list[tuple[int, int, int]]) -> tuple[int, int] | None:
    """First timestamp and end (timestamp + duration) of a packet list, in its time base."""
    times = [(pts if pts != NOPTS else dts, dur) for pts, dts, dur in pkts]
    times = [(t, d) for t, d in times if t != NOPTS]
    if not times:
        return None
    first = min(t for t, _ in times)
    end = max(t + max(d, 0) for t, d in times)
    return first, end


def _is_vfr(times: list[int]) -> bool:
    if len(times) < 3:
        return False
    ts = sorted(set(times))
    diffs = [b - a for a, b in zip(ts, ts[1:], strict=False)]
    spread = max(diffs) - min(diffs)
    median = sorted(diffs)[len(diffs) // 2]
    # One tick of jitter is rounding (e.g. 29.97 fps in a 1/1000 time base), not VFR.
    return spread > 1 and spread > 0.01 * median


def _open_failure(path: Path, stderr: str) -> InputError:
    return InputError(f"{path} is not a video ffmpeg can read ({last_error(stderr)}).")


def check_readable(path: Path) -> None:
    """Raise :class:`InputError` unless ``path`` is an existing, readable file."""
    if not path.exists():
        raise InputError(f"{path} does not exist.")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a video file.")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path} is not readable.")


def _read_dump(path: Path) -> _Dump:
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", file_arg(path)],
        capture_output=True,
        text=True,
        errors="replace",
    )
    dump = _parse_dump(proc.stderr)
    if not dump.container:
        raise _open_failure(path, proc.stderr)
    return dump


def _pick_video(path: Path, dump: _Dump) -> StreamInfo:
    if dump.container in _IMAGE_DEMUXERS or dump.container.endswith("_pipe"):
        raise InputError(f"{path} is a still image ({dump.container}), not a video.")
    streams = [_stream_from_dump(s) for s in dump.streams]
    videos = [s for s in streams if s.kind == "video" and not s.attached_pic]
    if not videos:
        kinds = sorted({s.kind for s in streams})
        what = "only " + " and ".join(kinds) + " streams" if kinds else "no streams"
        raise InputError(f"{path} has no video stream ({what}).")
    return videos[0]


def probe_video(path: str | os.PathLike[str], *, count_frames: bool = False) -> VideoInfo:
    """Describe a video file with the bundled ffmpeg.

    The packet scan reads the whole file but decodes nothing, so it is quick; the frame count
    is then the number of video packets. ``count_frames=True`` decodes the video stream and
    counts real frames instead (exact, slower).

    Raises :class:`InputError` when the file is missing, is not a video ffmpeg can read, is a
    still image, has no video stream, or its video stream holds no frames.
    """
    path = Path(path)
    check_readable(path)
    dump = _read_dump(path)
    video = _pick_video(path, dump)
    streams = [_stream_from_dump(s) for s in dump.streams]
    mapped = [video] + [s for s in streams if s.kind in ("audio", "subtitle")]

    args = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "repeat+level+info",
        "-noautorotate", "-copyts", "-i", file_arg(path),
    ]  # fmt: skip
    for s in mapped:
        args += ["-map", f"0:{s.index}"]
    args += ["-c", "copy"]
    if count_frames:
        args += ["-c:v:0", "wrapped_avframe", "-fps_mode:v:0", "passthrough"]
    args += ["-f", "framecrc", "pipe:1"]
    args += ["-map", f"0:{video.index}", "-frames:v", "1", "-vf", "showinfo=checksum=0"]
    args += ["-fps_mode", "passthrough", "-f", "null", "-"]
    proc = subprocess.run(args, capture_output=True, text=True, errors="replace")

    tbs, packets = _parse_framecrc(proc.stdout)
    vpkts = packets.get(0, [])
    if not vpkts:
        raise InputError(f"{path} has a video stream but no frames in it.")

    config = _SI_CONFIG_RE.search(proc.stderr)
    frame = _SI_FRAME_RE.search(proc.stderr)
    if config is None or frame is None:
        raise InputError(f"{path} has video packets but not one frame decodes ({last_error(proc.stderr)}).")
    colors = _SI_COLOR_RE.search(proc.stderr)
    time_base = Fraction(int(config.group(1)), int(config.group(2)))
    guess = Fraction(int(config.group(3)), int(config.group(4))) if int(config.group(4)) else Fraction(0)
    pix_fmt = frame.group(4)
    sar_num, sar_den = int(frame.group(5)), int(frame.group(6))
    width, height = int(frame.group(7)), int(frame.group(8))

    def color(i: int) -> str | None:
        if colors is None:
            return None
        value = colors.group(i)
        return None if value in ("unknown", "unspecified", "reserved") else value

    rotation = next((s["rotation"] for s in dump.streams if s["index"] == video.index), None)
    if rotation is None and (m := _ROTATION_RE.search(proc.stderr)):
        rotation = float(m.group(1))

    # Per-stream packet facts.
    infos: list[StreamInfo] = []
    video_span: tuple[int, int] | None = None
    for out_idx, s in enumerate(mapped):
        pk = packets.get(out_idx, [])
        tb = tbs.get(out_idx)
        span = _packet_span(pk) if pk and tb else None
        if out_idx == 0:
            video_span = span
        extra: dict[str, Any] = {"packets": len(pk)}
        if span and tb:
            extra["start"] = float(span[0] * tb)
            extra["duration"] = float((span[1] - span[0]) * tb)
        infos.append(StreamInfo(**{**asdict(s), **extra}))
    by_index = {s.index: s for s in infos}
    all_streams = tuple(by_index.get(s.index, s) for s in streams)

    vtb = tbs.get(0, time_base)
    video_duration = video_start = None
    avg = None
    if video_span:
        video_start = float(video_span[0] * vtb)
        span_t = (video_span[1] - video_span[0]) * vtb
        video_duration = float(span_t)
        if span_t > 0:
            avg = Fraction(len(vpkts)) / span_t
            if avg.denominator > 1001:
                avg = avg.limit_denominator(1001)
    frame_rate = guess if guess > 0 else (avg or Fraction(25))
    times = [p if p != NOPTS else d for p, d, _ in vpkts]
    errors = tuple(clean_log_line(m.group(2)) for line in proc.stderr.splitlines() if (m := _LEVEL_RE.search(line)))
    return VideoInfo(
        path=path,
        container=dump.container,
        duration=dump.duration,
        start_time=dump.start,
        video_index=video.index,
        codec=video.codec,
        pix_fmt=pix_fmt,
        width=width,
        height=height,
        sar=Fraction(sar_num, sar_den) if sar_num and sar_den else None,
        rotation=rotation or 0.0,
        color_range=color(1),
        color_space=color(2),
        color_primaries=color(3),
        color_transfer=color(4),
        time_base=time_base,
        frame_rate=frame_rate,
        avg_frame_rate=avg,
        frame_count=len(vpkts),
        frames_counted=count_frames,
        video_duration=video_duration,
        video_start=video_start,
        vfr=_is_vfr([t for t in times if t != NOPTS]),
        bit_depth=_bit_depth(pix_fmt),
        streams=all_streams,
        errors=errors,
    )


@functools.lru_cache(maxsize=32)
def encoder_pix_fmts(codec: str) -> tuple[str, ...]:
    """Pixel formats an ffmpeg encoder accepts; raises :class:`InputError` for unknown encoders."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-h", f"encoder={codec}"], capture_output=True, text=True, errors="replace"
    )
    out = proc.stdout + proc.stderr
    if "is not recognized" in out or f"Encoder {codec} [" not in out:
        raise InputError(f"ffmpeg has no video encoder called '{codec}'.")
    m = re.search(r"Supported pixel formats: (.*)", out)
    return tuple(m.group(1).split()) if m else ()


def chroma_alignment(pix_fmt: str) -> tuple[int, int]:
    """The multiple (width, height) must be of for a pixel format's chroma subsampling."""
    if re.match(r"(yuvj?|yuva)420|nv12|nv21|p010|p016|yuv420", pix_fmt):
        return 2, 2
    if re.match(r"(yuvj?|yuva)422|nv16|nv20|yuyv|uyvy|y210", pix_fmt):
        return 2, 1
    if re.match(r"yuvj?411|uyyvyy411", pix_fmt):
        return 4, 1
    if re.match(r"yuvj?410", pix_fmt):
        return 4, 4
    return 1, 1


#: (codec, max luma samples or macroblocks, max side) of the common and the top level.
_LEVELS = {
    # H.264 MaxFS in 16x16 macroblocks: level 5.2 and level 6.2; max side = sqrt(8 * MaxFS).
    "h264": ((36864, "5.2"), (139264, "6.2")),
    # HEVC MaxLumaPs in samples: level 5.2 and level 6.2.
    "hevc": ((8912896, "5.2"), (35651584, "6.2")),
}


def size_notices(codec: str, width: int, height: int) -> list[str]:
    """Warnings for output sizes that exceed the H.264/HEVC level limits."""
    family = "h264" if "264" in codec else "hevc" if ("265" in codec or "hevc" in codec) else None
    if family is None:
        return []
    (common, common_name), (top, top_name) = _LEVELS[family]
    if family == "h264":
        size = math.ceil(width / 16) * math.ceil(height / 16)
        side_limit = int(math.sqrt(8 * top)) * 16
    else:
        size = width * height
        side_limit = int(math.sqrt(8 * top))
    name = "H.264" if family == "h264" else "HEVC"
    if size > top or max(width, height) > side_limit:
        return [
            f"{width}x{height} is beyond the largest {name} level ({top_name}); {codec} may still encode "
            f"it, but most players and hardware decoders will refuse the file."
        ]
    if size > common:
        return [
            f"{width}x{height} needs {name} level 6 or higher; many hardware decoders stop at level "
            f"{common_name}, so the file may not play everywhere."
        ]
    return []


def run_ffmpeg(args: Sequence[str], *, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run ffmpeg (arguments after the executable) quietly; the result is returned, not checked."""
    return subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )


def parse_showinfo_frame(line: str) -> tuple[int, int] | None:
    """``(pts, duration)`` of a showinfo frame line (``NOPTS`` pts, 0 duration when unset)."""
    m = _SI_STAMP_RE.search(line)
    if m is None:
        return None
    pts = NOPTS if m.group(1) == "NOPTS" else int(m.group(1))
    dur = 0 if m.group(2) == "NOPTS" else max(0, int(m.group(2)))
    return pts, dur


def parse_showinfo_time_base(line: str) -> Fraction | None:
    """The input time base announced by a showinfo ``config in`` line."""
    m = _SI_CONFIG_RE.search(line)
    return Fraction(int(m.group(1)), int(m.group(2))) if m else None


def parse_error_line(line: str) -> str | None:
    """The message of an ffmpeg log line at error or fatal level (``-loglevel level+...``)."""
    m = _LEVEL_RE.search(line)
    return clean_log_line(m.group(2)) if m else None


def quick_probe(path: str | os.PathLike[str]) -> VideoInfo:
    """What decoding needs (stream, size, time base, start) without the packet scan.

    Fields that need the scan (frame count, durations, VFR, per-stream packets) are left at
    zero/None; use :func:`probe_video` for those.
    """
    path = Path(path)
    check_readable(path)
    dump = _read_dump(path)
    video = _pick_video(path, dump)
    proc = run_ffmpeg(
        ["-loglevel", "info", "-noautorotate", "-i", file_arg(path), "-map", f"0:{video.index}",
         "-frames:v", "1", "-vf", "showinfo=checksum=0", "-f", "null", "-"]
    )  # fmt: skip
    frame = _SI_FRAME_RE.search(proc.stderr)
    time_base = parse_showinfo_time_base(proc.stderr)
    if frame is None or time_base is None:
        raise InputError(f"{path} has a video stream but no frame decodes ({last_error(proc.stderr)}).")
    return VideoInfo(
        path=path, container=dump.container, duration=dump.duration, start_time=dump.start,
        video_index=video.index, codec=video.codec, pix_fmt=frame.group(4), width=int(frame.group(7)),
        height=int(frame.group(8)), sar=None, rotation=0.0, color_range=None, color_space=None,
        color_primaries=None, color_transfer=None, time_base=time_base, frame_rate=Fraction(0),
        avg_frame_rate=None, frame_count=0, frames_counted=False, video_duration=None, video_start=None,
        vfr=False, bit_depth=_bit_depth(frame.group(4)),
    )  # fmt: skip
