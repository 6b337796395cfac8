"""Does borrowing help? One honest verdict per pair.

Beating the study's Baseline RF is weak evidence: it is one model trained on
one speaker. The verdict compares crossemo's recommended transfer method
(:data:`crossemo.methods.RECOMMENDED`, fixed in the code) in scenario 3 with
the *best* model trained on the target alone in the same run (the Baseline
RF and every target-only twin, scenario 2), fold by fold: a scenario-3 fold
and the scenario-2 fold with the same training speaker test on the same
utterances, so their UAR difference is one paired observation. The 95 %
interval of the mean difference is a seeded percentile bootstrap over those
folds (:func:`crossemo.metrics.paired_interval`); UAR and the averaging over
seeds are those of the tables (:mod:`crossemo.report.tables`). Borrowing
*helps* when the whole interval lies above zero.

Picking the best target-only model by its test results favours the
target-only side, so the verdict errs towards "does not help".
"""

from __future__ import annotations

import math

import pandas as pd

from crossemo import metrics, storage
from crossemo.methods import RECOMMENDED
from crossemo.report.tables import REFERENCE, TWIN_PREFIX, Figures, cell_folds, per_fold

VERDICT_COLUMNS = [
    "source", "target", "method", "uar", "target_only_method", "target_only_uar", "baseline_uar",
    "gain_vs_baseline", "gain_vs_target_only", "ci_low", "ci_high", "helps",
]
"""``verdict.csv``'s columns; UAR and gains in percent (points), the interval is of ``gain_vs_target_only``;
``target_only_method`` as ``crossemo train --method`` takes it (``target_only_rf`` is the Baseline RF)."""


def verdict(figures: Figures, pairs: list[tuple[str, str]], *, method: str = RECOMMENDED) -> pd.DataFrame:
    """One row per pair that ran ``method``: its UAR against the best target-only model and the Baseline RF.

    Args:
        figures: the run's figures (:meth:`~crossemo.report.tables.Figures.of`).
        pairs: (source, target) pairs, in order; a multi-source pair's source is ``a+b``.
        method: the transfer method judged (scenario 3).

    Returns:
        :data:`VERDICT_COLUMNS` and ``folds`` (the held-out speakers the interval
        rests on; not written to ``verdict.csv``, whose columns are fixed), the
        pairs of one target together; pairs where ``method`` or the Baseline RF
        did not run have no row.
    """
    rows = []
    # Grouped by target, in the order targets first appear: the question is which source helps a target.
    targets = list(dict.fromkeys(target for _, target in pairs))
    for source, target in sorted(pairs, key=lambda pair: targets.index(pair[1])):
        cells = cell_folds(figures.folds, source, target)
        transfer = per_fold(cells[method], "uar") * 100 if method in cells else pd.Series(dtype=float)
        baseline = per_fold(cells[REFERENCE], "uar") * 100
        if transfer.empty or baseline.empty:
            continue
        # Named as ``train --method`` takes them: a twin's bare name is also a method that borrows.
        candidates = {TWIN_PREFIX + REFERENCE: baseline}
        for column, rows_ in cells.items():
            if column.startswith(TWIN_PREFIX) and len(rows_):
                candidates[column] = per_fold(rows_, "uar") * 100
        # Ties go to the first candidate: the Baseline RF, then the twins in their table order.
        best = max(candidates, key=lambda name: (candidates[name].mean(), -list(candidates).index(name)))
        paired = pd.concat([transfer, candidates[best]], axis=1, keys=["transfer", "target_only"]).dropna()
        differences = (paired["transfer"] - paired["target_only"]).to_numpy()
        low, high = metrics.paired_interval(differences)
        rows.append({
            "source": source, "target": target, "method": method,
            "uar": round(float(transfer.mean()), 2),
            "target_only_method": best, "target_only_uar": round(float(candidates[best].mean()), 2),
            "baseline_uar": round(float(baseline.mean()), 2),
            "gain_vs_baseline": round(float(transfer.mean() - baseline.mean()), 2),
            "gain_vs_target_only": round(float(transfer.mean() - candidates[best].mean()), 2),
            "ci_low": round(low, 2), "ci_high": round(high, 2),
            "helps": bool(not math.isnan(low) and low > 0),
            "folds": len(differences),
        })
    return pd.DataFrame(rows, columns=[*VERDICT_COLUMNS, "folds"])


def target_only_name(method: str) -> str:
    """A ``target_only_method`` in words: ``target_only_rf`` is the study's Baseline RF, a twin keeps its name."""
    return "the Baseline RF" if method == TWIN_PREFIX + REFERENCE else method


def sentence(row: pd.Series | dict) -> str:
    """The verdict of one pair in words, e.g. "borrowing from emovo helps ravdess by +7.1 pp UAR (95 % CI 3.2 to 11.0) over …"."""
    row = dict(row)
    source = " and ".join(str(row["source"]).split("+"))
    gain = f"{row['gain_vs_target_only']:+.1f} pp UAR"
    interval = "no interval: fewer than 3 folds" if math.isnan(row["ci_low"]) else f"95 % CI {row['ci_low']:.1f} to {row['ci_high']:.1f}"
    if "folds" in row and not math.isnan(row["ci_low"]):
        # With a few held-out speakers the interval is little more than the range of their gains: say how few.
        interval += f", {int(row['folds'])} folds"
    against = f"over the best model trained on {row['target']} alone ({target_only_name(row['target_only_method'])}, {row['target_only_uar']:.1f} %)"
    if row["helps"]:
        return f"borrowing from {source} helps {row['target']} by {gain} ({interval}) {against}"
    return f"borrowing from {source} does not clearly help {row['target']}: {gain} ({interval}) {against}"


def write_verdict(
    results: pd.DataFrame, pairs: list[tuple[str, str]], report_uri: str, *, run_figures: Figures | None = None, storage_options: storage.StorageOptions | None = None,
) -> pd.DataFrame:
    """Write ``<report>/verdict.csv`` and return it (``run_figures``: ``Figures.of(results)`` when the caller has them already)."""
    table = verdict(run_figures if run_figures is not None else Figures.of(results), pairs)
    storage.write_bytes(table[VERDICT_COLUMNS].to_csv(index=False).encode(), storage.join(report_uri, "verdict.csv"), storage_options=storage_options)
    return table
