"""The figures the tables are made of: one UAR definition, chance, spreads, seeds and marks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crossemo import metrics
from crossemo.labels import EMOTIONS
from crossemo.report import tables


def utterances(*, source: str, scenario: int, method: str, fold: str, true: list[str], predicted: list[str] | str, seed: int = 0, speaker: str = "t/x") -> list[dict]:
    predicted = [predicted] * len(true) if isinstance(predicted, str) else predicted
    return [
        dict(source=source, target="t", scenario=scenario, method=method, fold=fold, seed=seed, speaker=speaker, true=t, predicted=p)
        for t, p in zip(true, predicted, strict=True)
    ]


BALANCED = list(EMOTIONS) * 2


def test_a_fold_of_one_emotion_cannot_reach_100_by_always_naming_it():
    """The issue's case: 62.5 ± 37.5 under the old definition, pooled 25.0."""
    rows = []
    for method in ("rf", "majority"):
        rows += utterances(source="", scenario=2, method=method, fold="t/a", true=BALANCED, predicted="sadness", speaker="t/b")
        rows += utterances(source="", scenario=2, method=method, fold="t/b", true=["sadness"] * 8, predicted="sadness", speaker="t/a")
    results = pd.DataFrame(rows)
    figures = tables.Figures.of(results)
    folds = figures.folds.set_index(["method", "fold"])
    assert folds.loc[("rf", "t/a"), "uar"] == pytest.approx(0.25)
    assert folds.loc[("rf", "t/b"), "uar"] == pytest.approx(0.25)  # not 1.0: the absent classes count as recall 0
    table2, _ = tables.build_tables(figures, [("s", "t")], metric="uar")
    assert table2.loc[0, "scenario2"] == 25.0 and table2.loc[0, "chance"] == 25.0
    pooled2, _ = tables.build_tables(figures, [("s", "t")], metric="uar", pooled=True)
    assert pooled2.loc[0, "scenario2"] == 25.0
    degenerate = tables.degenerate_folds(results)
    assert degenerate.to_dict("records") == [{"target": "t", "fold": "t/b", "test_speakers": "t/a", "missing": "neutral, anger, joy"}]


def test_every_constant_prediction_scores_chance_in_every_fold():
    classes = list(EMOTIONS)
    for true in (BALANCED, ["joy"] * 5, ["anger", "anger", "neutral"]):
        for label in classes:
            assert metrics.score(np.array(true), np.array([label] * len(true)), classes=classes)[1] <= metrics.chance(classes) + 1e-12
    assert metrics.chance(classes) == 0.25


def test_two_fold_spread_is_the_sample_standard_deviation():
    rows = []
    for fold, correct in (("t/1", 4), ("t/2", 6)):
        predicted = [t if i < correct else EMOTIONS[(EMOTIONS.index(t) + 1) % 4] for i, t in enumerate(BALANCED)]
        rows += utterances(source="", scenario=2, method="rf", fold=fold, true=BALANCED, predicted=predicted)
    text2, _ = tables.build_tables(tables.Figures.of(pd.DataFrame(rows)), [("s", "t")], spread=True)
    # 50 and 75: ddof = 1 gives 17.7 (ddof = 0 would give 12.5).
    assert text2.loc[0, "scenario2"] == "62.5 ± 17.7 (2 folds) [pooled 62.5]"


def test_seeds_are_averaged_and_their_spread_shown():
    rows = []
    for seed, correct in ((0, 4), (1, 6)):
        for fold in ("t/1", "t/2", "t/3"):
            predicted = [t if i < correct else EMOTIONS[(EMOTIONS.index(t) + 1) % 4] for i, t in enumerate(BALANCED)]
            rows += utterances(source="", scenario=2, method="rf", fold=fold, true=BALANCED, predicted=predicted, seed=seed)
    figures = tables.Figures.of(pd.DataFrame(rows))
    table2, _ = tables.build_tables(figures, [("s", "t")])
    assert table2.loc[0, "scenario2"] == 62.5
    text2, _ = tables.build_tables(figures, [("s", "t")], spread=True)
    assert text2.loc[0, "scenario2"] == "62.5 ± 0.0 (3 folds, ± 17.7 over 2 seeds) [pooled 62.5]"
    assert len(tables.seed_averaged(figures.folds)) == 3


def test_results_written_before_seeds_read_as_seed_zero():
    rows = utterances(source="", scenario=2, method="rf", fold="t/1", true=BALANCED, predicted=BALANCED)
    old = pd.DataFrame(rows).drop(columns="seed")
    assert tables.Figures.of(old).folds["seed"].tolist() == [0]


def _table3(differences: list[float]) -> pd.DataFrame:
    """Scenario 2 RF correct on 4 of 8 per fold; the method ``4 + difference`` of 8."""
    rows = []
    for index, gain in enumerate(differences):
        fold = f"t/{index}"
        for method, correct, scenario, source in (("rf", 4, 2, ""), ("speaker_norm", 4 + gain, 3, "s")):
            predicted = [t if i < correct else EMOTIONS[(EMOTIONS.index(t) + 1) % 4] for i, t in enumerate(BALANCED)]
            rows += utterances(source=source, scenario=scenario, method=method, fold=fold, true=BALANCED, predicted=predicted)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("differences, mark", [
    ([2, 1, 2, 3, 2, 1], " ▲"),
    ([-2, -1, -2, -3, -2, -1], " ▼"),
    ([2, -2, 1, -1, 0, 1], ""),
    ([3, 3], ""),  # two folds: no interval, no mark
])
def test_a_method_is_marked_only_when_its_interval_excludes_zero(differences, mark):
    figures = tables.Figures.of(_table3(differences))
    _, text3 = tables.build_tables(figures, [("s", "t")], metric="uar", spread=True)
    assert text3.loc[0, "speaker_norm"].endswith(mark) if mark else not text3.loc[0, "speaker_norm"].endswith(("▲", "▼"))
    assert not text3.loc[0, "rf"].endswith(("▲", "▼"))
    comparison = tables.baseline_comparison(figures.folds, [("s", "t")], metric="uar")
    assert comparison.loc[0, "difference"] == pytest.approx(np.mean(differences) / 8 * 100, abs=0.01)


def test_paired_interval_is_reproducible_and_needs_three_folds():
    differences = np.array([1.0, 4.0, -2.0, 3.0, 5.0])
    assert metrics.paired_interval(differences) == metrics.paired_interval(differences)
    low, high = metrics.paired_interval(differences)
    assert low < differences.mean() < high
    assert all(np.isnan(metrics.paired_interval(np.array([1.0, 2.0]))))
