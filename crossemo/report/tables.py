"""The study's Tables 2 and 3, from per-utterance results.

Table 2 compares the majority classifier and the Random Forest in the three
scenarios; Table 3 compares the Random Forest of scenario 2 (the study's
"Baseline RF") and the target-only twins (columns ``target_only_<method>``,
scenario 2) with every transfer method in scenario 3's folds. Each cell is
the mean over folds (and seeds), in percent, of accuracy (the study's figure)
or UAR; every figure is defined in :mod:`crossemo.metrics`.

Every fold's figures are recomputed here from its utterances (true and
predicted labels), never read from a stored summary, so ``crossemo report``
gives existing runs the current definitions without recomputing a model.

Beside the mean of folds:

* ``majority`` is the most frequent class of the one training speaker (ties
  go to the first class in the order neutral, anger, joy, sadness); with
  balanced speakers it is one fixed class, *not* a chance level, so
  ``chance`` (100 / the target's classes) stands beside it;
* the pooled UAR over all test utterances of a cell (``*_pooled_uar.csv``);
* the spread: sample standard deviation over folds and over seeds;
* a Table 3 method's difference from the Baseline RF, marked ▲ or ▼ only when
  its 95 % paired interval over folds excludes zero (``table3_vs_baseline.csv``).
  No cell is called best: choosing a method by its test results is exactly
  what a table must not invite.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from crossemo import metrics, storage
from crossemo.protocol import TARGET_ONLY_METHODS, TRANSFER_METHODS

TABLE2_COLUMNS = ["source", "target", "majority", "chance", "scenario1", "scenario2", "scenario3"]
TWIN_PREFIX = "target_only_"
"""Table 3's column of a target-only twin: this prefix and the method's name."""
TABLE3_METHODS = ["majority", "rf", *(TWIN_PREFIX + m for m in TARGET_ONLY_METHODS), *TRANSFER_METHODS]
"""Table 3's method columns: the baselines, the target-only twins (scenario 2), then the transfer methods (scenario 3)
in the study's order and then ours; a table shows those that ran."""
FOLD_KEYS = ["source", "target", "scenario", "method", "fold", "seed"]
CELL_KEYS = ["source", "target", "scenario", "method", "seed"]
REFERENCE = "rf"
"""The Baseline RF: scenario 2's forest, what every transfer method is compared with."""
BASELINE_COLUMNS = ["source", "target", "method", "metric", "difference", "ci_low", "ci_high", "folds", "marked"]


def with_seed(results: pd.DataFrame) -> pd.DataFrame:
    """Results with a ``seed`` column (files written before runs had several seeds ran under seed 0)."""
    return results if "seed" in results.columns else results.assign(seed=0)


def classes_by_target(results: pd.DataFrame) -> dict[str, list[str]]:
    """Every target's classes, from the true labels of all its test utterances."""
    return {target: metrics.target_classes(rows["true"]) for target, rows in results.groupby("target", sort=False)}


def fold_metrics(results: pd.DataFrame) -> pd.DataFrame:
    """One row per task (fold and seed): accuracy, UAR and test count, recomputed from its utterances."""
    return _scores(results, FOLD_KEYS)


def pooled_metrics(results: pd.DataFrame) -> pd.DataFrame:
    """One row per cell and seed: accuracy, UAR and test count over all its folds' test utterances at once."""
    return _scores(results, CELL_KEYS)


