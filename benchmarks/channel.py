"""Benchmark: which channel rule makes the mono signal, measured with the study's RF on the shared corpora.

For each rule of ``--channel`` (``first``, ``loudest``, ``mean``) the whole
pipeline runs on EMOVO and RAVDESS, each rule in its own output folder
(``<out>/<rule>``), with the baselines only (majority and the study's Random
Forest, ``--methods rf``). Printed:

* one table, a row per rule: UAR in percent, mean over folds ± sample sd over
  folds, of scenario 1 and scenario 3 for both pairs (the four cross-corpus
  cells) and of scenario 2 within EMOVO and within RAVDESS (the Baseline RF);
  their cross-corpus mean; and how many of EMOVO's stereo files the rule takes
  from channel 0 and from channel 1 (the manifest's channel-kept column);
* each rule's difference from ``first`` in percentage points, paired by fold
  (scenarios 2 and 3: a fold is the same training speaker and test utterances
  under both rules), with its 95 % bootstrap interval;
* the rule the decision below picks.

RAVDESS is mono, so every rule gives it the same signal: only EMOVO's
features change, and the within-RAVDESS figures must be identical across
rules (checked). Every figure comes from the report code
(:meth:`crossemo.report.tables.Figures.of`), not re-derived here.

The decision, fixed before any figure was seen: the rule with the best mean
UAR over the four cross-corpus cells (scenarios 1 and 3, both pairs), except
that ``first`` (the simplest rule) is chosen whenever its mean is within
0.5 pp of the best.

    python benchmarks/channel.py [--corpora ../shared/corpora] [--out DIR] [--cpus 2] [--rules first,loudest,mean] [--methods rf] [--seeds 1]

A second run with the same --out reuses every feature and every result.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from crossemo import metrics, orchestration, pipeline
from crossemo.report import tables as report_tables

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [("emovo", "ravdess"), ("ravdess", "emovo")]
CROSS = ["S1 E→R", "S3 E→R", "S1 R→E", "S3 R→E"]
COLUMNS = [*CROSS, "S2 EMOVO", "S2 RAVDESS"]
TIE_PP = 0.5
"""Rules whose cross-corpus mean is within this of the best tie; the tie goes to ``first``."""


def cells(folds: pd.DataFrame) -> dict[str, pd.Series]:
    """Per column, the UAR in percent of each fold (averaged over seeds), by fold, from the report's own cell definitions."""
    of = {pair: report_tables._cell_folds(folds, *pair) for pair in PAIRS}
    rows = {
        "S1 E→R": of[PAIRS[0]]["scenario1"], "S3 E→R": of[PAIRS[0]]["scenario3"],
        "S1 R→E": of[PAIRS[1]]["scenario1"], "S3 R→E": of[PAIRS[1]]["scenario3"],
        "S2 EMOVO": of[PAIRS[1]]["scenario2"], "S2 RAVDESS": of[PAIRS[0]]["scenario2"],
    }
    return {column: report_tables._per_fold(frame, "uar") * 100 for column, frame in rows.items()}


def stereo_channels(features: str) -> str:
    """How many of EMOVO's stereo files the rule took from each channel."""
    manifest = pd.read_parquet(Path(features) / "_manifest.parquet")
    stereo = manifest[(manifest["corpus"] == "emovo") & (manifest["channels"] == 2)]
    counts = stereo["channel"].value_counts()
    return " / ".join(f"{name} {int(counts.get(name, 0))}" for name in ("0", "1", "mean") if counts.get(name, 0)) + f" (of {len(stereo)})"


