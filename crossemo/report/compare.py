"""What changed between two recorded runs: settings, code, corpora and results.

Scheduled re-evaluations record every run under ``<out>/runs/<run id>/``;
comparing two of them answers "why did the numbers move?": a corpus gained
files, the code changed, a method was added, or nothing changed at all.
"""

from __future__ import annotations

import pandas as pd

from crossemo import pipeline, storage
from crossemo.report import tables


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def setting_changes(run_a: dict, run_b: dict) -> list[tuple[str, object, object]]:
    """``(setting, before, after)`` for every setting, code version, feature cache generation or corpus fingerprint that differs.

    The cache generation (decode rules, openSMILE version …) is why a run
    re-extracted every file: a comparison that left it out named no cause.
    """
    keys = ("settings", "code_version", "corpora", "feature_set_id", "cache_generation")
    before = _flatten({k: run_a.get(k) for k in keys})
    after = _flatten({k: run_b.get(k) for k in keys})
    names = sorted(set(before) | set(after))
    if unfingerprinted(run_a, run_b):
        # Only one side knows its corpora: every entry would read as a change.
        names = [name for name in names if not name.startswith("corpora.") and name != "settings.corpora"]
    return [(name, before.get(name), after.get(name)) for name in names if before.get(name) != after.get(name)]


def unfingerprinted(*runs: dict) -> list[str]:
    """The ids of the runs that recorded no corpus fingerprints: ``crossemo evaluate`` reads a feature store, not the corpora."""
    return [str(run.get("run_id", "?")) for run in runs if not run.get("corpora")]


METRICS = {"accuracy": "accuracy", "uar": "UAR"}
"""The measures a comparison covers: the study's tables are in accuracy, the verdict in UAR."""


def result_changes(results_a: pd.DataFrame, pairs_a: list, results_b: pd.DataFrame, pairs_b: list) -> pd.DataFrame:
    """Table 2 and Table 3 cells of the pairs both runs evaluated, in accuracy and UAR, side by side with the difference.

    A pair only one run evaluated is no change of a cell but of the run's
    plan: :func:`pair_changes` names it.

    Returns:
        one row per (metric, table, source, target, column) present in either
        run: ``before``, ``after`` and ``change`` in percentage points.
    """
    later = {tuple(p) for p in pairs_b}
    common = [tuple(p) for p in pairs_a if tuple(p) in later]
    if not common:
        return pd.DataFrame(columns=["metric", "table", "source", "target", "column", "before", "after", "change"])
    frames = []
    for metric in METRICS:
        for label, results in (("before", results_a), ("after", results_b)):
            table2, table3 = tables.build_tables(tables.Figures.of(results), common, metric=metric)
            for name, table in (("table2", table2), ("table3", table3)):
                long = table.melt(id_vars=["source", "target"], var_name="column", value_name=label)
                long.insert(0, "table", name)
                long.insert(0, "metric", metric)
                frames.append(long.set_index(["metric", "table", "source", "target", "column"]))
    before = pd.concat([f for f in frames if "before" in f.columns])
    after = pd.concat([f for f in frames if "after" in f.columns])
    merged = before.join(after, how="outer")
    merged["change"] = (merged["after"] - merged["before"]).round(1)
    return merged.reset_index()


def pair_changes(run_a: dict, run_b: dict) -> tuple[list[str], list[str]]:
    """The pairs (``source:target``) only the later run evaluated, and those only the earlier one did."""
    earlier = [":".join(p) for p in run_a.get("pairs", [])]
    later = [":".join(p) for p in run_b.get("pairs", [])]
    return [p for p in later if p not in earlier], [p for p in earlier if p not in later]


def read_run(out: str, run_id: str, *, storage_options: storage.StorageOptions | None = None) -> dict:
    """A run record by id.

    Raises:
        storage.StorageError: no such run under ``out``.
    """
    uri = storage.join(out, "runs", run_id, "run.json")
    if not storage.exists(uri, storage_options=storage_options):
        known = sorted({u.rsplit("/", 2)[-2] for u in storage.list_files(storage.join(out, "runs"), suffix="run.json", storage_options=storage_options)})
        raise storage.StorageError(f"no run {run_id!r} under {out} (runs: {', '.join(known) or 'none'})")
    return pipeline.read_record(uri, storage_options=storage_options)


def render(run_a: dict, run_b: dict, changes: pd.DataFrame) -> str:
    """A plain-text comparison for the terminal."""
    lines = [f"comparing run {run_a['run_id']} → {run_b['run_id']}", ""]
    settings = setting_changes(run_a, run_b)
    unknown = unfingerprinted(run_a, run_b)
    compared = "settings and code" if unknown else "settings, code and corpora"
    if settings:
        lines.append(f"{compared} that changed:")
        lines += [f"  {name}: {before!r} → {after!r}" for name, before, after in settings]
    else:
        lines.append(f"{compared}: unchanged")
    if unknown:
        lines.append(f"corpora: not compared (run {' and '.join(unknown)} recorded no corpus fingerprints: an evaluate of a feature store, or an older record)")
    counts_a, counts_b = run_a.get("counts", {}), run_b.get("counts", {})
    # A run of `evaluate` read a feature store and extracted nothing: it records no feature counts.
    features = f", features reused {counts_b['features_reused']}" if "features_reused" in counts_b else ", features read from a store"
    lines.append(f"tasks: {counts_a.get('tasks', '?')} → {counts_b.get('tasks', '?')} (the later run reused {counts_b.get('tasks_reused', '?')}{features})")
    added, removed = pair_changes(run_a, run_b)
    lines += [f"pairs only the later run evaluated: {', '.join(added)}"] if added else []
    lines += [f"pairs only the earlier run evaluated: {', '.join(removed)}"] if removed else []
    lines.append("")
    moved = changes[(changes["change"].fillna(0) != 0) | (changes["before"].isna() != changes["after"].isna())]
    if moved.empty:
        lines.append("results: identical" + (" for the pairs both runs evaluated" if added or removed else ""))
    for metric, title in METRICS.items():
        cells = moved[moved["metric"] == metric].drop(columns="metric")
        if len(cells):
            lines.append(f"results that changed ({title} %, {len(cells)} cells):")
            lines.append(cells.to_string(index=False))
    return "\n".join(lines)
