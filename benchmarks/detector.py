"""Benchmark: what the speech detector of ``--segment speech`` costs per hour of audio.

Stitches real RAVDESS utterances (or, for stereo, EMOVO's) with 1.5 s of
quiet room noise between them into a recording of ``--minutes`` minutes,
writes it as 16-bit WAV at 16 kHz mono and at 48 kHz stereo, and times
:func:`crossemo.segments.speech_windows` on each (CPU seconds of this
process, the detector on one torch thread, as in a labelling task, after
importing torch and silero once), and
decoding the file alone for comparison. Prints CPU seconds per hour of
audio, the windows found against the utterances stitched in, and how many
utterances no window overlaps (missed) or several do (split at a pause):

    python benchmarks/detector.py [--corpora ../shared/corpora] [--minutes 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal as dsp

from crossemo import audio, segments

ROOT = Path(__file__).resolve().parents[1]
GAP = 1.5
"""Seconds of room noise between two utterances."""


def utterances(corpus: Path, *, channels: int) -> list[np.ndarray]:
    """The corpus's utterances with ``channels`` channels, as float frames at 48 kHz, in name order."""
    found = []
    for path in sorted(corpus.rglob("*.flac")):
        frames, rate = sf.read(path, dtype="float32", always_2d=True)
        if rate == 48000 and frames.shape[1] == channels:
            found.append(frames)
    return found


def recording(pool: list[np.ndarray], *, seconds: float, seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Utterances from ``pool`` in turn, each after ``GAP`` s of noise at −60 dBFS, until ``seconds`` of 48 kHz audio; and each utterance's (start, end) in seconds."""
    rng = np.random.default_rng(seed)
    parts, spans, length = [], [], 0
    while length < seconds * 48000:
        noise = (rng.standard_normal((int(GAP * 48000), pool[0].shape[1])) * 1e-3).astype(np.float32)
        utterance = pool[len(spans) % len(pool)]
        parts += [noise, utterance]
        spans.append(((length + len(noise)) / 48000, (length + len(noise) + len(utterance)) / 48000))
        length += len(noise) + len(utterance)
    return np.concatenate(parts), spans


def windows_per_utterance(windows: list[segments.Window], spans: list[tuple[float, float]]) -> np.ndarray:
    """How many of the detector's windows overlap each stitched utterance (0: missed; 2 or more: split at a pause)."""
    return np.array([sum(w.start < end and w.end > start for w in windows) for start, end in spans])


def cpu_seconds(work) -> tuple[float, object]:
    """The CPU seconds ``work()`` took in this process, and what it returned."""
    started = time.process_time()
    result = work()
    return time.process_time() - started, result


def decode(path: Path) -> None:
    """Read the file block by block as the detector does, and nothing more."""
    with audio.open_stream(str(path)) as stream:
        for _ in stream.blocks():
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    seconds = args.minutes * 60
    cases = {
        "16 kHz mono": (utterances(args.corpora / "ravdess", channels=1), 16000),
        "48 kHz stereo": (utterances(args.corpora / "emovo", channels=2), 48000),
    }
    print(f"{args.minutes:g} min of stitched utterances per case; CPU seconds of one core, scaled to one hour of audio\n")
    print("| audio | detector, whole | decoding alone | windows found / utterances | missed | split |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="crossemo-detector-") as folder:
        # Once before timing: importing torch and silero is paid once per worker process, not per hour.
        warm_up = Path(folder) / "warm-up.wav"
        sf.write(warm_up, cases["16 kHz mono"][0][0], 48000, subtype="PCM_16")
        with audio.open_stream(str(warm_up)) as stream:
            list(segments.speech_windows(stream))
        for name, (pool, rate) in cases.items():
            frames, spans = recording(pool, seconds=seconds)
            if rate != 48000:
                frames = dsp.resample_poly(frames, rate, 48000, axis=0).astype(np.float32)
            path = Path(folder) / f"{rate}-{frames.shape[1]}.wav"
            sf.write(path, frames, rate, subtype="PCM_16")
            hours = len(frames) / rate / 3600

            def detect(path: Path = path) -> list:
                with audio.open_stream(str(path)) as stream:
                    return list(segments.speech_windows(stream))

            detect_seconds, windows = cpu_seconds(detect)
            decode_seconds, _ = cpu_seconds(lambda path=path: decode(path))
            found = windows_per_utterance(windows, spans)
            print(
                f"| {name} | {detect_seconds / hours:.1f} s | {decode_seconds / hours:.1f} s | {len(windows)} / {len(spans)} "
                f"| {(found == 0).sum()} | {(found > 1).sum()} |"
            )


if __name__ == "__main__":
    main()
