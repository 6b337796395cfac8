"""Benchmark: feature extraction on the shared EMOVO and RAVDESS.

Measures, on this machine:

1. a plain in-process openSMILE loop over every file (read, the decode rules
   of :func:`crossemo.audio.prepare`, extract), timing each file: the sum is
   the work there is to do; and the same loop without the decode rules (each
   file at its own rate), to show what the rules cost or save. The loop runs
   as one process per CPU side by side, each over its share of the files, so
   that no file has an idle CPU beside it, as in the Ray run;
2. Ray's start-up: :func:`crossemo.orchestration.connect` (local Ray with
   ``--cpus`` CPUs), then :func:`crossemo.orchestration.prestart` inside the
   extraction (each worker imports the extraction code);
3. the Ray extraction into a fresh feature store (cold): the extraction
   phase, from reading the cache to the written store, without the start-up;
4. the same extraction again with Ray shut down (warm: everything comes from
   the cache, so Ray must not start; the benchmark fails if it does).

The plain loop and the cold run (Ray started for it and shut down after)
are taken ``--repeats`` times in turns and the figures are medians: on a
shared machine the same loop's CPU seconds move by 10 % and more within
minutes.

It prints utterances per second,

    efficiency = Σ in-process openSMILE time per file ÷ (cold wall time × worker CPUs)

for the extraction phase alone and with Ray's start-up, the warm speed-up
(cold ÷ warm, both ways), and where the extraction phase's time went, from
each task's start and end in its worker: before the first task (the driver
reading the cache and planning the shards), between the first start and the
last end (CPU-seconds the workers idled; the tail after the first worker ran
out of work) and after the last task (writing the store). Two figures tell
a disturbed run, to be repeated: the plain loops' CPU seconds well below
their summed wall seconds, and more than a few CPU-seconds of other
processes (what the rest of the machine used) during a loop or a cold phase.

Targets: extraction-phase efficiency ≥ 0.95 on 2 cores; the warm run ≥ 30×
faster than the cold one.

    python benchmarks/extraction.py [--corpora ../shared/corpora] [--cpus 2] [--feature-set is10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import ray

from crossemo import audio, corpora, featurestore, orchestration
from crossemo.features import FeatureExtractor

ROOT = Path(__file__).resolve().parents[1]


def plain_loop(uris: list[str], feature_set: str, rules: bool) -> tuple[float, float]:
    """Seconds of in-process work per file, summed: read, decode and openSMILE, one file after another.

    Args:
        uris: the files.
        feature_set: the feature set.
        rules: apply every decode rule (analysis rate …); else decode to mono
            and extract at the file's own rate.

    Returns:
        ``(wall seconds per file summed, CPU seconds of the loop)``: the two
        differ when other processes took the loop's CPU.
    """
    extractor = FeatureExtractor(feature_set)
    total, cpu = 0.0, time.process_time()
    for uri in uris:
        started = time.perf_counter()
        data = audio.read(uri)
        if rules:
            analysis = audio.prepare(data)
            extractor.extract(analysis.signal, analysis.sampling_rate)
        else:
            extractor.extract(*audio.decode(data))
        total += time.perf_counter() - started
    return total, time.process_time() - cpu


def side_by_side(uris: list[str], feature_set: str, *, rules: bool = True, processes: int) -> tuple[float, float, float]:
    """:func:`plain_loop` in ``processes`` processes at once, each over every ``processes``-th file.

    Returns:
        the loops' summed wall and CPU seconds, and the CPU-seconds other
        processes of the machine used meanwhile.
    """
    machine, own = machine_cpu_seconds(), own_cpu_seconds()
    # Fresh interpreters: a process forked from a driver connected to Ray
    # inherits its state (and its SIGTERM handler) and ran ~15 % slower here.
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        loops = pool.starmap(plain_loop, [(uris[start::processes], feature_set, rules) for start in range(processes)])
    others = (machine_cpu_seconds() - machine) - (own_cpu_seconds() - own)  # the loops, ended and reaped, count as this process's
    return sum(wall for wall, _ in loops), sum(cpu for _, cpu in loops), others


def own_cpu_seconds() -> float:
    """CPU seconds of this process and every process it started (Ray's among them)."""
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def machine_cpu_seconds() -> float:
    """CPU seconds every process of the machine has used since boot."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq + times.steal


def where_the_time_went(timings: list[orchestration.TaskTiming], phase_started: float, phase_ended: float, cpus: int) -> dict[str, float]:
    """Split the extraction phase (wall clock, seconds) by what the workers did.

    Returns:
        seconds before the first task, between the first start and the last
        end, and after the last task; the CPU-seconds workers idled between
        the first start and the last end; and the tail: from the moment the
        first worker found no more work to the last end.
    """
    first, last = min(t.started for t in timings), max(t.finished for t in timings)
    busy = sum(t.finished - t.started for t in timings)
    by_worker: dict[str, float] = {}
    for timing in timings:
        by_worker[timing.worker] = max(by_worker.get(timing.worker, 0.0), timing.finished)
    return {
        "tasks": len(timings),
        "task wall seconds, summed": round(busy, 1),
        "task CPU seconds, summed": round(sum(t.cpu_seconds for t in timings), 1),
        "before the first task (s)": round(first - phase_started, 2),
        "first task start to last task end (s)": round(last - first, 2),
        "after the last task: writing the store (s)": round(phase_ended - last, 2),
        "worker CPU-seconds idle between first start and last end": round((last - first) * cpus - busy, 2),
        "tail: first worker out of work to last task end (s)": round(last - min(by_worker.values()), 2),
    }


def cold_run(manifests: list[corpora.Manifest], store: featurestore.FeatureStore, feature_set: str) -> tuple[orchestration.ExtractionSummary, float, float, dict[str, float]]:
    """One extraction into a fresh feature store.

    Returns:
        the summary, the extraction phase's wall seconds (without its start-up),
        the CPU-seconds other processes of the machine used meanwhile, and
        where the phase went (see :func:`where_the_time_went`).
    """
    machine, own = machine_cpu_seconds(), own_cpu_seconds()
    started, started_clock = time.perf_counter(), time.time()
    summary = orchestration.extract_features(manifests, store, feature_set=feature_set, progress=False)
    wall, ended = time.perf_counter() - started - summary.startup_seconds, time.time()
    others = (machine_cpu_seconds() - machine) - (own_cpu_seconds() - own)
    return summary, wall, others, where_the_time_went(summary.timings, started_clock + summary.startup_seconds, ended, orchestration.cluster_cpus())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=str(ROOT.parent / "shared" / "corpora"))
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--feature-set", default="is10")
    parser.add_argument("--repeats", type=int, default=3, help="plain loops and cold runs, taken in turns; the figures are medians")
    args = parser.parse_args()

    manifests = [corpora.prepare("emovo", f"{args.corpora}/emovo"), corpora.prepare("ravdess", f"{args.corpora}/ravdess")]
    uris = [uri for manifest in manifests for uri in manifest.utterances["uri"]]
    own_rate_seconds, _, _ = side_by_side(uris, args.feature_set, rules=False, processes=args.cpus)
    loops, connects, colds, warms = [], [], [], []
    with tempfile.TemporaryDirectory() as out:
        for repeat in range(args.repeats):
            loops.append(side_by_side(uris, args.feature_set, processes=args.cpus))
            started = time.perf_counter()
            orchestration.connect(num_cpus=args.cpus)
            connects.append(time.perf_counter() - started)
            cpus = orchestration.cluster_cpus()
            store = featurestore.FeatureStore(f"{out}/{repeat}")
            colds.append(cold_run(manifests, store, args.feature_set))
            ray.shutdown()
        for _ in range(args.repeats):
            started = time.perf_counter()
            warm = orchestration.extract_features(manifests, store, feature_set=args.feature_set, progress=False)
            warms.append(time.perf_counter() - started)
            if ray.is_initialized() or warm.extracted:
                raise SystemExit("the warm run extracted files or started Ray although everything was cached")
    startups = [connecting + summary.startup_seconds for connecting, (summary, _, _, _) in zip(connects, colds)]
    startup = statistics.median(startups)

    loop_seconds = statistics.median(wall for wall, _, _ in loops)
    cold_wall = statistics.median(wall for _, wall, _, _ in colds)
    warm_wall = statistics.median(warms)
    median_run = sorted(colds, key=lambda run: run[1])[len(colds) // 2]
    print(pd.Series({
        "files": len(uris),
        "rows x columns per corpus": {corpus: frame.shape for corpus, frame in colds[0][0].features.items()},
        "worker CPUs": cpus,
        "same loop at each file's own rate, no decode rules": round(own_rate_seconds, 1),
        "plain loop (one per CPU), sum of per-file seconds, each repeat": [round(wall, 1) for wall, _, _ in loops],
        "the loops' CPU seconds (far below the sum: disturbed)": [round(cpu, 1) for _, cpu, _ in loops],
        "CPU-seconds of other processes during each loop": [round(others, 1) for _, _, others in loops],
        "Ray start-up seconds (connect + workers ready), each repeat": [f"{c + run[0].startup_seconds:.2f} = {c:.2f} + {run[0].startup_seconds:.2f}" for c, run in zip(connects, colds)],
        "cold extraction phase wall seconds, each repeat": [round(wall, 1) for _, wall, _, _ in colds],
        "CPU-seconds of other processes during each cold phase": [round(others, 1) for _, _, others, _ in colds],
        "plain loop, median": round(loop_seconds, 1),
        "Ray start-up, median": round(startup, 2),
        "cold extraction phase, median": round(cold_wall, 1),
        "cold utterances per second (phase)": round(len(uris) / cold_wall, 1),
        "efficiency, extraction phase (target >= 0.95)": round(loop_seconds / (cold_wall * cpus), 3),
        "efficiency with Ray's start-up": round(loop_seconds / ((startup + cold_wall) * cpus), 3),
        "warm re-run wall seconds (Ray not started), median": round(warm_wall, 2),
        "warm speed-up, extraction phase (target >= 30x)": round(cold_wall / warm_wall, 1),
        "warm speed-up with Ray's start-up": round((startup + cold_wall) / warm_wall, 1),
    }).to_string())
    print("\nwhere the median cold extraction phase went:")
    print(pd.Series(median_run[3]).to_string())


if __name__ == "__main__":
    main()
