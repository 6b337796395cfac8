"""Audio files to mono signals: reading through fsspec and decoding with soundfile.

Every file becomes a 1-D ``float32`` signal in ``[-1, 1)`` (float files keep
their values) at its own sampling rate, or an :class:`AudioError` whose
message is a short reason that ends up in the feature store's rejection list.

Decisions made here, each for a reason:

* **Multi-channel to mono: keep the loudest channel** (:func:`to_mono`). The
  stereo files of EMOVO hold two different microphone signals whose channels
  are *negatively* correlated; averaging them cancels part of the speech (the
  plain mean keeps a median 44 % of one channel's energy, down to 22 %). One
  real microphone signal, taken whole, is never distorted that way, and the
  loudest channel is the one with the best level. (openSMILE's own
  ``cWaveSource`` with ``monoMixdown=1`` averages; we deliberately do not.)
* **Minimum duration** :data:`MIN_DURATION` = 0.1 s: the longest analysis
  frame of the IS10/emobase2010 set is 60 ms, and openSMILE returns no
  functionals at all for clips under about 65 ms; 0.1 s leaves a margin and
  gives every built-in feature set finite values.
* **All-zero silence is rejected**: functionals of digital silence describe
  nothing about an emotion (pitch, loudness and spectra are all undefined or
  floor values), so such files are reported instead of being learned from.
* **Truncation is detected, not tolerated**: libsndfile silently shortens a
  WAV whose ``data`` chunk claims more bytes than the file holds, so the RIFF
  chunks are checked here before decoding; for other formats the number of
  frames the header claims is compared with the number decoded.
* **Bounded memory**: files are decoded block by block straight into the mono
  output (two passes for multi-channel files: energies first, then the chosen
  channel), so a 10-minute 48 kHz stereo file costs its raw bytes plus one
  ``float32`` mono copy (115 MB), never a multi-channel or ``float64`` copy.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from crossemo import storage

MIN_DURATION: float = 0.1
"""Shortest accepted clip in seconds (see the module notes)."""

BLOCK_FRAMES: int = 1 << 16
"""Frames decoded per block; bounds the temporary multi-channel buffer."""

# WAV format tags that libsndfile decodes (PCM, ADPCM, float, A/µ-law, GSM,
# G.721, MPEG, extensible). Any other tag is an encoding we cannot read, which
# libsndfile reports only as a "malformed 'fmt ' chunk".
_WAV_TAGS_DECODED = frozenset({0x0001, 0x0002, 0x0003, 0x0006, 0x0007, 0x0011, 0x0031, 0x0040, 0x0050, 0x0055, 0xFFFE})

# Leading bytes of containers libsndfile knows; a file starting with one of
# these that still fails to open is corrupt rather than "not audio".
_AUDIO_MAGIC: tuple[bytes, ...] = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b".snd", b"caff", b"wvpk", b"ID3")

# libsndfile reports an unknown length as a huge count.
_UNKNOWN_FRAMES = 1 << 62


class AudioError(ValueError):
    """A file that cannot become a signal; the message is a short reason."""


@dataclass(frozen=True, eq=False)
class Audio:
    """A decoded audio file.

    Attributes:
        signal: mono signal, 1-D ``float32``.
        sampling_rate: sampling rate in Hz.
        sha256: hex SHA-256 of the file's raw bytes (the feature cache key).
    """

    signal: np.ndarray
    sampling_rate: int
    sha256: str

    @property
    def duration(self) -> float:
        """Length of the signal in seconds."""
        return self.signal.size / self.sampling_rate


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
    fs, path = storage.filesystem(uri, storage_options=storage_options)
    with fs.open(path, "rb") as handle:
        return handle.read()


def load(uri: str, *, storage_options: storage.StorageOptions | None = None, min_duration: float = MIN_DURATION) -> Audio:
    """Read and decode one audio file.

    Args:
        uri: local path or URL.
        storage_options: keyword arguments for the filesystem.
        min_duration: shortest accepted clip in seconds.

    Returns:
        the mono signal, its sampling rate and the SHA-256 of the bytes read.

    Raises:
        OSError: if the file cannot be read.
        AudioError: if the bytes cannot become a usable signal.
    """
    data = read(uri, storage_options=storage_options)
    # The hash is taken on the bytes exactly as read, so it is the same key
    # the feature store computes before deciding whether to decode at all.
    sha256 = hashlib.sha256(data).hexdigest()
    signal, sampling_rate = decode(data, min_duration=min_duration)
    return Audio(signal=signal, sampling_rate=sampling_rate, sha256=sha256)


def decode(data: bytes, *, min_duration: float = MIN_DURATION) -> tuple[np.ndarray, int]:
    """Decode audio bytes (WAV, FLAC or any format libsndfile reads) to mono.

    Args:
        data: the raw bytes of one file.
        min_duration: shortest accepted clip in seconds.

    Returns:
        ``(signal, sampling_rate)``: a 1-D ``float32`` signal (the loudest
        channel of a multi-channel file, see :func:`to_mono`) and its rate in Hz.

    Raises:
        AudioError: empty, not audio, unsupported encoding, truncated header
            or data, NaN or infinite samples, shorter than ``min_duration``,
            or silent (all samples zero).
    """
    if not data:
        raise AudioError("empty file")
    _check_riff(data)
    with _open(data) as handle:
        sampling_rate, channels, claimed = handle.samplerate, handle.channels, handle.frames
        if sampling_rate <= 0 or channels <= 0:
            raise AudioError(f"invalid header ({channels} channels at {sampling_rate} Hz)")
        known = 0 < claimed < _UNKNOWN_FRAMES
        if known and claimed / sampling_rate < min_duration:
            raise AudioError(_too_short(claimed, sampling_rate, min_duration))
        # A mono file of known length is decoded straight into its output in
        # one pass; everything else needs the channel energies first.
        output = np.empty(claimed, dtype=np.float32) if known and channels == 1 else None
        energies, frames = _scan(handle, output)
    if known and frames < claimed:
        raise AudioError(f"truncated data: header claims {claimed} frames, decoded {frames}")
    if frames / sampling_rate < min_duration:
        raise AudioError(_too_short(frames, sampling_rate, min_duration))
    if not np.any(energies > 0):
        raise AudioError("silent (all samples zero)")
    if output is not None:
        return output[:frames], sampling_rate
    channel = loudest_channel(energies)
    with _open(data) as handle:
        return _read_channel(handle, channel, frames), sampling_rate


def to_mono(signal: np.ndarray) -> np.ndarray:
    """Make one mono signal from a ``(frames, channels)`` array: keep the loudest channel.

    The channel with the largest energy (sum of squared samples) is returned
    unchanged; ties go to the first such channel. Averaging is wrong for
    corpora such as EMOVO, whose two channels are different microphones with
    anti-correlated signals: their mean cancels part of the speech.

    Args:
        signal: ``(frames, channels)`` as soundfile returns it, or already 1-D.

    Returns:
        a contiguous 1-D ``float32`` signal.

    Raises:
        ValueError: if ``signal`` has more than two dimensions.
    """
    signal = np.asarray(signal)
    if signal.ndim == 1:
        return np.ascontiguousarray(signal, dtype=np.float32)
    if signal.ndim != 2:
        raise ValueError(f"expected a (frames, channels) array, got shape {signal.shape}")
    energies = np.zeros(signal.shape[1], dtype=np.float64)
    for start in range(0, signal.shape[0], BLOCK_FRAMES):
        energies += channel_energies(signal[start : start + BLOCK_FRAMES])
    return np.ascontiguousarray(signal[:, loudest_channel(energies)], dtype=np.float32)


def channel_energies(block: np.ndarray) -> np.ndarray:
    """Sum of squared samples per channel of a ``(frames, channels)`` block, in float64."""
    # float64 accumulation: float32 sums of millions of squares lose digits.
    wide = block.astype(np.float64)
    return np.einsum("ij,ij->j", wide, wide)


def loudest_channel(energies: np.ndarray) -> int:
    """Index of the channel with the largest energy (the first one on ties)."""
    return int(np.argmax(energies))


def _too_short(frames: int, sampling_rate: int, min_duration: float) -> str:
    return f"shorter than {min_duration:g} s ({frames / sampling_rate:.3f} s)"


def _open(data: bytes) -> sf.SoundFile:
    """Open bytes with libsndfile, turning its errors into short reasons."""
    try:
        return sf.SoundFile(io.BytesIO(data))
    except sf.LibsndfileError as error:
        detail = _libsndfile_reason(error)
        if data.startswith(_AUDIO_MAGIC):
            raise AudioError(f"corrupt header ({detail})") from None
        raise AudioError(f"not an audio file ({detail})") from None
    except (RuntimeError, ValueError, TypeError) as error:
        raise AudioError(f"not an audio file ({error})") from None


def _scan(handle: sf.SoundFile, output: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Decode every block once: channel energies, a finiteness check and the frame count.

    Args:
        handle: an open file, positioned at its start.
        output: for mono files of known length, the array to decode into.

    Returns:
        ``(energies per channel, frames decoded)``.

    Raises:
        AudioError: on NaN or infinite samples or a decoding error.
    """
    buffer = np.empty((BLOCK_FRAMES, handle.channels), dtype=np.float32)
    energies = np.zeros(handle.channels, dtype=np.float64)
    frames = 0
    while True:
        block = _read_block(handle, buffer)
        if not len(block):
            return energies, frames
        if not np.isfinite(block).all():
            raise AudioError("contains NaN or infinite samples")
        energies += channel_energies(block)
        if output is not None:
            if frames + len(block) > output.size:
                # More frames than the header claimed: keep decoding into a
                # growing copy rather than failing on a lenient header.
                output.resize(max(2 * output.size, frames + len(block)), refcheck=False)
            output[frames : frames + len(block)] = block[:, 0]
        frames += len(block)


