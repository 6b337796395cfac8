"""Benchmark: the study's full grid on the shared EMOVO and RAVDESS.

Both pairs (EMOVO→RAVDESS and RAVDESS→EMOVO), every method, every held-out
speaker fold, with the study's settings. Prints the total wall time, the
number of model fits against the minimum the protocol needs, and

    grid efficiency = Σ task CPU time ÷ (evaluation wall time × CPUs)

(target ≥ 0.85 on 2 cores); how much task CPU the methods added after the
study's grid (crossemo's adaptation methods and the target-only twins) cost
against the grid as it was (the study's methods and ``speaker_norm``), both
measured in this run (target ≤ 30 % more); the recommended method's mean UAR
gain over the Baseline RF; a digest of every report table and the verdict
(two independent runs must print the same); then Tables 2 and 3 in accuracy
and UAR, and the verdict.

    python benchmarks/grid.py [--corpora ../shared/corpora] [--out DIR] [--cpus 2] [--methods all] [--seeds N]

With ``--seeds N`` every stochastic method runs under N seeds, and the
spread over seeds of every Table 3 cell (UAR, mean over folds) is printed.

A second run with the same --out reuses every feature and every result.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import pandas as pd

from crossemo import methods, metrics, orchestration, pipeline, protocol
from crossemo.report import tables as report_tables

ROOT = Path(__file__).resolve().parents[1]


EARLIER_GRID = {*protocol.BASELINES, *protocol.STUDY_METHODS, "speaker_norm"}
"""The methods of the grid before the adaptation methods and twins were added (in scenarios 1 and 3; scenario 2 ran the baselines only)."""


def minimum_fits(datasets: dict[str, protocol.Dataset], pairs: list[tuple[str, str]], methods: list[str]) -> int:
    """Fits the protocol cannot do without: scenario 2 per target, scenario 1 per pair, scenario 3 per fold and method, one fcnn source network per source."""
    targets = {t for _, t in pairs}
    twins = [m for m in protocol.TARGET_ONLY_METHODS if m in methods]
    scenario2 = sum((len(protocol.BASELINES) + len(twins)) * len(datasets[t].speaker_ids()) for t in targets)
    per_pair = sum(1 + len([m for m in methods if m != "majority"]) * len(datasets[t].speaker_ids()) for _, t in pairs)
    sources = len({s for s, _ in pairs}) if "fcnn" in methods else 0
    return scenario2 + per_pair + sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=str(ROOT.parent / "shared" / "corpora"))
    parser.add_argument("--out", default=str(ROOT / "out" / "grid"))
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--methods", default="all")
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()

    config = pipeline.RunConfig(
        out=args.out,
        corpora=[pipeline.CorpusSpec("emovo", f"{args.corpora}/emovo"), pipeline.CorpusSpec("ravdess", f"{args.corpora}/ravdess")],
        methods=args.methods,
        seeds=args.seeds,
        progress=False,
    )
    orchestration.connect(num_cpus=args.cpus)
    started = time.perf_counter()
    record, extraction, tables = pipeline.run(config)
    total = time.perf_counter() - started
    datasets = pipeline.datasets_from(extraction.features)
    datasets, pairs, _, _ = pipeline.plan_evaluation(datasets, config)
    cpus = orchestration.cluster_cpus()
    wall = record.timings["evaluation_wall_seconds"]
    cpu = record.timings["evaluation_task_cpu_seconds"]
    print(pd.Series({
        "run id": record.run_id,
        "total wall seconds (features + grid)": round(total, 1),
        "evaluation wall seconds": round(wall, 1),
        "tasks (reused from earlier runs)": f"{record.counts['tasks']} ({record.counts['tasks_reused']})",
        "model fits done": record.counts["fits"],
        "minimum fits the protocol needs": minimum_fits(datasets, pairs, protocol.parse_methods(args.methods)),
        "CPUs": cpus,
        "grid efficiency (target >= 0.85)": round(cpu / (wall * cpus), 3) if record.counts["tasks_reused"] < record.counts["tasks"] else "n/a (all reused)",
    }).to_string())
    results = pipeline.read_results(record.result_uris, storage_options=None)
    added = added_cost(results)
    verdict = tables["verdict"]
    print(pd.Series({
        "task CPU s of the earlier grid's methods": round(added["earlier"], 1),
        "task CPU s of the added methods and twins": round(added["added"], 1),
        "added cost (target <= 30 %)": f"{100 * added['added'] / added['earlier']:.1f} %" if added["earlier"] else "n/a",
        f"{methods.RECOMMENDED}: mean UAR gain over the Baseline RF, pp (target >= 15)": round(float(verdict["gain_vs_baseline"].mean()), 2) if len(verdict) else "n/a",
        "digest of the report tables and verdict": report_digest(Path(args.out) / "report"),
    }).to_string())
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        for name, table in tables.items():
            print(f"\n{name}:\n{table.to_string(index=False)}")
        if args.seeds > 1:
            print(f"\nspread over {args.seeds} seeds (sample sd, pp) of each cell's UAR:\n{seed_spread(record).to_string(index=False)}")


def added_cost(results: pd.DataFrame) -> dict[str, float]:
    """Σ task CPU seconds of the earlier grid's tasks and of the tasks added since (new methods, twins in scenario 2)."""
    tasks = results.drop_duplicates("key")
    earlier = tasks["method"].isin(EARLIER_GRID) & ((tasks["scenario"] != 2) | tasks["method"].isin(protocol.BASELINES))
    return {"earlier": float(tasks.loc[earlier, "cpu_seconds"].sum()), "added": float(tasks.loc[~earlier, "cpu_seconds"].sum())}


def report_digest(report: Path) -> str:
    """SHA-256 over every table CSV and the verdict, in name order: equal digests, identical tables."""
    hasher = hashlib.sha256()
    for path in sorted(report.glob("*.csv")):
        hasher.update(path.name.encode() + b"\0" + path.read_bytes())
    return hasher.hexdigest()[:16]


def seed_spread(record: pipeline.RunRecord) -> pd.DataFrame:
    """Per pair and Table 3 column, the sample sd over seeds of the cell's UAR (mean over folds)."""
    figures = report_tables.Figures.of(pipeline.read_results(record.result_uris, storage_options=None))
    rows = []
    for source, target in [tuple(p) for p in record.pairs]:
        s2 = figures.folds[(figures.folds["scenario"] == 2) & (figures.folds["target"] == target)]
        s3 = figures.folds[(figures.folds["scenario"] == 3) & (figures.folds["source"] == source) & (figures.folds["target"] == target)]
        cells = {"Baseline RF": s2[s2["method"] == "rf"], **{m: s3[s3["method"] == m] for m in sorted(set(s3["method"]))}}
        rows.append({"source": source, "target": target, **{
            name: round(metrics.sample_std(rows_.groupby("seed")["uar"].mean().to_numpy() * 100), 2) for name, rows_ in cells.items()
        }})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    main()
