"""One self-contained HTML page that shows a run's warnings, corpora, tables and figures.

``<report>/index.html`` needs nothing but a browser: styles are inline, there
is no script, and every figure is embedded as a base64 PNG data URI, so the
page can be mailed, archived or opened offline. Each figure is also written as
``<report>/figures/<name>.png`` under a stable, readable name, to paste into
slides or papers. All text that comes from data (corpus, speaker and method
names, rejection reasons, settings) is HTML-escaped.

Methods are labelled by scenario: ``S1 RF`` (train on the source only),
``S2 majority`` and ``S2 RF`` (train on one target speaker; ``S2 RF`` is the
study's "Baseline RF"), ``S3 RF`` and ``S3 <transfer method>`` (train on the
source plus one target speaker).
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from crossemo import storage
from crossemo.labels import EMOTIONS
from crossemo.report import figures, tables, verdict

REQUIRED_COLUMNS = ("source", "target", "scenario", "method", "fold", "uri", "speaker", "true", "predicted", "accuracy", "uar", "n_test")
"""The result columns the page needs; the others (timings, key) are used when present."""

METHOD_NAMES = {
    "majority": "majority", "rf": "RF", "dbn": "DBN", "fcnn": "FCNN", "multitask": "multi-task",
    "norm_neutral": "norm. neutral", "norm_distribution": "norm. distribution", "speaker_norm": "speaker norm.",
    "speaker_norm_linear": "speaker norm. linear", "coral": "CORAL", "subspace_alignment": "subspace align.",
    "kmm_reweight": "KMM reweight", "self_training": "self-training", "dann": "DANN",
}
METHOD_RANK = {name: rank for rank, name in enumerate(tables.TABLE3_METHODS)}
BASELINE_LABEL = "S2 RF"
REJECTED_ROWS = 40
"""At most this many (corpus, stage, reason) rows; unique reasons such as decoder messages could be thousands."""
DUPLICATE_COLUMNS = ["group", "corpus", "speaker", "emotion", "uri", "action"]
"""The columns of ``_duplicates.parquet`` the page shows (its ``sha256`` is the group's identity already)."""
DUPLICATE_ROWS = 200
"""At most this many duplicate files on the page; a corpus copied twice could list thousands."""
SECTIONS = [("verdict", "Verdict"), ("warnings", "Warnings"), ("corpora", "Corpora"), ("duplicates", "Duplicate recordings"), ("tables", "Tables 2 and 3")]
"""The page's sections before the pairs, in order: (id, title in the contents), linked when present."""

TABLE2_HEADERS = {"source": "source", "target": "target", "majority": "majority (S2)", "chance": "chance", "scenario1": "RF scenario 1", "scenario2": "RF scenario 2", "scenario3": "RF scenario 3"}
TABLE3_HEADERS = {
    "source": "source", "target": "target", "chance": "chance", "rf": "baseline RF (S2)",
    **{m: METHOD_NAMES[m] for m in tables.TABLE3_METHODS if m in METHOD_NAMES and m != "rf"},
    **{m: f"{METHOD_NAMES[m.removeprefix(tables.TWIN_PREFIX)]} (S2, target only)" for m in tables.TABLE3_METHODS if m.startswith(tables.TWIN_PREFIX)},
}
SECRET_WORDS = ("secret", "token", "password", "key", "credential")
NUM_CLASS = ' class="num"'


@dataclass(frozen=True)
class Rendered:
    """A figure drawn to PNG.

    Attributes:
        name: file name below ``figures/``.
        png: the PNG bytes.
        alt: text alternative for the image.
        caption: what the figure shows.
        reused: the file already holds these bytes, drawn from the same inputs by an earlier report.
    """

    name: str
    png: bytes
    alt: str
    caption: str
    reused: bool = False


def write_html_report(
    results: pd.DataFrame,
    pairs: list[tuple[str, str]],
    report_uri: str,
    *,
    manifest: pd.DataFrame | None = None,
    rejected: pd.DataFrame | None = None,
    duplicates: pd.DataFrame | None = None,
    run: dict[str, Any] | None = None,
    run_figures: tables.Figures | None = None,
    storage_options: storage.StorageOptions | None = None,
) -> str:
    """Write ``<report_uri>/index.html`` and its figures as ``<report_uri>/figures/*.png``.

    Args:
        results: per-utterance results (:data:`crossemo.protocol.RESULT_COLUMNS`).
        pairs: the (source, target) pairs, in the order to show them.
        report_uri: local folder or ``s3://`` prefix.
        manifest: the feature store's ``_manifest.parquet`` (corpus, speaker, emotion …).
            Without it the corpus counts come from the results' test rows, which
            cover the target corpora only.
        rejected: the feature store's ``_rejected.parquet`` (uri, corpus, stage, reason).
        duplicates: the feature store's ``_duplicates.parquet`` (group, sha256, corpus,
            speaker, emotion, uri, action); without it the page has no such section.
        run: the run record (run_id, started, code_version, feature_set_id, settings,
            warnings).
        run_figures: ``tables.Figures.of(results)`` when the caller has them already.
        storage_options: filesystem options for ``report_uri``.

    Returns:
        the URI of ``index.html``.

    Raises:
        ValueError: ``results`` lacks columns the page needs.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"results lack the columns {', '.join(missing)}")
    figures = run_figures if run_figures is not None else tables.Figures.of(results)
    names = _FigureFiles(storage.join(report_uri, "figures"), storage_options=storage_options)
    verdict_html, verdict_figures = _verdict_section(verdict.verdict(figures, pairs), names)
    # The per-pair charts and grids show each fold once, averaged over seeds.
    folds = tables.seed_averaged(figures.folds)
    pair_sections, rendered = [], list(verdict_figures)
    anchors = pair_anchors(pairs)
    for source, target in pairs:
        section, pair_figures = _pair_section(results, folds, source, target, names, anchor=anchors[(source, target)])
        pair_sections.append(section)
        rendered += pair_figures
    page = _page(
        run=run,
        results=results,
        pairs=pairs,
        body=[
            verdict_html,
            _warnings_section(run),
            _corpora_section(manifest, rejected, results),
            _duplicates_section(duplicates),
            _tables_section(figures, pairs),
            *pair_sections,
            _compute_section(results),
        ],
    )
    for figure in rendered:
        if not figure.reused:
            storage.write_bytes(figure.png, storage.join(report_uri, "figures", figure.name), storage_options=storage_options)
    index = storage.join(report_uri, "index.html")
    storage.write_bytes(page.encode("utf-8"), index, storage_options=storage_options)
    _remove_figures_not_shown(storage.join(report_uri, "figures"), {figure.name for figure in rendered}, storage_options=storage_options)
    return index


def _remove_figures_not_shown(folder: str, shown: set[str], *, storage_options: storage.StorageOptions | None) -> None:
    """Remove the figures an earlier page drew that this one does not show, so they do not pile up.

    Only PNGs that carry a crossemo figure key (:func:`crossemo.report.figures.png_key`)
    are removed: a picture of your own in the folder stays. Best effort: a
    location that refuses deletes keeps them, and the page is written anyway.
    """
    keep = {storage.join(folder, name) for name in shown}
    for uri in storage.list_files(folder, suffix=".png", maxdepth=1, storage_options=storage_options):
        if uri in keep:
            continue
        try:
            if figures.png_key(storage.read_bytes(uri, storage_options=storage_options)) is not None:
                storage.remove(uri, storage_options=storage_options)
        except OSError:
            continue


# --- data -------------------------------------------------------------------------------------------


def method_label(scenario: int, method: str) -> str:
    """The short name of a method in a scenario, e.g. ``S3 DBN``."""
    return f"S{int(scenario)} {METHOD_NAMES.get(method, method)}"


def _method_key(scenario: int, method: str) -> tuple[int, int, str]:
    # Scenarios in order, then baselines before the transfer methods in the study's column order.
    return int(scenario), METHOD_RANK.get(method, len(METHOD_RANK)), method


def pair_rows(frame: pd.DataFrame, source: str, target: str) -> pd.DataFrame:
    """The rows behind one pair: its scenario 1 and 3 rows, and scenario 2 of its target.

    Scenario 2 does not use the source, so every pair with the same target shares it.
    """
    own = (frame["source"] == source) & (frame["target"] == target) & frame["scenario"].isin([1, 3])
    shared = (frame["scenario"] == 2) & (frame["target"] == target)
    return frame[own | shared]


def methods_of(frame: pd.DataFrame) -> list[tuple[int, str]]:
    """The (scenario, method) combinations present, in display order."""
    combos = {(int(s), str(m)) for s, m in frame[["scenario", "method"]].drop_duplicates().itertuples(index=False)}
    return sorted(combos, key=lambda combo: _method_key(*combo))


def fold_values(pair_folds: pd.DataFrame) -> pd.DataFrame:
    """One row per fold with its method label and accuracy and UAR in percent, in display order."""
    rows = pair_folds.assign(
        label=[method_label(s, m) for s, m in zip(pair_folds["scenario"], pair_folds["method"])],
        order=[_method_key(s, m) for s, m in zip(pair_folds["scenario"], pair_folds["method"])],
        accuracy=pair_folds["accuracy"] * 100,
        uar=pair_folds["uar"] * 100,
    )
    return rows.sort_values(["order", "fold"], kind="stable")[["label", "fold", "accuracy", "uar"]].reset_index(drop=True)


def class_labels(*columns: pd.Series) -> list[str]:
    """The study's four emotions in their order, then any other label seen, sorted."""
    seen = set().union(*(set(column.astype(str)) for column in columns)) if columns else set()
    return [*EMOTIONS, *sorted(seen - set(EMOTIONS))]


def confusion_counts(rows: pd.DataFrame, labels: list[str]) -> np.ndarray:
    """Counts of (true, predicted) over ``rows``: rows true, columns predicted, in ``labels`` order."""
    index = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(counts, (rows["true"].astype(str).map(index).to_numpy(), rows["predicted"].astype(str).map(index).to_numpy()), 1)
    return counts


def _strip_corpus(speaker: str, corpus: str) -> str:
    """Results prefix speakers with their corpus to keep them unique; the page groups by corpus already."""
    prefix = f"{corpus}/"
    return speaker[len(prefix):] if speaker.startswith(prefix) else speaker


def speaker_table(pair_folds: pd.DataFrame, target: str, *, metric: str = "accuracy") -> pd.DataFrame:
    """Scenario 2 and 3 folds as a grid: rows the training speaker, columns the methods, values in percent."""
    rows = pair_folds[pair_folds["scenario"].isin([2, 3])]
    if rows.empty:
        return pd.DataFrame()
    combos = methods_of(rows)
    grid = rows.assign(label=[method_label(s, m) for s, m in zip(rows["scenario"], rows["method"])], value=rows[metric] * 100)
    table = grid.pivot_table(index="fold", columns="label", values="value", aggfunc="first")
    table = table.reindex(columns=[method_label(*c) for c in combos])
    table.index = [_strip_corpus(str(fold), target) for fold in table.index]
    table.columns.name = None
    return table


def utterances(manifest: pd.DataFrame | None, results: pd.DataFrame, *, rejected: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per utterance that gave features, with corpus, speaker and emotion.

    From the manifest when given, less the files ``rejected`` lists (the
    manifest also lists files whose audio could not be decoded); otherwise
    from the results' test rows, which hold every utterance of each target
    corpus (scenario 1 tests them all) but none of a corpus used only as a source.
    """
    if manifest is not None:
        if rejected is not None and len(rejected):
            # By corpus too: a file rejected as a copy within one corpus still counts in another that lists it.
            gone = pd.MultiIndex.from_frame(rejected[["corpus", "uri"]].astype(str))
            manifest = manifest[~pd.MultiIndex.from_frame(manifest[["corpus", "uri"]].astype(str)).isin(gone)]
        return manifest[["corpus", "speaker", "emotion"]].astype(str).reset_index(drop=True)
    tested = results.drop_duplicates(["target", "uri"])
    return pd.DataFrame({
        "corpus": tested["target"].astype(str).to_numpy(),
        "speaker": [_strip_corpus(str(s), str(t)) for s, t in zip(tested["speaker"], tested["target"])],
        "emotion": tested["true"].astype(str).to_numpy(),
    })


def corpus_table(rows: pd.DataFrame, rejected: pd.DataFrame | None) -> pd.DataFrame:
    """The study's Table 1: utterances per emotion and corpus, with speakers and totals."""
    # A corpus whose every file was rejected still gets a row, with zero utterances.
    corpora = sorted(set(rows["corpus"]) | (set(rejected["corpus"].astype(str)) if rejected is not None and len(rejected) else set()))
    counts = pd.crosstab(rows["corpus"], rows["emotion"]).reindex(index=corpora, columns=class_labels(rows["emotion"]), fill_value=0)
    speakers = rows.groupby("corpus")["speaker"].nunique().reindex(corpora, fill_value=0)
    table = counts.assign(total=counts.sum(axis=1), speakers=speakers)
    if rejected is not None:
        table["rejected files"] = rejected.astype({"corpus": str}).groupby("corpus").size().reindex(corpora, fill_value=0) if len(rejected) else 0
    table.columns.name = None
    return table.rename_axis("corpus").reset_index()


def speaker_counts(rows: pd.DataFrame, corpus: str) -> pd.DataFrame:
    """Utterances per speaker and emotion in one corpus."""
    mine = rows[rows["corpus"] == corpus]
    table = pd.crosstab(mine["speaker"], mine["emotion"]).reindex(columns=class_labels(mine["emotion"]), fill_value=0)
    table = table.assign(total=table.sum(axis=1))
    table.columns.name = None
    return table.rename_axis("speaker").reset_index()


def rejected_summary(rejected: pd.DataFrame) -> pd.DataFrame:
    """Rejected files per corpus, stage and reason, most frequent first within each corpus."""
    columns = [c for c in ("corpus", "stage", "reason") if c in rejected.columns]
    counts = rejected.astype({c: str for c in columns}).groupby(columns).size().rename("files").reset_index()
    return counts.sort_values(["corpus", "files", *columns[1:]], ascending=[True, False, *[True] * (len(columns) - 1)], kind="stable").reset_index(drop=True)


def redact(value: Any) -> Any:
    """Settings with anything that looks like a credential masked, at any depth.

    The run record masks top-level storage options already; nested ones (such as
    ``client_kwargs``) would otherwise reach a page that is meant to be shared.
    """
    if isinstance(value, dict):
        return {k: ("***" if any(w in str(k).lower() for w in SECRET_WORDS) and not isinstance(v, (dict, list)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


# --- figures ----------------------------------------------------------------------------------------


class _FigureFiles:
    """The report's figure files: readable names from corpus and method names, each used once, and each figure drawn only when its file does not hold it yet.

    Drawing is most of the time a report takes (half a minute for the demo's
    two pairs), and a re-run whose results did not change would draw every
    figure again. A figure's PNG carries its :func:`~crossemo.report.figures.figure_key`,
    so a file whose key is the one the figure would get is reused as it is.
    """

    def __init__(self, folder: str, *, storage_options: storage.StorageOptions | None = None) -> None:
        self.folder = folder
        self.storage_options = storage_options
        self.used: set[str] = set()

    def draw(self, parts: tuple[str, ...], draw: Any, *args: Any, alt: str, caption: str, **kwargs: Any) -> Rendered:
        """``draw(*args, **kwargs)`` as a figure named from ``parts``, or the file of that name when it was drawn from the same inputs."""
        name = self._name(*parts)
        key = figures.figure_key(draw, *args, **kwargs)
        try:
            kept = storage.read_bytes(storage.join(self.folder, name), storage_options=self.storage_options)
        except OSError:  # missing, or not readable with these credentials: draw it
            kept = b""
        if figures.png_key(kept) == key:
            return Rendered(name, kept, alt, caption, reused=True)
        return Rendered(name, figures.render_png(draw(*args, **kwargs), key=key), alt, caption)

    def _name(self, *parts: str) -> str:
        """A file name not used yet, from ``parts`` (corpus, method … names) cleaned for a path."""
        stem = "_".join(re.sub(r"[^A-Za-z0-9._-]+", "-", part).strip("-.") or "x" for part in parts)
        # Two names that differ only in punctuation would clash after cleaning; number the later one.
        name = _first_free(stem, self.used, suffix=".png")
        self.used.add(name)
        return name


def _pair_slug(source: str, target: str) -> str:
    return f"{source}-to-{target}"


def pair_anchors(pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Each pair's section id; pairs whose names differ only in punctuation (``a+b`` and ``a-b``) are numbered apart, as their figures are."""
    anchors: dict[tuple[str, str], str] = {}
    for source, target in pairs:
        anchors[(source, target)] = _first_free(_anchor("pair", _pair_slug(source, target)), set(anchors.values()))
    return anchors


def _first_free(stem: str, taken: set[str], *, suffix: str = "") -> str:
    """``stem + suffix``, or ``stem-2 + suffix``, ``stem-3 + suffix`` … whichever is not in ``taken`` first."""
    name, n = f"{stem}{suffix}", 2
    while name in taken:
        name, n = f"{stem}-{n}{suffix}", n + 1
    return name


def _anchor(*parts: str) -> str:
    """An element id from data: only characters that need no escaping in HTML or URL fragments."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts))


def _pair_figures(results: pd.DataFrame, folds: pd.DataFrame, source: str, target: str, names: _FigureFiles) -> tuple[Rendered | None, Rendered | None, list[Rendered]]:
    """The bar chart, the per-speaker heatmap and the confusion matrices of one pair."""
    title = f"{source} → {target}"
    pair_folds = pair_rows(folds, source, target)
    if pair_folds.empty:
        return None, None, []
    values = fold_values(pair_folds)
    bars = names.draw(
        (_pair_slug(source, target), "methods"),
        figures.method_bars, values, title=f"{title}: mean over folds, ± std, dots = folds", baseline=BASELINE_LABEL,
        alt=f"Bar chart of accuracy and UAR per method for {title}",
        caption="Mean accuracy and UAR per method; error bars are the standard deviation over folds, dots the individual folds, the dashed line the S2 RF baseline.",
    )
    grid = speaker_table(pair_folds, target)
    heatmap = None if grid.empty else names.draw(
        (_pair_slug(source, target), "speakers"),
        figures.speaker_heatmap, grid, title=f"{title}: accuracy (%) per training speaker",
        alt=f"Heatmap of accuracy per training speaker and method for {title}",
        caption="Accuracy of every scenario 2 and 3 fold: each row trains on that target speaker and tests on the others.",
    )
    return bars, heatmap, _confusions(pair_rows(results, source, target), source, target, names)


def _confusions(rows: pd.DataFrame, source: str, target: str, names: _FigureFiles) -> list[Rendered]:
    """One confusion matrix per (scenario, method), summed over the method's folds."""
    labels = class_labels(rows["true"], rows["predicted"])
    rendered = []
    for scenario, method in methods_of(rows):
        mine = rows[(rows["scenario"] == scenario) & (rows["method"] == method)]
        label = method_label(scenario, method)
        n_folds = mine["fold"].nunique()
        title = f"{label}: {source} → {target}\n{n_folds} fold{'s' if n_folds != 1 else ''}, {len(mine)} test predictions"
        rendered.append(names.draw(
            (_pair_slug(source, target), "confusion", f"s{scenario}", method),
            figures.confusion_matrix, confusion_counts(mine, labels), labels, title=title,
            alt=f"Confusion matrix of {label} for {source} → {target}",
            caption=f"{label}, all folds",
        ))
    return rendered


# --- HTML -------------------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape("" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value), quote=True)


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and not np.isnan(value) and float(value).is_integer():
        return _esc(int(value))
    return _esc(value)


def html_table(frame: pd.DataFrame, *, table_id: str | None = None, caption: str | None = None, label_columns: int = 1) -> str:
    """An HTML table of ``frame``; the first ``label_columns`` columns are text, the rest numbers.

    Args:
        frame: the rows to show; its column names become the header.
        table_id: the table's ``id``.
        caption: a caption above the table.
        label_columns: how many leading columns are left-aligned labels.

    Returns:
        the ``<table>`` element.
    """
    head = "".join(f"<th{NUM_CLASS if i >= label_columns else ''} scope=col>{_esc(c)}</th>" for i, c in enumerate(frame.columns))
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for i, value in enumerate(row):
            text = _cell(value)
            tag = "th scope=row" if i == 0 else "td"
            cells.append(f"<{tag}{NUM_CLASS if i >= label_columns else ''}>{text}</{tag.split()[0]}>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    attributes = f' id="{_esc(table_id)}"' if table_id else ""
    caption_html = f"<caption>{_esc(caption)}</caption>" if caption else ""
    return f"<table{attributes}>{caption_html}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(rendered: Rendered, *, wide: bool = False) -> str:
    data = base64.b64encode(rendered.png).decode("ascii")
    return (
        f'<figure class="{"wide" if wide else "small"}"><img src="data:image/png;base64,{data}" alt="{_esc(rendered.alt)}">'
        f"<figcaption>{_esc(rendered.caption)} <code>figures/{_esc(rendered.name)}</code></figcaption></figure>"
    )


def _tables_section(figures: tables.Figures, pairs: list[tuple[str, str]]) -> str:
    """Tables 2 and 3 in accuracy and UAR, each cell ``mean ± sd (folds) [pooled]`` in percent."""
    parts = ['<section id="tables"><h2>Tables 2 and 3</h2>', f"<p>{_esc(tables.DEFINITIONS)}</p>",
             "<p>Table 3 compares the scenario 2 Random Forest (the study's baseline) with the transfer methods, which run in scenario 3's folds.</p>"]
    for metric, title in (("accuracy", "accuracy"), ("uar", "UAR (unweighted average recall)")):
        text2, text3 = tables.build_tables(figures, pairs, metric=metric, spread=True)
        parts.append(html_table(text2.rename(columns=TABLE2_HEADERS), table_id=f"table2-{metric}", caption=f"Table 2: majority and Random Forest per scenario, {title}", label_columns=2))
        for number, chunk in enumerate(_by_pairs(text3), start=1):
            suffix = "" if number == 1 else f"-{number}"
            parts.append(html_table(chunk, table_id=f"table3-{metric}{suffix}", caption=f"Table 3: baseline RF, target-only twins and transfer methods, {title}"))
    parts.append("</section>")
    return "\n".join(parts)


PAIRS_PER_TABLE3 = 4
"""Table 3 on the page has a row per method and a column per pair; more pairs than this continue in another table, so it fits a screen."""


def _by_pairs(text3: pd.DataFrame) -> list[pd.DataFrame]:
    """Table 3 transposed (a row per method, a column per pair), in chunks of :data:`PAIRS_PER_TABLE3` pairs.

    With the target-only twins and every transfer method there are some twenty
    method columns, more than a 1280 px screen holds; pairs are few.
    """
    by_method = text3.rename(columns=TABLE3_HEADERS).set_index(["source", "target"]).T
    by_method.columns = [f"{source} → {target}" for source, target in by_method.columns]
    by_method = by_method.rename_axis("method").reset_index()
    return [by_method.iloc[:, [0, *range(start, min(start + PAIRS_PER_TABLE3, by_method.shape[1] - 1) + 1)]]
            for start in range(1, by_method.shape[1], PAIRS_PER_TABLE3)]


def _corpora_section(manifest: pd.DataFrame | None, rejected: pd.DataFrame | None, results: pd.DataFrame) -> str:
    """Table 1, utterances per speaker, and the files that gave no features."""
    rows = utterances(manifest, results, rejected=rejected)
    origin = ("that gave features, from the feature store's manifest" if manifest is not None
              else "from the results' test rows, since no manifest was given: only target corpora appear, and only their utterances that were tested")
    parts = ['<section id="corpora"><h2>Corpora</h2>', f"<p>Utterances per emotion, {_esc(origin)}.</p>"]
    if rows.empty:
        parts.append("<p>No utterances.</p>")
    else:
        parts.append(html_table(corpus_table(rows, rejected), table_id="table1", caption="Table 1: utterances per emotion"))
        parts.append('<h3>Utterances per speaker</h3><div class="row">')
        for corpus in sorted(rows["corpus"].unique()):
            parts.append(html_table(speaker_counts(rows, corpus), table_id=_anchor("speakers", corpus), caption=corpus))
        parts.append("</div>")
    parts.append(_rejected_html(rejected))
    parts.append("</section>")
    return "\n".join(parts)


def _rejected_html(rejected: pd.DataFrame | None) -> str:
    if rejected is None:
        return "<h3>Rejected files</h3><p>Not known: no list of rejected files was given.</p>"
    if rejected.empty:
        return "<h3>Rejected files</h3><p>No file was rejected.</p>"
    summary = rejected_summary(rejected)
    note = ""
    if len(summary) > REJECTED_ROWS:
        rest = summary.iloc[REJECTED_ROWS:]
        note = f"<p>{len(rest)} more reasons ({int(rest['files'].sum())} files) are in <code>features/_rejected.parquet</code>.</p>"
        summary = summary.iloc[:REJECTED_ROWS]
    caption = f"{len(rejected)} files gave no features, by corpus, stage and reason"
    return f"<h3>Rejected files</h3>{html_table(summary, table_id='rejected', caption=caption, label_columns=len(summary.columns) - 1)}{note}"


def _verdict_section(table: pd.DataFrame, names: _FigureFiles) -> tuple[str, list[Rendered]]:
    """The page's opening: does borrowing help each target, in words and as a figure (see :mod:`crossemo.report.verdict`)."""
    from crossemo.methods import RECOMMENDED

    if table.empty:
        text = (f"<p>No verdict: the recommended method {_esc(RECOMMENDED)} did not run. "
                "Add it to <code>--methods</code> (or use <code>--methods all</code>) to learn whether borrowing helps.</p>")
        return f'<section id="verdict"><h2>Verdict</h2>{text}</section>', []
    items = "".join(f"<li>{_esc(verdict.sentence(row))}.</li>" for _, row in table.iterrows())
    rendered = names.draw(
        ("verdict",), figures.verdict_gains, table, title=f"Borrowing with {RECOMMENDED}: UAR gain per pair",
        alt="UAR gain of the recommended transfer method per pair, with 95 % intervals",
        caption=f"Gain of {RECOMMENDED} (scenario 3) over the best target-only model and over the Baseline RF, in UAR points; bars: 95 % paired bootstrap interval over folds.",
    )
    explanation = (f"<p>The recommended transfer method, {_esc(RECOMMENDED)}, against the best model trained on the target alone in this run, "
                   "fold by fold; it helps when the whole 95 % interval of the gain lies above zero. <code>verdict.csv</code> has the figures.</p>")
    html_text = f'<section id="verdict"><h2>Verdict</h2><ul>{items}</ul>{explanation}{_figure(rendered, wide=True)}{html_table(_verdict_rows(table), table_id="verdict-table", label_columns=2)}</section>'
    return html_text, [rendered]


def _verdict_rows(table: pd.DataFrame) -> pd.DataFrame:
    """``verdict.csv``'s figures in fewer, screen-wide columns (UAR %, gains in points)."""
    return pd.DataFrame({
        "pair": [f"{s} → {t}" for s, t in zip(table["source"], table["target"])],
        "method": table["method"],
        "UAR": table["uar"].map("{:.1f}".format),
        "best target-only": [f"{verdict.target_only_name(m)} {u:.1f}" for m, u in zip(table["target_only_method"], table["target_only_uar"])],
        "baseline RF (S2)": table["baseline_uar"].map("{:.1f}".format),
        "gain vs target-only (95 % CI)": [f"{g:+.1f} [{lo:.1f}, {hi:.1f}]" for g, lo, hi in zip(table["gain_vs_target_only"], table["ci_low"], table["ci_high"])],
        "gain vs baseline": table["gain_vs_baseline"].map("{:+.1f}".format),
        "helps": table["helps"].map({True: "yes", False: "no"}),
    })


def _warnings_section(run: dict[str, Any] | None) -> str:
    """Every warning of the run: what did not stop it but bears on reading its numbers."""
    if not run or "warnings" not in run:
        return ""
    warnings = run["warnings"]
    if not warnings:
        return '<section id="warnings"><h2>Warnings</h2><p>The run recorded no warnings.</p></section>'
    items = "".join(f"<li>{_esc(warning)}</li>" for warning in warnings)
    count = f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}"
    return f'<section id="warnings"><h2>Warnings</h2><p>{count}, also in the run record <code>runs/&lt;run id&gt;/run.json</code>.</p><ul>{items}</ul></section>'


def _duplicates_section(duplicates: pd.DataFrame | None) -> str:
    """Files with byte-identical audio, by group, and what was done with each."""
    if duplicates is None:
        return ""
    parts = ['<section id="duplicates"><h2>Duplicate recordings</h2>']
    if duplicates.empty:
        parts.append("<p>No two files have identical audio.</p></section>")
        return "\n".join(parts)
    groups = duplicates["group"].nunique()
    rows = duplicates.sort_values(["group", "corpus", "uri"], kind="stable")[DUPLICATE_COLUMNS].reset_index(drop=True)
    parts.append(f"<p>{groups} group{'s' if groups != 1 else ''} of files with identical audio (the same SHA-256), {len(rows)} files; "
                 "<em>action</em> says what the run did with each file.</p>")
    if len(rows) > DUPLICATE_ROWS:
        parts.append(f"<p>The first {DUPLICATE_ROWS} files are shown; all {len(rows)} are in <code>features/_duplicates.parquet</code>.</p>")
    parts.append(html_table(rows.iloc[:DUPLICATE_ROWS], table_id="duplicates-table", caption="Duplicate files by group", label_columns=len(DUPLICATE_COLUMNS)))
    parts.append("</section>")
    return "\n".join(parts)


def _pair_section(results: pd.DataFrame, folds: pd.DataFrame, source: str, target: str, names: _FigureFiles, *, anchor: str) -> tuple[str, list[Rendered]]:
    """One pair's figures and per-fold numbers, and the figures to write as files."""
    parts = [f'<section id="{_esc(anchor)}" class="pair"><h2>{_esc(source)} → {_esc(target)}</h2>']
    bars, heatmap, confusions = _pair_figures(results, folds, source, target, names)
    if bars is None:
        parts.append("<p>No results for this pair.</p></section>")
        return "\n".join(parts), []
    parts += ["<h3>Methods</h3>", _figure(bars, wide=True)]
    if heatmap is not None:
        pair_folds = pair_rows(folds, source, target)
        parts += ["<h3>Per speaker</h3>", _figure(heatmap, wide=True), "<details><summary>Per-fold numbers</summary>"]
        for metric, title in (("accuracy", "accuracy (%)"), ("uar", "UAR (%)")):
            grid = speaker_table(pair_folds, target, metric=metric).map(lambda v: f"{v:.1f}" if np.isfinite(v) else "")
            grid = grid.rename_axis("training speaker").reset_index()
            # One column per method: wider than a screen with every method, so it scrolls inside its box.
            parts.append(f'<div class="scroll">{html_table(grid, table_id=f"{anchor}-folds-{metric}", caption=f"{title} per training speaker")}</div>')
        parts.append("</details>")
    parts += ["<h3>Confusion matrices</h3>",
              "<p>Rows are the true class, columns the prediction, summed over all folds (and seeds, where a run has several); colour and percentages are shares of the true class, counts in brackets.</p>",
              '<div class="grid">', *(_figure(c) for c in confusions), "</div></section>"]
    return "\n".join(parts), [bars, *([heatmap] if heatmap else []), *confusions]


def _compute_section(results: pd.DataFrame) -> str:
    """Tasks and their compute time per scenario and method, when the results carry timings."""
    if not {"key", "cpu_seconds", "wall_seconds"} <= set(results.columns) or results.empty:
        return ""
    tasks = results.groupby("key", as_index=False).first()
    tasks["label"] = [method_label(s, m) for s, m in zip(tasks["scenario"], tasks["method"])]
    tasks["order"] = [_method_key(s, m) for s, m in zip(tasks["scenario"], tasks["method"])]
    summary = tasks.groupby(["order", "label"]).agg(tasks=("key", "size"), cpu=("cpu_seconds", "sum"), wall=("wall_seconds", "mean")).reset_index()
    summary = summary.drop(columns="order").rename(columns={"label": "method", "cpu": "task CPU seconds (total)", "wall": "wall seconds per task (mean)"}).round(1)
    return f'<section id="compute"><h2>Compute</h2><details><summary>Tasks and time per method</summary>{html_table(summary, table_id="compute-table")}</details></section>'


def _header(run: dict[str, Any] | None, results: pd.DataFrame, pairs: list[tuple[str, str]]) -> str:
    """Which run this is, and how much it holds."""
    run = run or {}
    facts = [("run", run.get("run_id")), ("started", run.get("started")), ("code version", run.get("code_version")), ("feature set", run.get("feature_set_id"))]
    known = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v) if v else '<em>not recorded</em>'}</dd>" for k, v in facts)
    tasks = results["key"].nunique() if "key" in results.columns else results[list(tables.FOLD_KEYS)].drop_duplicates().shape[0]
    summary = f"{len(pairs)} pair{'s' if len(pairs) != 1 else ''}, {tasks} tasks, {len(results)} test predictions."
    settings = ""
    if run.get("settings"):
        text = json.dumps(redact(run["settings"]), indent=2, sort_keys=True, default=str)
        settings = f"<details><summary>Settings</summary><pre>{_esc(text)}</pre></details>"
    return f"<header><h1>crossemo report</h1><dl>{known}</dl><p>{_esc(summary)}</p>{settings}</header>"


def _contents(pairs: list[tuple[str, str]], body: str) -> str:
    """Links to the sections present in ``body``, then to every pair."""
    links = [(anchor, title) for anchor, title in SECTIONS if f'<section id="{anchor}">' in body]
    anchors = pair_anchors(pairs)
    links += [(anchors[(s, t)], f"{s} → {t}") for s, t in pairs]
    items = "".join(f'<li><a href="#{_esc(anchor)}">{_esc(text)}</a></li>' for anchor, text in links)
    return f"<nav><ul>{items}</ul></nav>"


# Headers and numeric cells may wrap: Table 3's up to ten columns of "mean ± std (n)"
# are wider than a 1280 px screen on one line each. A table that fits is laid out
# on single lines as before; one that does not wraps instead of being cut. Long
# object-store URIs of duplicate files may break anywhere, for the same reason.
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;max-width:1200px;padding:1rem 1.5rem;color:#1d1d1f;line-height:1.45}
h1{margin:.2rem 0 .6rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}h3{margin:1.4rem 0 .5rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.1rem 1rem;margin:.4rem 0}dt{font-weight:600}dd{margin:0;font-family:ui-monospace,Menlo,Consolas,monospace}
nav ul{display:flex;flex-wrap:wrap;gap:.3rem 1rem;list-style:none;padding:.5rem .8rem;background:#f4f5f7;border-radius:6px}
nav a{color:#1f5fa8;text-decoration:none}nav a:hover{text-decoration:underline}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.9rem}caption{text-align:left;font-weight:600;padding:.3rem 0}
th,td{border:1px solid #d6d6d6;padding:.25rem .45rem;text-align:left;vertical-align:top}thead th{background:#f0f2f5}
.num{text-align:right;font-variant-numeric:tabular-nums}tbody tr:nth-child(even){background:#fafafa}
#duplicates-table td,figcaption code{overflow-wrap:anywhere}.scroll{overflow-x:auto;max-width:100%}
.row{display:flex;flex-wrap:wrap;gap:0 1.5rem;align-items:flex-start}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:1rem}
figure{margin:.5rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.85rem;color:#555}
pre{background:#f4f5f7;padding:.6rem;overflow:auto;font-size:.8rem}details{margin:.5rem 0}summary{cursor:pointer;color:#1f5fa8}
@media print{nav,details>summary{display:none}section.pair{break-before:page}}
"""


def _page(*, run: dict[str, Any] | None, results: pd.DataFrame, pairs: list[tuple[str, str]], body: list[str]) -> str:
    title = f"crossemo report {run.get('run_id', '')}".strip() if run else "crossemo report"
    sections = [part for part in body if part]
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body>",
        _header(run, results, pairs),
        _contents(pairs, "\n".join(sections)),
        '<p class="legend">Methods by scenario: <b>S1</b> trains on the source only and tests on the whole target; '
        "<b>S2</b> trains on one target speaker and tests on the others (S2 RF is the study's baseline); "
        "<b>S3</b> trains on the source plus one target speaker and tests on the others.</p>",
        *sections,
        "</body></html>",
    ])
