"""Long recordings cut into windows, each decoded like an utterance, in bounded memory.

A call or an interview is labelled window by window (``crossemo predict``).
:func:`iter_segments` opens the file through fsspec (local or ``s3://``),
seeks to each window and decodes only its frames, so memory is bounded by
the longest window, never by the file. The rules:

* **Windows are file time** (:class:`Window`, seconds from the file's start).
* **Fixed windows** (:func:`fixed_windows`, ``mode`` = a length in seconds):
  windows of ``length`` start every ``hop`` seconds (default: ``length``, no
  overlap) as long as they fit. If the last one ends before the file does,
  one more window of the same length is added that **ends at the file's end**
  (shifted back, overlapping its predecessor), so every window has the same
  length and its functionals are comparable with the others'. A tail shorter
  than :data:`crossemo.audio.MIN_DURATION` gets no window of its own: the last
  window is stretched over it instead (by less than 0.1 s). A file shorter
  than ``length`` is one window.
* **Speech windows** (:func:`speech_windows`, ``mode="speech"``): silero-vad
  (its model ships in the wheel; nothing is downloaded) listens to the file
  block by block at 16 kHz (:data:`VAD_RATE`, resampled on the fly by
  :class:`_StreamResampler`), in chunks of 512 samples (32 ms), on one torch
  thread. A stretch starts where the speech probability reaches
  :data:`SPEECH_THRESHOLD` and ends after :data:`MIN_SILENCE` seconds below
  ``SPEECH_THRESHOLD - 0.15`` (silero's ``VADIterator``), so pauses shorter
  than ``MIN_SILENCE`` stay inside one stretch. Each stretch is padded by
  :data:`SPEECH_PAD` on both sides, and stretches that overlap once padded
  are merged. A stretch that holds less than :data:`MIN_SPEECH` of speech
  (a click, a cough) is dropped. A stretch longer than ``max_length``
  (default :data:`DEFAULT_MAX_LENGTH`) is cut into the fewest equal parts
  that each fit, so no part is a stub. The detector hears the channel the
  channel rule names (``"first"`` or an index) and otherwise the mean of the
  channels: it only has to find where someone speaks, and a voice on either
  channel stays audible in the mean; each window then gets the full channel
  rule. It hears that signal high-passed at :data:`DETECTOR_HIGH_PASS`, so a
  DC offset (which each window's decoding removes too) does not mask speech.
  The detector costs about 30 s of one core per hour of audio at 16 kHz
  mono, 35-40 s at 48 kHz stereo with the resampling
  (``python benchmarks/detector.py``).
* **Each window is decoded like a file of its own**
  (:meth:`crossemo.audio.Stream.excerpt`): the settings' channel rule,
  minimum duration, silence and no-speech checks, DC removal and resampling
  to the analysis rate, all on the window's frames only; only a float file's
  scale is judged on the whole file (an integer-scaled file's quiet window
  is no small-valued float file). A window
  that fails (silence between two speakers, say) is a :class:`Segment` with
  its reason, and the file goes on; a file that cannot be opened at all
  raises :class:`crossemo.audio.AudioError`.
* **Cache identity**: :func:`stream_digest` is the file's SHA-256 computed
  in blocks (equal to :func:`crossemo.featurestore.content_key` of its
  bytes), and :func:`segment_key` a window's key from it, the window's
  bounds in milliseconds and :func:`describe_rule`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Literal, Union

import numpy as np
from scipy import signal as dsp

from crossemo import audio, storage

SEGMENT_RULES_VERSION: str = "2"
"""Changes whenever a rule above changes, so window features of the old rules are not reused."""

DEFAULT_MAX_LENGTH: float = 10.0
"""Longest speech window in seconds: a long sentence. 90 % of the corpus utterances models learn from last under 4.7 s, the longest 14 s."""

VAD_RATE: int = 16000
"""Rate in Hz the detector listens at."""

VAD_CHUNK: int = 512
"""Samples the detector takes at once at :data:`VAD_RATE` (32 ms)."""

SPEECH_THRESHOLD: float = 0.5
"""Speech probability that starts a stretch (silero's default)."""

MIN_SILENCE: float = 0.3
"""Seconds of silence that end a stretch; shorter pauses (between words, before a stressed syllable) stay inside it."""

SPEECH_PAD: float = 0.2
"""Seconds added before and after each stretch. The detector is late on soft onsets: with silero's own 30 ms,
the first word of a sad RAVDESS utterance (``Actor_20/03-01-04-02-02-01-20``, "Dogs", 0.15 s) was lost.
The utterances models learn from hold silence around their speech anyway."""

DETECTOR_HIGH_PASS: float = 20.0
"""Hz: the detector hears the signal through a 2nd-order Butterworth high-pass, which removes a DC offset and slow drift.
silero hears levels as they are: a DC offset of 0.45 under speech at half level hid three of six utterances from it
(``tests/test_segments.py``), while fixed windows of the same file, decoded with the mean removed, were labelled.
Fixed from signal processing alone, tuned on no corpus: well below the lowest voice's F0 (about 60 Hz), so no speech is
taken away, and above the drift of a recorder's bias."""

MIN_SPEECH: float = 0.25
"""Stretches with less speech than this (seconds, the padding not counted; silero's default minimum) are dropped: clicks, coughs."""

Mode = Union[float, Literal["speech"]]
"""How a file is cut: windows of that many seconds, or ``"speech"`` for the stretches the detector finds."""


@dataclass(frozen=True)
class Window:
    """A stretch of a file, in seconds from its start.

    Raises:
        ValueError: unless ``0 <= start < end``.
    """

    start: float
    end: float

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"a window needs 0 <= start < end; got {self.start!r} to {self.end!r}")

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, eq=False)
class Segment:
    """One window of a file and its analysis signal, or why it has none.

    Attributes:
        window: where the window lies in the file.
        analysis: the window's signal made by the decode rules; ``None`` when rejected.
        reason: why the window was rejected (a short sentence); empty when it was not.
    """

    window: Window
    analysis: audio.Analysis | None = None
    reason: str = ""


