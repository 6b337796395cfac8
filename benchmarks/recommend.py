"""Benchmark: which transfer method to recommend, chosen on source data only.

The recommended method (``crossemo.methods.RECOMMENDED``) must not be chosen
on a target's test labels, so this benchmark never forms a cross-corpus
pair. Within each shared corpus on its own, its speakers are split in two
halves (sorted ids, alternately): one half plays the source, the other the
target, and the protocol runs as usual on that pseudo-pair: scenario 3 for
every transfer method, scenario 2 for the Baseline RF and the target-only
twins, one fold per pseudo-target speaker. Each method's score is its mean
UAR over folds, averaged over the corpora; the method with the highest score
is the recommendation, and the script prints it with the whole table.

What it cannot see: a corpus split in two halves shares its language,
recording setup and annotation, so it measures transfer across speakers, not
across corpora. The cross-corpus figures come from ``benchmarks/grid.py``
after the choice, and are reported, not used to choose. They are not free of
it, though: the halves are the same speakers, labels included, that the
grid's shared pairs later test on, so those pairs' verdicts carry a small
selection bias towards the method chosen here. A corpus the choice never saw
carries none.

    python benchmarks/recommend.py [--corpora ../shared/corpora] [--out DIR] [--cpus 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from crossemo import orchestration, pipeline, protocol
from crossemo.report import tables

ROOT = Path(__file__).resolve().parents[1]


def halves(dataset: protocol.Dataset) -> tuple[protocol.Dataset, protocol.Dataset]:
    """The corpus's speakers split alternately (sorted ids) into a pseudo-source and a pseudo-target."""
    speakers = dataset.speaker_ids()
    parts = []
    for name, chosen in (("A", speakers[0::2]), ("B", speakers[1::2])):
        rows = np.isin(dataset.speakers, chosen)
        parts.append(protocol.Dataset(
            f"{dataset.corpus}-{name}", dataset.X[rows], dataset.y[rows], dataset.speakers[rows], dataset.uris[rows], dataset.content[rows],
            f"{dataset.digest}-{name}",
        ))
    return parts[0], parts[1]


def scores(results: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """Mean and sample std over folds of every Table 3 column, in UAR %, per pseudo-pair."""
    folds = tables.Figures.of(results).folds
    rows = []
    for source, target in pairs:
        for column, cell in tables.cell_folds(folds, source, target).items():
            if column in tables.TABLE3_METHODS[1:] and len(cell):
                values = tables.per_fold(cell, "uar") * 100
                rows.append({"corpus": target.rsplit("-", 1)[0], "column": column, "uar": values.mean(), "std": values.std(ddof=1), "folds": len(values)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=str(ROOT.parent / "shared" / "corpora"))
    parser.add_argument("--out", default=str(ROOT / "out" / "recommend"))
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()

    config = pipeline.RunConfig(
        out=args.out,
        corpora=[pipeline.CorpusSpec("emovo", f"{args.corpora}/emovo"), pipeline.CorpusSpec("ravdess", f"{args.corpora}/ravdess")],
        progress=False,
    )
    orchestration.connect(num_cpus=args.cpus)
    _, extraction, _ = pipeline.run(config, evaluate=False)
    datasets: dict[str, protocol.Dataset] = {}
    pairs = []
    for dataset in pipeline.datasets_from(extraction.features).values():
        source, target = halves(dataset)
        datasets[source.corpus], datasets[target.corpus] = source, target
        pairs.append((source.corpus, target.corpus))
    tasks = protocol.plan(datasets, pairs, protocol.parse_methods("all"))
    started = time.perf_counter()
    summary = orchestration.evaluate(datasets, tasks, f"{args.out}/results", storage_options=None, progress=False)
    results = pipeline.read_results(summary.result_uris, storage_options=None)
    table = scores(results, pairs)
    wide = table.pivot(index="column", columns="corpus", values="uar")
    wide["mean"] = wide.mean(axis=1)
    wide = wide.sort_values("mean", ascending=False).round(1)
    print(f"pseudo-pairs: {', '.join(f'{s} → {t}' for s, t in pairs)}; {summary.tasks} tasks in {time.perf_counter() - started:.0f} s")
    print("\nUAR % (mean over folds; scenario 3 for transfer methods, scenario 2 for rf and target_only_*):")
    print(wide.to_string())
    transfer = wide.loc[[c for c in wide.index if c in protocol.TRANSFER_METHODS]]
    print(f"\nrecommended by this rule: {transfer.index[0]} (mean UAR {transfer['mean'].iloc[0]:.1f} %)")


if __name__ == "__main__":
    main()
