"""Audio files to analysis signals: reading through fsspec, decoding with soundfile.

Every file becomes a 1-D ``float32`` signal at the **analysis rate**
(default 16 kHz), or an :class:`AudioError` whose message is a short reason
that ends up in the feature store's rejection list. The decode rules, in the
order :func:`prepare` applies them, each for a reason:

* **Content decides, not the name**: whatever libsndfile decodes (WAV, FLAC,
  OGG Vorbis/Opus, MP3, AIFF, AU, CAF, W64 …) is used, whatever suffix it has;
  anything else is rejected with libsndfile's reason (see
  :data:`crossemo.corpora.base.AUDIO_LIKE_SUFFIXES` for which files are tried).
* **WAV headers are checked before decoding** (:func:`_check_riff`):
  libsndfile silently shortens a WAV whose ``data`` chunk claims more bytes
  than the file holds (rejected as truncated), reports an unknown encoding as
  a malformed header (rejected as unsupported), and reads *nothing* from a
  WAV whose recorder was not closed cleanly and left the ``data`` size at 0
  (or 0xFFFFFFFF): such a header is repaired to the bytes actually present,
  and the row carries a note saying so. A header whose byte rate or block
  size contradicts its rate, channels and sample width is rejected: its rate
  cannot be trusted.
* **Plausible rates only**: :data:`MIN_SAMPLING_RATE` to
  :data:`MAX_SAMPLING_RATE`; below 4 kHz there is no speech band to analyse.
* **Multi-channel to mono: the mean of the channels** (``channel =
  "mean"``, the default, :data:`DEFAULT_CHANNEL`), chosen by
  ``benchmarks/channel.py``: with the study's Random Forest on the shared
  corpora it gives the best mean UAR over the four cross-corpus cells
  (scenarios 1 and 3, both pairs), 41.3 % against 39.1 % for ``"first"`` and
  38.8 % for ``"loudest"``, while the within-EMOVO figure (scenario 2)
  moves by about a point, well within its spread over folds (see the
  README, "Mono rule"). This holds although the stereo files of
  EMOVO hold two different microphone signals whose channels are *negatively*
  correlated, so that the mean keeps a median 44 % of one channel's energy
  (down to 22 %). Its price: a channel that carries no voice is mixed in, and
  one of steady hum makes the whole file "no speech". ``"loudest"`` takes the
  channel with the largest energy in the speech band (300 to 3400 Hz, after
  DC removal), so a channel carrying DC bias or mains hum is never mistaken
  for the voice: the rule for recordings with a dead or humming channel.
  ``"first"`` and a channel index (negative counts from the last) are the
  other rules; an index applies to multi-channel files, a mono file is its
  one channel.
* **Float files keep their scale unless it is impossible**: a float file
  whose peak is above 1 but at most :data:`MAX_FLOAT_OVERSHOOT` is scaled
  down to peak 1 (clipping would garble it); one far beyond full scale whose
  samples are whole numbers (integer values stored as float, a classic
  soundfile/scipy mistake) is divided by the integer full scale (32768 for
  16-bit values); one far beyond and not integer-valued is rejected, naming
  its peak. Whether a file is integer-scaled is judged on all its samples,
  every channel, before any channel rule mixes them (the mean of two whole
  numbers need not be one), and an excerpt of it is scaled as the file is
  (a quiet window of such a file is no float file of small values). Each
  change is a note on the row.
* **Minimum duration** :data:`MIN_DURATION` = 0.1 s: the longest analysis
  frame of the IS10/emobase2010 set is 60 ms, and openSMILE returns no
  functionals at all for clips under about 65 ms.
* **All-zero silence is rejected**, and so is a signal that holds **no
  speech** (:func:`check_speech`): a peak below :data:`MIN_PEAK_DBFS`, or a
  frame level that never varies by :data:`MIN_LEVEL_RANGE_DB` (dither, steady
  noise). Functionals of such a signal describe nothing about an emotion.
* **DC is removed** (:func:`remove_dc`): an offset of 0.01 moves the mean F0
  of real utterances by a median 8 Hz (``benchmarks/decode_rules.py``).
* **One analysis rate** (:func:`resample`, audresample): openSMILE's
  functionals depend on the sampling rate (the same utterance stored at 16
  and at 48 kHz differs by a median 8 % of its IS10 features and 6 Hz of
  mean F0, ``benchmarks/decode_rules.py``), so every corpus is analysed
  at the same rate, or every cross-corpus pair carries a silent domain
  shift. A file below the analysis rate is upsampled (its upper band stays
  empty) with a note; the original rate is kept in the feature store.
* **Bounded memory**: files are decoded block by block straight into the mono
  output (two passes for multi-channel files: energies first, then the chosen
  channel), so a 10-minute 48 kHz stereo file costs its raw bytes plus one
  ``float32`` mono copy (115 MB), never a multi-channel or ``float64`` copy.
* **Excerpts of long files** (:func:`open_stream`, used by
  :mod:`crossemo.segments`): the header is checked as above (a data size that
  was never written is repaired on the fly), then only the frames asked for
  are read and decoded (:func:`decode_block`). An excerpt gets the rules of a
  file of its own: the channel rule, minimum duration, silence and no-speech
  checks look at its frames only. Float scaling is the file's: whether a
  float file is integer-scaled is judged on all of it (one extra pass).

Every rule and its parameters are in :class:`AnalysisSettings` and
:data:`DECODE_RULES_VERSION`, which key the feature cache.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import struct
from dataclasses import asdict, dataclass
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO, Literal, Union

import audresample
import numpy as np
import soundfile as sf

from crossemo import storage

DECODE_RULES_VERSION: str = "3"
"""Changes whenever a decode rule above changes, so cached features of the old rules are not reused."""

MAX_FRAMES_PER_BYTE: int = 8192
"""More frames per byte of file than any codec libsndfile reads can hold: a header claiming more is damaged.
(FLAC's densest frame, a block of 65,535 frames of digital silence, still takes 12 bytes: under 5,500 frames a byte.)"""

MIN_DURATION: float = 0.1
"""Shortest accepted clip in seconds (see the module notes)."""

DEFAULT_ANALYSIS_RATE: int = 16000
"""Every signal is resampled to this rate (Hz) before features are computed."""

MIN_SAMPLING_RATE: int = 4000
MAX_SAMPLING_RATE: int = 768000
"""Accepted range of a file's own sampling rate in Hz."""

SPEECH_BAND: tuple[float, float] = (300.0, 3400.0)
"""Band (Hz) whose energy picks the channel with the most speech."""

MAX_FLOAT_OVERSHOOT: float = 2.0
"""Float peaks up to this are scaled down to 1; beyond it, a file must be integer-scaled or is rejected."""

MIN_PEAK_DBFS: float = -60.0
MIN_LEVEL_RANGE_DB: float = 6.0
"""The no-speech rule of :func:`check_speech`."""

BLOCK_FRAMES: int = 1 << 16
"""Frames decoded per block; bounds the temporary multi-channel buffer."""

READ_BLOCK_BYTES: int = 1 << 23
"""Bytes fetched at once from remote storage when a file is read in excerpts (:func:`open_stream`)."""

Channel = Union[Literal["loudest", "first", "mean"], int]
"""How several channels become one: ``loudest`` (most speech-band energy), ``first``, ``mean``, or an index."""

CHANNEL_RULES: tuple[str, ...] = ("loudest", "first", "mean")
"""The named channel rules; an integer picks that channel (negative counts from the last)."""

DEFAULT_CHANNEL: Channel = "mean"
"""The channel rule unless one is given: the best cross-corpus UAR of ``benchmarks/channel.py`` (module notes)."""

# WAV format tags that libsndfile decodes (PCM, ADPCM, float, A/µ-law, GSM,
# G.721, MPEG, extensible). Any other tag is an encoding we cannot read, which
# libsndfile reports only as a "malformed 'fmt ' chunk".
_WAV_TAGS_DECODED = frozenset({0x0001, 0x0002, 0x0003, 0x0006, 0x0007, 0x0011, 0x0031, 0x0040, 0x0050, 0x0055, 0xFFFE})
# Tags whose block size and byte rate follow from channels and sample width.
_WAV_TAGS_LINEAR = frozenset({0x0001, 0x0003})
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
# What streaming writers put in a WAV's data size before they know it.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)

# Leading bytes of containers libsndfile knows; a file starting with one of
# these that still fails to open is corrupt rather than "not audio".
_AUDIO_MAGIC: tuple[bytes, ...] = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b".snd", b"caff", b"wvpk", b"ID3")

