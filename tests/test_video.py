"""Video pipeline tests: real ffmpeg, the shared clips and clips generated with lavfi.

Upscalers are tiny (nearest neighbour via ``np.repeat``, or a random-weight DRN on a
thumbnail clip) and encodes use ``preset="ultrafast"``, so the whole file stays quick.
"""

from __future__ import annotations

import json
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from drn_cli.arch import DRN, DRNConfig
from drn_cli.errors import InputError
from drn_cli.ffmpeg import ffmpeg_exe, size_notices
from drn_cli.video import VideoProgress, iter_frames, probe_video, upscale_video

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "video"
ARM = SHARED / "armwrestling_340x256.mp4"
MAKEUP = SHARED / "makeup_vlog_320x240_audio.avi"
FAST = {"preset": "ultrafast"}

needs_shared = pytest.mark.skipif(not ARM.exists() or not MAKEUP.exists(), reason="shared clips not available")


class Nearest:
    """Nearest-neighbour upscaler that counts frames and can simulate Ctrl-C.

    With ``interrupt_after=k`` and ``segments_done=(work_folder, n)`` it raises
    KeyboardInterrupt on the batch that would pass frame k, once the manifest records n
    finished segments, so that the interrupted state is deterministic.
    """

    def __init__(
        self, scale: int = 2, interrupt_after: int | None = None, segments_done: tuple[Path, int] | None = None
    ) -> None:
        self.scale = scale
        self.frames = 0
        self.interrupt_after = interrupt_after
        self.segments_done = segments_done

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if self.interrupt_after is not None and self.frames + len(frames) > self.interrupt_after:
            if self.segments_done is not None:
                work, n = self.segments_done
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and len(_manifest_segments(work)) < n:
                    time.sleep(0.02)
            raise KeyboardInterrupt
        self.frames += len(frames)
        return frames.repeat(self.scale, axis=1).repeat(self.scale, axis=2)


def _manifest_segments(work: Path) -> list[dict]:
    try:
        return json.loads((work / "manifest.json").read_text())["segments"]
    except (OSError, ValueError):
        return []


