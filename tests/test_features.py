"""openSMILE functionals on real speech: built-in sets, adapted configs, failures and memory."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import opensmile
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from crossemo import audio, features, storage
from crossemo.features import FeatureError, FeatureExtractor

EXPECTED_COUNTS = {"is10": 1582, "egemaps": 88, "compare": 6373, "emobase": 988}

# Our own SMILExtract-style config: a wave source and an ARFF sink in included
# files, a level name other than "wave", an option include with a default,
# and a block comment whose text looks like a section.
ENERGY_CONF = """\
/* Energy summary written for crossemo's tests.
   [notASection:cFramer] must not be read as a section. */
[componentInstances:cComponentManager]
instance[dataMemory].type=cDataMemory
instance[frames].type=cFramer
instance[energy].type=cEnergy
instance[stats].type=cFunctionals
nThreads=1

\\{../shared/wave_in.conf.inc}

[frames:cFramer]
reader.dmLevel = pcmlevel
writer.dmLevel = frames
frameSize = 0.025
frameStep = 0.010
frameCenterSpecial = left

[energy:cEnergy]
reader.dmLevel = frames
writer.dmLevel = energy
\\{\\cm[growConf{grow.conf.inc}:how the energy level is buffered]}
rms = 1
log = 0

[stats:cFunctionals]
reader.dmLevel = energy
writer.dmLevel = stats
frameMode = full
frameSize = 0
frameStep = 0
functionalsEnabled = Extremes;Moments
Extremes.max = 1
Extremes.min = 1
Moments.stddev = 1

\\{../shared/arff_out.conf.inc}
"""

WAVE_IN_INC = """\
; reads the file named on the command line
[componentInstances:cComponentManager]
instance[wavein].type=cWaveSource

[wavein:cWaveSource]
writer.dmLevel = pcmlevel
filename = \\cm[inputfile(I){input.wav}:file to read]
monoMixdown = 1
start = \\cm[start{0}:start in seconds]
end = \\cm[end{-1}:end in seconds, -1 for the end]
"""

ARFF_OUT_INC = """\
[componentInstances:cComponentManager]
instance[arffout].type=cArffSink

[arffout:cArffSink]
reader.dmLevel = stats
filename = \\cm[arffout(O){out.arff}:output file]
relation = energy
"""

GROW_INC = "writer.levelconf.isRb = 0\nwriter.levelconf.growDyn = 1\n"

# Frames of 2 s feeding full-input functionals through a level that is not
# configured to grow: fine when fed at once, a stall when streamed.
WHOLE_INPUT_CONF = """\
[componentInstances:cComponentManager]
instance[dataMemory].type=cDataMemory
instance[fr].type=cFramer
instance[en].type=cEnergy
instance[fu].type=cFunctionals

\\{\\cm[source{?}:include external source]}

[fr:cFramer]
reader.dmLevel = wave
writer.dmLevel = frames
frameSize = 2.0
frameStep = 2.0

[en:cEnergy]
reader.dmLevel = frames
writer.dmLevel = energy
rms = 1
log = 0

[fu:cFunctionals]
reader.dmLevel = energy
writer.dmLevel = func
frameMode = full
frameSize = 0
frameStep = 0
functionalsEnabled = Extremes
Extremes.max = 1

\\{\\cm[sink{?}:include external sink]}
"""

# Full-input functionals straight over 0.5 s frames of raw samples: streamed,
# the frames level fills and the ring buffer stalls.
STALL_CONF = """\
[componentInstances:cComponentManager]
instance[dataMemory].type=cDataMemory
instance[fr].type=cFramer
instance[fu].type=cFunctionals

\\{\\cm[source{?}:include external source]}

[fr:cFramer]
reader.dmLevel = wave
writer.dmLevel = frames
frameSize = 0.5
frameStep = 0.5

[fu:cFunctionals]
reader.dmLevel = frames
writer.dmLevel = func
frameMode = full
frameSize = 0
frameStep = 0
functionalsEnabled = Extremes
Extremes.max = 1
Extremes.min = 0
Extremes.range = 0
Extremes.maxpos = 0
Extremes.minpos = 0
Extremes.amean = 0
Extremes.maxameandist = 0
Extremes.minameandist = 0

\\{\\cm[sink{?}:include external sink]}
"""

# Square roots of raw samples: NaN for every negative sample.
NAN_CONF = """\
[componentInstances:cComponentManager]
instance[dataMemory].type=cDataMemory
instance[frames].type=cFramer
instance[op].type=cVectorOperation
instance[stats].type=cFunctionals

