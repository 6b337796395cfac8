"""Cutting long recordings into windows: fixed and speech windows, each decoded like an utterance, in bounded memory.

The recordings are real utterances of the shared corpora joined by stretches
of quiet background noise, written to ``tmp_path``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from crossemo import audio, featurestore, segments
from crossemo.audio import AudioError
from crossemo.segments import Window

REPO = Path(__file__).resolve().parents[1]
RATE = 48000
GAP = 4.0
"""Seconds of background between utterances: far longer than any pause inside one."""
LEAD = 2.0
"""Seconds of background before the first utterance and after the last."""
NOISE_RMS = 3e-5
"""Background level (-90 dBFS): a quiet room, below the no-speech floor of check_speech."""


def background(seconds: float, rng: np.random.Generator, channels: int = 1) -> np.ndarray:
    return (rng.standard_normal((round(seconds * RATE), channels)) * NOISE_RMS).astype(np.float32)


def stitch(utterances: list[np.ndarray], *, seed: int = 0, gap: float = GAP) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Utterances (``(frames, channels)``) joined by background; returns the recording and each utterance's span in seconds."""
    rng = np.random.default_rng(seed)
    channels = utterances[0].shape[1]
    parts, spans, at = [background(LEAD, rng, channels)], [], LEAD
    for index, utterance in enumerate(utterances):
        parts.append(utterance)
        spans.append((at, at + len(utterance) / RATE))
        at += len(utterance) / RATE
        pause = LEAD if index == len(utterances) - 1 else gap
        parts.append(background(pause, rng, channels))
        at += pause
    return np.concatenate(parts), spans


def write(path: Path, recording: np.ndarray) -> tuple[Path, np.ndarray]:
    """Write 16-bit audio; returns the path and the int16 samples as stored."""
    sf.write(path, recording, RATE, subtype="PCM_16")
    stored, _ = sf.read(path, dtype="int16", always_2d=True)
    return path, stored


def loud_frames(utterance: np.ndarray) -> np.ndarray:
    """Centres (s from the utterance's start) of its 20 ms frames within 20 dB of its loudest: its voiced speech."""
    frame = RATE // 50
    mono = utterance.mean(axis=1)
    count = mono.size // frame
    levels = 10 * np.log10(np.mean(np.square(mono[: count * frame].reshape(count, frame), dtype=np.float64), axis=1) + 1e-20)
    return (np.flatnonzero(levels > levels.max() - 20) + 0.5) * frame / RATE


@pytest.fixture(scope="module")
def ravdess(shared_corpora) -> list[np.ndarray]:
    """Six real RAVDESS utterances (mono, 48 kHz) of different actors and emotions."""
    names = ["Actor_01/03-01-05-02-01-01-01", "Actor_02/03-01-04-01-02-01-02", "Actor_07/03-01-03-02-01-02-07", "Actor_12/03-01-01-01-02-02-12", "Actor_15/03-01-05-01-01-02-15", "Actor_20/03-01-04-02-02-01-20"]
    return [sf.read(shared_corpora / "ravdess" / f"{name}.flac", dtype="float32", always_2d=True)[0] for name in names]


@pytest.fixture(scope="module")
def emovo(shared_corpora) -> list[np.ndarray]:
    """Four real EMOVO utterances (stereo with anti-correlated microphones, 48 kHz)."""
    names = ["f2/rab-f2-b1", "m1/tri-m1-l2", "f3/gio-f3-n1", "m3/neu-m3-d1"]
    return [sf.read(shared_corpora / "emovo" / f"{name}.flac", dtype="float32", always_2d=True)[0] for name in names]


@pytest.fixture
def mono_recording(tmp_path, ravdess):
    recording, spans = stitch(ravdess)
    path, stored = write(tmp_path / "call.flac", recording)
    return path, stored, spans, ravdess


@pytest.fixture
def stereo_recording(tmp_path, emovo):
    recording, spans = stitch(emovo, seed=1)
    path, stored = write(tmp_path / "interview.wav", recording)
    return path, stored, spans, emovo


# --- fixed windows -----------------------------------------------------------


def bounds(windows: list[Window]) -> list[tuple[float, float]]:
    return [(round(w.start, 6), round(w.end, 6)) for w in windows]