# libsndfile reports an unknown length as a huge count.
_UNKNOWN_FRAMES = 1 << 62


class AudioError(ValueError):
    """A file that cannot become a signal; the message is a short reason."""


@dataclass(frozen=True)
class AnalysisSettings:
    """The decode rules that turn a file into the signal features are computed on.

    Attributes:
        analysis_rate: rate in Hz every signal is resampled to.
        channel: how several channels become one (see :data:`Channel`).
        min_duration: shortest accepted clip in seconds.

    Raises:
        ValueError: an analysis rate outside the accepted range, an unknown
            channel rule, or a duration that is not positive.
    """

    analysis_rate: int = DEFAULT_ANALYSIS_RATE
    channel: Channel = DEFAULT_CHANNEL
    min_duration: float = MIN_DURATION

    def __post_init__(self) -> None:
        if isinstance(self.analysis_rate, bool) or not isinstance(self.analysis_rate, int) or not 8000 <= self.analysis_rate <= 192000:
            raise ValueError(f"analysis rate {self.analysis_rate!r} must be a whole number of Hz from 8000 to 192000")
        if not (self.channel in CHANNEL_RULES or (isinstance(self.channel, int) and not isinstance(self.channel, bool))):
            raise ValueError(f"channel {self.channel!r} must be one of {', '.join(CHANNEL_RULES)} or a channel index")
        if not self.min_duration > 0:
            raise ValueError(f"minimum duration {self.min_duration!r} must be positive")

    def key(self) -> dict[str, object]:
        """Everything a decoded signal depends on, for the feature cache."""
        return {**asdict(self), "rules": DECODE_RULES_VERSION, "speech_band": SPEECH_BAND, "min_peak_dbfs": MIN_PEAK_DBFS, "min_level_range_db": MIN_LEVEL_RANGE_DB}


@dataclass(frozen=True, eq=False)
class Decoded:
    """A file decoded to mono at its own rate.

    Attributes:
        signal: mono signal, 1-D ``float32``.
        sampling_rate: the file's sampling rate in Hz.
        channels: the file's number of channels.
        channel: the channel kept (``"0"``, ``"1"`` …) or ``"mean"``.
        notes: what was repaired or rescaled on the way, one sentence each.
    """

    signal: np.ndarray
    sampling_rate: int
    channels: int
    channel: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Analysis:
    """The signal features are computed on, and how it was made.

    Attributes:
        signal: mono, DC-free, 1-D ``float32`` at ``sampling_rate``.
        sampling_rate: the analysis rate in Hz.
        original_rate: the file's own rate in Hz.
        channels: the file's number of channels.
        channel: the channel kept, or ``"mean"``.
        duration: length in seconds.
        notes: what was repaired, rescaled or is missing (an empty upper band).
    """

    signal: np.ndarray
    sampling_rate: int
    original_rate: int
    channels: int
    channel: str
    duration: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Audio:
    """A file read and prepared for analysis.

    Attributes:
        analysis: the analysis signal and how it was made.
        sha256: hex SHA-256 of the file's raw bytes (the feature cache key).
    """

    analysis: Analysis
    sha256: str