\\{\\cm[source{?}:include external source]}

[frames:cFramer]
reader.dmLevel = wave
writer.dmLevel = frames
frameSize = 0.00025
frameStep = 0.00025

[op:cVectorOperation]
reader.dmLevel = frames
writer.dmLevel = roots
operation = pow
param1 = 0.5
writer.levelconf.isRb = 0
writer.levelconf.growDyn = 1

[stats:cFunctionals]
reader.dmLevel = roots
writer.dmLevel = func
frameMode = full
frameSize = 0
frameStep = 0
functionalsEnabled = Means
Means.amean = 1

\\{\\cm[sink{?}:include external sink]}
"""


def write_energy_config(root) -> str:
    (root / "main").mkdir(parents=True, exist_ok=True)
    (root / "shared").mkdir(parents=True, exist_ok=True)
    (root / "main" / "energy.conf").write_text(ENERGY_CONF)
    (root / "main" / "grow.conf.inc").write_text(GROW_INC)
    (root / "shared" / "wave_in.conf.inc").write_text(WAVE_IN_INC)
    (root / "shared" / "arff_out.conf.inc").write_text(ARFF_OUT_INC)
    return str(root / "main" / "energy.conf")


def smilextract_is10(tmp_path) -> str:
    """The installed IS10 config rewritten as a SMILExtract config (cWaveSource in, cArffSink out)."""
    text = (features.CONFIG_ROOT / "is09-13" / "IS10_paraling_compat.conf").read_text()
    source, sink = features.PYTHON_API_HOOKS["source"], features.PYTHON_API_HOOKS["sink"]
    assert text.count(source) == 1 and text.count(sink) == 1
    wave = "[componentInstances:cComponentManager]\ninstance[waveIn].type=cWaveSource\n\n[waveIn:cWaveSource]\nwriter.dmLevel=wave\nfilename=\\cm[inputfile(I){in.wav}:input]\nmonoMixdown=1\n"
    arff = "[componentInstances:cComponentManager]\ninstance[arffSink].type=cArffSink\n\n[arffSink:cArffSink]\nreader.dmLevel=func\nfilename=\\cm[arffout(O){out.arff}:output]\nrelation=is10\n"
    path = tmp_path / "IS10_smilextract.conf"
    path.write_text(text.replace(source, wave).replace(sink, arff))
    return str(path)


@pytest.fixture(scope="module")
def utterances(shared_corpora) -> list[tuple[np.ndarray, int]]:
    """Two real utterances: RAVDESS (mono) and EMOVO (stereo), decoded by crossemo."""
    paths = [shared_corpora / "ravdess" / "Actor_02" / "03-01-05-01-01-01-02.flac", shared_corpora / "emovo" / "m2" / "gio-m2-b2.flac"]
    return [audio.decode(path.read_bytes()) for path in paths]


@pytest.fixture(scope="module")
def is10() -> FeatureExtractor:
    return FeatureExtractor()


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_builtin_sets_give_finite_features_equal_to_opensmile(utterances, name):
    extractor = FeatureExtractor(name)
    reference = opensmile.Smile(feature_set=features.FEATURE_SETS[name], num_workers=1)
    assert extractor.feature_set_id == name
    assert len(extractor.names) == EXPECTED_COUNTS[name]
    assert extractor.names == reference.feature_names
    for signal, rate in utterances:
        vector = extractor.extract(signal, rate)
        assert vector.dtype == np.float64 and vector.shape == (EXPECTED_COUNTS[name],)
        assert np.isfinite(vector).all()
        np.testing.assert_array_equal(vector, reference(signal, rate).ravel())


def test_is10_is_the_default_and_names_are_case_insensitive():
    assert FeatureExtractor().feature_set_id == "is10"
    assert features.resolve_feature_set("IS10").id == "is10"


@pytest.mark.parametrize("rate", [8000, 96000])
def test_unusual_sampling_rates_give_finite_features(utterances, is10, rate):
    signal, original = utterances[0]
    buffer = io.BytesIO()
    sf.write(buffer, resample_poly(signal, rate, original).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    decoded, decoded_rate = audio.decode(buffer.getvalue())
    vector = is10.extract(decoded, decoded_rate)
    assert decoded_rate == rate and np.isfinite(vector).all()


def test_extractor_pickles_before_and_after_use(utterances, is10):
    signal, rate = utterances[0]
    fresh = pickle.loads(pickle.dumps(FeatureExtractor("egemaps")))
    used = FeatureExtractor("egemaps")
    expected = used.extract(signal, rate)
    clone = pickle.loads(pickle.dumps(used))
    assert clone.feature_set_id == "egemaps" and clone.names == used.names
    np.testing.assert_array_equal(fresh.extract(signal, rate), expected)
    np.testing.assert_array_equal(clone.extract(signal, rate), expected)


@pytest.mark.parametrize("spec", ["is11", "mfcc", ""])
def test_unknown_names_are_refused(spec):
    message = f"unknown feature set {spec!r}; known: is10, egemaps, compare, emobase, or a path to an openSMILE .conf"
    with pytest.raises(FeatureError) as caught:
        FeatureExtractor(spec)
    assert str(caught.value) == message


def test_missing_config_file_is_refused(tmp_path):
    spec = str(tmp_path / "absent.conf")
    with pytest.raises(FeatureError, match=r"^unknown feature set .*absent\.conf'; known: .* \(no such file\)$"):
        FeatureExtractor(spec)


def test_smilextract_config_is_adapted(tmp_path, utterances):
    path = write_energy_config(tmp_path)
    adapted = features.adapt_config(path)
    assert adapted.level == "stats" and adapted.streamable
    for gone in ("cWaveSource", "cArffSink", "pcmlevel", "notASection", "\\{../"):
        assert gone not in adapted.text
    assert adapted.text.count(features.PYTHON_API_HOOKS["source"]) == 1 and adapted.text.count(features.PYTHON_API_HOOKS["sink"]) == 1
    assert "writer.levelconf.growDyn = 1" in adapted.text  # the option include was inlined

    extractor = FeatureExtractor(path)
    assert extractor.feature_set_id == "config-" + hashlib.sha256(adapted.text.encode()).hexdigest()[:16]
    assert extractor.names[:3] == ["pcm_RMSenergy_max", "pcm_RMSenergy_min", "pcm_RMSenergy_range"]
    signal, rate = utterances[0]
    vector = extractor.extract(signal, rate)
    assert np.isfinite(vector).all()
    # The largest frame RMS, computed independently on the 16-bit samples openSMILE sees.
    pcm = np.clip(signal * np.float32(32768), -32768, 32767).astype(np.int16) / 32768.0
    size, step = int(0.025 * rate), int(0.010 * rate)
    rms = [np.sqrt(np.mean(np.square(pcm[start : start + size]))) for start in range(0, pcm.size - size + 1, step)]
    assert vector[0] == pytest.approx(max(rms), rel=1e-4)


def test_config_id_follows_content_not_location(tmp_path):
    first = FeatureExtractor(write_energy_config(tmp_path / "a")).feature_set_id
    second_path = write_energy_config(tmp_path / "b")
    assert FeatureExtractor(second_path).feature_set_id == first
    # Changing an included file changes the features, so it changes the id.
    (tmp_path / "b" / "shared" / "arff_out.conf.inc").write_text(ARFF_OUT_INC.replace("stats", "energy"))
    assert FeatureExtractor(second_path).feature_set_id != first


def test_smilextract_is10_config_gives_exactly_the_builtin_features(tmp_path, shared_corpora, is10):
    extractor = FeatureExtractor(smilextract_is10(tmp_path))
    assert extractor.feature_set_id.startswith("config-") and extractor.level == "func"
    assert extractor.names == is10.names
    for path in (shared_corpora / "formats" / "emovo-rab-f2-b1.48k-stereo.wav", shared_corpora / "ravdess" / "Actor_07" / "03-01-04-02-02-01-07.flac"):
        signal, rate = audio.decode(path.read_bytes())
        np.testing.assert_array_equal(extractor.extract(signal, rate), is10.extract(signal, rate))


def test_python_api_config_by_path_equals_the_builtin(utterances):
    # eGeMAPS names its buffer-mode include without a default: the Python
    # API's file is inlined, as opensmile.Smile would pass it.
    builtin = FeatureExtractor("egemaps")
    by_path = FeatureExtractor(features.resolve_feature_set("egemaps").config_path)
    assert by_path.feature_set_id.startswith("config-") and by_path.names == builtin.names
    signal, rate = utterances[1]
    np.testing.assert_array_equal(by_path.extract(signal, rate), builtin.extract(signal, rate))


def test_config_and_includes_are_read_through_fsspec(tmp_path, s3, utterances):
    local = write_energy_config(tmp_path)
    base = f"s3://{s3['bucket']}/configs"
    for relative in ("main/energy.conf", "main/grow.conf.inc", "shared/wave_in.conf.inc", "shared/arff_out.conf.inc"):
        fs, path = storage.filesystem(f"{base}/{relative}", storage_options=s3["storage_options"])
        fs.pipe_file(path, (tmp_path / relative).read_bytes())
    remote = FeatureExtractor(f"{base}/main/energy.conf", storage_options=s3["storage_options"])
    assert remote.feature_set_id == FeatureExtractor(local).feature_set_id
    # The extractor keeps no credentials: it pickles without them.
    assert "endpoint_url" not in pickle.dumps(remote).decode("latin-1")
    signal, rate = utterances[0]
    np.testing.assert_array_equal(remote.extract(signal, rate), FeatureExtractor(local).extract(signal, rate))


@pytest.mark.parametrize(
    "files, reason",
    [
        ({"x.conf": "[componentInstances:cComponentManager]\ninstance[dataMemory].type=cDataMemory\n"}, "no audio input"),
        ({"x.conf": "\\{missing.inc}\n"}, "cannot read openSMILE config"),
        ({"x.conf": "\\{y.inc}\n", "y.inc": "\\{x.conf}\n"}, "includes itself"),
        ({"x.conf": "\\{\\cm[extra{?}:needed]}\n"}, "'extra' has no default file"),
        (
            {"x.conf": WHOLE_INPUT_CONF.replace(features.PYTHON_API_HOOKS["source"], "[componentInstances:cComponentManager]\ninstance[mic].type=cPortaudioSource\n")},
            "input components other than cWaveSource",
        ),
        (
            {
                "x.conf": WAVE_IN_INC
                + "[componentInstances:cComponentManager]\ninstance[a].type=cCsvSink\ninstance[b].type=cCsvSink\n[a:cCsvSink]\nreader.dmLevel=lld\n[b:cCsvSink]\nreader.dmLevel=lld_de\n"
            },
            "several levels",
        ),
    ],
)
def test_configs_that_cannot_be_adapted_are_refused(tmp_path, files, reason):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(FeatureError, match=reason):
        FeatureExtractor(str(tmp_path / "x.conf"))


def test_config_opensmile_rejects_names_the_problem(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text(WHOLE_INPUT_CONF.replace("rms = 1", "noSuchOption = 1"))
    extractor = FeatureExtractor(str(path))
    with pytest.raises(FeatureError, match="openSMILE rejects feature set .*noSuchOption"):
        extractor.names


def test_non_finite_features_are_refused(tmp_path, utterances):
    path = tmp_path / "roots.conf"
    path.write_text(NAN_CONF)
    extractor = FeatureExtractor(str(path))
    signal, rate = utterances[0]
    # 16 kHz keeps the frame length equal to the one the names were read at.
    signal = resample_poly(signal, 16000, rate).astype(np.float32)
    with pytest.raises(FeatureError, match=r"^\d+ of \d+ features are NaN or infinite \(e\.g\. pcm\[0\]_amean\)$"):
        extractor.extract(signal, 16000)


def test_too_short_for_opensmile_is_refused(utterances, is10):
    signal, rate = utterances[0]
    with pytest.raises(FeatureError, match="openSMILE produced no features"):
        is10.extract(signal[: int(0.03 * rate)], rate)


def test_bad_signals_are_refused(is10):
    with pytest.raises(FeatureError, match="1-D float signal"):
        is10.extract(np.zeros((2, 16000), dtype=np.float32), 16000)
    with pytest.raises(FeatureError, match="1-D float signal"):
        is10.extract(np.zeros(16000, dtype=np.int16), 16000)
    with pytest.raises(FeatureError, match="invalid sampling rate"):
        is10.extract(np.zeros(16000, dtype=np.float32), 0)


def test_full_scale_samples_are_clipped_not_wrapped(utterances):
    extractor = FeatureExtractor("emobase")
    signal, rate = utterances[0]
    peak = int(np.argmax(np.abs(signal)))
    over, top = signal.copy(), signal.copy()
    over[peak], top[peak] = 1.5, 32767 / 32768
    np.testing.assert_array_equal(extractor.extract(over, rate), extractor.extract(top, rate))


def test_config_that_needs_its_whole_input_runs_unstreamed(tmp_path, utterances):
    path = tmp_path / "whole.conf"
    path.write_text(WHOLE_INPUT_CONF)
    # Full-input functionals over a level that is not configured to grow.
    assert not features.adapt_config(str(path)).streamable
    signal, rate = utterances[0]
    signal = np.tile(signal, 5)  # about 12 s: several 2 s frames
    reference = opensmile.Smile(feature_set=str(path), feature_level="func", num_workers=1)
    vector = FeatureExtractor(str(path)).extract(signal, rate)
    assert np.isfinite(vector).all()
    np.testing.assert_array_equal(vector, reference(signal, rate).ravel())


def test_a_stalled_stream_is_rerun_with_the_whole_input(tmp_path, monkeypatch):
    path = tmp_path / "stall.conf"
    path.write_text(STALL_CONF)
    rate = 16000
    signal = (np.random.default_rng(1).standard_normal(10 * rate) * 0.05).astype(np.float32)
    expected = opensmile.Smile(feature_set=str(path), feature_level="func", num_workers=1)(signal, rate).ravel()
    # Pretend the static check missed this config: the full-input reader then
    # blocks the ring buffer, which is detected, and the file is run unstreamed.
    monkeypatch.setattr(features.smileconfig, "_streamable", lambda blocks: True)
    monkeypatch.setattr(features.extractor, "STALL_SECONDS", 0.5)
    monkeypatch.setattr(features.extractor, "RING_SECONDS", 1.0)
    extractor = FeatureExtractor(str(path))
    np.testing.assert_array_equal(extractor.extract(signal, rate), expected)
    np.testing.assert_array_equal(extractor.extract(signal, rate), expected)


MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np
    from crossemo import audio, features

    extractor = features.FeatureExtractor(sys.argv[2])
    extractor.names
    data = open(sys.argv[1], "rb").read()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    signal, rate = audio.decode(data)
    after_decode = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    vector = extractor.extract(signal, rate)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "seconds": signal.size / rate,
        "decode_kb": after_decode - base,
        "total_kb": peak - base,
        "finite": bool(np.isfinite(vector).all()),
        "elapsed": time.monotonic() - started,
    }))
    """
)