def test_fixed_windows_have_one_length_and_the_last_ends_at_the_files_end():
    assert bounds(segments.fixed_windows(30.0, length=10.0)) == [(0, 10), (10, 20), (20, 30)]
    # 25 s: the third window is shifted back to end at 25 s, overlapping the second.
    assert bounds(segments.fixed_windows(25.0, length=10.0)) == [(0, 10), (10, 20), (15, 25)]
    hour = segments.fixed_windows(3600.0, length=10.0)
    assert len(hour) == 360 and hour[-1].end == 3600.0
    assert all(w.duration == pytest.approx(10.0) for w in hour)


def test_a_tail_shorter_than_the_minimum_duration_gets_no_window_of_its_own():
    windows = segments.fixed_windows(30.05, length=10.0)
    assert bounds(windows) == [(0, 10), (10, 20), (20, 30.05)]
    assert audio.MIN_DURATION > 0.05
    # A tail of exactly the minimum is a window of its own, of full length.
    assert bounds(segments.fixed_windows(30.0 + audio.MIN_DURATION, length=10.0))[-1] == (20.1, 30.1)


def test_a_file_shorter_than_the_window_is_one_window():
    assert bounds(segments.fixed_windows(4.2, length=10.0)) == [(0, 4.2)]
    assert bounds(segments.fixed_windows(10.0, length=10.0)) == [(0, 10)]


def test_hop_makes_windows_overlap():
    assert bounds(segments.fixed_windows(10.0, length=4.0, hop=2.0)) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert bounds(segments.fixed_windows(11.0, length=4.0, hop=2.0)) == [(0, 4), (2, 6), (4, 8), (6, 10), (7, 11)]
    # Windows that do not fit a float multiple exactly are still all there.
    windows = segments.fixed_windows(0.9, length=0.3, hop=0.1)
    assert len(windows) == 7 and windows[-1].end == 0.9


@pytest.mark.parametrize(
    "call, named",
    [
        (lambda: segments.fixed_windows(10.0, length=0), "window length"),
        (lambda: segments.fixed_windows(10.0, length=-1.0), "window length"),
        (lambda: segments.fixed_windows(10.0, length=float("nan")), "window length"),
        (lambda: segments.fixed_windows(10.0, length="10"), "window length"),
        (lambda: segments.fixed_windows(10.0, length=True), "window length"),
        (lambda: segments.fixed_windows(10.0, length=5.0, hop=0.0), "hop"),
        (lambda: segments.fixed_windows(10.0, length=5.0, hop=float("inf")), "hop"),
        (lambda: segments.fixed_windows(10.0, length=2.0, hop=3.0), "hop of 3 s is longer than the 2 s windows"),
        (lambda: segments.iter_segments("unread.wav", mode=2.0, hop=2.5), "hop of 2.5 s is longer than the 2 s windows"),
        (lambda: segments.fixed_windows(0.0, length=5.0), "duration"),
        (lambda: segments.iter_segments("unread.wav", mode="words"), "mode"),
        (lambda: segments.iter_segments("unread.wav", mode=-2.0), "window length"),
        (lambda: segments.iter_segments("unread.wav", mode="speech", hop=1.0), "hop"),
        (lambda: segments.iter_segments("unread.wav", mode="speech", max_length=0), "maximum length"),
        (lambda: Window(3.0, 2.0), "start < end"),
    ],
)
def test_bad_arguments_are_one_line_errors_naming_the_cause(call, named):
    # iter_segments checks its arguments when called, before any file is opened.
    with pytest.raises(ValueError, match=named) as error:
        call()
    assert "\n" not in str(error.value)


# --- speech windows ----------------------------------------------------------


@pytest.mark.parametrize("which", ["mono_recording", "stereo_recording"])
def test_speech_windows_find_every_utterance_and_nothing_in_the_silences(which, request):
    path, _, spans, utterances = request.getfixturevalue(which)
    windows = [segment.window for segment in segments.iter_segments(str(path), mode="speech")]
    assert windows == sorted(windows, key=lambda w: w.start)
    assert all(a.end <= b.start for a, b in zip(windows, windows[1:]))
    for (start, _), utterance in zip(spans, utterances):
        frames = start + loud_frames(utterance)
        covered = np.mean([any(w.start <= t <= w.end for w in windows) for t in frames])
        assert covered >= 0.95, f"only {covered:.0%} of the voiced frames of the utterance at {start:.2f} s lie in a window"
    # The silences: before, between and after the utterances.
    edges = [0.0] + [t for span in spans for t in span] + [spans[-1][1] + LEAD]
    silences = list(zip(edges[::2], edges[1::2]))
    for window in windows:
        assert not any(low <= window.start and window.end <= high for low, high in silences), f"{window} lies inside a silence"


