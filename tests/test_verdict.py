"""The verdict per pair: the recommended method against the best target-only model, in a CSV, on the page and in the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crossemo import cli
from crossemo.methods import RECOMMENDED
from crossemo.report import tables, verdict
from crossemo.report.html import write_html_report
from tests.test_report_html import _predict, _task, _utterances

CORPORA = {"a": ["1", "2", "3", "4"], "b": ["x", "y", "z", "w"]}
PAIRS = [("a", "b"), ("b", "a")]


def _results(skills: dict[tuple[int, str], float], *, corpora: dict[str, list[str]] = CORPORA, pairs: list[tuple[str, str]] = PAIRS) -> pd.DataFrame:
    """Results where ``skills[(scenario, method)]`` sets how often each task is right."""
    rng = np.random.default_rng(3)
    frames = []
    done: set[str] = set()
    for source, target in pairs:
        data = _utterances(target, corpora)
        for speaker in corpora[target]:
            test = data[data["speaker"] != speaker]
            fold = f"{target}/{speaker}"
            for (scenario, method), skill in skills.items():
                # A target's scenario-2 tasks are written once, whatever the number of its pairs, as the protocol does.
                if scenario == 2 and target in done:
                    continue
                frames.append(_task(test, source="" if scenario == 2 else source, target=target, scenario=scenario, method=method, fold=fold,
                                    predicted=_predict(test["emotion"].to_numpy(), rng, skill=skill), n_train=10))
        done.add(target)
    return pd.concat(frames, ignore_index=True)


def test_verdict_has_exactly_the_columns_and_compares_with_the_best_target_only_model():
    results = _results({(2, "majority"): 0.0, (2, "rf"): 0.3, (2, "speaker_norm_linear"): 0.5, (3, RECOMMENDED): 0.9})
    table = verdict.verdict(tables.Figures.of(results), PAIRS)
    assert verdict.VERDICT_COLUMNS == [
        "source", "target", "method", "uar", "target_only_method", "target_only_uar", "baseline_uar",
        "gain_vs_baseline", "gain_vs_target_only", "ci_low", "ci_high", "helps",
    ]
    # The held-out speakers each interval rests on, for the sentence; verdict.csv keeps the columns above.
    assert list(table.columns) == [*verdict.VERDICT_COLUMNS, "folds"]
    assert len(table) == 2 and set(table["method"]) == {RECOMMENDED}
    # Named as train --method takes it: the bare name would be the method that borrows.
    assert set(table["target_only_method"]) == {"target_only_speaker_norm_linear"}
    folds = tables.Figures.of(results).folds
    for row in table.itertuples():
        cells = tables.cell_folds(folds, row.source, row.target)
        assert row.uar == pytest.approx(100 * tables.per_fold(cells[RECOMMENDED], "uar").mean(), abs=0.01)
        assert row.baseline_uar == pytest.approx(100 * tables.per_fold(cells["rf"], "uar").mean(), abs=0.01)
        assert row.gain_vs_target_only == pytest.approx(row.uar - row.target_only_uar, abs=0.02)
        assert row.ci_low <= row.gain_vs_target_only <= row.ci_high
        assert row.helps == (row.ci_low > 0)
    assert table["helps"].all()


def test_the_pairs_of_one_target_are_together():
    corpora = {**CORPORA, "c": ["p", "q", "r"]}
    pairs = [("a", "b"), ("a", "c"), ("b", "a"), ("b", "c"), ("c", "a"), ("c", "b"), ("b+c", "a"), ("a+c", "b"), ("a+b", "c")]
    results = _results({(2, "rf"): 0.5, (3, RECOMMENDED): 0.7}, corpora=corpora, pairs=pairs)
    table = verdict.verdict(tables.Figures.of(results), pairs)
    assert list(zip(table["source"], table["target"])) == [
        ("a", "b"), ("c", "b"), ("a+c", "b"), ("a", "c"), ("b", "c"), ("a+b", "c"), ("b", "a"), ("c", "a"), ("b+c", "a"),
    ]


def test_a_method_no_better_than_target_only_does_not_help():
    results = _results({(2, "rf"): 0.6, (2, "speaker_norm_linear"): 0.6, (3, RECOMMENDED): 0.6})
    table = verdict.verdict(tables.Figures.of(results), PAIRS)
    assert not table["helps"].any()
    assert "does not clearly help" in verdict.sentence(table.iloc[0])


def test_sentence_names_the_sources_gain_and_interval():
    row = {"source": "emovo+emodb", "target": "ravdess", "gain_vs_target_only": 7.06, "ci_low": 3.2, "ci_high": 11.0,
           "helps": True, "target_only_method": "target_only_rf", "target_only_uar": 44.0}
    assert verdict.sentence(row) == (
        "borrowing from emovo and emodb helps ravdess by +7.1 pp UAR (95 % CI 3.2 to 11.0) "
        "over the best model trained on ravdess alone (the Baseline RF, 44.0 %)"
    )
    assert verdict.sentence({**row, "target_only_method": "target_only_self_training"}).endswith("alone (target_only_self_training, 44.0 %)")
    assert "fewer than 3 folds" in verdict.sentence({**row, "ci_low": float("nan"), "ci_high": float("nan"), "helps": False})
    # How few held-out speakers the interval rests on (with three, it is the range of their gains).
    assert "(95 % CI 3.2 to 11.0, 3 folds) over" in verdict.sentence({**row, "folds": 3})


def test_no_row_without_the_recommended_method():
    results = _results({(2, "rf"): 0.5, (3, "dbn"): 0.9})
    assert verdict.verdict(tables.Figures.of(results), PAIRS).empty


def test_verdict_csv_page_and_cli(tmp_path, capsys):
    results = _results({(2, "majority"): 0.0, (2, "rf"): 0.3, (2, "speaker_norm_linear"): 0.4, (3, RECOMMENDED): 0.9, (3, "rf"): 0.4})
    written = verdict.write_verdict(results, PAIRS, str(tmp_path))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "verdict.csv"), written[verdict.VERDICT_COLUMNS], check_dtype=False)
    page = (tmp_path / "index.html")
    write_html_report(results, PAIRS, str(tmp_path))
    text = page.read_text()
    assert text.index('<section id="verdict">') < text.index('<section id="tables">')
    assert "borrowing from a helps b by" in text and (tmp_path / "figures" / "verdict.png").exists()
    assert "speaker norm. linear (S2, target only)" in text
    uar = pd.DataFrame({"train": ["a"], "test": ["b"], RECOMMENDED: [90.0]})
    cli.print_tables({"table2": pd.DataFrame(), "table3": pd.DataFrame(), "table3_uar": uar, "verdict": written}, str(tmp_path))
    printed = capsys.readouterr().out
    # The verdict is in UAR, so the CLI shows the UAR table its figures come from.
    assert "Table 3 (UAR %, the verdict's measure):" in printed and uar.to_string(index=False) in printed
    assert printed.strip().splitlines()[-1].strip() == verdict.sentence(written.iloc[-1])


def test_table3_puts_the_twins_after_the_baseline():
    results = _results({(2, "majority"): 0.0, (2, "rf"): 0.3, (2, "speaker_norm_linear"): 0.4, (3, RECOMMENDED): 0.9, (3, "dbn"): 0.5})
    _, table3 = tables.build_tables(tables.Figures.of(results), PAIRS, metric="uar")
    columns = list(table3.columns)
    assert columns.index("rf") < columns.index("target_only_speaker_norm_linear") < columns.index("dbn") < columns.index(RECOMMENDED)


def test_methods_command_marks_one_recommended(capsys):
    assert cli.main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    marked = [line for line in lines if line.startswith("* ") and not line.startswith("* recommended")]
    assert len(marked) == 1 and marked[0].split()[1] == RECOMMENDED
    names = {line[2:].split()[0] for line in lines[: len(cli.method_summaries())]}
    assert names == {name for name, _, _ in cli.method_summaries()}
    assert all(line for _, _, line in cli.method_summaries())