def test_ten_minute_stereo_file_keeps_memory_bounded(tmp_path, shared_corpora):
    # Real EMOVO stereo speech at 48 kHz, repeated for ten minutes (115 MB of WAV).
    stereo, rate = sf.read(shared_corpora / "formats" / "emovo-rab-f2-b1.48k-stereo.wav", dtype="int16", always_2d=True)
    path = tmp_path / "long.wav"
    with sf.SoundFile(path, "w", samplerate=rate, channels=2, subtype="PCM_16") as handle:
        for _ in range(int(np.ceil(600 * rate / len(stereo)))):
            handle.write(stereo)
    command = [sys.executable, "-c", MEMORY_PROBE, str(path), "is10"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["seconds"] >= 600 and result["finite"]
    # One float32 mono copy is 115 MB; a multi-channel or float64 copy would double it.
    assert result["decode_kb"] < 200_000, result
    # Fed at once, openSMILE's IS10 config alone would need about 6 GB here.
    assert result["total_kb"] < 1_500_000, result


def test_one_utterance_stored_at_four_rates_gives_nearly_identical_features(utterances, is10):
    """Analysed at its own rate, the same speech differs by a median ~18 % over IS10; at one analysis rate it agrees."""
    f0 = is10.names.index("F0final_sma_amean")
    for signal, rate in utterances:
        stored = {target: resample_poly(signal, target // 50, rate // 50).astype(np.float32) for target in (16000, 22050, 44100, 48000)}
        vectors = {}
        for target, version in stored.items():
            buffer = io.BytesIO()
            sf.write(buffer, version, target, format="WAV", subtype="PCM_16")
            analysis = audio.prepare(buffer.getvalue())
            vectors[target] = is10.extract(analysis.signal, analysis.sampling_rate)
        reference = vectors[48000]
        native = {target: is10.extract(audio.remove_dc(version), target) for target, version in stored.items()}
        for target in (16000, 22050, 44100):
            difference = np.median(np.abs(vectors[target] - reference) / (np.abs(reference) + 1e-9))
            assert difference < 0.01, (target, difference)
            assert abs(vectors[target][f0] - reference[f0]) < 0.5
        # Without one analysis rate, 16 kHz and 48 kHz copies would not agree (so the test can fail).
        apart = np.median(np.abs(native[16000] - native[48000]) / (np.abs(native[48000]) + 1e-9))
        together = np.median(np.abs(vectors[16000] - reference) / (np.abs(reference) + 1e-9))
        assert apart > 5 * together, (apart, together)
