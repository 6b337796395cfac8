"""Decoding real and deliberately broken audio files into mono signals."""

from __future__ import annotations

import hashlib
import io
import struct

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from crossemo import audio, pipeline, storage
from crossemo.audio import AudioError

STEREO = "emovo-rab-f2-b1.48k-stereo.wav"
MONO = "emovo-rab-f1-b1.48k-mono.wav"
LIST_CHUNK = "ravdess-03-01-05-02-01-01-07.48k-listchunk.wav"


def wav_bytes(signal: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, signal, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def riff_wav(tag: int, payload: bytes, *, channels: int = 1, rate: int = 16000, bits: int = 16, extra: bytes = b"", byte_rate: int | None = None) -> bytes:
    """A WAV file written by hand, so any format tag (or a contradicting byte rate) can be declared."""
    byte_rate = rate * channels * bits // 8 if byte_rate is None else byte_rate
    fmt = struct.pack("<HHIIHH", tag, channels, rate, byte_rate, channels * bits // 8, bits) + extra
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


def test_emovo_keeps_its_louder_microphone_where_the_mean_cancels_speech(shared_corpora):
    for path in emovo_stereo_files(shared_corpora):
        stereo, _ = sf.read(path, dtype="float32", always_2d=True)
        assert stereo.shape[1] == 2, path
        loudest = max(energy(stereo[:, 0]), energy(stereo[:, 1]))
        decoded = audio.decode_file(path.read_bytes(), channel="loudest")
        assert decoded.signal.dtype == np.float32 and decoded.signal.shape == (stereo.shape[0],)
        assert decoded.channels == 2 and decoded.channel in ("0", "1")
        np.testing.assert_array_equal(decoded.signal, stereo[:, int(decoded.channel)])
        assert energy(decoded.signal) >= 0.99 * loudest, path
        # The plain mean of these two different microphones loses most of the speech.
        assert energy(stereo.mean(axis=1)) < 0.6 * loudest, path


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
    decoded, decoded_rate = audio.decode(data, channel="loudest")
    expected, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert decoded_rate == rate
    np.testing.assert_array_equal(decoded, expected[:, 1])


@pytest.mark.parametrize("channel, expected", [("first", 0), ("mean", None), (2, 2), (-1, 3)])
def test_other_channel_rules(speech, channel, expected):
    signal, rate = speech
    channels = np.stack([0.1 * signal, -0.9 * signal, 0.5 * signal, 0.2 * signal], axis=1)
    data = wav_bytes(channels, rate, subtype="FLOAT")
    decoded = audio.decode_file(data, channel=channel)
    stored, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    want = stored.mean(axis=1) if expected is None else stored[:, expected]
    np.testing.assert_allclose(decoded.signal, want, atol=1e-7)
    with pytest.raises(AudioError, match="^has 4 channels, no channel 4$"):
        audio.decode_file(data, channel=4)


def test_ties_go_to_the_first_channel():
    assert audio.loudest_channel(np.array([2.0, 2.0, 1.0])) == 0


@pytest.mark.parametrize("rate", [8000, 96000])
def test_unusual_sampling_rates_decode(speech, rate):
    signal, original = speech
    resampled = resample_poly(signal, rate, original).astype(np.float32)
    decoded, decoded_rate = audio.decode(wav_bytes(resampled, rate))
    assert decoded_rate == rate
    assert decoded.size == resampled.size


def test_float_wav_within_full_scale_keeps_its_values(speech):
    signal, rate = speech
    louder = (signal * (0.99 / np.abs(signal).max())).astype(np.float32)
    decoded = audio.decode_file(wav_bytes(louder, rate, subtype="FLOAT"))
    np.testing.assert_array_equal(decoded.signal, louder)
    assert decoded.notes == ()


def test_float_wav_slightly_beyond_full_scale_is_scaled_down_not_clipped(speech):
    signal, rate = speech
    over = (signal * (1.5 / np.abs(signal).max())).astype(np.float32)
    decoded = audio.decode_file(wav_bytes(over, rate, subtype="FLOAT"))
    np.testing.assert_allclose(decoded.signal, over / 1.5, rtol=1e-6)
    assert decoded.notes == ("float samples beyond full scale (peak 1.5) scaled down to peak 1",)


def test_float_wav_at_integer_scale_is_divided_back(shared_corpora):
    # The classic mistake: int16 sample values written to a float WAV.
    path = shared_corpora / "formats" / LIST_CHUNK
    pcm, rate = sf.read(path, dtype="int16")
    decoded = audio.decode_file(wav_bytes(pcm.astype(np.float32), rate, subtype="FLOAT"))
    expected, _ = sf.read(path, dtype="float32")
    np.testing.assert_array_equal(decoded.signal, expected)
    assert decoded.notes == (f"float samples at 16-bit integer scale (peak {np.abs(pcm).max()}) divided by 32768",)


@pytest.mark.parametrize("channel", ["mean", "first", "loudest"])
def test_a_stereo_float_wav_at_integer_scale_is_divided_back_whatever_the_channel_rule(speech, channel):
    # The mean of two whole numbers is often x.5: the scale is judged on the file's samples, not on the mix.
    signal, rate = speech
    left = np.round(signal * 20000)
    pcm = np.stack([left, np.round(signal * 12000) + 1], axis=1).astype(np.int16)
    decoded = audio.decode_file(wav_bytes(pcm.astype(np.float32), rate, subtype="FLOAT"), channel=channel)
    expected = audio.decode_file(wav_bytes(pcm, rate), channel=channel)
    np.testing.assert_allclose(decoded.signal, expected.signal, atol=1e-7)
    assert decoded.channel == expected.channel
    assert decoded.notes == (f"float samples at 16-bit integer scale (peak {np.abs(pcm).max()}) divided by 32768",)


def test_a_quiet_excerpt_of_a_float_wav_at_integer_scale_is_scaled_as_the_file_is(speech, tmp_path):
    # A window of faint whole-number noise, on its own, looks like a float file of small values:
    # scaled up to full scale, it passed for speech.
    signal, rate = speech
    noise = np.random.default_rng(0).integers(-2, 3, size=2 * rate).astype(np.float32)
    path = tmp_path / "integer-float.wav"
    path.write_bytes(wav_bytes(np.concatenate([np.round(signal * 20000), noise]).astype(np.float32), rate, subtype="FLOAT"))
    with audio.open_stream(str(path)) as stream:
        assert stream.float_samples is not None and stream.float_samples.integer_bits() == 16
        start = signal.size + rate // 2
        quiet = stream.read(start, start + rate // 2)
        with pytest.raises(AudioError, match=r"^no speech: peak level -8\d\.\d dBFS"):
            stream.excerpt(start, start + rate // 2, settings=audio.AnalysisSettings())
    np.testing.assert_array_equal(quiet[:, 0], noise[rate // 2 : rate])


def test_a_nan_in_a_float_wav_at_integer_scale_costs_only_its_own_window(speech, tmp_path):
    signal, rate = speech
    samples = np.round(signal * 20000).astype(np.float32)
    samples[-1] = np.nan
    path = tmp_path / "integer-float-nan.wav"
    path.write_bytes(wav_bytes(samples, rate, subtype="FLOAT"))
    with audio.open_stream(str(path)) as stream:
        clean = stream.excerpt(0, samples.size // 2, settings=audio.AnalysisSettings())
        with pytest.raises(AudioError, match="NaN"):
            stream.excerpt(samples.size // 2, samples.size, settings=audio.AnalysisSettings())
    assert clean.notes[-1].startswith("float samples at 16-bit integer scale")


def flac_claiming(signal: np.ndarray, rate: int, total: int) -> bytes:
    """A 16-bit FLAC of ``signal`` whose STREAMINFO claims ``total`` samples (0: unknown)."""
    buffer = io.BytesIO()
    sf.write(buffer, signal, rate, format="FLAC", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    assert data[:4] == b"fLaC"
    data[21] = (data[21] & 0xF0) | (total >> 32)  # STREAMINFO's total samples: the low 4 bits of byte 13, then bytes 14-17
    data[22:26] = (total & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(data)


@pytest.mark.parametrize(
    ("total", "reason"),
    [
        # A damaged STREAMINFO claiming 2**36 - 1 samples made the decoder ask
        # for 256 GiB and fail the whole task; read as excerpts (predict
        # --segment), it made hundreds of thousands of windows the file does not have.
        ((1 << 36) - 1, rf"^header claims {(1 << 36) - 1} frames, more than a file of \d+ bytes can hold"),
        # An encoder writing to a pipe cannot go back to fill in the total: 0
        # means unknown. libsndfile failed at such a file's end with "Internal
        # psf_fseek() failed", which read as corrupt data.
        (0, r"^FLAC header gives no length \(total samples 0, as a streaming encoder leaves it\)"),
    ],
    ids=["too many frames", "unknown length"],
)
def test_a_flac_whose_header_misstates_its_length_is_rejected_naming_the_cause(speech, tmp_path, total, reason):
    data = flac_claiming(*speech, total)
    with pytest.raises(AudioError, match=reason):
        audio.decode_file(data)
    path = tmp_path / "misstated.flac"
    path.write_bytes(data)
    with pytest.raises(AudioError, match=reason):
        with audio.open_stream(str(path)):
            pass


def test_float_wav_far_beyond_full_scale_and_not_integer_is_rejected_naming_its_peak(speech):
    signal, rate = speech
    wild = (signal * (1234.5 / np.abs(signal).max())).astype(np.float32)
    with pytest.raises(AudioError, match=r"^float samples peak at 1234\.5, far beyond full scale 1\.0"):
        audio.decode_file(wav_bytes(wild, rate, subtype="FLOAT"))


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
        "too short": (wav_bytes(signal[40000:42400], rate), r"^shorter than 0.1 s \(2400 samples at 48000 Hz: 0.050 s\)$"),
        "just too short": (wav_bytes(signal[40000:44795], rate), r"^shorter than 0.1 s \(4795 samples at 48000 Hz: 0.0999 s\)$"),
        "implausible rate": (wav_bytes(signal[::16], 3000), r"^implausible sampling rate 3000 Hz \(accepted: 4000 to 768000 Hz\)$"),
        "header contradicts itself": (riff_wav(1, bytes(32000), rate=16000, byte_rate=48000), r"^WAV header contradicts itself: 1 channels of 16 bits at 16000 Hz need 2 bytes per frame and 32000 bytes per second, it declares 2 and 48000"),
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
    "just too short",
    "implausible rate",
    "header contradicts itself",
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
    analysis = loaded.analysis
    assert (analysis.original_rate, analysis.sampling_rate, analysis.channels) == (48000, 16000, 2)
    assert analysis.signal.size == pytest.approx(analysis.duration * 16000, abs=1)
    np.testing.assert_array_equal(analysis.signal, audio.prepare(data).signal)


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
    np.testing.assert_array_equal(loaded.analysis.signal, audio.prepare(data).signal)


# --------------------------------------------------------------------------- issue: input surprises


def test_wav_whose_header_declares_no_audio_is_recovered(shared_corpora):
    # A recorder that was not closed cleanly leaves the data size at 0.
    path = shared_corpora / "formats" / LIST_CHUNK
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    for unknown in (0, 0xFFFFFFFF):
        data[at + 4 : at + 8] = unknown.to_bytes(4, "little")
        decoded = audio.decode_file(bytes(data))
        expected, _ = sf.read(path, dtype="float32")
        np.testing.assert_array_equal(decoded.signal, expected)
        assert len(decoded.notes) == 1 and decoded.notes[0].startswith("WAV header declared") and "recovered the 229376 bytes" in decoded.notes[0]


def test_wav_whose_header_declares_no_audio_and_holds_none_says_so(shared_corpora):
    data = bytearray((shared_corpora / "formats" / LIST_CHUNK).read_bytes())
    at = data.index(b"data")
    data[at + 4 : at + 8] = bytes(4)
    with pytest.raises(AudioError, match=r"^shorter than 0\.1 s \(0 samples"):
        audio.decode_file(bytes(data[: at + 8]))


def test_a_wav_that_declares_no_audio_before_another_chunk_is_empty_not_that_chunk_decoded(speech):
    # Only a data chunk a recorder left open runs to the end of the file; a LIST chunk after it is metadata.
    signal, rate = speech
    text = b"recorded by an app that wrote no audio " * 100
    info = b"INFO" + b"ICMT" + struct.pack("<I", len(text)) + text
    data = bytearray(riff_wav(1, b"") + b"LIST" + struct.pack("<I", len(info)) + info)
    data[4:8] = (len(data) - 8).to_bytes(4, "little")
    with pytest.raises(AudioError, match=r"^shorter than 0\.1 s \(0 samples"):
        audio.decode_file(bytes(data))
    # Audio whose first bytes pass for a chunk header ("BADC", 256 bytes) is still the recording that was not closed.
    pcm = (signal[:rate] * 20000).astype("<i2")
    pcm[:4] = np.frombuffer(b"BADC\x00\x01\x00\x00", dtype="<i2")
    unclosed = bytearray(riff_wav(1, pcm.tobytes(), rate=rate))
    unclosed[unclosed.index(b"data") + 4 : unclosed.index(b"data") + 8] = bytes(4)
    assert audio.decode_file(bytes(unclosed)).notes[0].startswith("WAV header declared no audio data; recovered")


def test_channel_with_dc_and_hum_is_not_taken_for_the_voice(speech):
    signal, rate = speech
    t = np.arange(signal.size) / rate
    # The other channel is far "louder": a DC bias plus 50 Hz mains hum.
    hum = (0.3 + 0.5 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)
    stereo = np.stack([hum, 0.5 * signal], axis=1)
    decoded = audio.decode_file(wav_bytes(stereo, rate), channel="loudest")
    assert energy(hum) > 10 * energy(0.5 * signal)
    assert decoded.channel == "1"


def test_the_default_rule_is_the_mean_of_the_channels(shared_corpora):
    # Chosen by benchmarks/channel.py: the best cross-corpus UAR on the shared corpora (README, "Mono rule").
    assert audio.AnalysisSettings().channel == "mean" and pipeline.RunConfig().channel == "mean"
    data = (shared_corpora / "formats" / STEREO).read_bytes()
    stereo, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    for decoded in (audio.decode_file(data), audio.decode_file(data, channel="mean")):
        assert decoded.channels == 2 and decoded.channel == "mean"
        np.testing.assert_allclose(decoded.signal, stereo.mean(axis=1), atol=1e-7)
    mono = audio.decode_file((shared_corpora / "formats" / "emovo-rab-f1-b1.48k-mono.wav").read_bytes())
    assert mono.channels == 1 and mono.channel == "0"


def test_under_the_default_a_channel_of_hum_makes_the_file_no_speech(speech):
    # The price of the mean: a hum channel is mixed in, and the file is rejected rather than kept; --channel loudest keeps the voice.
    signal, rate = speech
    hum = (0.3 + 0.5 * np.sin(2 * np.pi * 50 * np.arange(signal.size) / rate)).astype(np.float32)
    data = wav_bytes(np.stack([hum, 0.5 * signal], axis=1), rate)
    with pytest.raises(AudioError, match="^no speech: "):
        audio.prepare(data)
    assert audio.prepare(data, settings=audio.AnalysisSettings(channel="loudest")).channel == "1"


def test_dc_is_removed_before_analysis(speech):
    signal, rate = speech
    plain = audio.prepare(wav_bytes(signal, rate, subtype="FLOAT"))
    offset = audio.prepare(wav_bytes(signal + 0.01, rate, subtype="FLOAT"))
    assert abs(float(offset.signal.mean())) < 1e-4  # the offset was 0.01; resampling edges leave a trace
    np.testing.assert_allclose(offset.signal, plain.signal, atol=1e-5)


@pytest.mark.parametrize("kind", ["dither", "white noise", "hum"])
def test_signals_without_speech_are_rejected(kind):
    rate = 16000
    rng = np.random.default_rng(3)
    signal = {
        "dither": rng.integers(-1, 2, 3 * rate).astype(np.float32) / 32768,
        "white noise": (0.05 * rng.standard_normal(3 * rate)).astype(np.float32),
        "hum": (0.2 * np.sin(2 * np.pi * 60 * np.arange(3 * rate) / rate)).astype(np.float32),
    }[kind]
    reason = r"^no speech: peak level -90\.3 dBFS is below -60 dBFS$" if kind == "dither" else r"^no speech: the level of 20 ms frames varies by only \d\.\d dB"
    with pytest.raises(AudioError, match=reason):
        audio.prepare(wav_bytes(signal, rate))


def test_no_real_utterance_is_taken_for_no_speech(shared_corpora):
    files = sorted((shared_corpora / "emovo").rglob("*.flac")) + sorted((shared_corpora / "ravdess").rglob("*.flac"))
    assert len(files) == 1007
    for path in files:
        audio.prepare(path.read_bytes())  # raises on any rejection


def test_one_analysis_rate_makes_stored_rates_agree(speech):
    signal, rate = speech
    signals = {stored: resample_poly(signal, stored // 50, rate // 50).astype(np.float32) for stored in (16000, 22050, 44100, 48000)}
    prepared = {stored: audio.prepare(wav_bytes(x, stored)) for stored, x in signals.items()}
    for stored, analysis in prepared.items():
        assert (analysis.sampling_rate, analysis.original_rate) == (16000, stored)
        assert analysis.signal.size == pytest.approx(prepared[48000].signal.size, abs=2)
    assert prepared[16000].notes == ()
    low = audio.prepare(wav_bytes(resample_poly(signal, 1, 6).astype(np.float32), 8000))
    assert low.notes == ("recorded at 8000 Hz, below the analysis rate 16000 Hz: its band above 4000 Hz is empty",)


def test_analysis_settings_refuse_unusable_rules():
    with pytest.raises(ValueError, match="analysis rate"):
        audio.AnalysisSettings(analysis_rate=1000)
    with pytest.raises(ValueError, match="channel 'left'"):
        audio.AnalysisSettings(channel="left")
    assert audio.AnalysisSettings().key() != audio.AnalysisSettings(analysis_rate=22050).key()
    assert audio.AnalysisSettings().key() != audio.AnalysisSettings(channel="first").key()


def test_a_channel_index_applies_to_multichannel_files_and_a_mono_file_is_its_one_channel(shared_corpora):
    data = (shared_corpora / "formats" / MONO).read_bytes()
    expected, _ = sf.read(shared_corpora / "formats" / MONO, dtype="float32")
    for channel in (1, 5, -1, "first", "mean"):
        np.testing.assert_array_equal(audio.decode_file(data, channel=channel).signal, expected)
