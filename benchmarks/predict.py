"""Benchmark: labelling audio with a trained model (``crossemo predict``), and what its speaker fallback costs.

Measures, in one process on local Ray:

1. **Throughput on the 1007 shared files.** Ray's start-up, then the cold
   feature extraction of the shared EMOVO and RAVDESS into a fresh store
   (what ``crossemo features`` does), then a model trained on both with the
   recommended method (target RAVDESS; features from that store), then
   ``predict`` on the same 1007 files into a fresh output *and a fresh
   store* (cold: it extracts everything again, then labels). The target:
   predicting costs at most 10 % more wall time than extraction alone. Then
   ``predict`` again into a fresh output with the now warm store (files per
   second warm), and once more into the same output (nothing to do: Ray is
   not even needed).
2. **Driver memory at two sizes** of the synthetic load (the demo's tones,
   0.5 s each, 10 speakers per corpus): the driver's peak resident memory,
   and its private part, while it labels N files, each size in a fresh
   process (``benchmarks/driver_memory.py``). The target: it does not grow
   with the number of files.
3. **The cost of the speaker fallback.** Without a speaker column or a
   ``--speaker-pattern``, methods that normalise each speaker by their own
   recordings normalise a whole input as one batch. On both shared pairs,
   for every target speaker A: the recommended method trained on the source
   and A, its UAR on the other target speakers normalised per speaker (as an
   evaluation does) and as one batch; the mean over folds, its spread, and the
   paired difference with its 95 % bootstrap interval.

    python benchmarks/predict.py [--corpora ../shared/corpora] [--cpus 2] [--sizes 5000,20000] [--work DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from crossemo import audio, bundle, cli, corpora, featurestore, inputs, methods, metrics, orchestration, pipeline, protocol, training
from crossemo.features import FeatureExtractor

ROOT = Path(__file__).resolve().parents[1]
SHARED_SPEAKERS = r"/(?P<speaker>[fm]\d|Actor_\d+)/"


def label(model: str, audio_uris: list[str], out: Path, store: Path, pattern: str) -> orchestration.LabellingSummary:
    """``crossemo predict`` as the CLI runs it, on the already connected Ray."""
    loaded = bundle.load_bundle(model)
    decode = loaded.metadata["decode"]
    settings = audio.AnalysisSettings(**{name: decode[name] for name in ("analysis_rate", "channel", "min_duration")})
    listing = inputs.list_inputs(audio_uris, speaker_pattern=pattern)
    return orchestration.label_files(
        listing, loaded, model, str(out), store=featurestore.FeatureStore(str(store)), extractor=FeatureExtractor(loaded.metadata["feature_set"]),
        settings=settings, progress=False,
    )


def throughput(shared: Path, work: Path, cpus: int) -> tuple[str, Path]:
    started = time.perf_counter()
    orchestration.connect(num_cpus=cpus)
    ray_start = time.perf_counter() - started
    manifests = [corpora.prepare(name, str(shared / name)) for name in ("emovo", "ravdess")]
    files = sum(len(m.utterances) for m in manifests)
    store = work / "store-extraction"
    extraction = orchestration.extract_features(manifests, featurestore.FeatureStore(str(store)), progress=False)
    model = work / "model"
    trained = time.perf_counter()
    assert cli.main(["train", "--corpus", f"emovo={shared / 'emovo'}", "--corpus", f"ravdess={shared / 'ravdess'}", "--target", "ravdess", "--store", str(store), "--out", str(model), "--no-progress"]) == 0
    training_seconds = time.perf_counter() - trained
    audio_uris = [str(shared / "emovo"), str(shared / "ravdess")]
    cold = label(str(model), audio_uris, work / "labels-cold", work / "store-predict", SHARED_SPEAKERS)
    warm = label(str(model), audio_uris, work / "labels-warm", work / "store-predict", SHARED_SPEAKERS)
    again = label(str(model), audio_uris, work / "labels-warm", work / "store-predict", SHARED_SPEAKERS)
    rows = {
        "files": files,
        "Ray start-up, s": ray_start,
        "extraction alone (cold), s": extraction.wall_seconds,
        "training the bundle (features cached), s": training_seconds,
        "predict cold (extraction + labelling), s": cold.wall_seconds,
        "predict cold, files/s": files / cold.wall_seconds,
        "predict cost over extraction alone, %": 100 * (cold.wall_seconds / extraction.wall_seconds - 1),
        "predict warm (features cached, new output), s": warm.wall_seconds,
        "predict warm, files/s": files / warm.wall_seconds,
        "predict again (every shard done), s": again.wall_seconds,
        "labelled / not usable": f"{cold.labelled} / {cold.rejected}",
    }
    print("\n".join(f"{name:<52}{value:.2f}" if isinstance(value, float) else f"{name:<52}{value}" for name, value in rows.items()))
    return str(model), store


def driver_memory(model: str, work: Path, sizes: list[int], cpus: int) -> None:
    """The driver's peak memory at each size, each labelled by ``driver_memory.py`` in a fresh process (no size inherits another's heap)."""
    for size in sizes:
        run = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("driver_memory.py")), "--model", model, "--files", str(size), "--cpus", str(cpus), "--work", str(work / f"synthetic-{size}")],
            capture_output=True, text=True, check=True,
        )
        lines = run.stdout.strip().splitlines()
        print(f"{size} synthetic files: {lines[-1]}")
        waves = [line.split("; ", 1)[1] for line in lines if line.startswith("extract_files") and "; " in line]
        if waves:
            print(f"  allocators after the first wave: {waves[0]}; after the last ({len(waves)}): {waves[-1]}")
        shutil.rmtree(work / f"synthetic-{size}", ignore_errors=True)


def speaker_fallback(store: Path) -> None:
    datasets = pipeline.datasets_from(featurestore.load_features(str(store / "features")))
    choice = training.choose(None, results=None, source="x", target="y")
    for source_name, target_name in (("emovo", "ravdess"), ("ravdess", "emovo")):
        source, target = datasets[source_name], datasets[target_name]
        classes = protocol.target_classes(target.y)
        per_speaker, batch = [], []
        for speaker in target.speaker_ids():
            held_in = target.speakers == speaker
            only = protocol.Dataset(target.corpus, target.X[held_in], target.y[held_in], target.speakers[held_in], target.uris[held_in], target.content[held_in], target.digest)
            model = training.fit(choice, source=source, target=only, seed=0)
            X, y = target.X[~held_in], target.y[~held_in]
            per_speaker.append(protocol.score(y, np.asarray(model.predict(X, speakers=target.speakers[~held_in])).astype(str), classes=classes)[1])
            batch.append(protocol.score(y, np.asarray(model.predict(X, speakers=np.full(len(y), "batch"))).astype(str), classes=classes)[1])
        per_speaker, batch = np.array(per_speaker) * 100, np.array(batch) * 100
        low, high = metrics.paired_interval(batch - per_speaker)
        print(
            f"{source_name} → {target_name} ({methods.RECOMMENDED}, {len(batch)} folds): UAR per speaker {per_speaker.mean():.1f} ± {per_speaker.std(ddof=1):.1f}, "
            f"one batch {batch.mean():.1f} ± {batch.std(ddof=1):.1f}; fallback − per speaker {np.mean(batch - per_speaker):+.1f} pp [{low:+.1f}, {high:+.1f}]"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=str(ROOT.parent / "shared" / "corpora"))
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--sizes", default="5000,20000", help="synthetic loads for the driver's memory, comma-separated (empty: skip)")
    parser.add_argument("--work", help="working folder (default: a temporary one, removed at the end)")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="crossemo-predict-"))
    try:
        model, store = throughput(Path(args.corpora), work, args.cpus)
        print()
        speaker_fallback(store)
        sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
        if sizes:
            print()
            ray.shutdown()  # the measured drivers start Ray of their own
            driver_memory(model, work, sizes, args.cpus)
    finally:
        ray.shutdown()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
