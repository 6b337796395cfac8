"""Benchmark: feature extraction on the shared EMOVO and RAVDESS.

Measures, in one run on this machine:

1. a plain in-process openSMILE loop over every file (read, the decode rules
   of :func:`crossemo.audio.prepare`, extract), timing each file: the sum is
   the work there is to do; and the same loop without the decode rules (each
   file at its own rate), to show what the rules cost or save;
2. the Ray extraction into a fresh feature store (cold);
3. the same extraction again (warm: everything comes from the cache).

and prints utterances per second and

    efficiency = Σ in-process openSMILE time per file ÷ (cold wall time × worker CPUs)

Targets: efficiency ≥ 0.90 on 2 cores; the warm run ≥ 20× faster than the cold one.

    python benchmarks/extraction.py [--corpora ../shared/corpora] [--cpus 2] [--feature-set is10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from crossemo import audio, corpora, featurestore, orchestration
from crossemo.features import FeatureExtractor

ROOT = Path(__file__).resolve().parents[1]


def plain_loop(manifests: list[corpora.Manifest], feature_set: str, *, rules: bool = True) -> float:
    """Seconds of in-process work per file, summed: read, decode and openSMILE, one file after another.

    Args:
        rules: apply every decode rule (analysis rate …); else decode to mono
            and extract at the file's own rate.
    """
    extractor = FeatureExtractor(feature_set)
    total = 0.0
    for manifest in manifests:
        for uri in manifest.utterances["uri"]:
            started = time.perf_counter()
            data = audio.read(uri)
            if rules:
                analysis = audio.prepare(data)
                extractor.extract(analysis.signal, analysis.sampling_rate)
            else:
                extractor.extract(*audio.decode(data))
            total += time.perf_counter() - started
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=str(ROOT.parent / "shared" / "corpora"))
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--feature-set", default="is10")
    args = parser.parse_args()

    manifests = [corpora.prepare("emovo", f"{args.corpora}/emovo"), corpora.prepare("ravdess", f"{args.corpora}/ravdess")]
    files = sum(len(m.utterances) for m in manifests)
    orchestration.connect(num_cpus=args.cpus)
    cpus = orchestration.cluster_cpus()

    loop_seconds = plain_loop(manifests, args.feature_set)
    own_rate_seconds = plain_loop(manifests, args.feature_set, rules=False)
    with tempfile.TemporaryDirectory() as out:
        store = featurestore.FeatureStore(out)
        started = time.perf_counter()
        cold = orchestration.extract_features(manifests, store, feature_set=args.feature_set, progress=False)
        cold_wall = time.perf_counter() - started
        started = time.perf_counter()
        warm = orchestration.extract_features(manifests, store, feature_set=args.feature_set, progress=False)
        warm_wall = time.perf_counter() - started
        rows = {corpus: frame.shape for corpus, frame in cold.features.items()}

    print(pd.Series({
        "files": files,
        "rows x columns per corpus": rows,
        "worker CPUs": cpus,
        "plain loop, sum of per-file seconds": round(loop_seconds, 1),
        "same loop at each file's own rate, no decode rules": round(own_rate_seconds, 1),
        "cold extraction wall seconds": round(cold_wall, 1),
        "cold utterances per second": round(files / cold_wall, 1),
        "efficiency (target >= 0.90)": round(loop_seconds / (cold_wall * cpus), 3),
        "warm re-run wall seconds": round(warm_wall, 2),
        "warm speed-up (target >= 20x)": round(cold_wall / warm_wall, 1),
        "warm files extracted": warm.extracted,
    }).to_string())


if __name__ == "__main__":
    main()