def test_a_dc_offset_does_not_hide_speech_from_the_detector(tmp_path, ravdess):
    # A recorder's bias of 0.45 under speech at half level: silero heard
    # levels as they were and found no stretch, while fixed windows, decoded
    # with the mean removed, were labelled.
    recording, _ = stitch(ravdess)
    heard = {}
    for name, offset in (("level", 0.0), ("biased", 0.45)):
        path, _ = write(tmp_path / f"{name}.wav", recording * 0.5 + offset)
        heard[name] = [segment.window for segment in segments.iter_segments(str(path), mode="speech")]
    assert len(heard["level"]) == len(ravdess) and len(heard["biased"]) == len(heard["level"])
    for biased, level in zip(heard["biased"], heard["level"]):
        assert biased.start == pytest.approx(level.start, abs=segments.VAD_CHUNK / segments.VAD_RATE + 1e-6)
        assert biased.end == pytest.approx(level.end, abs=segments.VAD_CHUNK / segments.VAD_RATE + 1e-6)


def test_speech_windows_never_exceed_the_maximum_length_and_split_into_equal_parts(mono_recording):
    path, *_ = mono_recording
    whole = [s.window for s in segments.iter_segments(str(path), mode="speech")]
    split = [s.window for s in segments.iter_segments(str(path), mode="speech", max_length=0.5)]
    assert max(w.duration for w in whole) > 1.0
    assert all(w.duration <= 0.5 + 1e-9 for w in split)
    for stretch in whole:
        parts = [w for w in split if stretch.start - 1e-9 <= w.start and w.end <= stretch.end + 1e-9]
        assert parts[0].start == pytest.approx(stretch.start) and parts[-1].end == pytest.approx(stretch.end)
        assert len(parts) == int(np.ceil(stretch.duration / 0.5 - 1e-9))
        assert all(a.end == pytest.approx(b.start) for a, b in zip(parts, parts[1:]))
        assert np.ptp([p.duration for p in parts]) < 1e-9


def test_a_short_utterance_at_the_very_end_of_a_recording_gets_its_window(shared_corpora, tmp_path):
    # The padding is cut off at the file's end, so a stretch there is shorter
    # than the same speech mid-file; it held 0.45 s of speech and was dropped.
    utterance, rate = sf.read(shared_corpora / "ravdess" / "Actor_01" / "03-01-05-01-01-01-01.flac", dtype="float32")
    utterance = resample_poly(utterance, RATE, rate).astype(np.float32)
    onset = np.flatnonzero(np.abs(utterance) > 0.02)[0]
    snippet = utterance[onset : onset + round(0.45 * RATE), None]
    path, _ = write(tmp_path / "ends-speaking.wav", np.concatenate([background(LEAD, np.random.default_rng(5)), snippet]))
    with audio.open_stream(str(path)) as stream:
        windows = list(segments.speech_windows(stream))
        duration = stream.duration
    assert len(windows) == 1 and windows[0].end == duration and windows[0].start < LEAD < windows[0].end


def test_a_stretch_is_judged_on_its_speech_not_on_how_much_padding_the_file_edge_left():
    # 0.1 s of speech 0.15 s into a file: its padded stretch starts at 0, and must still be too short.
    assert list(segments._split(0.0, 0.45, 0.15, 0.25, 10.0)) == []
    assert list(segments._split(2.0, 2.65, 2.2, 2.45, 10.0)) == [Window(2.0, 2.65)]
    assert list(segments._split(2.0, 2.5, 2.2, 2.5, 10.0)) == [Window(2.0, 2.5)]  # 0.3 s of speech up to the file's end


def test_a_recording_without_speech_has_no_speech_windows(tmp_path):
    path, _ = write(tmp_path / "room.wav", background(20.0, np.random.default_rng(3)) * 30)
    assert list(segments.iter_segments(str(path), mode="speech")) == []


def test_speech_mode_leaves_torchs_thread_count_as_it_was(mono_recording):
    path, *_ = mono_recording
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert list(segments.iter_segments(str(path), mode="speech"))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# --- each window decoded like an utterance -----------------------------------