class TinyDRN:
    """A real DRN (random weights) behind the FrameUpscaler interface."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = DRN(DRNConfig(scale=4, n_blocks=1, n_feats=4)).eval()
        self.scale = 4
        self.fingerprint = "tiny-drn-test"

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        y = self.model(x).clamp(0, 255).round().to(torch.uint8)
        return y.permute(0, 2, 3, 1).contiguous().numpy()


def ff(*args: str | Path) -> None:
    """Run ffmpeg to make a test clip; fail loudly with its log."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *map(str, args)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def packet_times(path: Path, selector: str = "v:0") -> list[Fraction]:
    """Sorted presentation times (seconds, exact) of a stream's packets, unshifted."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-copyts", "-i", str(path), "-map", f"0:{selector}", "-c", "copy",
         "-f", "framecrc", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    tb = Fraction(0)
    times = []
    for line in proc.stdout.splitlines():
        if line.startswith("#tb 0:"):
            tb = Fraction(line.split(":")[1].strip())
        elif line and not line.startswith("#"):
            _, dts, pts = (int(x) for x in line.split(",")[:3])
            times.append((pts if pts != -(2**63) else dts) * tb)
    return sorted(times)


def decoded_md5s(path: Path) -> list[str]:
    proc = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
         "-f", "framemd5", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [line.rsplit(",", 1)[1].strip() for line in proc.stdout.splitlines() if line and not line.startswith("#")]


def subtitle_text(path: Path) -> str:
    proc = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:s:0", "-f", "srt", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout


def relative(times: list[Fraction]) -> list[Fraction]:
    return [t - times[0] for t in times]


# ------------------------------------------------------------------------------------------
# Generated clips (module scope: made once)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    c = {
        "vfr": d / "vfr.mp4",
        "ntsc": d / "ntsc.mp4",
        "subs": d / "with subs 'q'.mkv",
        "rot": d / "rotated.mp4",
        "odd": d / "odd.mkv",
        "tiny": d / "tiny.mp4",
    }
    # Irregular frame durations (1/60 .. 5/60 s) with audio: a genuinely VFR clip.
    ff("-f", "lavfi", "-i", "testsrc2=s=96x64:r=60:d=4", "-f", "lavfi", "-i", "sine=f=440:d=4",
       "-vf", "setpts=(2*N+3*floor(N/8)+eq(mod(N\\,5)\\,0))/60/TB", "-frames:v", "70",
       "-fps_mode", "passthrough", "-enc_time_base", "1:60", "-c:v", "libx264", "-preset", "ultrafast",
       "-g", "12", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", c["vfr"])  # fmt: skip
    ff("-f", "lavfi", "-i", "testsrc2=s=64x48:r=24000/1001:d=2", "-c:v", "libx264", "-preset", "ultrafast",
       "-pix_fmt", "yuv420p", c["ntsc"])  # fmt: skip
    srt = d / "subs.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:01,500\nHello drn\n\n2\n00:00:02,000 --> 00:00:02,800\nSecond line\n")
    ff("-f", "lavfi", "-i", "testsrc2=s=64x48:r=10:d=3", "-i", srt, "-map", "0", "-map", "1",
       "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:s", "srt", c["subs"])  # fmt: skip
    plain = d / "plain709.mp4"
    ff("-f", "lavfi", "-i", "color=c=0xC04020:s=64x48:r=25:d=1", "-vf",
       "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,"
       "setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv",
       "-c:v", "libx264", "-preset", "ultrafast", plain)  # fmt: skip
    ff("-display_rotation", "90", "-i", plain, "-c", "copy", c["rot"])
    ff("-f", "lavfi", "-i", "color=c=teal:s=33x25:r=10:d=0.5", "-c:v", "ffv1", "-pix_fmt", "yuv444p",
       c["odd"])  # fmt: skip
    ff("-f", "lavfi", "-i", "testsrc2=s=48x32:r=10:d=0.6", "-c:v", "libx264", "-preset", "ultrafast",
       "-pix_fmt", "yuv420p", c["tiny"])  # fmt: skip
    return c


# ------------------------------------------------------------------------------------------
# Probing


@needs_shared
def test_probe_shared_clips() -> None:
    arm = probe_video(ARM)
    assert (arm.width, arm.height, arm.sar, arm.frame_rate) == (340, 256, Fraction(64, 51), Fraction(28))
    assert arm.frame_count == 280 and not arm.audio_streams and not arm.vfr
    assert arm.video_duration == pytest.approx(10.0)
    vlog = probe_video(MAKEUP, count_frames=True)
    assert (vlog.width, vlog.height, vlog.frame_rate, vlog.frame_count) == (320, 240, Fraction(25), 164)
    assert [s.codec for s in vlog.audio_streams] == ["mp3"]
    assert vlog.audio_streams[0].duration == pytest.approx(6.557, abs=0.01)
    json.dumps(vlog.to_dict())


def test_probe_generated(clips: dict[str, Path]) -> None:
    vfr = probe_video(clips["vfr"])
    assert vfr.vfr and vfr.frame_count == 70
    ntsc = probe_video(clips["ntsc"])
    assert ntsc.frame_rate == Fraction(24000, 1001) and not ntsc.vfr
    rot = probe_video(clips["rot"])
    assert rot.rotation == 90
    assert (rot.color_space, rot.color_primaries, rot.color_transfer, rot.color_range) == (
        "bt709",
        "bt709",
        "bt709",
        "tv",
    )


# ------------------------------------------------------------------------------------------
# The shared clips


@needs_shared
def test_full_avi_clip_with_audio_to_mp4(tmp_path: Path) -> None:
    out = tmp_path / "vlog x2.mp4"
    seen: list[VideoProgress] = []
    result = upscale_video(MAKEUP, out, Nearest(2), progress=seen.append, segment_frames=50, **FAST)
    assert result.frames == 164 and result.segments == 4
    assert (result.width_out, result.height_out, result.fps) == (640, 480, "25/1")
    assert seen[-1].frames_done == 164 and seen[-1].total_frames == 164
    assert not (tmp_path / "vlog x2.mp4.drn-work").exists()

    src, got = probe_video(MAKEUP, count_frames=True), probe_video(out, count_frames=True)
    assert (got.width, got.height, got.frame_count, got.frame_rate) == (640, 480, 164, Fraction(25))
    assert got.video_duration == pytest.approx(src.video_duration, abs=1 / 25)
    assert relative(packet_times(out)) == [Fraction(i, 25) for i in range(164)]
    [audio] = got.audio_streams
    assert audio.codec == "mp3" and "copied" in result.streams[0]
    assert audio.duration == pytest.approx(src.audio_streams[0].duration, abs=0.03)
    # Audio and video start together, as in the input.
    assert abs(audio.start - src.audio_streams[0].start) < 0.03
    json.dumps(result.to_dict())


@needs_shared
def test_armwrestling_part_keeps_sar_fps_and_timing(tmp_path: Path) -> None:
    out = tmp_path / "arm.mkv"
    result = upscale_video(ARM, out, Nearest(2), start=2.0, end=4.0, segment_frames=20, **FAST)
    got = probe_video(out, count_frames=True)
    assert result.frames == got.frame_count == 56
    assert (got.width, got.height) == (680, 512)
    assert got.sar == Fraction(64, 51)
    assert got.frame_rate == Fraction(28)
    assert got.video_duration == pytest.approx(2.0, abs=1 / 28)
    assert not got.audio_streams
    # Exactly the input's frames 56..111, with the input's spacing.
    src = relative(packet_times(ARM))
    assert relative(packet_times(out)) == pytest.approx([float(t - src[56]) for t in src[56:112]], abs=1e-3)


@needs_shared
def test_avi_part_cuts_audio_to_match(tmp_path: Path) -> None:
    out = tmp_path / "vlog part.mkv"
    result = upscale_video(MAKEUP, out, Nearest(2), start=1.0, end=3.0, **FAST)
    got = probe_video(out, count_frames=True)
    assert result.frames == got.frame_count == 50
    [audio] = got.audio_streams
    assert audio.duration == pytest.approx(2.0, abs=0.06)
    assert abs(audio.start - got.video_start) < 0.06


# ------------------------------------------------------------------------------------------
# Generated clips: timing, subtitles, metadata, a real network


def test_vfr_timestamps_survive_exactly(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "vfr.mp4"
    result = upscale_video(clips["vfr"], out, Nearest(2), segment_frames=16, **FAST)
    assert result.vfr and result.frames == 70 and result.segments == 5
    src_t, out_t = packet_times(clips["vfr"]), packet_times(out)
    assert len(set(np.diff([float(t) for t in src_t]).round(6))) > 3  # really variable
    assert relative(out_t) == relative(src_t)
    got = probe_video(out)
    src = probe_video(clips["vfr"])
    assert got.video_duration == pytest.approx(src.video_duration, abs=5 / 60)
    assert got.audio_streams[0].duration == pytest.approx(src.audio_streams[0].duration, abs=0.03)


def test_ntsc_rate_is_exact(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ntsc.mov"
    result = upscale_video(clips["ntsc"], out, Nearest(2), segment_frames=20, **FAST)
    assert result.fps == "24000/1001"
    got = probe_video(out, count_frames=True)
    assert got.frame_rate == Fraction(24000, 1001) and got.avg_frame_rate == Fraction(24000, 1001)
    assert got.frame_count == probe_video(clips["ntsc"], count_frames=True).frame_count
    assert relative(packet_times(out)) == relative(packet_times(clips["ntsc"]))


def test_subtitles_kept_copied_or_converted(clips: dict[str, Path], tmp_path: Path) -> None:
    mkv = tmp_path / "out 'quoted' name.mkv"
    r1 = upscale_video(clips["subs"], mkv, Nearest(2), **FAST)
    assert r1.streams == ["subtitle #1 subrip: copied"]
    mp4 = tmp_path / "-dash start.mp4"
    r2 = upscale_video(clips["subs"], mp4, Nearest(2), **FAST)
    assert "re-encoded to mov_text" in r2.streams[0]
    for out, codec in ((mkv, "subrip"), (mp4, "mov_text")):
        got = probe_video(out)
        assert [s.codec for s in got.subtitle_streams] == [codec]
        text = subtitle_text(out)
        assert "Hello drn" in text and "Second line" in text and "00:00:02,000" in text


def test_audio_the_container_cannot_hold_is_converted(tmp_path: Path) -> None:
    avi = tmp_path / "pcm.avi"
    ff("-f", "lavfi", "-i", "testsrc2=s=48x32:r=10:d=1", "-f", "lavfi", "-i", "sine=d=1", "-c:v", "mpeg4",
       "-c:a", "pcm_s16le", avi)  # fmt: skip
    heard: list[str] = []
    out = tmp_path / "o.webm"
    result = upscale_video(avi, out, Nearest(2), codec="libvpx-vp9", preset=None, crf=40, notice=heard.append)
    assert result.streams == ["audio #1 pcm_s16le: re-encoded to libopus because .webm cannot hold pcm_s16le"]
    assert heard == result.notices == result.streams
    got = probe_video(out, count_frames=True)
    assert (got.codec, got.frame_count) == ("vp9", 10)
    assert [a.codec for a in got.audio_streams] == ["opus"]
    assert got.audio_streams[0].duration == pytest.approx(1.0, abs=0.03)


def test_rotation_and_colour_metadata_kept(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rot.mp4"
    upscale_video(clips["rot"], out, Nearest(2), **FAST)
    got = probe_video(out)
    assert got.rotation == 90
    assert (got.width, got.height) == (128, 96)  # stored orientation, rotated on display
    assert (got.color_space, got.color_primaries, got.color_transfer, got.color_range) == (
        "bt709",
        "bt709",
        "bt709",
        "tv",
    )
    # Colours survive the YUV -> RGB -> YUV round trip with the right matrix.
    src_rgb = next(iter_frames(clips["rot"])).reshape(-1, 3).mean(0)
    out_rgb = next(iter_frames(out)).reshape(-1, 3).mean(0)
    assert np.abs(src_rgb - out_rgb).max() < 3


def test_real_drn_network_in_pipeline(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "drn.mp4"
    result = upscale_video(clips["tiny"], out, TinyDRN(), batch_size=2, **FAST)
    got = probe_video(out, count_frames=True)
    assert (got.width, got.height, got.frame_count) == (192, 128, 6) == (result.width_out, result.height_out, 6)


def test_odd_size_is_cropped_with_notice(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "odd.mp4"
    result = upscale_video(clips["odd"], out, Nearest(3), pix_fmt="yuv420p", **FAST)
    assert any("99x75" in n and "98x74" in n for n in result.notices)
    got = probe_video(out)
    assert (got.width, got.height, got.pix_fmt) == (98, 74, "yuv420p")
    # Without a forced pix_fmt the input's 4:4:4 is kept and nothing is cropped.
    result = upscale_video(clips["odd"], tmp_path / "odd444.mkv", Nearest(3), **FAST)
    assert (result.width_out, result.height_out, result.pix_fmt, result.notices) == (99, 75, "yuv444p", [])


def test_level_limit_notices() -> None:
    assert size_notices("libx264", 3840, 2160) == []
    assert "level 6" in size_notices("libx264", 7680, 4320)[0]
    assert "beyond the largest H.264 level" in size_notices("libx264", 16384, 16384)[0]
    assert "HEVC" in size_notices("libx265", 16384, 16384)[0]
    assert size_notices("ffv1", 20000, 20000) == []


@needs_shared
def test_iter_frames_streams_and_samples() -> None:
    every = list(iter_frames(ARM, max_frames=11))
    sampled = list(iter_frames(ARM, every=10, max_frames=5))
    assert len(every) == 11 and len(sampled) == 5
    assert sampled[0].shape == (256, 340, 3) and sampled[0].dtype == np.uint8
    assert np.array_equal(sampled[1], every[10])


# ------------------------------------------------------------------------------------------
# Resume


def test_interrupt_then_resume_matches_uninterrupted_run(clips: dict[str, Path], tmp_path: Path) -> None:
    clip = clips["vfr"]
    reference = tmp_path / "reference.mkv"
    upscale_video(clip, reference, Nearest(2), segment_frames=16, batch_size=4, **FAST)

    out = tmp_path / "resumed.mkv"
    work = tmp_path / "resumed.mkv.drn-work"
    with pytest.raises(KeyboardInterrupt):
        upscaler = Nearest(2, interrupt_after=40, segments_done=(work, 2))
        upscale_video(clip, out, upscaler, segment_frames=16, batch_size=4, keep_partial=True, **FAST)
    finished = sum(s["frames"] for s in _manifest_segments(work))
    assert finished == 32  # segments 0 and 1; segment 2 was cut short and dropped
    # keep_partial wrote the finished segments as a valid file.
    assert probe_video(out, count_frames=True).frame_count == finished

    second = Nearest(2)
    result = upscale_video(clip, out, second, segment_frames=16, batch_size=4, resume=True, **FAST)
    assert result.resumed_frames == finished and second.frames == 70 - finished
    assert result.frames == 70 and not work.exists()
    assert packet_times(out) == packet_times(reference)
    assert decoded_md5s(out) == decoded_md5s(reference)


def test_resume_refuses_other_settings_and_fresh_run_replaces(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "x.mp4"
    with pytest.raises(KeyboardInterrupt):
        upscaler = Nearest(2, interrupt_after=20, segments_done=(tmp_path / "x.mp4.drn-work", 2))
        upscale_video(clips["ntsc"], out, upscaler, segment_frames=8, **FAST)
    assert not out.exists() and (tmp_path / "x.mp4.drn-work").is_dir()
    with pytest.raises(InputError, match="different settings.*crf"):
        upscale_video(clips["ntsc"], out, Nearest(2), segment_frames=8, crf=30, resume=True, **FAST)
    result = upscale_video(clips["ntsc"], out, Nearest(2), segment_frames=8, crf=30, **FAST)
    assert any("different settings" in n for n in result.notices)
    assert result.resumed_frames == 0 and result.frames == 48


def test_second_run_on_same_output_is_refused(clips: dict[str, Path], tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    work = tmp_path / "o.mp4.drn-work"
    work.mkdir()
    with open(work / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a concurrent run would hold it
        with pytest.raises(InputError, match="Another drn run is already writing"):
            upscale_video(clips["tiny"], tmp_path / "o.mp4", Nearest(), **FAST)
    assert work.is_dir() and not (tmp_path / "o.mp4").exists()


# ------------------------------------------------------------------------------------------
# Bad input


def test_not_a_video(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("just text\n")
    with pytest.raises(InputError, match="notes.txt is not a video"):
        upscale_video(text, tmp_path / "o.mp4", Nearest())
    png = tmp_path / "still.png"
    ff("-f", "lavfi", "-i", "testsrc2=s=32x24", "-frames:v", "1", png)
    with pytest.raises(InputError, match="still.png is a still image"):
        upscale_video(png, tmp_path / "o.mp4", Nearest())
    with pytest.raises(InputError, match="does not exist"):
        upscale_video(tmp_path / "missing.mp4", tmp_path / "o.mp4", Nearest())
    with pytest.raises(InputError, match="notes.txt is not a video"):
        next(iter_frames(text))
    assert not (tmp_path / "o.mp4").exists()


def test_bad_time_range(clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not after the start"):
        upscale_video(clips["tiny"], tmp_path / "o.mp4", Nearest(), start=0.4, end=0.2)
    with pytest.raises(InputError, match="past the end"):
        upscale_video(clips["tiny"], tmp_path / "o.mp4", Nearest(), start=5)
    assert list(tmp_path.iterdir()) == []


def test_audio_only_and_frameless_video(tmp_path: Path) -> None:
    audio = tmp_path / "voice.m4a"
    ff("-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", audio)
    with pytest.raises(InputError, match="voice.m4a has no video stream"):
        upscale_video(audio, tmp_path / "o.mp4", Nearest())
    full = tmp_path / "full.mkv"
    ff("-f", "lavfi", "-i", "testsrc2=s=32x24:d=1", "-f", "lavfi", "-i", "sine=d=1", "-c:v", "libx264",
       "-c:a", "aac", full)  # fmt: skip
    empty = tmp_path / "empty.mkv"
    ff("-i", full, "-map", "0", "-c", "copy", "-bsf:v", "noise=drop=1", empty)
    with pytest.raises(InputError, match="empty.mkv has a video stream but no frames"):
        upscale_video(empty, tmp_path / "o.mp4", Nearest())


def test_unusable_output(clips: dict[str, Path], tmp_path: Path) -> None:
    clip = clips["tiny"]
    with pytest.raises(InputError, match="is the input file"):
        upscale_video(clip, clip.parent / "sub" / ".." / clip.name, Nearest())
    with pytest.raises(InputError, match="does not exist"):
        upscale_video(clip, tmp_path / "no such dir" / "o.mp4", Nearest())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="Cannot write"):
        upscale_video(clip, blocker / "o.mp4", Nearest())
    with pytest.raises(InputError, match="cannot write libx264 video"):
        upscale_video(clip, tmp_path / "o.webm", Nearest(), **FAST)
    with pytest.raises(InputError, match="no video encoder called 'nope'"):
        upscale_video(clip, tmp_path / "o.mp4", Nearest(), codec="nope")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_truncation_reported_before_the_first_frame_still_counts() -> None:
    # ffmpeg's demuxer thread can log the truncation before the first frame is announced.
    from drn_cli.video import _DecodeStatus, _truncation_report

    # A line captured from ffmpeg 7: the demuxer's message landed inside a showinfo line, unprefixed.
    line = (
        "[Parsed_showinfo_0 @ 0x7fae6c002000] [info] n:  35 pts:   1400 pts_time:1.4     duration:     40 "
        "duration_time:0.04    fmt:yuv420p cl:left sar:1/1 s:64x48 i:P iskey:0 type:P File ended prematurely"
    )
    assert _truncation_report(line) == "File ended prematurely"
    assert _truncation_report(line.removesuffix(" File ended prematurely")) is None
    truncated = _DecodeStatus(frames=50, errors=[(0, "File ended prematurely")])
    assert truncated.corruption() == "File ended prematurely"
    mid_gop = _DecodeStatus(frames=50, errors=[(0, "non-existing PPS 0 referenced")])
    assert mid_gop.corruption() is None  # a stream cut mid-GOP starts with harmless errors


def test_truncated_input(tmp_path: Path) -> None:
    full = tmp_path / "full.mkv"
    ff("-f", "lavfi", "-i", "testsrc2=s=64x48:r=25:d=4", "-f", "lavfi", "-i", "sine=d=4", "-c:v", "libx264",
       "-preset", "ultrafast", "-g", "10", "-c:a", "aac", full)  # fmt: skip
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    out = tmp_path / "o.mp4"
    with pytest.raises(InputError, match=r"cut.mkv is corrupt or truncated: decoding stopped at \d"):
        upscale_video(cut, out, Nearest(), **FAST)
    assert not out.exists() and not (tmp_path / "o.mp4.drn-work").exists()
    with pytest.raises(InputError, match="were written to"):
        upscale_video(cut, out, Nearest(), keep_partial=True, **FAST)
    got = probe_video(out, count_frames=True)
    assert 10 < got.frame_count < 100
    assert got.audio_streams and got.audio_streams[0].duration <= got.video_duration + 0.1