def fixed_windows(duration: float, *, length: float, hop: float | None = None) -> list[Window]:
    """Windows of ``length`` seconds every ``hop`` seconds, the last one ending at the file's end (see the module notes).

    Args:
        duration: the file's length in seconds.
        length: each window's length in seconds.
        hop: seconds from one window's start to the next; ``length`` when ``None``.

    Returns:
        the windows in order.

    Raises:
        ValueError: a duration, length or hop that is not a positive number, or a hop longer than ``length``.
    """
    _check_seconds(duration, "duration")
    _check_seconds(length, "window length")
    hop = length if hop is None else hop
    _check_hop(hop, length=length)
    if duration <= length:
        return [Window(0.0, float(duration))]
    # The tolerance keeps a window that fits exactly from being lost to float rounding.
    fitting = math.floor((duration - length) / hop + 1e-9) + 1
    windows = [Window(float(index * hop), float(min(index * hop + length, duration))) for index in range(fitting)]
    tail = duration - windows[-1].end
    if tail >= audio.MIN_DURATION:
        windows.append(Window(float(duration - length), float(duration)))
    elif tail > 0:
        windows[-1] = Window(windows[-1].start, float(duration))
    return windows


def speech_windows(stream: audio.Stream, *, max_length: float = DEFAULT_MAX_LENGTH, channel: audio.Channel = audio.DEFAULT_CHANNEL) -> Iterator[Window]:
    """The stretches of speech in a file, each at most ``max_length`` seconds (see the module notes).

    The file is read block by block; a window is yielded as soon as its stretch ends.

    Args:
        stream: the file, open (:func:`crossemo.audio.open_stream`).
        max_length: longest window in seconds.
        channel: the channel rule (the detector hears its channel, or the mean).

    Yields:
        the windows in order.

    Raises:
        ValueError: a maximum length that is not a positive number.
        AudioError: the file's data cannot be decoded.
    """
    _check_seconds(max_length, "maximum length")
    return _speech_windows(stream, max_length, channel)