def wav_bytes(frames: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, frames, RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "which, settings",
    [
        ("mono_recording", audio.AnalysisSettings()),
        ("mono_recording", audio.AnalysisSettings(channel=1)),
        ("stereo_recording", audio.AnalysisSettings()),
        ("stereo_recording", audio.AnalysisSettings(channel="loudest")),
        ("stereo_recording", audio.AnalysisSettings(channel=1, analysis_rate=22050)),
    ],
)
@pytest.mark.parametrize("mode", [1.5, "speech"])
def test_a_window_is_analysed_like_its_excerpt_written_as_a_file(which, settings, mode, request):
    path, stored, *_ = request.getfixturevalue(which)
    found = list(segments.iter_segments(str(path), mode=mode, hop=1.0 if mode != "speech" else None, settings=settings))
    assert found and any(s.analysis for s in found)
    if mode != "speech":
        assert any(s.reason for s in found), "fixed windows over the silences should be rejected"
    for segment in found:
        excerpt = wav_bytes(stored[round(segment.window.start * RATE) : round(segment.window.end * RATE)])
        try:
            expected = audio.prepare(excerpt, settings=settings)
        except AudioError as error:
            assert segment.analysis is None and segment.reason == str(error)
            continue
        got = segment.analysis
        assert got is not None and segment.reason == ""
        np.testing.assert_allclose(got.signal, expected.signal, rtol=0, atol=1e-6)
        assert (got.sampling_rate, got.original_rate, got.channels, got.channel, got.notes) == (expected.sampling_rate, expected.original_rate, expected.channels, expected.channel, expected.notes)
        assert got.duration == pytest.approx(expected.duration)


def test_a_window_of_silence_is_rejected_with_its_reason_and_the_file_goes_on(mono_recording):
    path, _, spans, _ = mono_recording
    found = list(segments.iter_segments(str(path), mode=2.0))
    in_gap = [s for s in found if spans[0][1] + 0.5 <= s.window.start and s.window.end <= spans[1][0]]
    assert in_gap and all(s.analysis is None and s.reason.startswith("no speech") for s in in_gap)
    assert any(s.analysis is not None for s in found if s.window.start > in_gap[-1].window.end)
    assert len(found) == len(segments.fixed_windows(sf.info(path).duration, length=2.0))


def test_a_wav_whose_recorder_never_closed_it_is_cut_like_the_closed_one(tmp_path, mono_recording):
    path, stored, *_ = mono_recording
    closed = wav_bytes(stored)
    at = closed.index(b"data")
    unclosed = bytearray(closed)
    unclosed[at + 4 : at + 8] = (0).to_bytes(4, "little")
    (tmp_path / "closed.wav").write_bytes(closed)
    (tmp_path / "unclosed.wav").write_bytes(bytes(unclosed))
    good = list(segments.iter_segments(str(tmp_path / "closed.wav"), mode=3.0))
    repaired = list(segments.iter_segments(str(tmp_path / "unclosed.wav"), mode=3.0))
    assert [s.window for s in repaired] == [s.window for s in good]
    for a, b in zip(good, repaired):
        assert a.reason == b.reason
        if a.analysis is not None:
            np.testing.assert_array_equal(a.analysis.signal, b.analysis.signal)
            assert any("recovered" in note for note in b.analysis.notes)


def test_a_file_that_is_not_audio_raises_once_iterated(tmp_path):
    (tmp_path / "notes.wav").write_text("minutes of the meeting")
    found = segments.iter_segments(str(tmp_path / "notes.wav"), mode=5.0)
    with pytest.raises(AudioError, match="not an audio file"):
        next(found)


def test_windows_are_read_through_fsspec_from_s3(s3, mono_recording):
    import s3fs

    path, *_ = mono_recording
    uri = f"s3://{s3['bucket']}/calls/call.flac"
    s3fs.S3FileSystem(**{"endpoint_url": s3["endpoint"], "key": "testing-key", "secret": "testing-secret"}).put(str(path), uri)
    local = list(segments.iter_segments(str(path), mode=3.0))
    remote = list(segments.iter_segments(uri, mode=3.0, storage_options=s3["storage_options"]))
    assert [s.window for s in remote] == [s.window for s in local]
    assert [s.reason for s in remote] == [s.reason for s in local]
    for a, b in zip(local, remote):
        if a.analysis is not None:
            np.testing.assert_array_equal(a.analysis.signal, b.analysis.signal)
    assert segments.stream_digest(uri, storage_options=s3["storage_options"]) == featurestore.content_key(path.read_bytes())


