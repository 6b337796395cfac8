"""Benchmark: where ``crossemo predict``'s driver memory goes, stage by stage, on the synthetic load.

Labels N synthetic files (the demo's tones, 0.5 s each, 10 speakers per
corpus) with a model bundle on local Ray, from a fresh store and output, and
prints the driver's resident memory before each stage of
:func:`crossemo.orchestration.label_files`, its peak during the stage
(sampled every 50 ms) and after it, plus the memory of the list of files
itself and the most Python objects held during extraction (``tracemalloc``):

    python benchmarks/driver_memory.py --model MODEL [--files 20000] [--work DIR]

``benchmarks/predict.py`` gives the peak at two sizes; this says which stage
grows with the number of files.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import tracemalloc
from pathlib import Path

import psutil

from crossemo import audio, bundle, featurestore, inputs, orchestration, prediction
from crossemo.features import FeatureExtractor
from crossemo.synthetic import make_demo_corpora
from predict import DriverMemory  # benchmarks/ is on the path when this runs as a script


def resident() -> int:
    """This process's resident memory now, in bytes."""
    return psutil.Process().memory_info().rss


STAGES = [
    (prediction, "read_parts"), (prediction, "plan_shards"), (featurestore.FeatureCache, "scan"), (orchestration, "run_sharded"),
    (featurestore, "update_fingerprints"), (orchestration, "extract_files"), (orchestration, "_gather"),
]


def watch(memory: DriverMemory, owner: object, name: str) -> None:
    """Print the resident memory around every call of ``owner.name``."""
    function = getattr(owner, name)

    @functools.wraps(function)
    def watched(*args, **kwargs):
        before = memory.reset()
        if name == "run_sharded":
            tracemalloc.start()
        try:
            return function(*args, **kwargs)
        finally:
            held = ""
            if name == "run_sharded":
                held = f"; Python objects at most {tracemalloc.get_traced_memory()[1] / 2**20:.0f} MB"
                tracemalloc.stop()
            print(f"{name:<22} before {before / 2**20:5.0f} MB  peak {memory.peak / 2**20:5.0f} MB  after {resident() / 2**20:5.0f} MB{held}", flush=True)

    setattr(owner, name, watched)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a bundle made by crossemo train")
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--work", help="where the synthetic files go (default: a temporary folder, removed after)")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="crossemo-driver-"))
    memory = DriverMemory(interval=0.05).__enter__()
    for owner, name in STAGES:
        watch(memory, owner, name)
    orchestration.connect(num_cpus=args.cpus)
    try:
        manifests = make_demo_corpora(work / "corpora", speakers=10, per_emotion=max(1, args.files // (2 * 10 * 4)), seconds=0.5, seed=args.files)
        loaded = bundle.load_bundle(args.model)
        decode = loaded.metadata["decode"]
        settings = audio.AnalysisSettings(**{name: decode[name] for name in ("analysis_rate", "channel", "min_duration")})
        started = memory.reset()
        listing = inputs.list_inputs([str(path.parent) for path in manifests.values()], speaker_pattern=r"/(?P<speaker>[sp]\d+)/")
        print(f"{len(listing.files)} files listed: the list holds {listing.files.memory_usage(deep=True).sum() / 2**20:.1f} MB; resident {started / 2**20:.0f} MB before", flush=True)
        summary = orchestration.label_files(
            listing, loaded, args.model, str(work / "labels"), store=featurestore.FeatureStore(str(work / "store")),
            extractor=FeatureExtractor(loaded.metadata["feature_set"]), settings=settings, progress=False,
        )
        print(f"{summary.labelled} labelled in {summary.wall_seconds:.1f} s; resident {resident() / 2**20:.0f} MB after (+{(resident() - started) / 2**20:.0f} MB)")
    finally:
        memory.__exit__(None, None, None)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
