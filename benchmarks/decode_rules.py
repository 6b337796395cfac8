"""Benchmark: what each decode rule of crossemo.audio does, measured on the shared corpora.

For a sample of real EMOVO and RAVDESS utterances (IS10 features):

* **one analysis rate**: the same utterance stored at 16, 22.05, 44.1 and
  48 kHz, analysed at its own rate (no resampling) and at the analysis rate:
  median relative feature difference from the 48 kHz file, and mean F0;
* **DC removal**: an offset of 0.01 added, mean F0 with and without removal;
* **float at integer scale**: int16 values stored as float, clipped (what
  happened before) or divided back;
* **channel choice**: on every stereo EMOVO file, how often the speech-band
  rule picks another channel than plain energy; and with DC and mains hum on
  the other channel, which channel each rule picks;
* **no-speech rule**: files of all 1007 lost, and its cost against openSMILE.

    python benchmarks/decode_rules.py [--corpora ../shared/corpora] [--files 24]
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import resample_poly

from crossemo import audio
from crossemo.features import FeatureExtractor

ROOT = Path(__file__).resolve().parents[1]
RATES = {16000: (1, 3), 22050: (147, 320), 44100: (147, 160), 48000: (1, 1)}
F0 = "F0final_sma_amean"


def wav(signal: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, signal, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def relative(a: np.ndarray, b: np.ndarray) -> float:
    """Median over features of |a - b| / |b|."""
    return float(np.median(np.abs(a - b) / (np.abs(b) + 1e-9)))


def sample(corpora: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for corpus in ("emovo", "ravdess"):
        found = sorted((corpora / corpus).rglob("*.flac"))
        files += [found[i] for i in sorted(rng.choice(len(found), count // 2, replace=False))]
    return files


def analysis_rate(files: list[Path], extractor: FeatureExtractor) -> pd.DataFrame:
    f0 = extractor.names.index(F0)
    rows = []
    for path in files:
        # One real microphone per file, as when the README figures were measured (before the mean became the default).
        signal, rate = audio.decode(path.read_bytes(), channel="loudest")
        versions = {stored: resample_poly(signal, up, down).astype(np.float32) for stored, (up, down) in RATES.items()}
        native = {stored: extractor.extract(audio.remove_dc(x), stored) for stored, x in versions.items()}
        prepared = {stored: audio.prepare(wav(x, stored)) for stored, x in versions.items()}
        common = {stored: extractor.extract(a.signal, a.sampling_rate) for stored, a in prepared.items()}
        for stored in (16000, 22050, 44100):
            rows.append({
                "stored at": stored,
                "own rate: median rel. difference": relative(native[stored], native[48000]),
                "own rate: |ΔF0| Hz": abs(native[stored][f0] - native[48000][f0]),
                "analysis rate: median rel. difference": relative(common[stored], common[48000]),
                "analysis rate: |ΔF0| Hz": abs(common[stored][f0] - common[48000][f0]),
            })
    return pd.DataFrame(rows).groupby("stored at").median()


def dc_and_scale(files: list[Path], extractor: FeatureExtractor) -> pd.Series:
    f0 = extractor.names.index(F0)
    kept, moved, clipped, divided = [], [], [], []
    for path in files:
        signal, rate = sf.read(path, dtype="float32", always_2d=True)
        signal = signal[:, 0]
        plain = audio.prepare(wav(signal, rate, "FLOAT"))
        reference = extractor.extract(plain.signal, plain.sampling_rate)[f0]
        offset = audio.prepare(wav(signal + 0.01, rate, "FLOAT"))
        kept.append(abs(extractor.extract(offset.signal, offset.sampling_rate)[f0] - reference))
        # Without removal: the offset reaches openSMILE.
        shifted = audio.resample(signal - signal.mean() + 0.01, rate, plain.sampling_rate)
        moved.append(abs(extractor.extract(shifted, plain.sampling_rate)[f0] - reference))
        integer = np.round(signal * 32768).astype(np.float32)
        clip = audio.resample(np.clip(integer, -1, 1), rate, plain.sampling_rate)
        clipped.append(abs(extractor.extract(audio.remove_dc(clip), plain.sampling_rate)[f0] - reference))
        rescued = audio.prepare(wav(integer, rate, "FLOAT"))
        divided.append(abs(extractor.extract(rescued.signal, rescued.sampling_rate)[f0] - reference))
    return pd.Series({
        "DC 0.01, not removed: median |ΔF0| Hz": np.median(moved),
        "DC 0.01, removed: median |ΔF0| Hz": np.median(kept),
        "integer-scale float, clipped: median |ΔF0| Hz": np.median(clipped),
        "integer-scale float, divided back: median |ΔF0| Hz": np.median(divided),
    })


def channels(corpora: Path) -> pd.Series:
    stereo = [p for p in sorted((corpora / "emovo").rglob("*.flac")) if sf.info(p).channels == 2]
    differ = hum_plain = hum_band = 0
    for path in stereo:
        data = path.read_bytes()
        signal, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        energies = np.sum(np.square(signal, dtype=np.float64), axis=0)
        chosen = int(audio.decode_file(data, channel="loudest").channel)
        differ += chosen != int(np.argmax(energies))
        voice = signal[:, chosen]
        hum = (0.3 + 0.5 * np.sin(2 * np.pi * 50 * np.arange(voice.size) / rate)).astype(np.float32)
        with_hum = wav(np.stack([hum, voice], axis=1), rate)
        hum_plain += int(np.argmax([np.sum(np.square(hum, dtype=np.float64)), np.sum(np.square(voice, dtype=np.float64))])) == 0
        hum_band += audio.decode_file(with_hum, channel="loudest").channel == "0"
    return pd.Series({
        "EMOVO stereo files": len(stereo),
        "speech-band choice differs from plain energy": differ,
        "hum channel chosen, plain energy": hum_plain,
        "hum channel chosen, speech band": hum_band,
    })


def no_speech(corpora: Path, extractor: FeatureExtractor) -> pd.Series:
    files = sorted((corpora / "emovo").rglob("*.flac")) + sorted((corpora / "ravdess").rglob("*.flac"))
    lost, check_seconds, extract_seconds, timed = 0, 0.0, 0.0, 0
    for index, path in enumerate(files):
        decoded = audio.decode_file(path.read_bytes())
        signal = audio.remove_dc(decoded.signal)
        started = time.process_time()
        try:
            audio.check_speech(signal, decoded.sampling_rate)
        except audio.AudioError:
            lost += 1
        check_seconds += time.process_time() - started
        if index % 10 == 0:
            # openSMILE on every tenth file is enough for the ratio.
            resampled = audio.resample(signal, decoded.sampling_rate, audio.DEFAULT_ANALYSIS_RATE)
            started = time.process_time()
            extractor.extract(resampled, audio.DEFAULT_ANALYSIS_RATE)
            extract_seconds += time.process_time() - started
            timed += 1
    return pd.Series({
        "real files": len(files),
        "taken for no speech": lost,
        "check CPU s per file": check_seconds / len(files),
        "openSMILE CPU s per file": extract_seconds / timed,
        "check / openSMILE": (check_seconds / len(files)) / (extract_seconds / timed),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=str(ROOT.parent / "shared" / "corpora"))
    parser.add_argument("--files", type=int, default=24, help="utterances sampled for the feature comparisons (half from each corpus)")
    args = parser.parse_args()
    corpora = Path(args.corpora)
    extractor = FeatureExtractor("is10")
    files = sample(corpora, args.files)
    with pd.option_context("display.width", 200, "display.max_columns", 10, "display.float_format", "{:.4g}".format):
        print(f"One analysis rate ({len(files)} utterances, medians over them):\n{analysis_rate(files, extractor).to_string()}\n")
        print(f"DC offset and float scale:\n{dc_and_scale(files, extractor).to_string()}\n")
        print(f"Channel choice:\n{channels(corpora).to_string()}\n")
        print(f"No-speech rule:\n{no_speech(corpora, extractor).to_string()}")


if __name__ == "__main__":
    main()