def iter_segments(
    uri: str,
    *,
    mode: Mode,
    hop: float | None = None,
    max_length: float = DEFAULT_MAX_LENGTH,
    settings: audio.AnalysisSettings | None = None,
    storage_options: storage.StorageOptions | None = None,
) -> Iterator[Segment]:
    """Cut a file into windows and make each window's analysis signal, reading only the window's frames.

    Args:
        uri: local path or URL.
        mode: a window length in seconds (fixed windows) or ``"speech"``.
        hop: seconds between fixed windows' starts; ``None`` for no overlap.
            Fixed windows only.
        max_length: longest speech window in seconds. Speech windows only.
        settings: the decode rules; the defaults when ``None``.
        storage_options: keyword arguments for the filesystem.

    Yields:
        one :class:`Segment` per window, in order (none if speech mode finds no speech).

    Raises:
        ValueError: at once, for a bad mode, hop or maximum length.
        OSError: once iterated, if the file cannot be read.
        AudioError: once iterated, if the file cannot be opened as audio
            (:func:`crossemo.audio.open_stream`); a window that fails is a
            segment with its reason instead.
    """
    _check_mode(mode, hop=hop, max_length=max_length)
    return _segments(uri, mode, hop, max_length, settings or audio.AnalysisSettings(), storage_options)


def describe_rule(mode: Mode, *, hop: float | None = None, max_length: float = DEFAULT_MAX_LENGTH) -> str:
    """The segmentation rule in one line, for :func:`segment_key` and for reports.

    Raises:
        ValueError: as :func:`iter_segments`.
    """
    _check_mode(mode, hop=hop, max_length=max_length)
    if mode == "speech":
        return (
            f"speech v{SEGMENT_RULES_VERSION}: silero-vad {metadata.version('silero-vad')}, threshold {SPEECH_THRESHOLD:g}, "
            f"min silence {MIN_SILENCE:g} s, pad {SPEECH_PAD:g} s, min speech {MIN_SPEECH:g} s, max length {max_length:g} s, high-pass {DETECTOR_HIGH_PASS:g} Hz"
        )
    return f"fixed v{SEGMENT_RULES_VERSION}: length {mode:g} s, hop {mode if hop is None else hop:g} s"


def segment_key(file_sha256: str, window: Window, *, rule: str) -> str:
    """The feature-cache key of one window: SHA-256 of the file's key, the window's bounds in ms, and the rule.

    Args:
        file_sha256: the file's content key (:func:`stream_digest`).
        window: the window.
        rule: the segmentation rule (:func:`describe_rule`).

    Returns:
        64 hex digits, like a file's content key.

    Raises:
        ValueError: a file key that is not 64 hex digits.
    """
    if not re.fullmatch(r"[0-9a-f]{64}", file_sha256):
        raise ValueError(f"file key must be a SHA-256 in 64 lowercase hex digits; got {file_sha256!r}")
    payload = {"file": file_sha256, "start_ms": round(window.start * 1000), "end_ms": round(window.end * 1000), "rule": rule}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def stream_digest(uri: str, *, storage_options: storage.StorageOptions | None = None) -> str:
    """SHA-256 of a file's bytes, read in blocks: the file's content key without holding it.

    Raises:
        OSError: if the file cannot be read.
    """
    fs, path = storage.filesystem(uri, storage_options=storage_options)
    with fs.open(path, "rb", block_size=audio.READ_BLOCK_BYTES) as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _segments(uri: str, mode: Mode, hop: float | None, max_length: float, settings: audio.AnalysisSettings, storage_options: storage.StorageOptions | None) -> Iterator[Segment]:
    def open_file():
        return audio.open_stream(uri, storage_options=storage_options, channel=settings.channel, min_duration=settings.min_duration)

    with open_file() as reader:
        if mode != "speech":
            yield from _cut(reader, fixed_windows(reader.duration, length=mode, hop=hop), settings)
            return
        # The detector reads the file through its own handle, so each window
        # is cut as soon as its stretch ends, while the detector goes on.
        with open_file() as listener:
            yield from _cut(reader, _speech_windows(listener, max_length, settings.channel), settings)


