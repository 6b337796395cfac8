"""The study's Tables 2 and 3, from per-utterance results.

Table 2 compares the majority classifier and the Random Forest in the three
scenarios; Table 3 compares the Random Forest of scenario 2 (the study's
"Baseline RF") with every transfer method in scenario 3's folds. Each cell is
the mean over folds, in percent, of accuracy (the study's figure) or UAR.
"""

from __future__ import annotations

import pandas as pd

from crossemo import storage

TABLE2_COLUMNS = ["source", "target", "majority", "scenario1", "scenario2", "scenario3"]
TABLE3_METHODS = ["majority", "rf", "dbn", "fcnn", "multitask", "norm_neutral", "norm_distribution", "speaker_norm"]
"""Table 3's method columns in the study's order; a table shows those that ran."""
FOLD_KEYS = ["source", "target", "scenario", "method", "fold"]


def fold_metrics(results: pd.DataFrame) -> pd.DataFrame:
    """One row per task: accuracy, UAR and test count of each fold."""
    return results.groupby(FOLD_KEYS, as_index=False).agg(accuracy=("accuracy", "first"), uar=("uar", "first"), n_test=("n_test", "first"))


def _cells(folds: pd.DataFrame, source: str, target: str, metric: str) -> dict[str, pd.Series]:
    """Fold values per table column for one pair."""
    s2 = folds[(folds["scenario"] == 2) & (folds["target"] == target)]
    pair = folds[(folds["source"] == source) & (folds["target"] == target)]
    cells = {
        "majority": s2.loc[s2["method"] == "majority", metric],
        "scenario1": pair.loc[(pair["scenario"] == 1) & (pair["method"] == "rf"), metric],
        "scenario2": s2.loc[s2["method"] == "rf", metric],
        "scenario3": pair.loc[(pair["scenario"] == 3) & (pair["method"] == "rf"), metric],
        "rf": s2.loc[s2["method"] == "rf", metric],
    }
    for method in TABLE3_METHODS[2:]:
        cells[method] = pair.loc[(pair["scenario"] == 3) & (pair["method"] == method), metric]
    return cells


def build_tables(folds: pd.DataFrame, pairs: list[tuple[str, str]], *, metric: str = "accuracy", spread: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tables 2 and 3 for ``metric``, as mean percent per cell.

    Args:
        folds: :func:`fold_metrics` output.
        pairs: the (source, target) rows, in order.
        metric: ``accuracy`` or ``uar``.
        spread: render cells as text ``mean ± std (n folds)`` instead of numbers.

    Returns:
        ``(table2, table3)``. Table 3 has a column only for the methods in
        ``folds`` (a run of some methods shows no empty columns for the
        others); a method without results for one pair leaves that cell empty.
    """
    ran = set(folds["method"])
    methods3 = [m for m in TABLE3_METHODS if m in ran]
    rows2, rows3 = [], []
    for source, target in pairs:
        cells = {name: values * 100 for name, values in _cells(folds, source, target, metric).items()}
        render = _text if spread else _mean
        rows2.append({"source": source, "target": target, **{c: render(cells[c]) for c in TABLE2_COLUMNS[2:]}})
        rows3.append({"source": source, "target": target, **{c: render(cells[c]) for c in methods3}})
    return pd.DataFrame(rows2, columns=TABLE2_COLUMNS), pd.DataFrame(rows3, columns=["source", "target", *methods3])


def _mean(values: pd.Series) -> float:
    return round(float(values.mean()), 1) if len(values) else float("nan")


def _text(values: pd.Series) -> str:
    if not len(values):
        return ""
    if len(values) == 1:
        return f"{values.mean():.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=0):.1f} ({len(values)})"


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def write_tables(results: pd.DataFrame, pairs: list[tuple[str, str]], report_uri: str, *, storage_options: storage.StorageOptions | None = None) -> dict[str, pd.DataFrame]:
    """Write table2/table3 (accuracy) and their ``_uar`` twins as CSV, and ``tables.md``.

    Returns:
        the four numeric tables by file stem.
    """
    folds = fold_metrics(results)
    tables: dict[str, pd.DataFrame] = {}
    sections = ["# crossemo results", "", "Mean over folds in percent; the Markdown cells also give the standard deviation over folds and the number of folds.", ""]
    for metric, suffix, title in (("accuracy", "", "accuracy"), ("uar", "_uar", "UAR (unweighted average recall)")):
        table2, table3 = build_tables(folds, pairs, metric=metric)
        text2, text3 = build_tables(folds, pairs, metric=metric, spread=True)
        tables[f"table2{suffix}"], tables[f"table3{suffix}"] = table2, table3
        sections += [f"## Table 2: majority and Random Forest per scenario, {title}", "", to_markdown(text2), ""]
        sections += [f"## Table 3: Baseline RF (scenario 2) and transfer methods (scenario 3), {title}", "", to_markdown(text3), ""]
    for stem, table in tables.items():
        storage.write_bytes(table.to_csv(index=False).encode(), storage.join(report_uri, f"{stem}.csv"), storage_options=storage_options)
    storage.write_bytes("\n".join(sections).encode(), storage.join(report_uri, "tables.md"), storage_options=storage_options)
    return tables
