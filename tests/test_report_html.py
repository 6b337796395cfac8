"""The HTML report: one self-contained page with the tables and figures, locally and on S3."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from crossemo import metrics, pipeline
from crossemo.labels import EMOTIONS
from crossemo.protocol import RESULT_COLUMNS
from crossemo.report import figures, tables
from crossemo.report.html import DUPLICATE_COLUMNS, corpus_table, utterances, write_html_report

CORPORA = {"emodb": ["03", "08", "09"], "emovo": ["f1", "m1", "<script>alert(1)</script>"]}
PAIRS = [("emodb", "emovo"), ("emovo", "emodb")]
S3_METHODS = ["rf", "dbn", "norm_distribution"]
TAKES = (4, 3, 2, 3)
"""Utterances per speaker of each emotion, in EMOTIONS order."""
CHROMIUM = Path("/usr/bin/chromium")


def _utterances(corpus: str, corpora: dict[str, list[str]] = CORPORA) -> pd.DataFrame:
    """Per speaker, unequal numbers of utterances per emotion (as in the study's Table 1), so UAR differs from accuracy."""
    rows = [
        {"corpus": corpus, "speaker": speaker, "emotion": emotion, "uri": f"/data/{corpus}/{speaker}/{emotion}{take}.wav"}
        for speaker in corpora[corpus] for emotion, takes in zip(EMOTIONS, TAKES) for take in range(takes)
    ]
    return pd.DataFrame(rows)


def _predict(true: np.ndarray, rng: np.random.Generator, *, skill: float) -> np.ndarray:
    """Right with probability ``skill``, else a random class."""
    guesses = rng.choice(EMOTIONS, size=len(true))
    return np.where(rng.random(len(true)) < skill, true, guesses)


def _task(rows: pd.DataFrame, *, source: str, target: str, scenario: int, method: str, fold: str, predicted: np.ndarray, n_train: int) -> pd.DataFrame:
    true = rows["emotion"].to_numpy()
    accuracy, uar = metrics.score(true, predicted, classes=list(EMOTIONS))
    return pd.DataFrame({
        "key": f"{source}-{target}-{scenario}-{method}-{fold}", "source": source, "target": target, "scenario": scenario,
        "method": method, "fold": fold, "seed": 0, "uri": rows["uri"].to_numpy(), "speaker": (target + "/" + rows["speaker"]).to_numpy(),
        "true": true, "predicted": predicted, "accuracy": accuracy, "uar": uar, "n_train": n_train, "n_test": len(rows),
        "cpu_seconds": 0.5, "wall_seconds": 0.6,
    })[RESULT_COLUMNS]


def _results(s3_methods: list[str] = S3_METHODS, corpora: dict[str, list[str]] = CORPORA, pairs: list[tuple[str, str]] = PAIRS) -> pd.DataFrame:
    """Per-utterance results of every scenario for ``pairs``, as the protocol would write them."""
    rng = np.random.default_rng(7)
    frames = []
    for target in corpora:
        data = _utterances(target, corpora)
        for speaker in corpora[target]:
            test = data[data["speaker"] != speaker]
            fold = f"{target}/{speaker}"
            frames.append(_task(test, source="", target=target, scenario=2, method="majority", fold=fold, predicted=np.full(len(test), "anger"), n_train=12))
            frames.append(_task(test, source="", target=target, scenario=2, method="rf", fold=fold, predicted=_predict(test["emotion"].to_numpy(), rng, skill=0.5), n_train=12))
    for source, target in pairs:
        data = _utterances(target, corpora)
        frames.append(_task(data, source=source, target=target, scenario=1, method="rf", fold="all", predicted=_predict(data["emotion"].to_numpy(), rng, skill=0.2), n_train=36))
        for speaker in corpora[target]:
            test = data[data["speaker"] != speaker]
            for skill, method in zip(np.linspace(0.4, 0.7, len(s3_methods)), s3_methods):
                predicted = _predict(test["emotion"].to_numpy(), rng, skill=skill)
                frames.append(_task(test, source=source, target=target, scenario=3, method=method, fold=f"{target}/{speaker}", predicted=predicted, n_train=48))
    return pd.concat(frames, ignore_index=True)


class _Page(HTMLParser):
    """Collects tables (by id, as rows of cell text), images and links of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.scripts = 0
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.images.append(attributes)
        for name in ("src", "href"):
            if name in attributes:
                self.links.append(attributes[name])
        if tag == "table":
            self._table = attributes.get("id", f"table-{len(self.tables)}")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _cell_text(cell: pd.DataFrame, metric: str) -> str:
    """What a table cell shows for these utterances: mean ± sample std over folds, and the pooled figure."""
    percent = cell.groupby("fold")[metric].first() * 100
    pooled = metrics.score(cell["true"].to_numpy(), cell["predicted"].to_numpy(), classes=list(EMOTIONS))[metric == "uar"] * 100
    return f"{percent.mean():.1f} ± {percent.std(ddof=1):.1f} ({len(percent)} folds) [pooled {pooled:.1f}]"


def _column(table: list[list[str]], source: str, target: str) -> dict[str, str]:
    """Table 3 on the page: a row per method, a column per pair."""
    header, *rows = table
    position = header.index(f"{source} → {target}")
    return {row[0]: row[position] for row in rows}


def _row(table: list[list[str]], source: str, target: str) -> dict[str, str]:
    header, *rows = table
    for row in rows:
        if row[:2] == [source, target]:
            return dict(zip(header, row))
    raise AssertionError(f"no row for {source} → {target}")


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return _results()


@pytest.fixture(scope="module")
def report(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    manifest = pd.concat([_utterances(c) for c in CORPORA], ignore_index=True).assign(label="x", fingerprint="f", sha256="s")
    rejected = pd.DataFrame({
        "uri": ["/data/emodb/a.wav", "/data/emodb/b.wav", "/data/emovo/c.wav"],
        "corpus": ["emodb", "emodb", "emovo"],
        "stage": ["recipe", "recipe", "decode"],
        "reason": ["emotion code <B> is not among the four classes"] * 2 + ["truncated file"],
    })
    run = {"run_id": "20240101T000000Z-abc123", "started": "2024-01-01T00:00:00+00:00", "code_version": "0.1.0+deadbee",
           "feature_set_id": "emobase2010-test", "settings": {"storage_options": {"client_kwargs": {"aws_secret_access_key": "hunter2"}}}}
    index = write_html_report(results, PAIRS, str(out), manifest=manifest, rejected=rejected, run=run)
    assert index == str(out / "index.html")
    return out


@pytest.fixture(scope="module")
def page(report) -> tuple[str, _Page]:
    text = (report / "index.html").read_text(encoding="utf-8")
    return text, _parse(text)


def test_page_is_self_contained(page):
    text, parsed = page
    assert text.startswith("<!DOCTYPE html>")
    assert parsed.scripts == 0
    external = [link for link in parsed.links if re.match(r"\s*(https?:)?//", link, re.I)]
    assert external == []
    assert "<link" not in text and "@import" not in text and "url(" not in text
    assert parsed.images and all(img["src"].startswith("data:image/png;base64,") for img in parsed.images)


def test_header_shows_the_run_and_hides_secrets(page):
    text, _ = page
    for value in ("20240101T000000Z-abc123", "2024-01-01T00:00:00+00:00", "0.1.0+deadbee", "emobase2010-test"):
        assert value in text
    assert "hunter2" not in text


def test_tables_2_and_3_in_both_metrics(page, results):
    _, parsed = page
    for metric in ("accuracy", "uar"):
        for source, target in PAIRS:
            pair = results[(results["source"] == source) & (results["target"] == target)]
            s2 = results[(results["scenario"] == 2) & (results["target"] == target)]
            table2 = _row(parsed.tables[f"table2-{metric}"], source, target)
            assert table2["majority (S2)"] == _cell_text(s2[s2["method"] == "majority"], metric)
            assert table2["chance"] == "25.0"
            assert table2["RF scenario 1"] == f"{pair.loc[pair['scenario'] == 1, metric].iloc[0] * 100:.1f}"
            assert table2["RF scenario 2"] == _cell_text(s2[s2["method"] == "rf"], metric)
            assert table2["RF scenario 3"] == _cell_text(pair[(pair["scenario"] == 3) & (pair["method"] == "rf")], metric)
            table3 = _column(parsed.tables[f"table3-{metric}"], source, target)
            assert table3["baseline RF (S2)"] == table2["RF scenario 2"]
            # A transfer method's cell may end in a mark (▲/▼) when its interval excludes zero.
            assert table3["DBN"].removesuffix(" ▲").removesuffix(" ▼") == _cell_text(pair[pair["method"] == "dbn"], metric)
            assert table3["norm. distribution"].removesuffix(" ▲").removesuffix(" ▼") == _cell_text(pair[pair["method"] == "norm_distribution"], metric)
            assert "FCNN" not in table3  # not run: no column
    # Unequal classes: the UAR tables are not copies of the accuracy ones.
    assert parsed.tables["table3-uar"] != parsed.tables["table3-accuracy"]


def test_corpora_table_and_rejections(page):
    _, parsed = page
    header, *rows = parsed.tables["table1"]
    table1 = {row[0]: dict(zip(header, row)) for row in rows}
    assert table1["emodb"]["neutral"] == "12" and table1["emodb"]["joy"] == "6" and table1["emodb"]["total"] == "36" and table1["emodb"]["speakers"] == "3"
    assert table1["emodb"]["rejected files"] == "2" and table1["emovo"]["rejected files"] == "1"
    rejected = parsed.tables["rejected"]
    assert ["emodb", "recipe", "emotion code <B> is not among the four classes", "2"] in rejected
    speakers = parsed.tables["speakers-emovo"]
    assert ["<script>alert(1)</script>", "4", "3", "2", "3", "12"] in speakers


def test_table1_counts_only_utterances_that_gave_features():
    """The feature store's manifest also lists files that could not be decoded: Table 1 counted them, and a speaker who had only those."""
    manifest = pd.DataFrame({
        "corpus": ["c"] * 4, "speaker": ["s1", "s1", "s2", "s2"], "emotion": ["anger", "joy", "joy", "sadness"],
        "uri": ["/c/s1/a.wav", "/c/s1/b.wav", "/c/s2/c.wav", "/c/s2/d.wav"],
    })
    rejected = pd.DataFrame({"uri": ["/c/s2/c.wav", "/c/s2/d.wav"], "corpus": ["c", "c"], "stage": ["decode"] * 2, "reason": ["not an audio file"] * 2})
    table = corpus_table(utterances(manifest, pd.DataFrame(), rejected=rejected), rejected).set_index("corpus")
    assert table.loc["c", "total"] == 2 and table.loc["c", "speakers"] == 1 and table.loc["c", "rejected files"] == 2
    assert table.loc["c", "sadness"] == 0
    # A file rejected as a copy within one corpus still counts in another corpus that lists it.
    other = pd.DataFrame({"corpus": ["d"], "speaker": ["s9"], "emotion": ["joy"], "uri": ["/c/s2/c.wav"]})
    both = corpus_table(utterances(pd.concat([manifest, other]), pd.DataFrame(), rejected=rejected), rejected).set_index("corpus")
    assert both.loc["d", "total"] == 1 and both.loc["c", "total"] == 2


def test_data_text_is_escaped(page):
    text, parsed = page
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert parsed.scripts == 0


def test_figures_per_pair_and_method(report, page, results):
    _, parsed = page
    alts = [img["alt"] for img in parsed.images]
    for source, target in PAIRS:
        title = f"{source} → {target}"
        assert alts.count(f"Bar chart of accuracy and UAR per method for {title}") == 1
        assert alts.count(f"Heatmap of accuracy per training speaker and method for {title}") == 1
        for label in ("S1 RF", "S2 majority", "S2 RF", "S3 RF", "S3 DBN", "S3 norm. distribution"):
            assert alts.count(f"Confusion matrix of {label} for {title}") == 1
    files = sorted(p.name for p in (report / "figures").glob("*.png"))
    assert len(files) == len(parsed.images) == 2 * (2 + 6)
    assert "emodb-to-emovo_methods.png" in files and "emovo-to-emodb_confusion_s3_norm_distribution.png" in files
    for name in files:
        image = matplotlib.image.imread(report / "figures" / name)
        assert image.shape[0] > 100 and image.shape[1] > 100


def test_per_speaker_view_has_every_fold(page, results):
    _, parsed = page
    table = parsed.tables["pair-emodb-to-emovo-folds-accuracy"]
    header, *rows = table
    assert header == ["training speaker", "S2 majority", "S2 RF", "S3 RF", "S3 DBN", "S3 norm. distribution"]
    assert [row[0] for row in rows] == sorted(CORPORA["emovo"])
    dbn = results[(results["method"] == "dbn") & (results["target"] == "emovo") & (results["fold"] == "emovo/f1")]["accuracy"].iloc[0]
    assert dict(zip(header, rows[[r[0] for r in rows].index("f1")]))["S3 DBN"] == f"{dbn * 100:.1f}"


def test_figures_are_deterministic(results):
    folds = pd.DataFrame({"label": ["a", "a", "b"], "accuracy": [40.0, 50.0, 60.0], "uar": [35.0, 45.0, 55.0]})
    first = figures.render_png(figures.method_bars(folds, title="$x$ pair"))
    assert first == figures.render_png(figures.method_bars(folds, title="$x$ pair"))
    counts = np.array([[3, 1], [0, 0]])
    assert matplotlib.image.imread(io.BytesIO(figures.render_png(figures.confusion_matrix(counts, ["a", "b"], title="t")))).size
    with pytest.raises(ValueError, match="labels"):
        figures.confusion_matrix(counts, ["a"], title="t")


def test_a_report_written_again_draws_only_the_figures_whose_inputs_changed(results, tmp_path, monkeypatch):
    write_html_report(results, PAIRS, str(tmp_path))
    folder = tmp_path / "figures"
    first = {path.name: path.read_bytes() for path in folder.glob("*.png")}
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    drawn: list[str] = []
    render = figures.render_png
    monkeypatch.setattr(figures, "render_png", lambda figure, **kwargs: drawn.append(kwargs["key"]) or render(figure, **kwargs))
    write_html_report(results, PAIRS, str(tmp_path))
    assert drawn == [] and (tmp_path / "index.html").read_text(encoding="utf-8") == page
    assert {path.name: path.read_bytes() for path in folder.glob("*.png")} == first
    # A figure file replaced by another PNG, or one removed, is drawn again; so is every figure of a pair whose results changed.
    (folder / "emovo-to-emodb_speakers.png").write_bytes(first["emodb-to-emovo_methods.png"])
    (folder / "emovo-to-emodb_methods.png").unlink()
    changed = results.copy()
    wrong = (changed["target"] == "emovo") & (changed["method"] == "dbn") & (changed["fold"] == "emovo/f1")
    changed.loc[wrong, "predicted"] = changed.loc[wrong, "true"]
    changed.loc[wrong, ["accuracy", "uar"]] = 1.0
    write_html_report(changed, PAIRS, str(tmp_path))
    again = {path.name: path.read_bytes() for path in folder.glob("*.png")}
    assert again["emovo-to-emodb_speakers.png"] == first["emovo-to-emodb_speakers.png"] and again["emovo-to-emodb_methods.png"] == first["emovo-to-emodb_methods.png"]
    assert again["emodb-to-emovo_confusion_s3_dbn.png"] != first["emodb-to-emovo_confusion_s3_dbn.png"]
    redrawn = {name for name in again if figures.png_key(again[name]) in drawn}
    assert redrawn == {"emovo-to-emodb_speakers.png", "emovo-to-emodb_methods.png", "emodb-to-emovo_methods.png", "emodb-to-emovo_speakers.png", "emodb-to-emovo_confusion_s3_dbn.png"}
    # New drawing code draws everything again.
    drawn.clear()
    monkeypatch.setattr(figures, "_DRAWING_CODE", "changed")
    write_html_report(changed, PAIRS, str(tmp_path))
    assert len(drawn) == len(again)
    # A page for one pair keeps only its own figures: the other pair's no longer pile up beside them; a picture of your own stays.
    import PIL.Image

    PIL.Image.new("RGB", (4, 4)).save(folder / "my_annotated_copy.png")
    write_html_report(changed, PAIRS[:1], str(tmp_path))
    left = {path.name for path in folder.glob("*.png")}
    assert not {name for name in left if name.startswith("emovo-to-emodb")} and {name for name in again if name.startswith("emodb-to-emovo")} <= left, left
    assert "my_annotated_copy.png" in left


def test_without_manifest_the_counts_come_from_results(results, tmp_path):
    # Only emodb → emovo: emodb is then a source only and has no test rows to count.
    write_html_report(results[results["target"] == "emovo"], PAIRS[:1], str(tmp_path))
    parsed = _parse((tmp_path / "index.html").read_text(encoding="utf-8"))
    header, *rows = parsed.tables["table1"]
    assert [row[:1] + row[-2:] for row in rows] == [["emovo", "36", "3"]]
    assert "rejected files" not in header
    assert len(list((tmp_path / "figures").glob("*.png"))) == 2 + 6


def test_missing_columns_are_named(results, tmp_path):
    with pytest.raises(ValueError, match="predicted"):
        write_html_report(results.drop(columns=["predicted"]), PAIRS, str(tmp_path))


def test_writes_to_s3(results, s3):
    import s3fs

    prefix = f"s3://{s3['bucket']}/runs/report"
    index = write_html_report(results, PAIRS[:1], prefix, storage_options=s3["storage_options"])
    assert index == f"{prefix}/index.html"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3["endpoint"]})
    text = fs.cat_file(f"{s3['bucket']}/runs/report/index.html").decode("utf-8")
    assert "table2-accuracy" in _parse(text).tables
    names = [path.rsplit("/", 1)[-1] for path in fs.ls(f"{s3['bucket']}/runs/report/figures")]
    assert "emodb-to-emovo_methods.png" in names
    assert matplotlib.image.imread(io.BytesIO(fs.cat_file(f"{s3['bucket']}/runs/report/figures/emodb-to-emovo_methods.png"))).size


