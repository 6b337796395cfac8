"""Honest figures on real audio: a target with a one-emotion test speaker, balanced training
speakers for the majority column, two seeds and two-fold cells, end to end through a run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import ray

from crossemo import cli, metrics, pipeline
from crossemo.labels import EMOTIONS
from crossemo.report import tables

EMOVO_CODES = {"neu": "neutral", "rab": "anger", "gio": "joy", "tri": "sadness"}
SMALL = {"rf": {"n_estimators": 10}, "speaker_norm": {"n_estimators": 10}}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def manifest(folder: Path, name: str, rows: list[tuple[Path, str, str]]) -> Path:
    """Copy real files into ``folder`` and list them in a manifest."""
    folder.mkdir(parents=True)
    listed = []
    for path, speaker, emotion in rows:
        target = folder / speaker / path.name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(path, target)
        listed.append({"path": f"{speaker}/{path.name}", "speaker": speaker, "emotion": emotion})
    out = folder / f"{name}.csv"
    pd.DataFrame(listed).to_csv(out, index=False)
    return out


@pytest.fixture(scope="module")
def run(shared_corpora, tmp_path_factory):
    base = tmp_path_factory.mktemp("honest")
    # Target: f1 balanced (two per emotion); m1 holds sadness only.
    target_rows = []
    for code, emotion in EMOVO_CODES.items():
        target_rows += [(p, "f1", emotion) for p in sorted((shared_corpora / "emovo" / "f1").glob(f"{code}-f1-*.flac"))[:2]]
    target_rows += [(p, "m1", "sadness") for p in sorted((shared_corpora / "emovo" / "m1").glob("tri-m1-*.flac"))[:4]]
    source_rows = []
    for actor in ("Actor_01", "Actor_02"):
        for code, emotion in (("01", "neutral"), ("05", "anger"), ("03", "joy"), ("04", "sadness")):
            source_rows += [(p, actor, emotion) for p in sorted((shared_corpora / "ravdess" / actor).glob(f"03-01-{code}-*.flac"))[:3]]
    config = pipeline.RunConfig(
        out=str(base / "out"),
        corpora=[
            pipeline.CorpusSpec(recipe="manifest", uri=str(manifest(base / "target", "target", target_rows))),
            pipeline.CorpusSpec(recipe="manifest", uri=str(manifest(base / "source", "source", source_rows))),
        ],
        pairs="source:target", methods="majority,rf,speaker_norm", seeds=2, method_params=SMALL, progress=False,
    )
    record, _, result_tables = pipeline.run(config)
    return {"record": record, "tables": result_tables, "out": base / "out", "config": config}


def results(run) -> pd.DataFrame:
    return pipeline.read_results(run["record"].result_uris, storage_options=None)


def test_the_one_emotion_test_speaker_is_named_and_scored_over_the_targets_classes(run):
    warnings = run["record"].warnings
    assert any("the fold training on target/f1 tests on target/m1, who have no neutral, anger, joy" in w for w in warnings), warnings
    frame = results(run)
    fold = frame[(frame["fold"] == "target/f1") & (frame["scenario"] == 2) & (frame["method"] == "rf")]
    assert set(fold["true"]) == {"sadness"}
    for _, rows in fold.groupby("seed"):
        recall = (rows["predicted"] == "sadness").mean()
        assert rows["uar"].iloc[0] == pytest.approx(recall / 4)  # never more than chance on this fold
    md = (run["out"] / "report" / "tables.md").read_text()
    assert "## Folds whose test speakers lack a class" in md and "| target | target/f1 | target/m1 | neutral, anger, joy |" in md


def test_majority_of_a_balanced_speaker_is_a_fixed_class_and_chance_stands_beside_it(run):
    frame = results(run)
    majority = frame[(frame["method"] == "majority") & (frame["fold"] == "target/f1")]
    assert set(majority["predicted"]) == {EMOTIONS[0]}  # a tie on a balanced speaker goes to neutral
    table2 = pd.read_csv(run["out"] / "report" / "table2_uar.csv")
    assert table2.loc[0, "chance"] == 25.0
    # f1's majority (neutral) on m1's sadness scores 0; m1's (sadness) on balanced f1 scores chance.
    assert table2.loc[0, "majority"] == pytest.approx(12.5)


def test_two_seeds_run_the_stochastic_methods_twice_and_the_rest_once(run):
    frame = results(run)
    per_method = frame.groupby("method")["seed"].unique().map(sorted).to_dict()
    assert per_method == {"majority": [0], "rf": [0, 1], "speaker_norm": [0, 1]}
    md = (run["out"] / "report" / "tables.md").read_text()
    assert "over 2 seeds)" in md


def test_two_fold_cells_use_the_sample_spread_and_give_the_pooled_uar(run):
    figures = tables.Figures.of(results(run))
    folds = tables.seed_averaged(figures.folds)
    rf = folds[(folds["scenario"] == 2) & (folds["method"] == "rf")]["uar"].to_numpy() * 100
    assert len(rf) == 2
    _, text3 = tables.build_tables(figures, [("source", "target")], metric="uar", spread=True)
    assert text3.loc[0, "rf"].startswith(f"{rf.mean():.1f} ± {metrics.sample_std(rf):.1f} (2 folds, ± ")
    pooled = pd.read_csv(run["out"] / "report" / "table3_uar_pooled.csv")
    assert 0 <= pooled.loc[0, "rf"] <= 100
    comparison = pd.read_csv(run["out"] / "report" / "table3_vs_baseline.csv")
    # Two folds give no interval, so nothing is marked.
    assert (comparison["marked"] == 0).all() and comparison["ci_low"].isna().all()


def test_report_rebuilds_every_table_from_the_result_files(run, capsys):
    report = run["out"] / "report"
    before = {path.name: path.read_text() for path in report.glob("*.csv")}
    for path in report.glob("*.csv"):
        path.unlink()
    assert cli.main(["report", str(run["out"])]) == 0
    assert {path.name: path.read_text() for path in report.glob("*.csv")} == before
    recorded = json.loads(next((run["out"] / "runs").glob("*/run.json")).read_text())
    assert recorded["settings"]["seeds"] == 2