def _cut(reader: audio.Stream, windows: Iterable[Window], settings: audio.AnalysisSettings) -> Iterator[Segment]:
    for window in windows:
        start = round(window.start * reader.sampling_rate)
        stop = min(round(window.end * reader.sampling_rate), reader.frames)
        try:
            segment = Segment(window, analysis=reader.excerpt(start, stop, settings=settings))
        except audio.AudioError as error:
            segment = Segment(window, reason=str(error))
        yield segment


def _speech_windows(stream: audio.Stream, max_length: float, channel: audio.Channel) -> Iterator[Window]:
    # (padded start, padded end, speech start, speech end) of the stretch being merged
    held: tuple[float, float, float, float] | None = None
    for speech_start, speech_end in _speech_stretches(stream, channel):
        # Padded here, as silero pads, but keeping the speech's own bounds: at
        # the file's edges the padding is cut off, so only they tell how much speech a stretch holds.
        start, end = max(0.0, speech_start - SPEECH_PAD), min(speech_end + SPEECH_PAD, stream.duration)
        if held is not None and start <= held[1]:
            held = (held[0], max(held[1], end), held[2], max(held[3], speech_end))
            continue
        if held is not None:
            yield from _split(*held, max_length)
        held = (start, end, speech_start, speech_end)
    if held is not None:
        yield from _split(*held, max_length)


def _split(start: float, end: float, speech_start: float, speech_end: float, max_length: float) -> Iterator[Window]:
    """A padded stretch as windows: none if it holds too little speech, else the fewest equal parts of at most ``max_length``."""
    if speech_end - speech_start < MIN_SPEECH:
        return
    parts = math.ceil((end - start) / max_length - 1e-9)
    step = (end - start) / parts
    for index in range(parts):
        yield Window(start + index * step, end if index == parts - 1 else start + (index + 1) * step)


def _speech_stretches(stream: audio.Stream, channel: audio.Channel) -> Iterator[tuple[float, float]]:
    """``(start, end)`` in seconds of every stretch the detector hears as speech, in order, unpadded (the end: at most the file's)."""
    # torch and the detector are loaded only when speech windows are asked for.
    import torch

    from crossemo.methods._torch import single_thread

    with single_thread():
        # silero_vad sets torch's global thread count to 1 when imported:
        # importing it inside single_thread restores the caller's setting.
        from silero_vad import VADIterator, load_silero_vad

        detector = VADIterator(load_silero_vad(), threshold=SPEECH_THRESHOLD, sampling_rate=VAD_RATE, min_silence_duration_ms=round(MIN_SILENCE * 1000), speech_pad_ms=0)
    heard = _heard_channel(channel, stream.channels)
    high_pass = audio.StreamingFilter(dsp.butter(2, DETECTOR_HIGH_PASS, btype="highpass", fs=stream.sampling_rate, output="sos"))
    resampler = _StreamResampler(stream.sampling_rate, VAD_RATE)
    pending = np.zeros(0, dtype=np.float32)
    start: float | None = None

    def listen(samples: np.ndarray) -> list[tuple[float, float]]:
        nonlocal start
        ended = []
        with single_thread():
            for chunk in samples.reshape(-1, VAD_CHUNK):
                event = detector(torch.from_numpy(chunk)) or {}
                if "start" in event:
                    start = event["start"] / VAD_RATE
                elif "end" in event:
                    ended.append((start, min(event["end"] / VAD_RATE, stream.duration)))  # the end of the detector's last chunk may pass the file's
                    start = None
        return ended

    for block in stream.blocks():
        # NaN samples would poison the detector's state; their windows are rejected when decoded.
        mono = np.nan_to_num(audio.to_mono(block, heard), nan=0.0, posinf=0.0, neginf=0.0)
        samples = np.concatenate((pending, resampler.feed(high_pass(mono).astype(np.float32))))
        whole = samples.size - samples.size % VAD_CHUNK
        yield from listen(samples[:whole])
        pending = samples[whole:]
    rest = np.concatenate((pending, resampler.flush()))
    yield from listen(np.pad(rest, (0, -rest.size % VAD_CHUNK)))
    if start is not None:
        yield start, stream.duration