def _need_chromium() -> None:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} is not installed; the page is checked by parsing only")


def test_renders_in_headless_chromium(report, tmp_path):
    _need_chromium()
    shot = tmp_path / "page.png"
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1280,4000", (report / "index.html").as_uri()]
    subprocess.run(command, check=True, capture_output=True, timeout=30)
    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (4000, 1280)
    # A blank page would be one colour; a rendered one has text, tables and figures.
    assert len(np.unique(image.reshape(-1, image.shape[-1])[::97], axis=0)) > 50


def test_tables_show_only_the_methods_that_ran(tmp_path):
    results = _results(["rf", "speaker_norm"])
    expected = ["source", "target", "majority", "chance", "rf", "speaker_norm"]
    written = tables.write_tables(results, PAIRS, str(tmp_path))
    for stem in ("table3", "table3_uar"):
        assert list(written[stem].columns) == expected
        csv = pd.read_csv(tmp_path / f"{stem}.csv")
        assert list(csv.columns) == expected and not csv.isna().any().any()
    markdown = (tmp_path / "tables.md").read_text(encoding="utf-8")
    assert markdown.count("| source | target | majority | chance | rf | speaker_norm |") == 2
    write_html_report(results, PAIRS, str(tmp_path))
    parsed = _parse((tmp_path / "index.html").read_text(encoding="utf-8"))
    for metric in ("accuracy", "uar"):
        header, *rows = parsed.tables[f"table3-{metric}"]
        assert header == ["method", *(f"{s} → {t}" for s, t in PAIRS)]
        assert [row[0] for row in rows] == ["majority", "chance", "baseline RF (S2)", "speaker norm."]
        assert all(all(cell for cell in row) for row in rows)


