"""Decoding real and deliberately broken audio files into mono signals."""

from __future__ import annotations

import hashlib
import io
import struct

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from crossemo import audio, storage
from crossemo.audio import AudioError

STEREO = "emovo-rab-f2-b1.48k-stereo.wav"
MONO = "emovo-rab-f1-b1.48k-mono.wav"
LIST_CHUNK = "ravdess-03-01-05-02-01-01-07.48k-listchunk.wav"


def wav_bytes(signal: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, signal, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def riff_wav(tag: int, payload: bytes, *, channels: int = 1, rate: int = 16000, bits: int = 16, extra: bytes = b"") -> bytes:
    """A WAV file written by hand, so any format tag can be declared."""
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits) + extra
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def energy(signal: np.ndarray) -> float:
    return float(np.sum(np.square(signal, dtype=np.float64)))


@pytest.fixture(scope="module")
def speech(shared_corpora) -> tuple[np.ndarray, int]:
    """A real RAVDESS utterance as float32 mono."""
    signal, rate = sf.read(shared_corpora / "formats" / LIST_CHUNK, dtype="float32")
    return signal, rate


def test_list_chunk_wav_decodes_to_the_original_samples(shared_corpora):
    path = shared_corpora / "formats" / LIST_CHUNK
    data = path.read_bytes()
    assert b"LIST" in data[: data.index(b"data")]
    signal, rate = audio.decode(data)
    expected, _ = sf.read(path, dtype="float32")
    assert rate == 48000
    assert signal.dtype == np.float32 and signal.ndim == 1
    np.testing.assert_array_equal(signal, expected)


def test_mono_wav_decodes_unchanged(shared_corpora):
    path = shared_corpora / "formats" / MONO
    signal, rate = audio.decode(path.read_bytes())
    expected, _ = sf.read(path, dtype="float32")
    assert rate == 48000 and signal.flags.c_contiguous
    np.testing.assert_array_equal(signal, expected)


def test_flac_decodes_like_soundfile(shared_corpora):
    path = next((shared_corpora / "ravdess" / "Actor_01").glob("*.flac"))
    signal, rate = audio.decode(path.read_bytes())
    expected, expected_rate = sf.read(path, dtype="float32")
    assert rate == expected_rate
    np.testing.assert_array_equal(signal, expected)


def emovo_stereo_files(root):
    files = [root / "formats" / STEREO]
    files += [root / "emovo" / speaker / f"tri-{speaker}-b1.flac" for speaker in ("f1", "f2", "f3", "m1", "m2", "m3")]
    return files


def test_to_mono_keeps_the_loudest_emovo_channel_where_the_mean_cancels_speech(shared_corpora):
    for path in emovo_stereo_files(shared_corpora):
        stereo, _ = sf.read(path, dtype="float32", always_2d=True)
        assert stereo.shape[1] == 2, path
        loudest = max(energy(stereo[:, 0]), energy(stereo[:, 1]))
        mono = audio.to_mono(stereo)
        assert mono.dtype == np.float32 and mono.shape == (stereo.shape[0],)
        assert energy(mono) >= 0.99 * loudest, path
        # The plain mean of these two different microphones loses most of the speech.
        assert energy(stereo.mean(axis=1)) < 0.6 * loudest, path
        # decode applies the same rule while streaming through the file.
        decoded, _ = audio.decode(path.read_bytes())
        np.testing.assert_array_equal(decoded, mono)


def test_the_formats_stereo_file_has_anti_correlated_channels(shared_corpora):
    stereo, _ = sf.read(shared_corpora / "formats" / STEREO, dtype="float32", always_2d=True)
    assert np.corrcoef(stereo[:, 0], stereo[:, 1])[0, 1] < -0.1
    loudest = max(energy(stereo[:, 0]), energy(stereo[:, 1]))
    assert energy(stereo.mean(axis=1)) < 0.5 * loudest


def test_multichannel_file_keeps_its_loudest_channel(speech):
    signal, rate = speech
    # Four channels: quiet copy, the loud one (inverted), half level, and silence.
    channels = np.stack([0.1 * signal, -0.9 * signal, 0.5 * signal, np.zeros_like(signal)], axis=1)
    data = wav_bytes(channels, rate)
    decoded, decoded_rate = audio.decode(data)
    expected, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert decoded_rate == rate
    np.testing.assert_array_equal(decoded, expected[:, 1])


def test_to_mono_passes_mono_through_and_rejects_other_shapes():
    mono = np.linspace(-0.5, 0.5, 100)
    np.testing.assert_array_equal(audio.to_mono(mono), mono.astype(np.float32))
    with pytest.raises(ValueError, match="frames, channels"):
        audio.to_mono(np.zeros((2, 3, 4)))


def test_ties_go_to_the_first_channel():
    assert audio.loudest_channel(np.array([2.0, 2.0, 1.0])) == 0