def read(uri: str, *, storage_options: storage.StorageOptions | None = None) -> bytes:
    """Read a whole file through fsspec.

    Args:
        uri: local path or URL such as ``s3://bucket/key.wav``.
        storage_options: keyword arguments for the filesystem.

    Returns:
        the file's bytes, unchanged.

    Raises:
        OSError: if the file cannot be read (missing, access denied …).
    """
    return storage.read_bytes(uri, storage_options=storage_options)


def load(uri: str, *, storage_options: storage.StorageOptions | None = None, settings: AnalysisSettings | None = None) -> Audio:
    """Read one audio file and make its analysis signal (see :func:`prepare`).

    Args:
        uri: local path or URL.
        storage_options: keyword arguments for the filesystem.
        settings: the decode rules; the defaults when ``None``.

    Returns:
        the analysis signal, what was done to get it, and the SHA-256 of the bytes read.

    Raises:
        OSError: if the file cannot be read.
        AudioError: if the bytes cannot become a usable signal.
    """
    data = read(uri, storage_options=storage_options)
    # The hash is taken on the bytes exactly as read, so it is the same key
    # the feature store computes before deciding whether to decode at all.
    return Audio(analysis=prepare(data, settings=settings), sha256=hashlib.sha256(data).hexdigest())


class Stream:
    """An audio file open for reading excerpts (:func:`open_stream`): only the frames asked for are decoded.

    Attributes:
        sampling_rate: the file's rate in Hz.
        channels: its number of channels.
        frames: its length in frames.
        is_float: whether it stores float samples.
        notes: what was repaired in its header.
    """

    def __init__(self, handle: sf.SoundFile, *, frames: int, notes: tuple[str, ...]) -> None:
        self._handle = handle
        self.sampling_rate: int = handle.samplerate
        self.channels: int = handle.channels
        self.frames = frames
        self.is_float = handle.subtype in _FLOAT_SUBTYPES
        self.notes = notes

    @functools.cached_property
    def float_samples(self) -> FloatSamples | None:
        """For a float file, the scale of all its samples (every excerpt is scaled as the file is); ``None`` otherwise.

        One pass over the file, on first use (float files only): a window of
        it alone cannot tell integer values stored as float from small float values.
        """
        if not self.is_float:
            return None
        float_samples = FloatSamples()
        for block in self.blocks():
            float_samples = float_samples.join(FloatSamples.of(block))
        return float_samples

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sampling_rate

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start`` to ``stop`` as a new ``(frames, channels)`` ``float32`` array.

        Raises:
            AudioError: the file ends before ``stop``, or its data cannot be decoded there.
        """
        try:
            self._handle.seek(start)
        except (sf.LibsndfileError, RuntimeError) as error:
            raise AudioError(f"cannot seek to frame {start} ({error})") from None
        block = _read_block(self._handle, np.empty((stop - start, self.channels), dtype=np.float32))
        if len(block) < stop - start:
            raise AudioError(f"truncated data: frames {start} to {stop} asked for, the file ends at frame {start + len(block)}")
        return block

    def blocks(self) -> Iterator[np.ndarray]:
        """The whole file from its start, :data:`BLOCK_FRAMES` frames at a time; each block is overwritten by the next."""
        self._handle.seek(0)
        buffer = np.empty((BLOCK_FRAMES, self.channels), dtype=np.float32)
        while len(block := _read_block(self._handle, buffer)):
            yield block

    def excerpt(self, start: int, stop: int, *, settings: AnalysisSettings) -> Analysis:
        """The analysis signal of frames ``start`` to ``stop``, made as :func:`prepare` makes a file's.

        Raises:
            AudioError: as :meth:`read`, :func:`decode_block` and :func:`analyse`.
        """
        decoded = decode_block(
            self.read(start, stop), self.sampling_rate, channel=settings.channel, is_float=self.is_float, float_samples=self.float_samples,
            min_duration=settings.min_duration, notes=self.notes,
        )
        return analyse(decoded, settings=settings)


@contextmanager
def open_stream(uri: str, *, storage_options: storage.StorageOptions | None = None, channel: Channel = DEFAULT_CHANNEL, min_duration: float = MIN_DURATION) -> Iterator[Stream]:
    """Open an audio file through fsspec for reading excerpts, never holding it whole.

    The header gets the checks of :func:`decode_file` (WAV chunks, a data size
    that was never written repaired on the fly, plausible rate, the channel
    index); the samples are only decoded when read.

    Args:
        uri: local path or URL.
        storage_options: keyword arguments for the filesystem.
        channel: the channel rule the excerpts will use (an index is checked here).
        min_duration: shortest accepted file in seconds.

    Yields:
        the open file.

    Raises:
        OSError: if the file cannot be read.
        AudioError: empty, not audio, a bad header, an implausible rate, a
            channel index the file lacks, or shorter than ``min_duration``.
    """
    fs, path = storage.filesystem(uri, storage_options=storage_options)
    with fs.open(path, "rb", block_size=READ_BLOCK_BYTES) as raw:
        size = raw.seek(0, io.SEEK_END)
        if not size:
            raise AudioError("empty file")

        def read_at(offset: int, count: int) -> bytes:
            raw.seek(offset)
            return raw.read(count)

        repair = _inspect_wav(read_at, size)
        head = read_at(0, 16)
        raw.seek(0)
        with _open(_RepairedWav(raw, repair) if repair else raw, head) as handle:
            _check_format(handle.samplerate, handle.channels, channel)
            _check_length_readable(handle)
            frames = handle.frames if 0 < handle.frames < _UNKNOWN_FRAMES else _count_frames(handle)
            _check_claimed_frames(frames, size)
            _check_duration(frames, handle.samplerate, min_duration)
            yield Stream(handle, frames=frames, notes=(repair.note,) if repair else ())


def decode(data: bytes, *, channel: Channel = DEFAULT_CHANNEL, min_duration: float = MIN_DURATION) -> tuple[np.ndarray, int]:
    """Decode audio bytes to one mono signal at the file's own rate.

    The samples only; :func:`decode_file` also says what was done to get them.
    """
    decoded = decode_file(data, channel=channel, min_duration=min_duration)
    return decoded.signal, decoded.sampling_rate


def decode_file(data: bytes, *, channel: Channel = DEFAULT_CHANNEL, min_duration: float = MIN_DURATION) -> Decoded:
    """Decode audio bytes (any format libsndfile reads) to one mono signal at the file's own rate.

    Args:
        data: the raw bytes of one file.
        channel: how several channels become one (see :data:`CHANNEL_RULES`).
        min_duration: shortest accepted clip in seconds.

    Returns:
        the mono ``float32`` signal, its rate, the channel count and choice,
        and notes on anything repaired (see the module notes).

    Raises:
        AudioError: empty, not audio, unsupported encoding, truncated header
            or data, a header that contradicts itself, an implausible sampling
            rate, NaN or infinite samples, float samples far beyond full scale
            that are not integer-scaled, shorter than ``min_duration``, silent
            (all samples zero), or a channel index the file does not have.
    """
    if not data:
        raise AudioError("empty file")
    data, notes = _check_riff(data)
    with _open(io.BytesIO(data), data) as handle:
        sampling_rate, channels, claimed = handle.samplerate, handle.channels, handle.frames
        _check_format(sampling_rate, channels, channel)
        _check_length_readable(handle)
        known = 0 < claimed < _UNKNOWN_FRAMES
        if known:
            _check_duration(claimed, sampling_rate, min_duration)
            _check_claimed_frames(claimed, len(data))
        # A mono file of known length is decoded straight into its output in
        # one pass; everything else needs the channel energies first.
        output = np.empty(claimed, dtype=np.float32) if known and channels == 1 else None
        energies, band_energies, frames, float_samples = _scan(handle, output, speech_band=channels > 1 and channel == "loudest")
    if known and frames < claimed:
        raise AudioError(f"truncated data: header claims {claimed} frames, decoded {frames}")
    _check_duration(frames, sampling_rate, min_duration)
    _check_not_silent(energies)
    if output is not None:
        signal, chosen = output[:frames], 0  # a mono file is its one channel, whatever the rule
    else:
        chosen = _choose_channel(channel, band_energies if band_energies is not None else energies)
        with _open(io.BytesIO(data), data) as handle:
            signal = _read_channel(handle, chosen, frames)
    return _decoded(signal, sampling_rate=sampling_rate, channels=channels, chosen=chosen, float_samples=float_samples, notes=notes)


def decode_block(
    block: np.ndarray, sampling_rate: int, *, channel: Channel = DEFAULT_CHANNEL, is_float: bool = False, float_samples: FloatSamples | None = None,
    min_duration: float = MIN_DURATION, notes: tuple[str, ...] = (),
) -> Decoded:
    """Decode frames already read (an excerpt of a file) to mono by the rules of :func:`decode_file`.

    The excerpt is treated as a file of its own: the channel rule (and,
    unless ``float_samples`` gives the whole file's, the float scaling) look
    at these frames only, so the result equals :func:`decode_file` of the
    same frames written as a file.

    Args:
        block: ``(frames, channels)`` ``float32`` samples as libsndfile decodes them.
        sampling_rate: their rate in Hz.
        channel: how several channels become one (see :data:`CHANNEL_RULES`).
        is_float: whether the file stores float samples (their scale is checked).
        float_samples: for a float file, its samples' scale over the whole file
            (:attr:`Stream.float_samples`); ``None``: judged on this block.
        min_duration: shortest accepted excerpt in seconds.
        notes: what was repaired in the file the frames come from.

    Returns:
        the mono ``float32`` signal at ``sampling_rate`` and what was done.

    Raises:
        AudioError: an implausible rate, a channel index the block does not
            have, NaN or infinite samples, shorter than ``min_duration``,
            silent, or float samples far beyond full scale.
    """
    frames, channels = block.shape
    _check_format(sampling_rate, channels, channel)
    _check_duration(frames, sampling_rate, min_duration)
    _check_finite(block)
    energies = channel_energies(block)
    _check_not_silent(energies)
    if channels == 1:
        chosen = 0
    else:
        if channel == "loudest":
            meter = _SpeechBandMeter(channels, sampling_rate)
            meter.add(block)
            energies = meter.energies()
        chosen = _choose_channel(channel, energies)
    if is_float and float_samples is None:
        float_samples = FloatSamples.of(block)
    return _decoded(to_mono(block, chosen), sampling_rate=sampling_rate, channels=channels, chosen=chosen, float_samples=float_samples if is_float else None, notes=notes)


def prepare(data: bytes, *, settings: AnalysisSettings | None = None) -> Analysis:
    """Make the signal features are computed on: every decode rule, in order.

    Decode to mono (:func:`decode_file`), remove DC, refuse a signal that holds
    no speech (:func:`check_speech`), resample to the analysis rate.

    Args:
        data: the raw bytes of one file.
        settings: the decode rules; the defaults when ``None``.

    Returns:
        the analysis signal at ``settings.analysis_rate`` and what was done.

    Raises:
        AudioError: as :func:`decode_file`, or no speech.
    """
    settings = settings or AnalysisSettings()
    return analyse(decode_file(data, channel=settings.channel, min_duration=settings.min_duration), settings=settings)


def analyse(decoded: Decoded, *, settings: AnalysisSettings) -> Analysis:
    """The rules after decoding: remove DC, refuse a signal without speech, resample to the analysis rate.

    Args:
        decoded: a mono signal at its file's rate (:func:`decode_file`, :func:`decode_block`).
        settings: the decode rules.

    Returns:
        the analysis signal at ``settings.analysis_rate`` and what was done.

    Raises:
        AudioError: no speech (:func:`check_speech`).
    """
    signal = remove_dc(decoded.signal)
    check_speech(signal, decoded.sampling_rate)
    notes = decoded.notes
    if decoded.sampling_rate < settings.analysis_rate:
        notes += (f"recorded at {decoded.sampling_rate} Hz, below the analysis rate {settings.analysis_rate} Hz: its band above {decoded.sampling_rate // 2} Hz is empty",)
    return Analysis(
        signal=resample(signal, decoded.sampling_rate, settings.analysis_rate),
        sampling_rate=settings.analysis_rate,
        original_rate=decoded.sampling_rate,
        channels=decoded.channels,
        channel=decoded.channel,
        duration=decoded.signal.size / decoded.sampling_rate,
        notes=notes,
    )


def remove_dc(signal: np.ndarray) -> np.ndarray:
    """The signal minus its mean, in ``float32``.

    A constant offset is no part of speech, yet it moves openSMILE's pitch and
    energy functionals (an offset of 0.01 moves the mean F0 of real
    utterances by a median 8 Hz); subtracting the mean removes exactly the offset and
    leaves every other frequency as it was.
    """
    return (signal - np.float32(signal.mean(dtype=np.float64))).astype(np.float32, copy=False)


def check_speech(signal: np.ndarray, sampling_rate: int) -> None:
    """Refuse a signal that holds no speech: nothing above the floor, or no level changes.

    The rule (measured on every file of EMOVO and RAVDESS, which it all keeps):
    the peak must reach :data:`MIN_PEAK_DBFS` (the quietest real utterance
    peaks at -44 dBFS; ±1 LSB of 16-bit dither is at -90 dBFS), and the
    level of 20 ms frames must vary by at least :data:`MIN_LEVEL_RANGE_DB`
    between its 10th and 95th percentile (speech starts and stops; the
    narrowest real utterance spans 18 dB as the mean of EMOVO's two channels,
    21 dB as the loudest channel; stationary noise about 1.5 dB).

    Args:
        signal: DC-free mono signal.
        sampling_rate: its rate in Hz.

    Raises:
        AudioError: naming which of the two measures failed, with its value.
    """
    peak = float(np.max(np.abs(signal)))
    peak_db = 20 * np.log10(peak) if peak > 0 else -np.inf
    if peak_db < MIN_PEAK_DBFS:
        raise AudioError(f"no speech: peak level {peak_db:.1f} dBFS is below {MIN_PEAK_DBFS:g} dBFS")
    frame = max(1, int(0.02 * sampling_rate))
    count = signal.size // frame
    if count < 2:
        return
    power = np.mean(np.square(signal[: count * frame].reshape(count, frame), dtype=np.float64), axis=1)
    levels = 10 * np.log10(np.maximum(power, 1e-20))
    spread = float(np.percentile(levels, 95) - np.percentile(levels, 10))
    if spread < MIN_LEVEL_RANGE_DB:
        raise AudioError(f"no speech: the level of 20 ms frames varies by only {spread:.1f} dB (steady noise?; speech needs {MIN_LEVEL_RANGE_DB:g} dB)")


def resample(signal: np.ndarray, sampling_rate: int, target_rate: int) -> np.ndarray:
    """The signal at ``target_rate``, with audresample (libsoxr's algorithm); unchanged if the rates match."""
    if sampling_rate == target_rate:
        return signal
    return np.ascontiguousarray(audresample.resample(np.ascontiguousarray(signal, dtype=np.float32), sampling_rate, target_rate)[0])


def to_mono(block: np.ndarray, channel: int | None) -> np.ndarray:
    """One channel of a ``(frames, channels)`` block, or (``None``) their mean."""
    return block[:, channel] if channel is not None else block.mean(axis=1)


def channel_energies(block: np.ndarray) -> np.ndarray:
    """Sum of squared samples per channel of a ``(frames, channels)`` block, in float64."""
    # float64 accumulation: float32 sums of millions of squares lose digits.
    wide = block.astype(np.float64)
    return np.einsum("ij,ij->j", wide, wide)


def loudest_channel(energies: np.ndarray) -> int:
    """Index of the channel with the largest energy (the first one on ties)."""
    return int(np.argmax(energies))


def _choose_channel(channel: Channel, energies: np.ndarray) -> int | None:
    """The channel index a rule picks; ``None`` for the mean of all channels."""
    if channel == "loudest":
        return loudest_channel(energies)
    if channel == "first":
        return 0
    if channel == "mean":
        return None
    return int(channel) % energies.size


@dataclass(frozen=True)
class FloatSamples:
    """What a float file's samples are, over every channel: their peak and whether all are whole numbers.

    It decides whether the file is integer-scaled (:func:`_float_to_full_scale`),
    once for the file, whatever channel rule or excerpt is decoded from it.
    """

    peak: float = 0.0
    whole: bool = True

    @classmethod
    def of(cls, block: np.ndarray) -> FloatSamples:
        """The finite samples of one array (any shape): a NaN is its own excerpt's rejection, not the whole file's scale."""
        is_finite = np.isfinite(block)
        finite = block if is_finite.all() else block[is_finite]
        return cls(float(np.max(np.abs(finite))) if finite.size else 0.0, bool(np.array_equal(finite, np.round(finite))))

    def join(self, other: FloatSamples) -> FloatSamples:
        """These samples and ``other``'s together (a file read block by block)."""
        return FloatSamples(max(self.peak, other.peak), self.whole and other.whole)

    def integer_bits(self) -> int | None:
        """The integer width whose values the file holds as float (16, 24 or 32), or ``None`` if it is not integer-scaled."""
        if not self.whole or self.peak <= MAX_FLOAT_OVERSHOOT:
            return None
        return next((bits for bits in (16, 24, 32) if self.peak <= 2 ** (bits - 1)), None)


def _float_to_full_scale(signal: np.ndarray, samples: FloatSamples) -> tuple[np.ndarray, str]:
    """Bring float samples beyond full scale back to ``[-1, 1]``, or refuse them.

    Args:
        signal: the mono signal (or excerpt) decoded from the file.
        samples: the file's samples, every channel (see :class:`FloatSamples`).

    Returns:
        ``(signal, note)``; the note is empty when nothing was changed.

    Raises:
        AudioError: samples far beyond full scale that are not whole numbers.
    """
    bits = samples.integer_bits()
    if bits is not None:
        # Integer sample values written as float (a classic soundfile/scipy
        # mistake): divide by the full scale of the smallest integer width
        # that holds them, which gives back the integer file's signal.
        return (signal / np.float32(2 ** (bits - 1))).astype(np.float32), f"float samples at {bits}-bit integer scale (peak {samples.peak:.0f}) divided by {2 ** (bits - 1)}"
    peak = float(np.max(np.abs(signal))) if signal.size else 0.0
    if peak <= 1.0:
        return signal, ""
    if peak <= MAX_FLOAT_OVERSHOOT:
        return (signal / np.float32(peak)).astype(np.float32), f"float samples beyond full scale (peak {peak:.3g}) scaled down to peak 1"
    raise AudioError(f"float samples peak at {peak:.6g}, far beyond full scale 1.0 (and not integer-scaled); rescale the file to [-1, 1]")


def _check_format(sampling_rate: int, channels: int, channel: Channel) -> None:
    """Refuse a header no rule can use: no channels, an implausible rate, or a channel index the file lacks."""
    if sampling_rate <= 0 or channels <= 0:
        raise AudioError(f"invalid header ({channels} channels at {sampling_rate} Hz)")
    if not MIN_SAMPLING_RATE <= sampling_rate <= MAX_SAMPLING_RATE:
        raise AudioError(f"implausible sampling rate {sampling_rate} Hz (accepted: {MIN_SAMPLING_RATE} to {MAX_SAMPLING_RATE} Hz)")
    if isinstance(channel, int) and channels > 1 and not -channels <= channel < channels:
        raise AudioError(f"has {channels} channel{'s' if channels > 1 else ''}, no channel {channel}")


def _check_length_readable(handle: sf.SoundFile) -> None:
    """Refuse a FLAC whose header gives no length (total samples 0, as an encoder writing to a pipe leaves it).

    libsndfile decodes such a file but fails on its last block (it cannot
    move its position there: libsndfile issue #835), so the file would fail
    at its end as "corrupt", after all the decoding; the rejection names the
    real cause and its remedy instead.
    """
    if handle.format == "FLAC" and handle.frames >= _UNKNOWN_FRAMES:
        raise AudioError("FLAC header gives no length (total samples 0, as a streaming encoder leaves it), which libsndfile cannot read to the end; re-encode the file")


def _check_claimed_frames(claimed: int, size: int) -> None:
    """Refuse a header claiming more frames than a file of ``size`` bytes can hold (:data:`MAX_FRAMES_PER_BYTE`).

    Decoding into an array of a damaged header's size would exhaust memory
    and take the whole task down; read as excerpts, it would make windows of
    a length the file does not have.
    """
    if claimed > size * MAX_FRAMES_PER_BYTE:
        raise AudioError(f"header claims {claimed} frames, more than a file of {size} bytes can hold; is it damaged?")


def _check_duration(frames: int, sampling_rate: int, min_duration: float) -> None:
    if frames / sampling_rate < min_duration:
        raise AudioError(_too_short(frames, sampling_rate, min_duration))


def _check_finite(block: np.ndarray) -> None:
    if not np.isfinite(block).all():
        raise AudioError("contains NaN or infinite samples")


def _check_not_silent(energies: np.ndarray) -> None:
    if not np.any(energies > 0):
        raise AudioError("silent (all samples zero)")


def _decoded(signal: np.ndarray, *, sampling_rate: int, channels: int, chosen: int | None, float_samples: FloatSamples | None, notes: tuple[str, ...]) -> Decoded:
    """The mono signal with float samples brought to full scale (see :func:`_float_to_full_scale`; ``None``: not a float file)."""
    if float_samples is not None:
        signal, note = _float_to_full_scale(signal, float_samples)
        notes += (note,) if note else ()
    return Decoded(signal=signal, sampling_rate=sampling_rate, channels=channels, channel="mean" if chosen is None else str(chosen), notes=notes)


def _too_short(frames: int, sampling_rate: int, min_duration: float) -> str:
    # Samples and enough digits that a clip just under the limit never reads as the limit.
    seconds = frames / sampling_rate
    digits = next((d for d in range(3, 10) if float(f"{seconds:.{d}f}") < min_duration), 9)
    return f"shorter than {min_duration:g} s ({frames} samples at {sampling_rate} Hz: {seconds:.{digits}f} s)"


def _open(file: BinaryIO, head: bytes) -> sf.SoundFile:
    """Open a file object with libsndfile, turning its errors into short reasons.

    ``head`` is the file's first bytes: a known container that fails to open is corrupt, anything else is not audio.
    """
    try:
        return sf.SoundFile(file)
    except sf.LibsndfileError as error:
        detail = _libsndfile_reason(error)
        if head.startswith(_AUDIO_MAGIC):
            raise AudioError(f"corrupt header ({detail})") from None
        raise AudioError(f"not an audio file ({detail})") from None
    except (RuntimeError, ValueError, TypeError) as error:
        raise AudioError(f"not an audio file ({error})") from None


def _scan(handle: sf.SoundFile, output: np.ndarray | None, *, speech_band: bool) -> tuple[np.ndarray, np.ndarray | None, int, FloatSamples | None]:
    """Decode every block once: channel energies, a finiteness check and the frame count.

    Args:
        handle: an open file, positioned at its start.
        output: for mono files of known length, the array to decode into.
        speech_band: also measure each channel's speech-band energy.

    Returns:
        ``(energies per channel, speech-band energies per channel or None, frames decoded,
        the samples' float scale, or None when the file does not store floats)``.

    Raises:
        AudioError: on NaN or infinite samples or a decoding error.
    """
    buffer = np.empty((BLOCK_FRAMES, handle.channels), dtype=np.float32)
    energies = np.zeros(handle.channels, dtype=np.float64)
    meter = _SpeechBandMeter(handle.channels, handle.samplerate) if speech_band else None
    frames = 0
    float_samples = FloatSamples() if handle.subtype in _FLOAT_SUBTYPES else None
    while True:
        block = _read_block(handle, buffer)
        if not len(block):
            return energies, meter.energies() if meter else None, frames, float_samples
        _check_finite(block)
        energies += channel_energies(block)
        if float_samples is not None:
            float_samples = float_samples.join(FloatSamples.of(block))
        if meter:
            meter.add(block)
        if output is not None:
            if frames + len(block) > output.size:
                # More frames than the header claimed: keep decoding into a
                # growing copy rather than failing on a lenient header.
                output.resize(max(2 * output.size, frames + len(block)), refcheck=False)
            output[frames : frames + len(block)] = block[:, 0]
        frames += len(block)


class StreamingFilter:
    """An IIR filter (second-order sections) applied to a signal that arrives in blocks, its state carried across them.

    It starts as if the first sample had always been there: a signal that
    opens on a DC bias must not ring the filter like a step.
    """

    def __init__(self, sos: np.ndarray) -> None:
        # Imported here: scipy.signal takes over half a second to import, and
        # only some rules need it; every extraction worker and every command
        # would pay for it otherwise.
        from scipy import signal as dsp

        self._dsp = dsp
        self._sos = sos
        self._state: np.ndarray | None = None

    def __call__(self, block: np.ndarray) -> np.ndarray:
        """The filtered ``block`` (filtered along its first axis, ``float64``), continuing from the blocks before it."""
        if self._state is None:
            initial = self._dsp.sosfilt_zi(self._sos)
            self._state = initial.reshape(*initial.shape, *([1] * (block.ndim - 1))) * block[0].astype(np.float64)
        filtered, self._state = self._dsp.sosfilt(self._sos, block, axis=0, zi=self._state)
        return filtered


class _SpeechBandMeter:
    """Energy per channel in :data:`SPEECH_BAND`, measured block by block.

    A 4th-order Butterworth band-pass (its state carried across blocks)
    removes DC, mains hum and its first harmonics, and hiss above the
    telephone band, so what is left is mostly voice.
    """

    def __init__(self, channels: int, sampling_rate: int) -> None:
        from scipy import signal as dsp

        high = min(SPEECH_BAND[1], 0.45 * sampling_rate)
        self._filter = StreamingFilter(dsp.butter(4, (SPEECH_BAND[0], high), btype="bandpass", fs=sampling_rate, output="sos"))
        self._energies = np.zeros(channels, dtype=np.float64)

    def add(self, block: np.ndarray) -> None:
        self._energies += channel_energies(self._filter(block))

    def energies(self) -> np.ndarray:
        return self._energies.copy()


def _read_channel(handle: sf.SoundFile, channel: int | None, frames: int) -> np.ndarray:
    """Second pass over a multi-channel file: copy one channel (``None``: their mean) into a fresh array."""
    buffer = np.empty((BLOCK_FRAMES, handle.channels), dtype=np.float32)
    output = np.empty(frames, dtype=np.float32)
    position = 0
    while position < frames:
        block = _read_block(handle, buffer)
        if not len(block):
            break
        count = min(len(block), frames - position)
        output[position : position + count] = to_mono(block[:count], channel)
        position += count
    return output[:position]


def _count_frames(handle: sf.SoundFile) -> int:
    """Length of a file whose header does not tell it: decoded block by block, nothing kept."""
    buffer = np.empty((BLOCK_FRAMES, handle.channels), dtype=np.float32)
    frames = 0
    while len(block := _read_block(handle, buffer)):
        frames += len(block)
    handle.seek(0)
    return frames


def _read_block(handle: sf.SoundFile, buffer: np.ndarray) -> np.ndarray:
    try:
        return handle.read(frames=len(buffer), dtype="float32", always_2d=True, out=buffer)
    except sf.LibsndfileError as error:
        raise AudioError(f"truncated or corrupt audio data ({_libsndfile_reason(error)})") from None


def _libsndfile_reason(error: sf.LibsndfileError) -> str:
    """libsndfile's message, once, without its "Error :" prefixes and final full stop."""
    # libsndfile may repeat a message as "Error : x. Error : x."; keep the first.
    parts = [part.strip(" .") for part in re.split(r"error\s*:", error.error_string, flags=re.IGNORECASE)]
    return next((part for part in parts if part), "unknown libsndfile error")


def _check_riff(data: bytes) -> tuple[bytes, tuple[str, ...]]:
    """Check a RIFF/WAVE file's header (:func:`_inspect_wav`) before libsndfile sees it.

    Returns:
        ``(bytes to decode, notes)``: the bytes unchanged, or with the
        ``data`` and ``RIFF`` sizes set to what the file holds, and a note.

    Raises:
        AudioError: as :func:`_inspect_wav`.
    """
    repair = _inspect_wav(lambda offset, count: data[offset : offset + count], len(data))
    if repair is None:
        return data, ()
    patched = bytearray(data[: repair.end])
    repair.overlay(patched, 0)
    return bytes(patched), (repair.note,)


@dataclass(frozen=True)
class _WavRepair:
    """A WAV whose ``data`` size was never written, and the header bytes that fix it.

    Attributes:
        end: the file's length in bytes once its last partial frame is left out.
        patches: ``(offset, bytes)`` to write over the header (the ``RIFF`` and ``data`` sizes).
        note: the sentence that tells what was repaired.
    """

    end: int
    patches: tuple[tuple[int, bytes], ...]
    note: str

    def overlay(self, chunk: bytearray | memoryview, offset: int) -> None:
        """Write the patched bytes that fall within ``chunk``, which starts at file ``offset``."""
        for at, value in self.patches:
            low, high = max(at, offset), min(at + len(value), offset + len(chunk))
            if low < high:
                chunk[low - offset : high - offset] = value[low - at : high - at]


def _inspect_wav(read_at: Callable[[int, int], bytes], size: int) -> _WavRepair | None:
    """Walk the chunks of a RIFF/WAVE file before libsndfile sees it.

    libsndfile shortens a WAV whose ``data`` chunk claims more bytes than the
    file holds without any error, reports an unknown encoding as a malformed
    header, and decodes nothing from a ``data`` chunk whose size was never
    written (0 or 0xFFFFFFFF, left by a recorder that was not closed); the
    first two are told apart here, the last is repaired.

    Args:
        read_at: ``read_at(offset, count)`` gives up to ``count`` bytes of the file from ``offset``.
        size: the file's length in bytes.

    Returns:
        how to repair a header that declares no data size, or ``None`` (not a
        WAV, or nothing to repair).

    Raises:
        AudioError: truncated header, truncated data, unsupported encoding, or
            a format chunk whose block size or byte rate contradicts its rate,
            channels and sample width.
    """
    start = read_at(0, 12)
    if not start.startswith(b"RIFF"):
        return None
    if size < 12:
        raise AudioError(f"truncated header ({size} bytes)")
    if start[8:12] != b"WAVE":
        return None
    position, tag, fmt = 12, None, None
    while True:
        if position + 8 > size:
            raise AudioError("truncated header (no 'data' chunk)")
        header = read_at(position, 8)
        chunk, length = header[:4], int.from_bytes(header[4:8], "little")
        body = position + 8
        if chunk == b"fmt ":
            if length < 14 or body + min(length, 16) > size:
                raise AudioError("truncated header (incomplete 'fmt ' chunk)")
            fields = read_at(body, min(length, 26))
            tag = int.from_bytes(fields[:2], "little")
            if length >= 16:
                fmt = struct.unpack_from("<HIIHH", fields, 2)
            if tag == 0xFFFE and len(fields) >= 26:
                # WAVE_FORMAT_EXTENSIBLE: the real tag opens the sub-format GUID.
                tag = int.from_bytes(fields[24:26], "little")
        elif chunk == b"data":
            available = size - body
            if length not in _UNKNOWN_SIZES and length > available:
                raise AudioError(f"truncated data: header claims {length} bytes of audio, file has {available}")
            break
        position = body + length + (length & 1)
    if tag is not None and tag not in _WAV_TAGS_DECODED:
        raise AudioError(f"unsupported encoding (WAV format tag 0x{tag:04X})")
    if tag in _WAV_TAGS_LINEAR and fmt is not None:
        channels, rate, byte_rate, block_align, bits = fmt
        expected_align = channels * ((bits + 7) // 8)
        if block_align != expected_align or byte_rate != rate * block_align:
            raise AudioError(
                f"WAV header contradicts itself: {channels} channels of {bits} bits at {rate} Hz need {expected_align} bytes per frame "
                f"and {rate * expected_align} bytes per second, it declares {block_align} and {byte_rate}; its sampling rate cannot be trusted"
            )
    # A data size of 0 followed by whole chunks (LIST, JUNK …) up to the file's
    # end is a recording that is really empty: its bytes are those chunks, not audio.
    if length in _UNKNOWN_SIZES and available > 0 and not (length == 0 and _chunks_to_the_end(read_at, body, size)):
        whole = available - available % max(1, fmt[3] if fmt else 1)
        end = body + whole
        return _WavRepair(
            end=end,
            patches=((4, (end - 8).to_bytes(4, "little")), (position + 4, whole.to_bytes(4, "little"))),
            note=f"WAV header declared {'no' if length == 0 else 'an unknown amount of'} audio data; recovered the {whole} bytes the file holds (a recording that was not closed cleanly?)",
        )
    return None


def _chunks_to_the_end(read_at: Callable[[int, int], bytes], position: int, size: int, *, most: int = 64) -> bool:
    """Whether whole RIFF chunks (a printable four-character id, a length that fits) run from ``position`` to the file's end.

    Audio samples could pass for one chunk header by chance; that a chain of
    them ends exactly at the file's end (its last pad byte may be missing) they
    could not. More than ``most`` chunks are no metadata trailer either.
    """
    for _ in range(most):
        if position + 8 > size:
            return False
        header = read_at(position, 8)
        length = int.from_bytes(header[4:8], "little")
        if not all(0x20 <= byte <= 0x7E for byte in header[:4]) or position + 8 + length > size:
            return False
        position += 8 + length + (length & 1)
        if position >= size:
            return position - size <= 1
    return False


class _RepairedWav(io.RawIOBase):
    """A file object that reads as its WAV with the header repaired (:class:`_WavRepair`), without copying the file."""

    def __init__(self, raw: BinaryIO, repair: _WavRepair) -> None:
        super().__init__()
        self._raw, self._repair, self._position = raw, repair, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._repair.end}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        count = max(0, min(len(buffer), self._repair.end - self._position))
        self._raw.seek(self._position)
        data = self._raw.read(count)
        view = memoryview(buffer).cast("B")[: len(data)]
        view[:] = data
        self._repair.overlay(view, self._position)
        self._position += len(data)
        return len(data)
