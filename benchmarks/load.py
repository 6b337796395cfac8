"""Benchmark: 20,000 short synthetic utterances through extraction and evaluation.

Shows that extraction keeps memory bounded (the peak resident memory of every
Ray worker is sampled while it runs and printed), that the feature store holds
the result, and that the evaluation runs on it. The utterances are the demo's
synthetic tones (two corpora, 10 speakers each); the evaluation uses the
Random Forest baselines with 100 trees so the benchmark ends in minutes.

    python benchmarks/load.py [--utterances 20000] [--seconds 0.5] [--out DIR] [--cpus 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import psutil

from crossemo import orchestration, pipeline
from crossemo.synthetic import make_demo_corpora
from sampling import Sampler  # benchmarks/ is on the path when this runs as a script

ROOT = Path(__file__).resolve().parents[1]


class WorkerMemory(Sampler):
    """Samples the resident memory of Ray's worker processes in the background."""

    def __init__(self, interval: float = 0.5):
        super().__init__(interval)
        self.peaks: dict[int, int] = {}

    def sample(self) -> None:
        for process in psutil.process_iter(["pid", "name", "cmdline"]):
            try:
                command = " ".join(process.info["cmdline"] or [])
                if process.info["name"].startswith("ray::") or "default_worker.py" in command:
                    rss = process.memory_info().rss
                    self.peaks[process.pid] = max(self.peaks.get(process.pid, 0), rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue


def _peaks_mb(memory: WorkerMemory) -> str:
    """The workers' peaks in one line: how many processes were seen, the largest peak, and the two largest."""
    peaks = sorted((round(rss / 2**20) for rss in memory.peaks.values()), reverse=True)
    return f"{len(peaks)} processes, largest {peaks[:2]}" if peaks else "no worker seen"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--out", default=str(ROOT / "out" / "load"))
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()

    speakers = 10
    per_emotion = args.utterances // (2 * speakers * 4)
    started = time.perf_counter()
    manifests = make_demo_corpora(Path(args.out) / "corpora", speakers=speakers, per_emotion=per_emotion, seconds=args.seconds)
    generated = time.perf_counter() - started
    config = pipeline.RunConfig(
        out=str(Path(args.out) / "run"),
        corpora=[pipeline.CorpusSpec(recipe="manifest", uri=str(path)) for path in manifests.values()],
        methods="rf",
        method_params={"rf": {"n_estimators": 100}},
        progress=False,
    )
    orchestration.connect(num_cpus=args.cpus)
    # Two phases, each with its own memory samples: extraction alone, then the
    # evaluation (whose features are by then all in the cache).
    with WorkerMemory() as extraction_memory:
        features_record, extraction, _ = pipeline.run(config, evaluate=False)
    with WorkerMemory() as evaluation_memory:
        record, _, tables = pipeline.run(config)
    store = pd.read_parquet(Path(config.out) / "features")
    wall = features_record.timings["extraction_wall_seconds"]
    print(pd.Series({
        "files listed": 2 * speakers * 4 * per_emotion,
        "utterances": sum(len(f) for f in extraction.features.values()),
        "files rejected, by stage": dict(extraction.rejected["stage"].value_counts()) or 0,
        "files sharing their bytes with another": len(extraction.duplicates),
        "generation seconds": round(generated, 1),
        "Ray start-up seconds": round(extraction.startup_seconds, 1),
        "extraction wall seconds (start-up included)": round(wall, 1),
        "utterances per second": round(extraction.extracted / wall, 1) if extraction.extracted else "all cached",
        "efficiency: task CPU / (wall after start-up x CPUs)": round(extraction.task_cpu_seconds / ((wall - extraction.startup_seconds) * args.cpus), 2),
        "extraction: peak RSS per worker, MB (sorted)": _peaks_mb(extraction_memory),
        "feature store rows x columns": store.shape,
        "feature store MB in memory": round(store.memory_usage(deep=True).sum() / 2**20),
        "evaluation wall seconds": round(record.timings["evaluation_wall_seconds"], 1),
        "tasks": record.counts["tasks"],
        "evaluation: peak RSS per worker, MB (sorted)": _peaks_mb(evaluation_memory),
    }).to_string())
    print("\n" + tables["table2"].to_string(index=False))


if __name__ == "__main__":
    main()