def _heard_channel(channel: audio.Channel, channels: int) -> int | None:
    """The channel the detector hears: the one the rule names, else (``None``) the mean of all."""
    if channels == 1 or channel == "first":
        return 0
    return channel if isinstance(channel, int) else None


class _StreamResampler:
    """Polyphase resampling of a signal that arrives in blocks, equal to ``scipy.signal.resample_poly`` of the whole.

    Each step resamples a run of whole periods (``down`` input samples each)
    together with a margin of input on both sides that is longer than the
    filter's half length, and keeps only the run's outputs; the signal is
    padded with zeros before its start and after its end, as resample_poly
    pads it.
    """

    def __init__(self, rate: int, target: int) -> None:
        divisor = math.gcd(rate, target)
        self.up, self.down = target // divisor, rate // divisor
        # resample_poly's default filter reaches half_taps samples of the
        # upsampled signal on each side of its centre.
        half_taps = 10 * max(self.up, self.down)
        reach = half_taps // self.up + 1
        self.margin = -(-reach // self.down) * self.down
        self._buffer = np.zeros(self.margin, dtype=np.float32)
        # That filter, designed once: resample_poly designs it on every call,
        # which for a rate sharing few factors with the target (22,254 Hz:
        # 222,541 taps) cost more than the resampling itself.
        taps = 2 * half_taps + 1
        self._filter = dsp.firwin(taps, 1 / max(self.up, self.down), window=("kaiser", 5.0)).astype(np.float32) if self.up != self.down else None

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """The output the signal so far determines, after ``samples`` arrive."""
        self._buffer = np.concatenate((self._buffer, samples.astype(np.float32, copy=False)))
        run = (self._buffer.size - 2 * self.margin) // self.down * self.down
        return self._resample(max(run, 0))

    def flush(self) -> np.ndarray:
        """The rest of the output, once the signal has ended."""
        remainder = self._buffer.size - self.margin
        run = -(-remainder // self.down) * self.down
        self._buffer = np.pad(self._buffer, (0, run + self.margin - remainder))
        return self._resample(run)[: -(-remainder * self.up // self.down)]

    def _resample(self, run: int) -> np.ndarray:
        if run == 0:
            return np.zeros(0, dtype=np.float32)
        if self.up == self.down:
            output = self._buffer[self.margin : self.margin + run].copy()
        else:
            resampled = dsp.resample_poly(self._buffer[: run + 2 * self.margin], self.up, self.down, window=self._filter)
            output = resampled[self.margin * self.up // self.down :][: run * self.up // self.down].astype(np.float32)
        self._buffer = self._buffer[run:]
        return output


def _check_mode(mode: Mode, *, hop: float | None, max_length: float) -> None:
    if mode == "speech":
        if hop is not None:
            raise ValueError("a hop applies to fixed windows only, not to mode 'speech'")
        _check_seconds(max_length, "maximum length")
        return
    if isinstance(mode, str):
        raise ValueError(f"mode must be a window length in seconds or 'speech'; got {mode!r}")
    _check_seconds(mode, "window length")
    if hop is not None:
        _check_hop(hop, length=mode)


def _check_hop(hop: float, *, length: float) -> None:
    _check_seconds(hop, "hop")
    if hop > length * (1 + 1e-9):
        # Windows further apart than they are long would leave audio between them unheard (equal but for float rounding is equal).
        raise ValueError(f"a hop of {hop:g} s is longer than the {length:g} s windows: {hop - length:g} s of audio between windows would be skipped")


def _check_seconds(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds; got {value!r}")