@pytest.mark.parametrize("rate", [8000, 96000])
def test_unusual_sampling_rates_decode(speech, rate):
    signal, original = speech
    resampled = resample_poly(signal, rate, original).astype(np.float32)
    decoded, decoded_rate = audio.decode(wav_bytes(resampled, rate))
    assert decoded_rate == rate
    assert decoded.size == resampled.size


def test_float_wav_keeps_its_values(speech):
    signal, rate = speech
    louder = signal * 3.0  # float files may exceed full scale; decode does not clip
    decoded, _ = audio.decode(wav_bytes(louder, rate, subtype="FLOAT"))
    np.testing.assert_array_equal(decoded, louder.astype(np.float32))


def bad_files(shared_corpora, speech):
    signal, rate = speech
    listchunk = (shared_corpora / "formats" / LIST_CHUNK).read_bytes()
    flac = next((shared_corpora / "emovo" / "f2").glob("*.flac")).read_bytes()
    with_nan = signal.copy()
    with_nan[1000] = np.nan
    with_inf = signal.copy()
    with_inf[-5] = np.inf
    return {
        "empty": (b"", "^empty file$"),
        "header cut inside fmt": (listchunk[:30], r"^truncated header \(incomplete 'fmt ' chunk\)$"),
        "header cut before data": (listchunk[:44], r"^truncated header \(no 'data' chunk\)$"),
        "header cut after RIFF": (listchunk[:8], r"^truncated header \(8 bytes\)$"),
        "data cut": (listchunk[:-1000], r"^truncated data: header claims 229376 bytes of audio, file has 228376$"),
        "flac cut": (flac[: len(flac) // 2], r"^truncated or corrupt audio data \(flac decoder lost sync\)$"),
        "text": (b"speaker,emotion\nf1,anger\n" * 20, r"^not an audio file \(Format not recognised\)$"),
        "random bytes": (np.random.default_rng(7).bytes(4096), r"^not an audio file \("),
        "unsupported encoding": (riff_wav(0x1234, bytes(3200), extra=b"\0\0"), r"^unsupported encoding \(WAV format tag 0x1234\)$"),
        "silence": (wav_bytes(np.zeros(rate, dtype=np.float32), rate), r"^silent \(all samples zero\)$"),
        "too short": (wav_bytes(signal[40000:42400], rate), r"^shorter than 0.1 s \(0.050 s\)$"),
        "nan": (wav_bytes(with_nan, rate, subtype="FLOAT"), "^contains NaN or infinite samples$"),
        "inf": (wav_bytes(with_inf, rate, subtype="DOUBLE"), "^contains NaN or infinite samples$"),
    }


BAD_CASES = [
    "empty",
    "header cut inside fmt",
    "header cut before data",
    "header cut after RIFF",
    "data cut",
    "flac cut",
    "text",
    "random bytes",
    "unsupported encoding",
    "silence",
    "too short",
    "nan",
    "inf",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_files_are_rejected_with_a_reason(shared_corpora, speech, case):
    data, reason = bad_files(shared_corpora, speech)[case]
    with pytest.raises(AudioError, match=reason):
        audio.decode(data)


def test_audio_error_is_a_value_error():
    assert issubclass(AudioError, ValueError)


def test_min_duration_is_adjustable(speech):
    signal, rate = speech
    data = wav_bytes(signal[:2400], rate)  # 50 ms
    decoded, _ = audio.decode(data, min_duration=0.04)
    assert decoded.size == 2400
    with pytest.raises(AudioError, match="shorter than 0.5 s"):
        audio.decode(wav_bytes(signal[:12000], rate), min_duration=0.5)


def test_text_file_named_wav_is_rejected_when_loaded(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 50)
    with pytest.raises(AudioError, match="not an audio file"):
        audio.load(str(path))


def test_load_hashes_the_bytes_as_read(shared_corpora):
    path = shared_corpora / "formats" / STEREO
    loaded = audio.load(str(path))
    data = path.read_bytes()
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    assert loaded.sampling_rate == 48000
    assert loaded.duration == pytest.approx(loaded.signal.size / 48000)
    np.testing.assert_array_equal(loaded.signal, audio.decode(data)[0])


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        audio.load(str(tmp_path / "absent.wav"))


def test_load_reads_through_fsspec_from_s3(shared_corpora, s3):
    data = (shared_corpora / "formats" / MONO).read_bytes()
    uri = f"s3://{s3['bucket']}/audio/mono.wav"
    fs, path = storage.filesystem(uri, storage_options=s3["storage_options"])
    fs.pipe_file(path, data)
    assert audio.read(uri, storage_options=s3["storage_options"]) == data
    loaded = audio.load(uri, storage_options=s3["storage_options"])
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    np.testing.assert_array_equal(loaded.signal, audio.decode(data)[0])