def choose(means: pd.Series) -> str:
    """The decision stated in the module notes."""
    if "first" in means and means["first"] >= means.max() - TIE_PP:
        return "first"
    return str(means.idxmax())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=str(ROOT.parent / "shared" / "corpora"))
    parser.add_argument("--out", default=str(ROOT / "out" / "channel"))
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--rules", default="first,loudest,mean", help="channel rules to compare, comma-separated (first should be among them: differences are from it)")
    parser.add_argument("--methods", default="rf", help="methods beside the baselines (default none: majority and rf)")
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    rules = [int(r) if r.lstrip("-").isdigit() else r for r in args.rules.split(",")]

    orchestration.connect(num_cpus=args.cpus)
    print("RAVDESS is mono: every rule gives it the same signal, so only EMOVO's features change between rules.\n", flush=True)
    per_rule, channels, facts = {}, {}, []
    for rule in rules:
        config = pipeline.RunConfig(
            out=f"{args.out}/{rule}",
            corpora=[pipeline.CorpusSpec("emovo", f"{args.corpora}/emovo"), pipeline.CorpusSpec("ravdess", f"{args.corpora}/ravdess")],
            channel=rule, methods=args.methods, seeds=args.seeds, progress=False,
        )
        started = time.perf_counter()
        record, extraction, _ = pipeline.run(config)
        figures = report_tables.Figures.of(pipeline.read_results(record.result_uris, storage_options=None))
        per_rule[rule] = cells(figures.folds)
        channels[rule] = stereo_channels(f"{args.out}/{rule}/features")
        facts.append({
            "rule": rule, "run id": record.run_id, "code": record.code_version, "cache generation": record.cache_generation["id"],
            "extracted": extraction.extracted, "tasks (reused)": f"{record.counts['tasks']} ({record.counts['tasks_reused']})",
            "wall s": round(time.perf_counter() - started, 1),
        })
        print(f"{rule}: done in {facts[-1]['wall s']} s", flush=True)

    table = pd.DataFrame({
        rule: {
            **{column: fmt(values) for column, values in figures.items()},
            "cross-corpus mean": f"{np.mean([figures[c].mean() for c in CROSS]):.1f}",
            "EMOVO stereo files: channel kept": channels[rule],
        } for rule, figures in per_rule.items()
    }).T
    means = pd.Series({rule: float(np.mean([figures[c].mean() for c in CROSS])) for rule, figures in per_rule.items()})
    reference = "first" if "first" in per_rule else rules[0]
    differences = pd.DataFrame({
        rule: {column: paired(per_rule[rule][column], per_rule[reference][column]) for column in COLUMNS}
        for rule in rules if rule != reference
    }).T
    ravdess_same = all(per_rule[rule]["S2 RAVDESS"].equals(per_rule[reference]["S2 RAVDESS"]) for rule in rules)

    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 60):
        print(f"\nruns:\n{pd.DataFrame(facts).to_string(index=False)}")
        print(f"\nUAR %, mean over folds ± sample sd over folds (scenario 1 is one fold); S = scenario, E = EMOVO, R = RAVDESS:\n{table.to_string()}")
        print(f"\ndifference from {reference}, pp, paired by fold [95 % bootstrap interval over folds]:\n{differences.to_string()}")
    print(f"\nwithin-RAVDESS figures identical under every rule (RAVDESS is mono): {ravdess_same}")
    print(f"cross-corpus means: {', '.join(f'{rule} {value:.2f}' for rule, value in means.items())}")
    print(f"chosen by the stated rule (best cross-corpus mean, ties within {TIE_PP} pp to first): {choose(means)}")


def fmt(values: pd.Series) -> str:
    return f"{values.mean():.1f}" + (f" ± {metrics.sample_std(values.to_numpy()):.1f}" if len(values) > 1 else "")


def paired(values: pd.Series, reference: pd.Series) -> str:
    both = pd.concat([values, reference], axis=1, keys=["rule", "reference"]).dropna()
    difference = (both["rule"] - both["reference"]).to_numpy()
    if len(difference) < 2:
        return f"{difference.mean():+.1f}"
    low, high = metrics.paired_interval(difference)
    return f"{difference.mean():+.1f} [{low:+.1f}, {high:+.1f}]"


if __name__ == "__main__":
    main()