def _read_channel(handle: sf.SoundFile, channel: int, frames: int) -> np.ndarray:
    """Second pass over a multi-channel file: copy one channel into a fresh array."""
    buffer = np.empty((BLOCK_FRAMES, handle.channels), dtype=np.float32)
    output = np.empty(frames, dtype=np.float32)
    position = 0
    while position < frames:
        block = _read_block(handle, buffer)
        if not len(block):
            break
        count = min(len(block), frames - position)
        output[position : position + count] = block[:count, channel]
        position += count
    return output[:position]


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


def _check_riff(data: bytes) -> None:
    """Walk the chunks of a RIFF/WAVE file before libsndfile sees it.

    libsndfile shortens a WAV whose ``data`` chunk claims more bytes than the
    file holds without any error, and reports an unknown encoding as a
    malformed header; both are told apart here.

    Raises:
        AudioError: truncated header, truncated data or unsupported encoding.
    """
    if not data.startswith(b"RIFF"):
        return
    if len(data) < 12:
        raise AudioError(f"truncated header ({len(data)} bytes)")
    if data[8:12] != b"WAVE":
        return
    position, tag = 12, None
    while True:
        if position + 8 > len(data):
            raise AudioError("truncated header (no 'data' chunk)")
        chunk, size = data[position : position + 4], int.from_bytes(data[position + 4 : position + 8], "little")
        body = position + 8
        if chunk == b"fmt ":
            if size < 14 or body + min(size, 16) > len(data):
                raise AudioError("truncated header (incomplete 'fmt ' chunk)")
            tag = int.from_bytes(data[body : body + 2], "little")
            if tag == 0xFFFE and size >= 26 and body + 26 <= len(data):
                # WAVE_FORMAT_EXTENSIBLE: the real tag opens the sub-format GUID.
                tag = int.from_bytes(data[body + 24 : body + 26], "little")
        elif chunk == b"data":
            available = len(data) - body
            # 0 and 0xFFFFFFFF are what streaming writers put before they know the size.
            if size not in (0, 0xFFFFFFFF) and size > available:
                raise AudioError(f"truncated data: header claims {size} bytes of audio, file has {available}")
            break
        position = body + size + (size & 1)
    if tag is not None and tag not in _WAV_TAGS_DECODED:
        raise AudioError(f"unsupported encoding (WAV format tag 0x{tag:04X})")