MEASURE = """<script>
document.addEventListener("DOMContentLoaded", () => {
  const tables = [...document.querySelectorAll("table")].map((t) => ({id: t.id, right: t.getBoundingClientRect().right, scrollWidth: t.scrollWidth}));
  document.body.dataset.layout = JSON.stringify({viewport: document.documentElement.clientWidth, page: document.documentElement.scrollWidth, tables});
});
</script>"""
"""Added to a copy of the page only (the page itself has no script): writes the layout into the DOM for --dump-dom."""


def test_table3_fits_1280_pixels(tmp_path):
    _need_chromium()
    # The widest Table 3 a run makes: every method, long corpus names, two-digit fold counts.
    corpora = {"iemocap-improvised": [f"s{i:02d}" for i in range(24)], "my-own-recordings": [f"spk{i}" for i in range(12)]}
    pairs = [("my-own-recordings", "iemocap-improvised"), ("iemocap-improvised", "my-own-recordings")]
    write_html_report(_results(["rf", *tables.TABLE3_METHODS[2:]], corpora, pairs), pairs, str(tmp_path))
    measured = tmp_path / "measured.html"
    measured.write_text((tmp_path / "index.html").read_text(encoding="utf-8").replace("</body>", f"{MEASURE}</body>"), encoding="utf-8")
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,800", "--dump-dom", measured.as_uri()]
    dom = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout
    layout = json.loads(html.unescape(re.search(r'data-layout="([^"]*)"', dom).group(1)))
    assert layout["viewport"] == 1280
    table3 = [t for t in layout["tables"] if t["id"].startswith("table3-")]
    assert len(table3) == 2
    for table in table3:
        assert table["scrollWidth"] <= layout["viewport"] and table["right"] <= layout["viewport"], table
    assert layout["page"] <= layout["viewport"], [t for t in layout["tables"] if t["right"] > layout["viewport"]]


