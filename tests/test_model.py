"""``crossemo train`` and ``crossemo predict`` on real recordings, on local Ray.

A small slice of the shared EMOVO (target) and RAVDESS (source) is the data.
The central check: a bundle trained on the source plus target speaker A
labels the other target speakers exactly as the evaluation's scenario-3 task
with training speaker A did, so the bundle is the evaluated model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import ray

from crossemo import bundle, cli, methods, pipeline
from jobscript import load_job_script
from tests.test_early_errors import closed_port

EMOTION_CODES = {"emovo": {"neu": "neutral", "rab": "anger", "gio": "joy", "tri": "sadness"}, "ravdess": {"01": "neutral", "05": "anger", "03": "joy", "04": "sadness"}}
PER_EMOTION = 3
FAST_CONFIG = """\
[method_params.rf]
n_estimators = 20
"""


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def _rows(corpus: str, files: list[Path], speaker_of, emotion_of) -> list[dict]:
    taken: dict[tuple[str, str], int] = {}
    rows = []
    for path in sorted(files):
        speaker, emotion = speaker_of(path), emotion_of(path)
        if emotion is None or taken.get((speaker, emotion), 0) >= PER_EMOTION:
            continue
        taken[(speaker, emotion)] = taken.get((speaker, emotion), 0) + 1
        rows.append({"path": str(path), "speaker": speaker, "emotion": emotion})
    return rows


@pytest.fixture(scope="module")
def data(shared_corpora, tmp_path_factory):
    """Manifests of three EMOVO speakers and three RAVDESS actors, three utterances per emotion each."""
    root = tmp_path_factory.mktemp("model")
    emovo = _rows(
        "emovo", [p for s in ("f1", "f2", "m1") for p in (shared_corpora / "emovo" / s).glob("*.flac")],
        lambda p: p.parent.name, lambda p: EMOTION_CODES["emovo"].get(p.name.split("-")[0]),
    )
    ravdess = _rows(
        "ravdess", [p for a in ("Actor_01", "Actor_02", "Actor_03") for p in (shared_corpora / "ravdess" / a).glob("*.flac")],
        lambda p: p.parent.name, lambda p: EMOTION_CODES["ravdess"].get(p.name.split("-")[2]) if p.name.split("-")[3] == "01" else None,
    )
    paths = {"emovo": root / "emovo.csv", "ravdess": root / "ravdess.csv"}
    pd.DataFrame(emovo).to_csv(paths["emovo"], index=False)
    pd.DataFrame(ravdess).to_csv(paths["ravdess"], index=False)
    config = root / "fast.toml"
    config.write_text(FAST_CONFIG)
    return {"root": root, "manifests": paths, "emovo": pd.DataFrame(emovo), "config": config}


@pytest.fixture(scope="module")
def evaluated(data):
    """The evaluation: RAVDESS → EMOVO, the Baseline RF and two linear methods (self_training adapts to test audio)."""
    out = data["root"] / "run"
    status = cli.main([
        "run", "--corpus", f"manifest={data['manifests']['ravdess']}", "--corpus", f"manifest={data['manifests']['emovo']}",
        "--pairs", "ravdess:emovo", "--methods", "speaker_norm_linear,self_training", "--config", str(data["config"]),
        "--out", str(out), "--no-progress",
    ])
    assert status == 0
    return out


def _table(path: Path, rows: pd.DataFrame) -> Path:
    rows.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("method", ["rf", "speaker_norm_linear", "self_training"])
def test_a_bundle_labels_the_other_speakers_as_the_evaluation_did(data, evaluated, method, tmp_path, capsys):
    """Train on RAVDESS + EMOVO speaker f1 (with the others' audio unlabelled, for a method that uses it), predict f2 and m1: the scenario-3 fold f1's labels."""
    emovo = data["emovo"]
    only_f1 = _table(tmp_path / "emovo.csv", emovo[emovo["speaker"] == "f1"])
    others = _table(tmp_path / "others.csv", emovo.loc[emovo["speaker"] != "f1", ["path", "speaker"]].sort_values("path"))
    model = tmp_path / "model"
    assert cli.main([
        "train", "--corpus", f"manifest={data['manifests']['ravdess']}", "--corpus", f"manifest={only_f1}", "--target", "emovo",
        "--method", method, *(["--adapt-to", str(others)] if method in methods.ADAPTING else []),
        "--config", str(data["config"]), "--store", str(evaluated), "--out", str(model), "--no-progress",
    ]) == 0
    trained = capsys.readouterr().out
    assert "0 extracted" in trained  # every feature came from the evaluation's cache
    metadata = json.loads((model / "model.json").read_text())
    assert metadata["method"] == method and metadata["training"]["sources"] == ["ravdess"]
    assert metadata["training"]["corpora"]["emovo"]["utterances_used"] == 4 * PER_EMOTION
    assert len(metadata["feature_names"]) == 1582

    out = tmp_path / "labels"
    assert cli.main(["predict", "--model", str(model), "--audio", str(others), "--out", str(out), "--store", str(evaluated), "--no-progress"]) == 0
    labels = pd.read_parquet(out / "predictions").set_index("uri").sort_index()
    results = pipeline.read_results(pipeline.latest_record(str(evaluated), storage_options=None)["result_uris"], storage_options=None)
    fold = results[(results["scenario"] == 3) & (results["method"] == method) & (results["fold"] == "emovo/f1")].set_index("uri").sort_index()
    assert len(fold) == 2 * 4 * PER_EMOTION and list(labels.index) == list(fold.index)
    assert (labels["emotion"] == fold["predicted"]).all()
    probabilities = labels[[f"p_{c}" for c in metadata["classes"]]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    top = probabilities.max(axis=1, keepdims=True)
    tied = (probabilities == top).sum(axis=1) > 1  # a forest breaks ties its own way
    assert (np.asarray(metadata["classes"])[probabilities.argmax(axis=1)] == labels["emotion"])[~tied].all()
    model_id = next(line for line in trained.splitlines() if line.startswith("model ")).split()[1].rstrip(":")
    assert set(labels["model_id"]) == {model_id}


def test_best_from_run_takes_the_pairs_best_method_and_its_figures(data, evaluated, tmp_path, capsys):
    model = tmp_path / "model"
    assert cli.main(["train", "--from-run", str(evaluated), "--target", "emovo", "--method", "best", "--out", str(model), "--no-progress"]) == 0
    metadata = json.loads((model / "model.json").read_text())
    from crossemo import training

    results = pipeline.read_results(pipeline.latest_record(str(evaluated), storage_options=None)["result_uris"], storage_options=None)
    ranking = training.ranking_of(results, "ravdess", "emovo")
    assert metadata["choice"]["column"] == ranking["column"].iloc[0]
    assert metadata["evaluation"]["uar"] == pytest.approx(ranking["uar"].iloc[0])
    assert metadata["evaluation"]["folds"] == 3 and metadata["evaluation"]["uar_sd"] >= 0
    # The run's settings came along: its forests' size, its seed and feature set.
    assert metadata["feature_set"] == "is10" and metadata["seed"] == 0
    if metadata["method"] == "rf":
        assert metadata["params"]["n_estimators"] == 20
    assert "evaluated under" in capsys.readouterr().out


def test_a_config_beside_from_run_overrides_only_what_it_sets(evaluated, tmp_path, capsys):
    """A config file setting one method's parameters keeps the run's others and its figures; one that changes the model drops them (a new user's trial found every run setting dropped)."""
    other_method = tmp_path / "other.toml"
    other_method.write_text("[method_params.self_training]\nthreshold = 0.9\n")
    train = ["train", "--from-run", str(evaluated), "--target", "emovo", "--method", "rf", "--no-progress"]
    capsys.readouterr()
    assert cli.main([*train, "--config", str(other_method), "--out", str(tmp_path / "same")]) == 0
    assert "warning" not in capsys.readouterr().err
    metadata = json.loads((tmp_path / "same" / "model.json").read_text())
    assert metadata["params"]["n_estimators"] == 20 and metadata["evaluation"] is not None

    # The same model spelt otherwise: the feature set in capitals, a default written out, one of the run's parameters again.
    spelt = tmp_path / "spelt.toml"
    spelt.write_text('feature_set = "IS10"\n[method_params.rf]\nn_estimators = 20\nmax_depth = 10\n')
    assert cli.main([*train, "--config", str(spelt), "--out", str(tmp_path / "spelt")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads((tmp_path / "spelt" / "model.json").read_text())["evaluation"] is not None

    reseeded = tmp_path / "seed.toml"
    reseeded.write_text("seed = 3\n[method_params.rf]\nmax_depth = 5\n")
    assert cli.main([*train, "--config", str(reseeded), "--out", str(tmp_path / "other")]) == 0
    said = capsys.readouterr().err
    assert "seed 3 (the run: 0); the parameters of rf" in said and "not as in the run under" in said, said
    metadata = json.loads((tmp_path / "other" / "model.json").read_text())
    # Parameter by parameter: the run's forest size stays beside the file's depth.
    assert metadata["seed"] == 3 and metadata["params"]["n_estimators"] == 20 and metadata["params"]["max_depth"] == 5 and metadata["evaluation"] is None
    best = ["train", "--from-run", str(evaluated), "--target", "emovo", "--method", "best", "--config", str(reseeded), "--out", str(tmp_path / "best"), "--no-progress"]
    assert cli.main(best) == 2
    assert "--method best picks on the run under" in capsys.readouterr().err and not (tmp_path / "best").exists()


def test_train_from_an_evaluate_run_reads_the_cache_beside_the_features_it_evaluated(data, evaluated, tmp_path, capsys):
    """``evaluate --features RUN/features`` keeps no cache of its own: training from it reuses RUN's, extracting nothing (a new user's trial saw everything extracted again)."""
    ev = tmp_path / "ev"
    assert cli.main([
        "evaluate", "--features", str(evaluated / "features"), "--pairs", "ravdess:emovo", "--methods", "speaker_norm_linear", "--out", str(ev), "--no-progress",
    ]) == 0
    capsys.readouterr()
    assert cli.main([
        "train", "--from-run", str(ev), "--corpus", f"manifest={data['manifests']['ravdess']}", "--corpus", f"manifest={data['manifests']['emovo']}",
        "--target", "emovo", "--method", "speaker_norm_linear", "--out", str(tmp_path / "model"), "--no-progress",
    ]) == 0
    said = capsys.readouterr().out
    assert f"0 extracted, 72 reused from the cache in {evaluated}" in said, said
    assert not (ev / "cache").exists()
    assert json.loads((tmp_path / "model" / "model.json").read_text())["evaluation"] is not None


def test_train_says_which_files_of_the_corpora_it_left_out(data, evaluated, tmp_path, capsys):
    """A missing file, an emotion outside the four and a blank row: said as run and features say them (a new user's trial found train silent)."""
    rows = data["emovo"].copy()
    extra = pd.DataFrame([
        {"path": str(tmp_path / "gone.flac"), "speaker": "f1", "emotion": "anger"},
        {"path": next(str(p) for p in sorted(Path(rows["path"].iloc[0]).parent.glob("*.flac")) if str(p) not in set(rows["path"])), "speaker": "f1", "emotion": "disgust"},
    ])
    mine = tmp_path / "emovo.csv"
    mine.write_text(pd.concat([rows, extra]).to_csv(index=False) + ",,\n")
    assert cli.main([
        "train", "--corpus", f"manifest={data['manifests']['ravdess']}", "--corpus", f"manifest={mine}", "--target", "emovo", "--method", "rf",
        "--config", str(data["config"]), "--store", str(evaluated), "--out", str(tmp_path / "model"), "--no-progress",
    ]) == 0
    said = capsys.readouterr()
    assert "2 files not used (the model learns from the others):" in said.out, said.out
    assert "file not found" in said.out and "disgust" in said.out
    assert "warning: emovo: 1 blank row" in said.err, said.err


@pytest.mark.parametrize(("method", "column"), [("rf", "scenario3"), ("target_only_rf", "rf")])
def test_a_method_asked_for_by_name_carries_the_figures_of_what_it_trains(evaluated, tmp_path, method, column):
    """The RF with a source is Table 2's scenario 3, not the Baseline RF that Table 3 calls rf (a new user's trial found the swap)."""
    from crossemo import training

    model = tmp_path / "model"
    assert cli.main(["train", "--from-run", str(evaluated), "--target", "emovo", "--method", method, "--out", str(model), "--no-progress"]) == 0
    metadata = json.loads((model / "model.json").read_text())
    results = pipeline.read_results(pipeline.latest_record(str(evaluated), storage_options=None)["result_uris"], storage_options=None)
    ranking = training.ranking_of(results, "ravdess", "emovo").set_index("column")
    assert metadata["choice"]["column"] == column and metadata["evaluation"] is not None
    assert metadata["evaluation"]["uar"] == pytest.approx(ranking.loc[column, "uar"])
    # Every column the ranking offers maps back to itself.
    for row in ranking.reset_index().itertuples():
        assert training.results_column(row.method, with_source=row.with_source) == row.column


def test_predict_skips_finished_shards_and_labels_only_new_files(data, evaluated, tmp_path, capsys):
    model = tmp_path / "model"
    emovo = data["emovo"]
    assert cli.main([
        "train", "--corpus", f"manifest={data['manifests']['ravdess']}", "--corpus", f"manifest={data['manifests']['emovo']}", "--target", "emovo",
        "--method", "rf", "--config", str(data["config"]), "--store", str(evaluated), "--out", str(model), "--no-progress",
    ]) == 0
    audio = tmp_path / "audio"
    for path in emovo["path"][:10]:
        (audio / Path(path).parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, audio / Path(path).parent.name / Path(path).name)
    (audio / "notes.wav").write_text("not audio")
    out = tmp_path / "labels"
    command = ["predict", "--model", str(model), "--audio", str(audio), "--out", str(out), "--store", str(evaluated), "--speaker-pattern", r"/(?P<speaker>[fm]\d)/", "--no-progress"]
    assert cli.main(command) == 0
    first = pd.read_parquet(out / "predictions")
    assert len(first) == 10 and set(first["speaker"]) == {"f1"}
    rejected = pd.read_parquet(out / "predictions" / "_rejected.parquet")
    assert list(rejected["uri"]) == [str(audio / "notes.wav")] and rejected["reason"].iloc[0]
    capsys.readouterr()
    assert cli.main(command) == 0
    output = capsys.readouterr().out
    assert "0 shard(s) written" in output, output
    pd.testing.assert_frame_equal(pd.read_parquet(out / "predictions").sort_values("uri").reset_index(drop=True), first.sort_values("uri").reset_index(drop=True))
    parts = set((out / "predictions").glob("part-*.parquet"))
    new = emovo["path"].iloc[20]
    (audio / "m9").mkdir()
    shutil.copy(new, audio / "m9" / Path(new).name)
    assert cli.main(command) == 0
    output = capsys.readouterr().out
    # Its content is in the store's cache already (it is an EMOVO file): labelled, not extracted.
    assert "(1 shard(s) written, 0 file(s) extracted; 1 finished shard(s) reused)" in output, output
    assert parts < set((out / "predictions").glob("part-*.parquet"))
    assert len(pd.read_parquet(out / "predictions")) == 11


def test_train_from_run_works_from_another_folder_and_drops_the_figures_of_changed_data(data, tmp_path, monkeypatch, capsys):
    """A run given relative paths is trained from elsewhere; relabelling the target after the run keeps its figures out of the bundle."""
    work = tmp_path / "work"
    work.mkdir()
    for name, manifest in data["manifests"].items():
        shutil.copy(manifest, work / f"{name}.csv")
    monkeypatch.chdir(work)
    assert cli.main([
        "run", "--corpus", "manifest=ravdess.csv", "--corpus", "manifest=emovo.csv", "--pairs", "ravdess:emovo",
        "--methods", "speaker_norm_linear", "--out", str(work / "run"), "--no-progress",  # Ray's workers started elsewhere
    ]) == 0
    monkeypatch.chdir(tmp_path)
    train = ["train", "--from-run", "work/run", "--target", "emovo", "--method", "speaker_norm_linear", "--no-progress"]
    capsys.readouterr()
    assert cli.main([*train, "--out", "model"]) == 0
    assert "warning" not in capsys.readouterr().err
    evaluation = json.loads((tmp_path / "model" / "model.json").read_text())["evaluation"]
    assert evaluation["run"] == str(work / "run") and 0 < evaluation["uar"] <= 100

    relabelled = pd.read_csv(work / "emovo.csv")
    relabelled.loc[relabelled["emotion"] == "neutral", "emotion"] = "anger"
    relabelled.to_csv(work / "emovo.csv", index=False)
    assert cli.main([*train, "--out", "changed"]) == 0
    assert "corpus emovo (its files' labels or contents) changed since the run under work/run" in capsys.readouterr().err
    assert json.loads((tmp_path / "changed" / "model.json").read_text())["evaluation"] is None
    best = ["train", "--from-run", "work/run", "--target", "emovo", "--method", "best", "--out", "best", "--no-progress"]
    assert cli.main(best) == 2
    assert "--method best picks on the run under work/run, but corpus emovo (its files' labels or contents) changed since" in capsys.readouterr().err
    assert not (tmp_path / "best").exists()

    # The output moved (another mount, a copy): the record's files are found under the folder given now.
    shutil.move(work / "run", tmp_path / "moved")
    assert cli.main(["report", "moved"]) == 0


def test_adapt_to_files_that_give_no_features_are_counted_in_a_warning(data, evaluated, tmp_path, capsys):
    """An empty file and a text file named .wav are read but give no features: left out, and said so, as unreadable ones are."""
    audio_folder = tmp_path / "new"
    audio_folder.mkdir()
    for path in data["emovo"]["path"].head(3):
        shutil.copy(path, audio_folder / Path(path).name)
    (audio_folder / "empty.flac").write_bytes(b"")
    (audio_folder / "notes.wav").write_text("not audio")
    model = tmp_path / "model"
    assert cli.main([
        "train", "--from-run", str(evaluated), "--target", "emovo", "--method", "self_training", "--adapt-to", str(audio_folder),
        "--out", str(model), "--no-progress",
    ]) == 0
    assert "warning: 2 file(s) --adapt-to lists gave no features and are left out (for example" in capsys.readouterr().err
    assert json.loads((model / "model.json").read_text())["training"]["unlabelled_rows"] == 3


def test_train_leaves_the_evaluations_feature_store_as_it_was(data, evaluated, tmp_path):
    """Training on a subset of the run's corpora reads the run's cache; ``features/`` stays the evaluation's, untouched."""
    features = evaluated / "features"
    before = {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in features.iterdir()}
    assert cli.main([
        "train", "--from-run", str(evaluated), "--corpus", f"manifest={data['manifests']['emovo']}", "--target", "emovo",
        "--method", "target_only_rf", "--out", str(tmp_path / "model"), "--no-progress",
    ]) == 0
    assert {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in features.iterdir()} == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: shutil.rmtree(m), "does not exist"),
        (lambda m: _edit_json(m, format_version=99), "format_version 99, newer than this crossemo"),
        (lambda m: _edit_json(m, crossemo_version="7.0.0"), "was made by crossemo 7.0.0"),
        # A bundle trained on a custom config, which is not where it was anymore.
        (lambda m: _resave(m, feature_set="/nowhere/custom.conf"), "cannot be built here"),
        # Entries written for people to read, edited to describe another model.
        (lambda m: _edit_json(m, method="self_training"), "its 'method' entry says 'self_training', but the bundle holds a 'rf'"),
        (lambda m: _edit_json(m, params={"n_estimators": 7}), "its 'params' entry gives n_estimators = 7, but the bundle's method has"),
    ],
)
def test_a_bad_bundle_is_one_line_and_status_2_before_ray(data, evaluated, tmp_path, capsys, change, message):
    model = tmp_path / "model"
    assert cli.main(["train", "--from-run", str(evaluated), "--target", "emovo", "--method", "rf", "--out", str(model), "--no-progress"]) == 0
    change(model)
    capsys.readouterr()
    assert cli.main(["predict", "--model", str(model), "--audio", str(data["manifests"]["emovo"]), "--out", str(tmp_path / "labels"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "labels" / "predictions").exists()


def _edit_json(model: Path, **changes) -> None:
    path = model / "model.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _resave(model: Path, **changes) -> None:
    """Save the bundle's method again with metadata entries changed (model.json's sealed entries cannot be edited in place)."""
    loaded = bundle.load_bundle(str(model))
    metadata = {key: value for key, value in loaded.metadata.items() if key not in bundle.RESERVED_KEYS}
    shutil.rmtree(model)
    bundle.save_bundle(loaded.method, str(model), metadata={**metadata, **changes})


def test_bad_audio_and_targets_are_one_line_and_status_2(data, evaluated, tmp_path, capsys):
    model = tmp_path / "model"
    assert cli.main(["train", "--from-run", str(evaluated), "--target", "emovo", "--method", "rf", "--out", str(model), "--no-progress"]) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no audio here")
    deep = tmp_path / "deep"
    (deep / "calls" / "2024").mkdir(parents=True)
    (deep / "calls" / "2024" / "x.wav").write_bytes(b"")
    no_path = _table(tmp_path / "no_path.csv", pd.DataFrame({"file": ["a.wav"], "speaker": ["x"]}))
    ravdess = pd.read_csv(data["manifests"]["ravdess"])
    one_actor = _table(tmp_path / "ravdess.csv", ravdess[ravdess["speaker"] == "Actor_01"])
    early_stopping = tmp_path / "early_stopping.toml"
    early_stopping.write_text("[method_params.fcnn]\nearly_stopping = true\n")
    one_source_speaker = ["--corpus", f"manifest={one_actor}", "--corpus", f"manifest={data['manifests']['emovo']}", "--config", str(early_stopping)]
    cases = [
        (["predict", "--model", str(model), "--audio", str(empty), "--out", str(tmp_path / "o1")], "lists no audio"),
        (["predict", "--model", str(model), "--audio", str(no_path), "--out", str(tmp_path / "o2")], "lacks the column path"),
        (["predict", "--model", str(model), "--audio", str(empty), "--speaker-pattern", "(unclosed", "--out", str(tmp_path / "o3")], "not a regular expression"),
        (["train", "--from-run", str(evaluated), "--target", "savee", "--out", str(tmp_path / "m2")], "--target 'savee' is not among the corpora"),
        (["train", "--from-run", str(evaluated), "--target", "emovo", "--method", "no_such", "--out", str(tmp_path / "m3")], "unknown method 'no_such'"),
        (["train", "--from-run", str(evaluated), "--target", "emovo", "--method", "rf", "--out", str(empty)], f"--out {empty} already holds other entries (readme.txt); a model bundle goes to a new or empty folder"),
        (["train", "--from-run", str(evaluated), "--target", "emovo", "--method", "rf", "--out", str(deep)], f"--out {deep} already holds other entries (calls); a model bundle"),
        (["train", "--from-run", str(evaluated), "--target", "emovo", "--method", "rf", "--out", str(model)], f"--out {model} already holds a model bundle"),
        (["train", "--corpus", f"manifest={data['manifests']['emovo']}", "--target", "emovo", "--method", "coral", "--store", str(evaluated), "--out", str(tmp_path / "m4")],
         "coral learns from a source corpus; give one with --corpus besides the target"),
        (["train", "--from-run", str(evaluated), "--target", "emovo", "--method", "target_only_coral", "--out", str(tmp_path / "m4b")],
         "coral learns from a source corpus, so it has no target-only form; target-only methods: majority, rf,"),
        (["train", "--corpus", f"manifest={data['manifests']['emovo']}", "--target", "emovo", "--method", "best", "--store", str(evaluated), "--out", str(tmp_path / "m5")], "needs --from-run"),
        (["train", "--from-run", str(evaluated), "--corpus", f"manifest={data['manifests']['emovo']}", "--target", "emovo", "--method", "rf", "--out", str(tmp_path / "m6")],
         "no corpus besides emovo is given"),
        # fcnn's early stopping holds out a source speaker: a one-speaker source is refused before any feature is extracted.
        (["train", *one_source_speaker, "--target", "emovo", "--method", "fcnn", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "m7")],
         "fcnn with these parameters needs at least 2 labelled source speaker(s); the source ravdess has 1"),
        (["run", *one_source_speaker, "--pairs", "ravdess:emovo", "--methods", "fcnn", "--out", str(tmp_path / "r1")],
         "fcnn with these parameters needs at least 2 labelled source speaker(s); the source ravdess has 1"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert cli.main([*argv, "--no-progress"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (argv, err)
    assert not (tmp_path / "store").exists() and not (tmp_path / "r1" / "features").exists()
    assert sorted(path.name for path in empty.iterdir()) == ["readme.txt"]


def test_a_speaker_whose_recordings_are_all_rejected_does_not_count(data, evaluated, tmp_path, capsys):
    """Two source actors in the manifest, but every recording of one is too short to use: fcnn's early stopping is refused after extraction, in one line."""
    import soundfile as sf

    ravdess = pd.read_csv(data["manifests"]["ravdess"])
    two_actors = ravdess[ravdess["speaker"].isin(["Actor_01", "Actor_02"])].copy()
    clipped = tmp_path / "clipped"
    clipped.mkdir()
    for index in two_actors.index[two_actors["speaker"] == "Actor_02"]:
        signal, rate = sf.read(two_actors.at[index, "path"])
        short = clipped / Path(two_actors.at[index, "path"]).name
        sf.write(short, signal[: rate // 20], rate)  # 50 ms: below the shortest accepted clip
        two_actors.at[index, "path"] = str(short)
    manifest = _table(tmp_path / "ravdess.csv", two_actors)
    early_stopping = tmp_path / "early_stopping.toml"
    early_stopping.write_text("[method_params.fcnn]\nearly_stopping = true\n")
    corpora = ["--corpus", f"manifest={manifest}", "--corpus", f"manifest={data['manifests']['emovo']}", "--config", str(early_stopping)]
    message = "fcnn with these parameters needs at least 2 labelled source speaker(s); the source ravdess has 1 with usable recordings"
    for argv in (
        ["train", *corpora, "--target", "emovo", "--method", "fcnn", "--store", str(evaluated), "--out", str(tmp_path / "model")],
        ["run", *corpora, "--pairs", "ravdess:emovo", "--methods", "fcnn", "--out", str(tmp_path / "run")],
    ):
        capsys.readouterr()
        assert cli.main([*argv, "--no-progress"]) == 2, argv
        printed = capsys.readouterr()
        *warnings, error = printed.err.strip().splitlines()
        assert error.startswith("crossemo: error: ") and message in error, (argv, error)
        assert all(line.startswith("warning: ") for line in warnings), warnings  # extraction's, about the clipped files
    assert not (tmp_path / "model").exists() and not (tmp_path / "run" / "results").exists()
    # The run stopped after extraction: it says what was extracted and rejected, and is recorded as features only, with why.
    assert "files not used" in printed.out and "features only: the evaluation did not run" in printed.out, printed.out
    (record,) = [json.loads(path.read_text()) for path in (tmp_path / "run" / "runs").glob("*/run.json")]
    assert message in record["stopped"] and not record["result_uris"] and record["counts"]["rejected"] == int((two_actors["speaker"] == "Actor_02").sum())
    # The job script (ray job submit) the same: the extraction summary, then bad input (2), the run recorded; the features come from the cache.
    assert load_job_script().main(["--corpus", f"manifest={manifest}", "--corpus", f"manifest={data['manifests']['emovo']}", "--config", str(early_stopping),
                                   "--pairs", "ravdess:emovo", "--methods", "fcnn", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    printed = capsys.readouterr()
    assert "files not used" in printed.out and "as features only" in printed.out and f"bad input: {message}" in printed.err, printed
    assert len(list((tmp_path / "run" / "runs").glob("*/run.json"))) == 2 and not (tmp_path / "run" / "results").exists()


def test_a_killed_predict_resumes_and_ends_as_a_clean_run(data, evaluated, tmp_path):
    """SIGKILL the job once its first features are cached; the re-run extracts only the rest and equals a run never killed."""
    model = tmp_path / "model"
    assert cli.main([
        "train", "--corpus", f"manifest={data['manifests']['ravdess']}", "--corpus", f"manifest={data['manifests']['emovo']}", "--target", "emovo",
        "--method", "speaker_norm_linear", "--store", str(evaluated), "--out", str(model), "--no-progress",
    ]) == 0
    audio = _table(tmp_path / "audio.csv", data["emovo"][["path", "speaker"]])
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    def predict(out: Path, store: Path) -> subprocess.Popen:
        command = [sys.executable, "-m", "crossemo.cli", "predict", "--model", str(model), "--audio", str(audio), "--out", str(out), "--store", str(store), "--no-progress"]
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    killed = tmp_path / "killed"
    job = predict(killed, tmp_path / "store-killed")
    deadline = time.monotonic() + 300
    # Killed mid-extraction: some cache shards written, no part yet.
    while not list((tmp_path / "store-killed" / "cache" / "features").rglob("*.parquet")) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=60)
    assert not list((killed / "predictions").glob("part-*.parquet")), "the kill came too late to leave work undone"
    again = predict(killed, tmp_path / "store-killed")
    output = again.communicate(timeout=300)[0]
    assert again.returncode == 0, output
    extracted = int(re.search(r"(\d+) file\(s\) extracted", output)[1])
    assert 0 < extracted < len(data["emovo"]), output  # the killed run's features were kept
    clean = predict(tmp_path / "clean", tmp_path / "store-clean")
    assert clean.communicate(timeout=300)[0] and clean.returncode == 0
    def table(out: Path) -> pd.DataFrame:
        return pd.read_parquet(out / "predictions").sort_values("uri").reset_index(drop=True)
    pd.testing.assert_frame_equal(table(killed), table(tmp_path / "clean"))
    assert len(table(killed)) == len(data["emovo"])
    assert sorted(p.name for p in (killed / "predictions").glob("part-*")) == sorted(p.name for p in (tmp_path / "clean" / "predictions").glob("part-*"))


@pytest.fixture(scope="module")
def call(data, tmp_path_factory):
    """A recording of eight real EMOVO utterances (speaker m1) with 2 s of near-silence after each, and a file of silence."""
    import soundfile as sf

    folder = tmp_path_factory.mktemp("calls")
    rows = data["emovo"][data["emovo"]["speaker"] == "m1"].iloc[::4].head(8)
    pieces, bounds, at = [], [], 0.0
    for path in rows["path"]:
        signal, rate = sf.read(path, always_2d=True)
        signal = signal.mean(axis=1)
        pieces += [signal, np.random.default_rng(1).normal(0, 1e-4, 2 * rate)]
        bounds.append((at, at + len(signal) / rate))
        at += len(signal) / rate + 2
    sf.write(folder / "call.wav", np.concatenate(pieces), rate)
    sf.write(folder / "quiet.wav", np.random.default_rng(2).normal(0, 1e-4, 3 * rate), rate)
    return {"folder": folder, "utterances": bounds, "duration": at}


@pytest.fixture(scope="module")
def rf_model(data, evaluated, tmp_path_factory):
    model = tmp_path_factory.mktemp("rf") / "model"
    assert cli.main(["train", "--from-run", str(evaluated), "--target", "emovo", "--method", "rf", "--out", str(model), "--no-progress"]) == 0
    return model


def test_fixed_windows_label_every_window_and_the_file_by_their_mean(call, rf_model, evaluated, tmp_path, capsys):
    out = tmp_path / "labels"
    assert cli.main(["predict", "--model", str(rf_model), "--audio", str(call["folder"]), "--out", str(out), "--segment", "4", "--hop", "2", "--store", str(evaluated), "--no-progress"]) == 0
    windows = pd.read_parquet(out / "segments")
    files = pd.read_parquet(out / "predictions").set_index("uri")
    ours = windows[windows["uri"] == str(call["folder"] / "call.wav")]
    assert np.allclose(ours["end"] - ours["start"], 4.0) and ours["end"].max() == pytest.approx(call["duration"], abs=0.01)
    assert len(ours) >= int((call["duration"] - 4) / 2)  # windows of silence are rejected, not labelled
    probabilities = [c for c in files.columns if c.startswith("p_")]
    row = files.loc[str(call["folder"] / "call.wav")]
    np.testing.assert_allclose(row[probabilities].to_numpy(dtype=float), ours[probabilities].mean().to_numpy(), rtol=1e-9)
    assert row["emotion"] == probabilities[int(np.argmax(row[probabilities].to_numpy(dtype=float)))].removeprefix("p_")
    assert row["windows"] == len(ours)
    rejected = pd.read_parquet(out / "predictions" / "_rejected.parquet")
    assert list(rejected["uri"]) == [str(call["folder"] / "quiet.wav")] and rejected["stage"].iloc[0] == "segments"
    assert "windows labelled one by one" in capsys.readouterr().out


def test_a_damaged_part_or_fingerprint_index_is_one_line_naming_it_and_its_remedy_works(call, data, rf_model, evaluated, tmp_path, capsys):
    """Truncated or junk output and store files stop a run before any work, naming the file; doing what the line says gives the first run's labels."""
    out = tmp_path / "labels"
    command = ["predict", "--model", str(rf_model), "--audio", str(call["folder"]), "--out", str(out), "--segment", "4", "--store", str(evaluated), "--no-progress"]
    assert cli.main(command) == 0
    first, first_windows = pd.read_parquet(out / "predictions"), pd.read_parquet(out / "segments")
    (part,) = (out / "predictions").glob("part-*")
    windows = out / "segments" / part.name
    capsys.readouterr()

    def refused(says: str) -> None:
        ray.shutdown()  # the run before started it
        assert cli.main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, err
        assert not ray.is_initialized()

    intact = windows.read_bytes()
    windows.write_bytes(intact[:100])
    refused(f"part file {windows} cannot be read (ArrowInvalid: ")
    windows.write_bytes(intact)
    part.write_bytes(b"junk")
    refused(f"part file {part} cannot be read (ArrowInvalid: Parquet file size is 4 bytes, smaller than the minimum file footer (8 bytes)); "
            "remove it and the file of the same name under segments/ too, if there is one: a run given its files labels them again")
    part.unlink()
    windows.unlink()
    assert cli.main(command) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "predictions"), first)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "segments"), first_windows)

    store, table = tmp_path / "store", tmp_path / "audio.csv"
    data["emovo"][["path", "speaker"]].iloc[:2].to_csv(table, index=False)
    command = ["predict", "--model", str(rf_model), "--audio", str(table), "--out", str(tmp_path / "whole"), "--store", str(store), "--no-progress"]
    assert cli.main(command) == 0
    (index,) = store.rglob("fingerprints.parquet")
    index.write_bytes(index.read_bytes()[:60])
    shutil.rmtree(tmp_path / "whole")  # labelled anew, so the index is read
    capsys.readouterr()
    refused(f"the store's fingerprint index {index} cannot be read (")
    index.unlink()
    assert cli.main(command) == 0


def test_speech_windows_find_the_utterances(call, rf_model, evaluated, tmp_path):
    out = tmp_path / "labels"
    assert cli.main(["predict", "--model", str(rf_model), "--audio", str(call["folder"] / "call.wav"), "--out", str(out), "--segment", "speech", "--store", str(evaluated), "--no-progress"]) == 0
    windows = pd.read_parquet(out / "segments")
    for start, end in call["utterances"]:
        assert ((windows["start"] < end) & (windows["end"] > start)).any(), (start, end)
    silences = [(end + 0.5, end + 1.5) for _, end in call["utterances"]]
    for start, end in silences:
        assert not ((windows["start"] >= start) & (windows["end"] <= end)).any()
    assert (windows["end"] - windows["start"] <= 10.0 + 1e-6).all()
    # A second run cuts nothing again: the windows come from the cache, the shard is skipped.
    parts = sorted(p.name for p in (out / "segments").iterdir())
    assert cli.main(["predict", "--model", str(rf_model), "--audio", str(call["folder"] / "call.wav"), "--out", str(out), "--segment", "speech", "--store", str(evaluated), "--no-progress"]) == 0
    assert sorted(p.name for p in (out / "segments").iterdir()) == parts


def test_windows_a_killed_run_left_without_their_part_are_removed(call, rf_model, evaluated, tmp_path):
    out = tmp_path / "labels"
    command = ["predict", "--model", str(rf_model), "--out", str(out), "--segment", "4", "--store", str(evaluated), "--no-progress"]
    assert cli.main([*command, "--audio", str(call["folder"])]) == 0
    # Killed after a task wrote its windows, before its part:
    for part in (out / "predictions").glob("part-*.parquet"):
        part.unlink()
    # A run given other files keys its shard anew, and wrote windows of its own beside the orphans.
    assert cli.main([*command, "--audio", str(call["folder"] / "call.wav")]) == 0
    windows = pd.read_parquet(out / "segments")
    assert not windows.duplicated(["uri", "start"]).any()
    assert len(windows) == pd.read_parquet(out / "predictions")["windows"].sum()
    assert sorted(p.name for p in (out / "segments").iterdir()) == sorted(p.name for p in (out / "predictions").glob("part-*.parquet"))


def test_an_edited_decode_rule_of_a_bundle_saved_before_sealing_relabels_instead_of_reusing_parts(rf_model, call, evaluated, tmp_path, capsys):
    """Such a bundle's model id does not cover its decode rules, so they can be edited; the parts still follow them."""
    model = tmp_path / "model"
    shutil.copytree(rf_model, model)
    metadata = json.loads((model / "model.json").read_text())
    del metadata["bundle"]["sealed"]
    metadata["bundle"]["model_id"] = bundle._model_id(metadata["format_version"], metadata["bundle"])
    (model / "model.json").write_text(json.dumps(metadata))
    command = ["predict", "--model", str(model), "--audio", str(call["folder"] / "call.wav"), "--out", str(tmp_path / "labels"), "--store", str(evaluated), "--no-progress"]
    assert cli.main(command) == 0
    before = {p.name for p in (tmp_path / "labels" / "predictions").glob("part-*")}
    metadata["decode"]["channel"] = "first"
    (model / "model.json").write_text(json.dumps(metadata))
    capsys.readouterr()
    assert cli.main(command) == 0
    output = capsys.readouterr().out
    assert "(1 shard(s) written" in output and "reused" not in output, output
    after = {p.name for p in (tmp_path / "labels" / "predictions").glob("part-*")}
    assert len(after) == 1 and not after & before


def test_predict_that_labels_nothing_fails_naming_the_commonest_reason(call, rf_model, evaluated, tmp_path, capsys):
    out = tmp_path / "labels"
    capsys.readouterr()
    assert cli.main(["predict", "--model", str(rf_model), "--audio", str(call["folder"] / "quiet.wav"), "--out", str(out), "--store", str(evaluated), "--no-progress"]) == 1
    *warnings, error = capsys.readouterr().err.strip().splitlines()
    assert "none of the 1 file(s) could be labelled" in error and "no speech" in error, error
    # rf labels each file alone, so the missing speaker costs it nothing and is not warned of.
    assert warnings == [], warnings
    # What was found is still written: the reason, for the file.
    assert list(pd.read_parquet(out / "predictions" / "_rejected.parquet")["uri"]) == [str(call["folder"] / "quiet.wav")]
    # Into the same output, two empty files that labels nothing: the reason named is this run's, not the earlier one's.
    (tmp_path / "empty").mkdir()
    for name in ("a.wav", "b.wav"):
        (tmp_path / "empty" / name).write_bytes(b"")
    capsys.readouterr()
    assert cli.main(["predict", "--model", str(rf_model), "--audio", str(tmp_path / "empty"), "--out", str(out), "--store", str(evaluated), "--no-progress"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "none of the 2 file(s) could be labelled; the commonest reason (2 file(s)): empty file" in error, error
    assert len(pd.read_parquet(out / "predictions" / "_rejected.parquet")) == 3


@pytest.mark.parametrize("segment", [[], ["--segment", "1"]], ids=["whole files", "windows"])
def test_a_file_recorded_below_the_analysis_rate_is_warned_about(data, evaluated, rf_model, tmp_path, capsys, segment):
    """An 8 kHz recording is upsampled to the model's 16 kHz like any other, and the user hears of it, as `run` tells of a corpus."""
    import soundfile as sf
    from scipy.signal import resample_poly

    folder = tmp_path / "audio"
    folder.mkdir()
    original, narrow = (Path(path) for path in data["emovo"]["path"][:2])
    shutil.copy(original, folder / original.name)
    signal_, rate = sf.read(narrow, always_2d=True)
    assert rate == 48000
    sf.write(folder / "narrow.wav", resample_poly(signal_[:, 0], 1, 6), 8000)
    command = ["predict", "--model", str(rf_model), "--audio", str(folder), "--out", str(tmp_path / "labels"), "--store", str(evaluated), "--no-progress", *segment]
    assert cli.main(command) == 0
    err = capsys.readouterr().err
    assert "warning: 1 labelled file(s) are recorded below the model's analysis rate of 16000 Hz (8000 Hz: 1): they were upsampled" in err, err
    assert len(pd.read_parquet(tmp_path / "labels" / "predictions")) == 2


def test_labels_of_files_not_given_again_stay(data, evaluated, rf_model, tmp_path, capsys):
    """A daily ``--audio today/ --out labels/`` adds to the labels; it does not remove yesterday's."""
    audio = tmp_path / "audio"
    for path in data["emovo"]["path"][:6]:
        (audio / "day1").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, audio / "day1" / Path(path).name)
    for path in data["emovo"]["path"][20:23]:
        (audio / "day2").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, audio / "day2" / Path(path).name)
    out = tmp_path / "labels"
    command = ["predict", "--model", str(rf_model), "--out", str(out), "--store", str(evaluated), "--no-progress"]
    assert cli.main([*command, "--audio", str(audio / "day1")]) == 0
    first = pd.read_parquet(out / "predictions")
    assert cli.main([*command, "--audio", str(audio / "day2")]) == 0
    both = pd.read_parquet(out / "predictions")
    assert len(both) == 9 and set(first["uri"]) < set(both["uri"])
    pd.testing.assert_frame_equal(both[both["uri"].isin(first["uri"])].sort_values("uri").reset_index(drop=True), first.sort_values("uri").reset_index(drop=True))


def test_a_rerun_with_every_shard_done_needs_no_cluster(data, evaluated, rf_model, tmp_path, capsys, monkeypatch):
    """The cluster is probed only when there is work: a re-run of finished labels succeeds with RAY_ADDRESS pointing nowhere."""
    audio = _table(tmp_path / "calls.csv", data["emovo"][["path", "speaker"]])
    command = ["predict", "--model", str(rf_model), "--audio", str(audio), "--out", str(tmp_path / "labels"), "--store", str(evaluated), "--no-progress"]
    assert cli.main(command) == 0
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{closed_port()}")
    capsys.readouterr()
    assert cli.main(command) == 0, capsys.readouterr().err


def test_a_tables_carried_columns_survive_reading_an_output_another_run_also_wrote(data, evaluated, rf_model, tmp_path):
    """Arrow takes a folder's columns from one part: those only a later run's table brings must not vanish from read_parquet."""
    audio = tmp_path / "audio"
    audio.mkdir()
    for path in data["emovo"]["path"][:4]:
        shutil.copy(path, audio / Path(path).name)
    table = _table(tmp_path / "calls.csv", pd.DataFrame({"path": data["emovo"]["path"][20:23], "call_id": [101, 102, 103]}))
    out = tmp_path / "labels"
    command = ["predict", "--model", str(rf_model), "--out", str(out), "--store", str(evaluated), "--no-progress"]
    assert cli.main([*command, "--audio", str(audio)]) == 0
    assert cli.main([*command, "--audio", str(table)]) == 0
    # Every part has the column: otherwise which part Arrow reads first (by name, a digest) decides whether it is read.
    assert all("call_id" in pq.read_schema(part).names for part in (out / "predictions").glob("part-*.parquet"))
    labels = pd.read_parquet(out / "predictions")
    assert len(labels) == 7 and "call_id" in labels
    from_table = labels["uri"].isin(data["emovo"]["path"][20:23])
    assert sorted(labels.loc[from_table, "call_id"]) == ["101", "102", "103"]  # a CSV's cells are read as text
    assert labels.loc[~from_table, "call_id"].isna().all()
    # The folder's labels did not change: only a column was added to its part.
    assert cli.main([*command, "--audio", str(audio)]) == 0
    assert pd.read_parquet(out / "predictions").sort_values("uri").reset_index(drop=True).equals(labels.sort_values("uri").reset_index(drop=True))


def test_an_earlier_runs_unreadable_files_stay_in_the_rejections_until_listed_again(data, evaluated, rf_model, tmp_path):
    """A dangling link is in no part: labelling another folder into the output must not drop its rejection; labelling it once mended replaces it."""
    day1, day2 = tmp_path / "day1", tmp_path / "day2"
    for folder, paths in ((day1, data["emovo"]["path"][:2]), (day2, data["emovo"]["path"][20:22])):
        folder.mkdir()
        for path in paths:
            shutil.copy(path, folder / Path(path).name)
    link = day1 / "gone.wav"
    link.symlink_to(tmp_path / "nowhere.wav")
    out = tmp_path / "labels"
    command = ["predict", "--model", str(rf_model), "--out", str(out), "--store", str(evaluated), "--no-progress"]
    rejected = out / "predictions" / "_rejected.parquet"
    assert cli.main([*command, "--audio", str(day1)]) == 0
    assert pd.read_parquet(rejected)["uri"].tolist() == [str(link)]
    assert cli.main([*command, "--audio", str(day2)]) == 0
    assert pd.read_parquet(rejected)["uri"].tolist() == [str(link)]
    assert cli.main([*command, "--audio", str(day1)]) == 0
    assert pd.read_parquet(rejected)["uri"].tolist() == [str(link)]  # once, not twice
    link.unlink()  # mended: the file is there now
    shutil.copy(data["emovo"]["path"][30], link)
    assert cli.main([*command, "--audio", str(day1)]) == 0
    assert pd.read_parquet(rejected).empty and str(link) in set(pd.read_parquet(out / "predictions")["uri"])


def test_a_folder_a_file_was_removed_from_reuses_its_part_and_keeps_every_label(data, evaluated, rf_model, tmp_path, capsys):
    """Removing a recording from a labelled folder labels nothing again and loses no label, however often re-run."""
    folder = tmp_path / "audio"
    folder.mkdir()
    for path in data["emovo"]["path"][:6]:
        shutil.copy(path, folder / Path(path).name)
    out = tmp_path / "labels"
    command = ["predict", "--model", str(rf_model), "--out", str(out), "--store", str(evaluated), "--no-progress"]
    assert cli.main([*command, "--audio", str(folder)]) == 0
    first = pd.read_parquet(out / "predictions").sort_values("uri").reset_index(drop=True)
    parts = sorted((out / "predictions").glob("part-*"))
    assert len(parts) == 1 and len(first) == 6
    sorted(folder.iterdir())[0].unlink()
    for _ in range(2):
        capsys.readouterr()
        assert cli.main([*command, "--audio", str(folder)]) == 0
        assert "(0 shard(s) written; 1 finished shard(s) reused)" in capsys.readouterr().out
        assert sorted((out / "predictions").glob("part-*")) == parts
        pd.testing.assert_frame_equal(pd.read_parquet(out / "predictions").sort_values("uri").reset_index(drop=True), first)


def _left_behind(part: Path) -> Callable[[], None]:
    """What puts ``part`` back later as a killed run would have left it: its bytes and the time it was written."""
    data, written = part.read_bytes(), part.stat()

    def restore() -> None:
        part.write_bytes(data)
        os.utime(part, ns=(written.st_atime_ns, written.st_mtime_ns))

    return restore


def _labelled_table(rows: pd.DataFrame, tmp_path: Path, model: Path, store: Path, *extra: str) -> tuple[Path, Path, list[str]]:
    """Label ``rows`` (path, speaker) given as a table: the table, the output folder, and the command, to run again after editing the table."""
    table, out = tmp_path / "audio.csv", tmp_path / "labels"
    command = ["predict", "--model", str(model), "--audio", str(table), "--out", str(out), "--store", str(store), "--no-progress", *extra]
    rows.to_csv(table, index=False)
    assert cli.main(command) == 0
    return table, out, command


@pytest.mark.parametrize("segment", [[], ["--segment", "1"]], ids=["whole files", "windows"])
def test_a_replaced_part_keeps_the_labels_of_its_files_a_run_was_not_given(data, evaluated, rf_model, tmp_path, capsys, segment):
    """A table cut to two of a part's six files, one with another speaker: those two are labelled anew, the other four keep their labels (and windows)."""
    rows = data["emovo"][["path", "speaker"]].iloc[:6].reset_index(drop=True)
    table, out, command = _labelled_table(rows, tmp_path, rf_model, evaluated, *segment)

    def windows() -> pd.DataFrame:
        return pd.read_parquet(out / "segments").sort_values(["uri", "start"]).reset_index(drop=True) if segment else pd.DataFrame()

    first, first_windows = pd.read_parquet(out / "predictions").sort_values("uri").reset_index(drop=True), windows()
    assert len(list((out / "predictions").glob("part-*"))) == 1 and len(first) == 6
    assert not segment or (first["windows"] > 1).any()
    cut = rows.iloc[:2].copy()
    cut.loc[0, "speaker"] = "someone else"
    cut.to_csv(table, index=False)
    capsys.readouterr()
    assert cli.main(command) == 0
    printed = capsys.readouterr().out
    assert "1 earlier part(s) replaced; the labels of 4 file(s) of replaced parts this run was not given kept" in printed
    # The counts are this run's two files; the four kept labels are named apart.
    assert ": 2 files, 2 labelled, 0 not usable" in printed and "also holds 4 earlier label(s) of files this run was not given" in printed, printed
    assert sum(int(n) for n in re.findall(r"\((\d+)\)", printed.split("predicted: ")[1].splitlines()[0])) == 2, printed
    labels = pd.read_parquet(out / "predictions").sort_values("uri").reset_index(drop=True)
    assert len(labels) == 6 and len(list((out / "predictions").glob("part-*"))) == 2
    assert labels.loc[labels["uri"] == first.at[0, "uri"], "speaker"].item() == "someone else"
    pd.testing.assert_frame_equal(labels[labels["uri"].isin(first["uri"][2:])].reset_index(drop=True), first.iloc[2:].reset_index(drop=True))
    if segment:
        kept = first_windows["uri"].isin(first["uri"][2:])
        pd.testing.assert_frame_equal(windows()[lambda frame: frame["uri"].isin(first["uri"][2:])].reset_index(drop=True), first_windows[kept].reset_index(drop=True))
        assert len(windows()) == len(first_windows)
    # Given all six again as at first: the kept part is reused, the changed one relabelled, and the labels are the first run's.
    rows.to_csv(table, index=False)
    capsys.readouterr()
    assert cli.main(command) == 0
    printed = capsys.readouterr().out
    assert "(1 shard(s) written" in printed and "; 1 finished shard(s) reused; 1 earlier part(s) replaced)" in printed, printed
    pd.testing.assert_frame_equal(pd.read_parquet(out / "predictions").sort_values("uri").reset_index(drop=True), first)
    pd.testing.assert_frame_equal(windows(), first_windows)


def test_a_run_into_an_output_holding_another_rules_labels_warns_that_it_mixes_them(data, evaluated, rf_model, tmp_path, capsys):
    """Earlier labels of other files stay (a daily --audio adds to the output), but when another rule gave them the summary says the output mixes rules."""
    rows = data["emovo"][["path", "speaker"]].iloc[:7].reset_index(drop=True)
    table, out, command = _labelled_table(rows.iloc[:3], tmp_path, rf_model, evaluated)
    junk = tmp_path / "junk.wav"
    junk.write_text("not audio")  # rejected, so its part records it without a label
    pd.concat([rows.iloc[3:6], pd.DataFrame({"path": [str(junk)], "speaker": [rows.at[3, "speaker"]]})]).to_csv(table, index=False)
    capsys.readouterr()
    assert cli.main(command) == 0  # the same model and rule: nothing mixed
    captured = capsys.readouterr()
    assert "also holds 3 earlier label(s)" in captured.out and "another model" not in captured.err, captured
    rows.iloc[6:].to_csv(table, index=False)
    assert cli.main([*command, "--segment", "1"]) == 0
    captured = capsys.readouterr()
    assert "also holds 6 earlier label(s)" in captured.out, captured.out
    assert "warning: 6 earlier label(s) in the folder come from another model or segmentation rule than this run's" in captured.err, captured.err
    assert len(pd.read_parquet(out / "predictions")) == 7
    # A file of a whole-file part given again under windows: its part goes, with the labels of the two files not given (the junk had none).
    rows.iloc[[3]].to_csv(table, index=False)
    assert cli.main([*command, "--segment", "1"]) == 0
    captured = capsys.readouterr()
    assert "; 1 earlier part(s) replaced; the labels of 2 file(s) of replaced parts this run was not given dropped (another model or rule gave them))" in captured.out, captured.out
    assert len(pd.read_parquet(out / "predictions")) == 5


def test_labels_kept_from_a_part_a_killed_run_left_never_give_a_file_two_rows(data, evaluated, rf_model, tmp_path):
    """{a, b, c}, then {a, b'} (c kept) killed before the old part goes, then {c'}: a and b keep the newer labels, once."""
    rows = data["emovo"][["path", "speaker"]].iloc[:3].reset_index(drop=True)
    table, out, command = _labelled_table(rows, tmp_path, rf_model, evaluated)
    (first_part,) = (out / "predictions").glob("part-*")
    left_behind = _left_behind(first_part)
    rows.assign(speaker=["s", "changed", "s"]).iloc[:2].to_csv(table, index=False)
    assert cli.main(command) == 0
    newer = pd.read_parquet(out / "predictions")
    left_behind()  # as if killed before removing it
    rows.assign(speaker="changed again").iloc[2:].to_csv(table, index=False)
    assert cli.main(command) == 0
    labels = pd.read_parquet(out / "predictions").sort_values("uri").reset_index(drop=True)
    assert labels["uri"].is_unique and len(labels) == 3, labels[["uri", "speaker"]]
    expected = pd.concat([newer[newer["uri"].isin(rows["path"][:2])], labels[labels["uri"] == rows.at[2, "path"]]]).sort_values("uri").reset_index(drop=True)
    pd.testing.assert_frame_equal(labels, expected)
    assert labels.loc[labels["uri"] == rows.at[2, "path"], "speaker"].item() == "changed again"


def test_a_file_two_stale_parts_record_alike_keeps_its_label_once(data, evaluated, rf_model, tmp_path):
    """{a, x}, then {a', x} killed before the old part goes, then {a''}: x, unchanged in both parts, keeps its label, once."""
    rows = data["emovo"][["path", "speaker"]].iloc[:2].reset_index(drop=True)
    table, out, command = _labelled_table(rows, tmp_path, rf_model, evaluated)
    first = pd.read_parquet(out / "predictions")
    (first_part,) = (out / "predictions").glob("part-*")
    left_behind = _left_behind(first_part)
    rows.assign(speaker=["changed", rows.at[1, "speaker"]]).to_csv(table, index=False)
    assert cli.main(command) == 0
    left_behind()  # as if killed before removing it
    rows.assign(speaker="changed again").iloc[:1].to_csv(table, index=False)
    assert cli.main(command) == 0
    labels = pd.read_parquet(out / "predictions")
    assert labels["uri"].is_unique and len(labels) == 2, labels[["uri", "speaker"]]
    x = rows.at[1, "path"]
    pd.testing.assert_frame_equal(labels[labels["uri"] == x].reset_index(drop=True), first[first["uri"] == x].reset_index(drop=True))


def test_a_run_killed_while_removing_stale_parts_resumes_to_the_labels_a_clean_run_gives(data, evaluated, rf_model, tmp_path, monkeypatch):
    """Two stale parts record x differently ({a, x} and {a', x'}, left by a killed run); a run given {a''} is killed after removing one of them.

    Resumed, it must end where a clean run from the same state ends: x keeps
    one row, from the part written last, whichever of the two went first.
    """
    from crossemo import storage

    rows = data["emovo"][["path", "speaker"]].iloc[:2].reset_index(drop=True)
    table, out, command = _labelled_table(rows, tmp_path, rf_model, evaluated)
    (first_part,) = (out / "predictions").glob("part-*")
    left_behind = _left_behind(first_part)
    rows.assign(speaker="changed").to_csv(table, index=False)
    assert cli.main(command) == 0
    left_behind()  # as if killed before removing it
    clean = tmp_path / "clean"
    shutil.copytree(out, clean)
    rows.assign(speaker="changed again").iloc[:1].to_csv(table, index=False)
    assert cli.main([*command[:command.index("--out") + 1], str(clean), *command[command.index("--out") + 2:]]) == 0

    remove, removed = storage.remove, []

    def killed_after_one(uri: str, **options) -> None:
        if "/predictions/part-" in uri and removed:
            raise KeyboardInterrupt
        removed.append(uri)
        remove(uri, **options)

    monkeypatch.setattr(storage, "remove", killed_after_one)
    assert cli.main(command) == 130
    assert len(removed) == 1
    monkeypatch.setattr(storage, "remove", remove)
    assert cli.main(command) == 0

    def parts(folder: Path) -> dict[str, pd.DataFrame]:
        return {part.name: pd.read_parquet(part) for part in sorted((folder / "predictions").glob("part-*"))}

    resumed, expected = parts(out), parts(clean)
    assert resumed.keys() == expected.keys()
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(resumed[name], frame)
    labels = pd.read_parquet(out / "predictions")
    assert labels["uri"].is_unique and set(labels["uri"]) == set(rows["path"]), labels[["uri", "speaker"]]
    # x keeps its newest record, the killed run's, not the one it was replacing.
    assert labels.loc[labels["uri"] == rows.at[1, "path"], "speaker"].item() == "changed"


def test_a_part_left_behind_by_a_killed_run_does_not_give_a_file_two_rows(data, evaluated, tmp_path):
    """Per-speaker shards: {a, b} is replaced by {a, b, c}, the run dies before removing the old part, then c is deleted; the next run keeps each file once.

    Both parts fit the listing {a, b} and share its files, so both are
    stale: {a, b} is labelled again, and c, which the run was not given,
    keeps its label in a part of its own, as a file removed from a folder does.
    """
    model = tmp_path / "model"
    assert cli.main(["train", "--from-run", str(evaluated), "--target", "emovo", "--method", "speaker_norm_linear", "--out", str(model), "--no-progress"]) == 0
    folder, out = tmp_path / "audio", tmp_path / "labels"
    folder.mkdir()
    paths = [Path(path) for path in data["emovo"]["path"][:3]]
    command = ["predict", "--model", str(model), "--audio", str(folder), "--out", str(out), "--store", str(evaluated), "--no-progress"]
    for path in paths[:2]:
        shutil.copy(path, folder / path.name)
    assert cli.main(command) == 0
    (first_part,) = (out / "predictions").glob("part-*")
    first, left_behind = pd.read_parquet(first_part), _left_behind(first_part)
    shutil.copy(paths[2], folder / paths[2].name)
    assert cli.main(command) == 0
    (second_part,) = (out / "predictions").glob("part-*")
    second = pd.read_parquet(second_part)
    left_behind()  # as if killed before removing it
    (folder / paths[2].name).unlink()
    assert cli.main(command) == 0
    labels = pd.read_parquet(out / "predictions").sort_values("uri").reset_index(drop=True)
    parts = {p.name for p in (out / "predictions").glob("part-*")}
    assert first_part.name in parts and second_part.name not in parts and len(parts) == 2
    assert labels["uri"].is_unique and len(labels) == 3
    kept = second[second["uri"] == str(folder / paths[2].name)]
    pd.testing.assert_frame_equal(labels, pd.concat([first, kept]).sort_values("uri").reset_index(drop=True))


def test_labels_in_waves_are_the_labels_of_one_wave(data, evaluated, tmp_path, monkeypatch):
    """Three waves of one speaker each (per-speaker shards of 12 files) extract and label what one wave does."""
    from crossemo import orchestration, prediction

    model = tmp_path / "model"
    assert cli.main(["train", "--from-run", str(evaluated), "--target", "emovo", "--method", "speaker_norm_linear", "--out", str(model), "--no-progress"]) == 0
    table = _table(tmp_path / "emovo.csv", data["emovo"][["path", "speaker"]])
    extracted: list[int] = []
    extract_files = orchestration.extract_files
    monkeypatch.setattr(orchestration, "extract_files", lambda files, *args, **kwargs: extracted.append(len(files)) or extract_files(files, *args, **kwargs))

    def predict(out: Path, store: Path) -> pd.DataFrame:
        assert cli.main(["predict", "--model", str(model), "--audio", str(table), "--out", str(out), "--store", str(store), "--no-progress"]) == 0
        return pd.read_parquet(out / "predictions").sort_values("uri").reset_index(drop=True)

    monkeypatch.setattr(prediction, "MAX_WAVE_FILES", 4 * PER_EMOTION)
    in_waves = predict(tmp_path / "waves", tmp_path / "store-waves")
    assert extracted == [4 * PER_EMOTION] * 3
    monkeypatch.setattr(prediction, "MAX_WAVE_FILES", 4096)
    extracted.clear()
    in_one = predict(tmp_path / "one", tmp_path / "store-one")
    assert extracted == [len(table.read_text().splitlines()) - 1]
    pd.testing.assert_frame_equal(in_waves, in_one)
    assert sorted(p.name for p in (tmp_path / "waves" / "predictions").iterdir()) == sorted(p.name for p in (tmp_path / "one" / "predictions").iterdir())
