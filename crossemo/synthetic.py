"""A small synthetic two-corpus set for the demo and for tests of the pipeline.

The signals are not speech: each utterance is a harmonic tone whose pitch,
loudness and syllable rate depend on the emotion and the speaker, with noise.
The two corpora differ in microphone gain, noise and band-width, the way real
corpora differ in recording. Its numbers mean nothing about emotion
recognition; it exists so the whole pipeline can run with no data at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from crossemo.labels import EMOTIONS

# How each emotion shifts pitch (ratio), loudness (gain) and syllable rate (Hz).
_EMOTION_SHAPE = {
    "neutral": (1.00, 0.30, 3.0),
    "anger": (1.25, 0.80, 5.0),
    "joy": (1.40, 0.55, 4.5),
    "sadness": (0.85, 0.18, 2.0),
}
# How each corpus was "recorded": gain, noise level, low-pass strength.
_RECORDING = {"synth_studio": (1.0, 0.005, 1), "synth_phone": (0.6, 0.03, 6)}


def _utterance(rng: np.random.Generator, *, base_pitch: float, emotion: str, recording: tuple[float, float, int], rate: int, seconds: float) -> np.ndarray:
    pitch_ratio, loudness, syllables = _EMOTION_SHAPE[emotion]
    gain, noise, smoothing = recording
    t = np.arange(int(seconds * rate)) / rate
    pitch = base_pitch * pitch_ratio * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = np.clip(np.sin(np.pi * syllables * t + rng.uniform(0, 3)), 0, None) ** 2
    signal = gain * loudness * rng.uniform(0.8, 1.2) * voice * envelope + noise * rng.standard_normal(len(t))
    if smoothing > 1:
        signal = np.convolve(signal, np.ones(smoothing) / smoothing, mode="same")
    return (0.9 * signal / max(1.0, np.abs(signal).max())).astype(np.float32)


def make_demo_corpora(root: str | Path, *, speakers: int = 4, per_emotion: int = 5, seconds: float = 1.0, rate: int = 16000, seed: int = 0) -> dict[str, Path]:
    """Write two synthetic corpora as WAV files with a manifest CSV each.

    Idempotent: an existing corpus with the same files is left as it is.

    Args:
        root: folder to write into.
        speakers: speakers per corpus.
        per_emotion: utterances per speaker and emotion.
        seconds: length of each utterance.
        rate: sampling rate.
        seed: random seed; the same seed writes the same bytes.

    Returns:
        the manifest CSV path per corpus name.
    """
    root = Path(root)
    manifests = {}
    for index, (corpus, recording) in enumerate(_RECORDING.items()):
        rng = np.random.default_rng(seed + index)
        folder = root / corpus
        rows = []
        for s in range(speakers):
            speaker = f"{corpus.split('_')[1][0]}{s + 1:02d}"
            base_pitch = rng.uniform(95, 230)
            for emotion in EMOTIONS:
                for n in range(per_emotion):
                    relative = f"{speaker}/{emotion}_{n:02d}.wav"
                    signal = _utterance(rng, base_pitch=base_pitch, emotion=emotion, recording=recording, rate=rate, seconds=seconds)
                    path = folder / relative
                    if not path.exists():
                        path.parent.mkdir(parents=True, exist_ok=True)
                        sf.write(path, signal, rate, subtype="PCM_16")
                    rows.append({"path": relative, "speaker": speaker, "emotion": emotion})
        manifest = folder / f"{corpus}.csv"
        pd.DataFrame(rows).to_csv(manifest, index=False)
        manifests[corpus] = manifest
    return manifests