def _scores(results: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Accuracy and UAR (over each target's classes) of every group of utterances sharing ``keys``."""
    results = with_seed(results)
    classes = classes_by_target(results)
    rows = []
    for values, group in results.groupby(keys, sort=True):
        named = dict(zip(keys, values))
        accuracy, uar = metrics.score(group["true"].to_numpy(), group["predicted"].to_numpy(), classes=classes[named["target"]])
        rows.append({**named, "accuracy": accuracy, "uar": uar, "n_test": len(group)})
    return pd.DataFrame(rows, columns=[*keys, "accuracy", "uar", "n_test"])


def seed_averaged(folds: pd.DataFrame) -> pd.DataFrame:
    """:func:`fold_metrics` with one row per fold: figures averaged over seeds."""
    keys = [k for k in FOLD_KEYS if k != "seed"]
    return folds.groupby(keys, as_index=False, sort=True)[["accuracy", "uar", "n_test"]].mean()


def degenerate_folds(results: pd.DataFrame) -> pd.DataFrame:
    """Folds whose test utterances lack some of the target's classes.

    Returns:
        one row per (target, fold): ``target``, ``fold`` (the training
        speaker), ``test_speakers`` and ``missing`` classes, comma-joined.
    """
    classes = classes_by_target(results)
    rows = []
    for (target, fold), group in with_seed(results).groupby(["target", "fold"], sort=True):
        if fold == "all":
            continue
        missing = [c for c in classes[target] if c not in set(group["true"])]
        if missing:
            rows.append({"target": target, "fold": fold, "test_speakers": ", ".join(sorted(set(group["speaker"]))), "missing": ", ".join(missing)})
    return pd.DataFrame(rows, columns=["target", "fold", "test_speakers", "missing"])


@dataclass(frozen=True)
class Figures:
    """Everything the tables are built from, computed once from the per-utterance results.

    Attributes:
        folds: :func:`fold_metrics`.
        pooled: :func:`pooled_metrics`.
        classes: every target's classes (:func:`classes_by_target`).
    """

    folds: pd.DataFrame
    pooled: pd.DataFrame
    classes: dict[str, list[str]]

    @classmethod
    def of(cls, results: pd.DataFrame) -> Figures:
        return cls(fold_metrics(results), pooled_metrics(results), classes_by_target(results))


def cell_folds(folds: pd.DataFrame, source: str, target: str) -> dict[str, pd.DataFrame]:
    """The fold rows behind every table column of one pair."""
    s2 = folds[(folds["scenario"] == 2) & (folds["target"] == target)]
    pair = folds[(folds["source"] == source) & (folds["target"] == target)]
    cells = {
        "majority": s2[s2["method"] == "majority"],
        "scenario1": pair[(pair["scenario"] == 1) & (pair["method"] == "rf")],
        "scenario2": s2[s2["method"] == REFERENCE],
        "scenario3": pair[(pair["scenario"] == 3) & (pair["method"] == "rf")],
        "rf": s2[s2["method"] == REFERENCE],
    }
    for column in TABLE3_METHODS[2:]:
        if column.startswith(TWIN_PREFIX):
            cells[column] = s2[s2["method"] == column.removeprefix(TWIN_PREFIX)]
        else:
            cells[column] = pair[(pair["scenario"] == 3) & (pair["method"] == column)]
    return cells


def per_fold(rows: pd.DataFrame, metric: str) -> pd.Series:
    """Fold values averaged over seeds, by fold."""
    return rows.groupby("fold")[metric].mean()


def _per_seed(rows: pd.DataFrame, metric: str) -> pd.Series:
    """Cell values (mean over folds) by seed."""
    return rows.groupby("seed")[metric].mean()


def baseline_comparison(folds: pd.DataFrame, pairs: list[tuple[str, str]], *, metric: str = "uar") -> pd.DataFrame:
    """Each Table 3 method against the Baseline RF, paired by fold.

    A fold of scenario 3 and the fold of scenario 2 with the same training
    speaker test on the same utterances; their difference (each averaged over
    seeds) is one paired observation.

    Returns:
        ``BASELINE_COLUMNS`` in percentage points; ``marked`` is ``+1``/``-1``
        when the 95 % interval lies above/below zero, else 0.
    """
    rows = []
    for source, target in pairs:
        cells = cell_folds(folds, source, target)
        reference = per_fold(cells["rf"], metric)
        for method in TABLE3_METHODS[2:]:
            if cells[method].empty:
                continue
            paired = pd.concat([per_fold(cells[method], metric), reference], axis=1, keys=["method", "reference"]).dropna()
            differences = (paired["method"] - paired["reference"]).to_numpy() * 100
            low, high = metrics.paired_interval(differences)
            marked = 1 if low > 0 else -1 if high < 0 else 0
            rows.append({
                "source": source, "target": target, "method": method, "metric": metric,
                "difference": round(float(differences.mean()), 2) if differences.size else float("nan"),
                "ci_low": round(low, 2), "ci_high": round(high, 2), "folds": len(differences), "marked": marked,
            })
    return pd.DataFrame(rows, columns=BASELINE_COLUMNS)


def build_tables(figures: Figures, pairs: list[tuple[str, str]], *, metric: str = "accuracy", spread: bool = False, pooled: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tables 2 and 3 for ``metric``, in percent.

    Args:
        figures: the run's figures (:meth:`Figures.of`).
        pairs: the (source, target) rows, in order.
        metric: ``accuracy`` or ``uar``.
        spread: render cells as text ``mean ± sd (n folds[, ± sd over k seeds]) [pooled p]``
            with Table 3's marks, instead of numbers.
        pooled: numeric cells give the pooled figure (mean over seeds)
            instead of the mean of folds.

    Returns:
        ``(table2, table3)``. Table 3 has a column only for the methods that
        ran; a method without results for one pair leaves that cell empty.
        ``chance`` is 100 / the target's classes.
    """
    folds = figures.folds
    ran = [cell_folds(folds, source, target) for source, target in pairs]
    methods3 = [m for m in TABLE3_METHODS if any(len(cells[m]) for cells in ran)]
    marks = _marks(folds, pairs, metric) if spread else {}
    rows2, rows3 = [], []
    for source, target in pairs:
        cells = cell_folds(folds, source, target)
        pooled_cells = _pooled_cells(figures.pooled, source, target, metric)

        def render(column: str) -> float | str:
            rows = cells[column]
            if spread:
                return _text(rows, metric, pooled_cells.get(column), marks.get((source, target, column), 0))
            if pooled:
                return round(pooled_cells[column] * 100, 1) if column in pooled_cells else float("nan")
            return round(float(rows[metric].mean()) * 100, 1) if len(rows) else float("nan")

        chance: float | str = round(metrics.chance(figures.classes.get(target, [])) * 100, 1)
        if spread:
            chance = f"{chance:.1f}"
        rows2.append({"source": source, "target": target, **{c: chance if c == "chance" else render(c) for c in TABLE2_COLUMNS[2:]}})
        rows3.append({"source": source, "target": target, "chance": chance, **{c: render(c) for c in methods3}})
    leading = methods3[:1] if methods3[:1] == ["majority"] else []
    columns3 = ["source", "target", *leading, "chance", *methods3[len(leading):]]
    return pd.DataFrame(rows2, columns=TABLE2_COLUMNS), pd.DataFrame(rows3, columns=columns3)


def _pooled_cells(pooled: pd.DataFrame, source: str, target: str, metric: str) -> dict[str, float]:
    """Pooled figures (mean over seeds) per table column of one pair."""
    cells = cell_folds(pooled.assign(fold="pooled"), source, target)
    return {column: float(rows[metric].mean()) for column, rows in cells.items() if len(rows)}


def _marks(folds: pd.DataFrame, pairs: list[tuple[str, str]], metric: str) -> dict[tuple[str, str, str], int]:
    comparison = baseline_comparison(folds, pairs, metric=metric)
    return {(r.source, r.target, r.method): int(r.marked) for r in comparison.itertuples()}


def _text(rows: pd.DataFrame, metric: str, pooled: float | None, mark: int) -> str:
    if not len(rows):
        return ""
    by_fold, by_seed = per_fold(rows, metric) * 100, _per_seed(rows, metric) * 100
    text = f"{by_fold.mean():.1f}"
    if len(by_fold) > 1:
        text += f" ± {metrics.sample_std(by_fold.to_numpy()):.1f} ({len(by_fold)} folds"
        text += f", ± {metrics.sample_std(by_seed.to_numpy()):.1f} over {len(by_seed)} seeds)" if len(by_seed) > 1 else ")"
    elif len(by_seed) > 1:
        text += f" (± {metrics.sample_std(by_seed.to_numpy()):.1f} over {len(by_seed)} seeds)"
    if pooled is not None and len(by_fold) > 1:
        text += f" [pooled {pooled * 100:.1f}]"
    return text + {1: " ▲", -1: " ▼"}.get(mark, "")


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


DEFINITIONS = (
    "Cells: mean over folds in percent (a fold is a held-out training speaker; with several seeds, each fold is first averaged over them), "
    "± the sample standard deviation over folds (ddof = 1) with their number, ± the sample standard deviation of the cell over seeds "
    "where a run has several, and the pooled figure over all test utterances of the cell in brackets. "
    "UAR is the mean recall over the target's classes; a class absent from a fold's test speakers counts as recall 0, so chance is the "
    "chance column in every fold. The majority column is the most frequent class of the training speaker (ties go to neutral, anger, joy, "
    "sadness in that order): not a chance level. In Table 3, ▲/▼ mark a method whose 95 % paired bootstrap interval of the difference "
    "from the Baseline RF over folds lies above/below zero (see table3_vs_baseline.csv); no cell is marked best. "
    "Columns target_only_<method> are that method trained on the target's training speaker alone (scenario 2), "
    "the fair comparison for a transfer method of the same family."
)


def write_tables(
    results: pd.DataFrame, pairs: list[tuple[str, str]], report_uri: str, *, run_figures: Figures | None = None, storage_options: storage.StorageOptions | None = None,
) -> dict[str, pd.DataFrame]:
    """Write the tables as CSV (accuracy and ``_uar``; mean of folds and ``_pooled``), ``table3_vs_baseline.csv`` and ``tables.md``.

    Args:
        run_figures: ``Figures.of(results)`` when the caller has them already.

    Returns:
        the numeric tables by file stem.
    """
    figures = run_figures if run_figures is not None else Figures.of(results)
    tables: dict[str, pd.DataFrame] = {}
    sections = ["# crossemo results", "", DEFINITIONS, ""]
    for metric, suffix, title in (("accuracy", "", "accuracy"), ("uar", "_uar", "UAR (unweighted average recall)")):
        tables[f"table2{suffix}"], tables[f"table3{suffix}"] = build_tables(figures, pairs, metric=metric)
        tables[f"table2{suffix}_pooled"], tables[f"table3{suffix}_pooled"] = build_tables(figures, pairs, metric=metric, pooled=True)
        text2, text3 = build_tables(figures, pairs, metric=metric, spread=True)
        sections += [f"## Table 2: majority and Random Forest per scenario, {title}", "", to_markdown(text2), ""]
        sections += [f"## Table 3: Baseline RF (scenario 2) and transfer methods (scenario 3), {title}", "", to_markdown(text3), ""]
    degenerate = degenerate_folds(results)
    if len(degenerate):
        sections += ["## Folds whose test speakers lack a class", "", "Their UAR counts the missing classes as recall 0; the pooled figures do not depend on them.", "", to_markdown(degenerate), ""]
    comparison = pd.concat([baseline_comparison(figures.folds, pairs, metric=m) for m in ("accuracy", "uar")], ignore_index=True)
    for stem, table in {**tables, "table3_vs_baseline": comparison}.items():
        storage.write_bytes(table.to_csv(index=False).encode(), storage.join(report_uri, f"{stem}.csv"), storage_options=storage_options)
    storage.write_bytes("\n".join(sections).encode(), storage.join(report_uri, "tables.md"), storage_options=storage_options)
    return tables