WARNINGS = ["emovo: 3 files skipped: emotion code <dis> is not among the four classes", "emodb:emovo: class joy is only in the target"]


def _duplicates() -> pd.DataFrame:
    """Two groups of identical audio in the feature store's ``_duplicates.parquet`` layout."""
    return pd.DataFrame({
        "group": [1, 1, 2, 2, 2],
        "sha256": ["aa"] * 2 + ["bb"] * 3,
        "corpus": ["emodb", "emovo", "emovo", "emovo", "emovo"],
        "speaker": ["03", "f1", "m1", "m1", "<b>m2</b>"],
        "emotion": ["anger", "anger", "joy", "joy", "sadness"],
        "uri": ["/data/emodb/03/anger0.wav", "/data/emovo/f1/anger0.wav", "/data/emovo/m1/joy0.wav", "/data/emovo/m1/joy1.wav", "/data/emovo/m2/sadness0.wav"],
        "action": ["kept", "dropped", "kept", "dropped", "dropped"],
    })


def test_warnings_are_listed_near_the_top(results, tmp_path):
    write_html_report(results, PAIRS[:1], str(tmp_path), run={"run_id": "r1", "warnings": WARNINGS})
    text = (tmp_path / "index.html").read_text(encoding="utf-8")
    section = re.search(r'<section id="warnings">(.*?)</section>', text, re.S).group(1)
    assert [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", section)] == WARNINGS
    assert text.index('id="warnings"') < text.index('id="corpora"') < text.index('id="tables"')
    assert 'href="#warnings"' in text
    write_html_report(results, PAIRS[:1], str(tmp_path), run={"run_id": "r2", "warnings": []})
    assert "The run recorded no warnings." in (tmp_path / "index.html").read_text(encoding="utf-8")


def test_duplicate_recordings_section(results, tmp_path):
    write_html_report(results, PAIRS[:1], str(tmp_path), duplicates=_duplicates())
    text = (tmp_path / "index.html").read_text(encoding="utf-8")
    section = re.search(r'<section id="duplicates">(.*?)</section>', text, re.S).group(1)
    assert "2 groups of files with identical audio" in section and "5 files" in section
    header, *rows = _parse(text).tables["duplicates-table"]
    assert header == DUPLICATE_COLUMNS
    assert rows[0] == ["1", "emodb", "03", "anger", "/data/emodb/03/anger0.wav", "kept"]
    assert ["2", "emovo", "<b>m2</b>", "sadness", "/data/emovo/m2/sadness0.wav", "dropped"] in rows and len(rows) == 5
    assert 'href="#duplicates"' in text
    write_html_report(results, PAIRS[:1], str(tmp_path))
    assert 'id="duplicates"' not in (tmp_path / "index.html").read_text(encoding="utf-8")


def test_report_reads_warnings_and_duplicates_of_the_run(results, tmp_path):
    features = tmp_path / "out" / "features"
    features.mkdir(parents=True)
    _duplicates().to_parquet(features / "_duplicates.parquet")
    results.to_parquet(tmp_path / "results.parquet")
    record = {"run_id": "r1", "result_uris": [str(tmp_path / "results.parquet")], "pairs": [list(PAIRS[0])], "settings": {}, "warnings": WARNINGS}
    pipeline.write_report(str(tmp_path / "out"), record, storage_options=None)
    text = (tmp_path / "out" / "report" / "index.html").read_text(encoding="utf-8")
    assert len(_parse(text).tables["duplicates-table"]) == 1 + 5
    assert html.escape(WARNINGS[0]) in text


def test_pairs_whose_names_differ_only_in_punctuation_get_sections_of_their_own():
    from crossemo.report import html

    anchors = html.pair_anchors([("emovo+ravdess", "mine"), ("emovo-ravdess", "mine")])
    assert anchors == {("emovo+ravdess", "mine"): "pair-emovo-ravdess-to-mine", ("emovo-ravdess", "mine"): "pair-emovo-ravdess-to-mine-2"}