def test_the_detector_hears_the_signal_resampled_as_a_whole(ravdess):
    # Blocks of any size give what resampling the whole signal at once gives.
    signal = np.concatenate(ravdess)[:, 0]
    rng = np.random.default_rng(5)
    for rate in (48000, 44100, 22050, 22254, 8000, 16000):  # 22,254 Hz: an old Macintosh rate, 222,541 taps
        resampler = segments._StreamResampler(rate, segments.VAD_RATE)
        pieces, at = [], 0
        while at < signal.size:
            step = int(rng.integers(1, 70000))
            pieces.append(resampler.feed(signal[at : at + step]))
            at += step
        pieces.append(resampler.flush())
        whole = resample_poly(signal, resampler.up, resampler.down)
        np.testing.assert_allclose(np.concatenate(pieces), whole, rtol=0, atol=1e-6)


# --- cache identity ----------------------------------------------------------


def test_stream_digest_is_the_content_key_of_the_bytes(mono_recording):
    path, *_ = mono_recording
    assert segments.stream_digest(str(path)) == featurestore.content_key(audio.read(str(path)))
    with pytest.raises(OSError):
        segments.stream_digest(str(path.with_name("missing.flac")))


def test_segment_keys_tell_files_windows_and_rules_apart():
    file_a, file_b = "a" * 64, "b" * 64
    rule = segments.describe_rule(10.0)
    key = segments.segment_key(file_a, Window(10.0, 20.0), rule=rule)
    assert len(key) == 64 and key == segments.segment_key(file_a, Window(10.0, 20.0), rule=rule)
    assert key == segments.segment_key(file_a, Window(10.0002, 20.0), rule=rule)  # bounds count to the millisecond
    others = {
        segments.segment_key(file_b, Window(10.0, 20.0), rule=rule),
        segments.segment_key(file_a, Window(10.001, 20.0), rule=rule),
        segments.segment_key(file_a, Window(10.0, 20.001), rule=rule),
        segments.segment_key(file_a, Window(10.0, 20.0), rule=segments.describe_rule(10.0, hop=5.0)),
        segments.segment_key(file_a, Window(10.0, 20.0), rule=segments.describe_rule("speech")),
    }
    assert key not in others and len(others) == 5
    with pytest.raises(ValueError, match="SHA-256"):
        segments.segment_key("not-a-key", Window(0.0, 1.0), rule=rule)


# --- bounded memory ----------------------------------------------------------

HOUR_SCRIPT = textwrap.dedent(
    """
    import json, re, sys, time
    from pathlib import Path
    import soundfile as sf
    from crossemo import segments
    import crossemo.methods._torch  # what speech mode imports, before the baseline

    def peak():
        # The peak RSS of this process's own memory. Not getrusage's
        # ru_maxrss: Linux carries that over exec, so it starts at the
        # forking pytest's peak and hides any growth below it.
        return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

    path, report = sys.argv[1], {}
    baseline = peak()
    start = time.perf_counter()
    found = [s.analysis is not None for s in segments.iter_segments(path, mode=10.0)]
    report["fixed"] = {"windows": len(found), "analysed": sum(found), "seconds": time.perf_counter() - start, "growth": peak() - baseline}
    start = time.perf_counter()
    found = [s.analysis is not None for s in segments.iter_segments(path, mode="speech")]
    report["speech"] = {"windows": len(found), "analysed": sum(found), "seconds": time.perf_counter() - start, "growth": peak() - baseline}
    # The control: the same measure sees a whole-file decode.
    signal, _ = sf.read(path, dtype="float32")
    report["whole"] = {"growth": peak() - baseline}
    print(json.dumps(report))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from Linux's /proc/self/status")
def test_memory_stays_bounded_over_a_one_hour_recording(tmp_path, ravdess):
    hour_rate, seconds = 16000, 3600
    pattern, _ = stitch(ravdess, gap=1.5)
    pattern = audio.resample(pattern[:, 0], RATE, hour_rate)
    path, written, repeats = tmp_path / "hour.wav", 0, 0
    with sf.SoundFile(path, "w", samplerate=hour_rate, channels=1, subtype="PCM_16") as out:
        while written < seconds * hour_rate:
            block = pattern[: seconds * hour_rate - written]
            out.write(block)
            written += block.size
            repeats += 1
    whole_float32 = seconds * hour_rate * 4
    assert whole_float32 >= 230e6
    script = tmp_path / "hour.py"
    script.write_text(HOUR_SCRIPT)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=600, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps(report), f"{time.perf_counter() - started:.0f} s in all")
    assert report["fixed"]["windows"] == 360 and report["fixed"]["analysed"] > 300
    assert report["speech"]["analysed"] >= (repeats - 1) * len(ravdess)
    assert report["fixed"]["growth"] < 150e6 and report["speech"]["growth"] < 150e6
    assert report["whole"]["growth"] > 200e6
