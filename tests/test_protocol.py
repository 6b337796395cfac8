"""The protocol: which tasks exist, what each trains and tests on, and the tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crossemo import methods, protocol
from crossemo.labels import EMOTIONS
from crossemo.report import tables


def make_frame(corpus: str, speakers: list[str], per_class: int = 3, dims: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for speaker in speakers:
        for e_index, emotion in enumerate(EMOTIONS):
            for n in range(per_class):
                rows.append({"corpus": corpus, "speaker": speaker, "emotion": emotion, "uri": f"/{corpus}/{speaker}/{emotion}{n}.wav", **{f"f{d}": rng.normal(e_index, 1.0) for d in range(dims)}})
    return pd.DataFrame(rows)


@pytest.fixture
def datasets():
    return {
        "a": protocol.Dataset.from_frame(make_frame("a", ["s1", "s2", "s3"])),
        "b": protocol.Dataset.from_frame(make_frame("b", ["t1", "t2"], seed=1)),
    }


def test_plan_has_every_task_once(datasets):
    pairs = protocol.parse_pairs("all", sorted(datasets))
    tasks = protocol.plan(datasets, pairs, protocol.parse_methods("all"))
    keys = [t.key for t in tasks]
    assert len(keys) == len(set(keys))
    s2 = [t for t in tasks if t.scenario == 2]
    # scenario 2 runs once per target, not once per pair: majority, rf and the target-only twins per target speaker
    assert len(s2) == (2 + len(protocol.TARGET_ONLY_METHODS)) * (3 + 2)
    assert {t.method for t in s2} == {"majority", "rf", *protocol.TARGET_ONLY_METHODS}
    assert len([t for t in tasks if t.scenario == 1]) == 2
    s3 = [t for t in tasks if t.scenario == 3]
    assert len(s3) == (1 + len(protocol.TRANSFER_METHODS)) * (3 + 2)
    assert {t.fold for t in s3 if t.target == "b"} == {"b/t1", "b/t2"}
    assert all(t.shared == "fcnn" for t in s3 if t.method == "fcnn")


def test_keys_change_with_data_and_params(datasets):
    pairs = [("a", "b")]
    base = protocol.plan(datasets, pairs, ["rf"])
    again = protocol.plan(datasets, pairs, ["rf"])
    assert [t.key for t in base] == [t.key for t in again]
    other = protocol.plan(datasets, pairs, ["rf"], overrides={"rf": {"n_estimators": 10}})
    assert not {t.key for t in base if t.method == "rf"} & {t.key for t in other if t.method == "rf"}
    changed = dict(datasets, b=protocol.Dataset.from_frame(make_frame("b", ["t1", "t2"], seed=2)))
    assert not {t.key for t in base} & {t.key for t in protocol.plan(changed, pairs, ["rf"])}


def test_split_keeps_the_held_out_speakers_out_of_training(datasets):
    task = next(t for t in protocol.plan(datasets, [("a", "b")], ["rf"]) if t.scenario == 3 and t.fold == "b/t1")
    train, test = protocol.split(task, datasets["a"], datasets["b"])
    assert set(train["speakers"]) == set(datasets["a"].speakers) | {"b/t1"}
    assert set(test["speakers"]) == {"b/t2"}
    assert train["is_target"].sum() == (datasets["b"].speakers == "b/t1").sum()
    s2 = next(t for t in protocol.plan(datasets, [("a", "b")], ["rf"]) if t.scenario == 2 and t.fold == "b/t2")
    train, test = protocol.split(s2, None, datasets["b"])
    assert set(train["speakers"]) == {"b/t2"} and train["is_target"].all()
    assert set(test["speakers"]) == {"b/t1"}


def test_predict_never_sees_test_labels(datasets, monkeypatch):
    seen = {}

    class Spy:
        classes_ = np.array(["neutral"])

        def fit(self, X, y, *, is_target, speakers, X_unlabelled, speakers_unlabelled):
            seen["fit_rows"] = len(y)
            seen["unlabelled"] = (X_unlabelled.shape, set(speakers_unlabelled))
            return self

        def predict(self, X, *, speakers):
            seen["predict_args"] = (X.shape, set(speakers))
            return np.array(["neutral"] * len(X))

        def predict_proba(self, X, *, speakers):
            seen["predict_proba_args"] = (X.shape, set(speakers))
            return np.ones((len(X), 1))

    monkeypatch.setattr(protocol.methods, "make_method", lambda name, **kw: Spy())
    task = next(t for t in protocol.plan(datasets, [("a", "b")], ["rf"]) if t.scenario == 3 and t.fold == "b/t1")
    frame = protocol.run_task(task, datasets["a"], datasets["b"])
    assert seen["fit_rows"] == len(datasets["a"].y) + (datasets["b"].speakers == "b/t1").sum()
    assert seen["predict_args"][1] == {"b/t2"}
    assert seen["unlabelled"] == seen["predict_args"] == seen["predict_proba_args"]  # the test rows' features, the only thing fit gets of them
    assert list(frame.columns) == protocol.RESULT_COLUMNS + protocol.PROBABILITY_COLUMNS
    assert (frame[protocol.PROBABILITY_COLUMNS].to_numpy() == [1.0, 0.0, 0.0, 0.0]).all()
    assert frame["accuracy"].iloc[0] == pytest.approx(0.25)
    assert frame["uar"].iloc[0] == pytest.approx(0.25)


def test_score_is_accuracy_and_unweighted_recall():
    true = np.array(["neutral"] * 8 + ["anger"] * 2)
    predicted = np.array(["neutral"] * 10)
    accuracy, uar = protocol.score(true, predicted, classes=["neutral", "anger"])
    assert accuracy == pytest.approx(0.8)
    assert uar == pytest.approx(0.5)
    # Over the target's four classes, the two absent ones count as recall 0.
    assert protocol.score(true, predicted, classes=list(EMOTIONS))[1] == pytest.approx(0.25)


def test_twins_run_in_scenario_two_only_with_their_method(datasets):
    tasks = protocol.plan(datasets, [("a", "b")], protocol.parse_methods("rf"))
    assert {t.method for t in tasks if t.scenario == 2} == {"majority", "rf"}
    tasks = protocol.plan(datasets, [("a", "b")], protocol.parse_methods("speaker_norm_linear,coral"))
    assert {t.method for t in tasks if t.scenario == 2} == {"majority", "rf", "speaker_norm_linear"}


def test_multi_source_pairs_pool_their_sources():
    corpora = ["a", "b", "c"]
    assert protocol.parse_pairs("c+a:b", corpora) == [("a+c", "b")]
    assert protocol.parse_pairs("a+c:b,c+a:b", corpora) == [("a+c", "b")]
    pairs = protocol.parse_pairs("all", corpora)
    assert len(pairs) == 6 + 3 and ("b+c", "a") in pairs and ("a+b", "c") in pairs
    assert protocol.parse_pairs("all", ["a", "b"]) == [("a", "b"), ("b", "a")]
    frames = {name: make_frame(name, [f"{name}1", f"{name}2"], seed=i) for i, name in enumerate(corpora)}
    datasets = {name: protocol.Dataset.from_frame(frame) for name, frame in frames.items()}
    pooled = protocol.with_sources(datasets, [("a+c", "b")])
    union = pooled["a+c"]
    assert union.corpus == "a+c" and len(union.y) == len(datasets["a"].y) + len(datasets["c"].y)
    assert {s.split("/")[0] for s in union.speakers} == {"a", "c"}
    assert protocol.Dataset.union([datasets["a"], datasets["c"]]).digest == union.digest != protocol.Dataset.union([datasets["a"], datasets["b"]]).digest
    tasks = protocol.plan(pooled, [("a+c", "b")], ["rf"])
    assert {t.source for t in tasks if t.scenario != 2} == {"a+c"}
    task = next(t for t in tasks if t.scenario == 3)
    train, _ = protocol.split(task, union, datasets["b"])
    assert (~train["is_target"]).sum() == len(union.y)
    labels = protocol.Labels.union([protocol.Labels.from_manifest(n, frames[n]) for n in ("a", "c")])
    assert labels.corpus == "a+c" and len(labels.y) == len(union.y)


@pytest.mark.parametrize("spec, message", [
    ("a:a", "both source and target"),
    ("a:z", "names corpus 'z'"),
    ("ab", "not SOURCE:TARGET"),
    ("a+b:b", "uses b as both source and target"),
    ("a+a:b", "names a source corpus twice"),
    ("a+z:b", "names corpus 'z'"),
    ("a+:b", "empty source corpus name"),
    ("a:b:c", "not SOURCE:TARGET"),
])
def test_bad_pairs_are_named(spec, message):
    with pytest.raises(protocol.ProtocolError, match=message):
        protocol.parse_pairs(spec, ["a", "b"])


def test_unknown_method_is_named():
    with pytest.raises(protocol.ProtocolError, match="unknown method 'gan'"):
        protocol.parse_methods("rf,gan")


@pytest.mark.parametrize("spec", ["", " , ", []])
def test_an_empty_list_of_methods_or_pairs_is_refused_not_taken_for_all(spec):
    """`--methods ""` ran all fourteen methods: on full corpora, hours nobody asked for."""
    with pytest.raises(protocol.ProtocolError, match="^--methods is empty; give all or m1,m2"):
        protocol.parse_methods(spec)
    with pytest.raises(protocol.ProtocolError, match="^--pairs is empty; give all or SOURCE:TARGET"):
        protocol.parse_pairs(spec, ["a", "b"])


def test_single_speaker_target_and_disjoint_classes_are_refused(datasets):
    one = protocol.Dataset.from_frame(make_frame("c", ["only"]))
    with pytest.raises(protocol.ProtocolError, match="has 1 speaker"):
        protocol.check_pair(datasets["a"], one)
    frame = make_frame("d", ["u1", "u2"])
    frame = frame[frame["emotion"] == "joy"]
    source = make_frame("e", ["v1"])
    source = source[source["emotion"] == "anger"]
    with pytest.raises(protocol.ProtocolError, match="shares no emotion class"):
        protocol.check_pair(protocol.Dataset.from_frame(source), protocol.Dataset.from_frame(frame))


def test_a_method_needing_more_speakers_than_the_data_has_is_refused(datasets):
    """fcnn's early stopping holds out a source speaker: one source speaker is refused, two are enough; every method needs a target speaker."""
    one_speaker = protocol.Dataset.from_frame(make_frame("c", ["only"]))
    stopping = methods.make_method("fcnn", early_stopping=True)
    with pytest.raises(protocol.ProtocolError, match="fcnn with these parameters needs at least 2 labelled source speaker.s.; the source c has 1"):
        protocol.check_speakers("fcnn", stopping, one_speaker, datasets["a"], target_training=1)
    protocol.check_speakers("fcnn", stopping, datasets["b"], datasets["a"], target_training=1)
    protocol.check_speakers("fcnn", methods.make_method("fcnn"), one_speaker, datasets["a"], target_training=1)
    with pytest.raises(protocol.ProtocolError, match="there is no source"):
        protocol.check_speakers("fcnn", methods.make_method("fcnn"), None, datasets["a"])
    with pytest.raises(protocol.ProtocolError, match="rf needs at least 1 labelled speaker.s. of the target c, which has 0"):
        protocol.check_speakers("rf", methods.make_method("rf"), datasets["a"], protocol.Labels("c", np.array([]), np.array([])))


def _utterances(source: str, scenario: int, method: str, fold: str, correct: int, *, seed: int = 0, total: int = 8) -> list[dict]:
    """``total`` test utterances, two per class, the first ``correct`` of them predicted right."""
    rows = []
    for index in range(total):
        true = EMOTIONS[index % 4]
        predicted = true if index < correct else EMOTIONS[(index + 1) % 4]
        rows.append(dict(source=source, target="t", scenario=scenario, method=method, fold=fold, seed=seed, speaker="t/x", true=true, predicted=predicted))
    return rows


def test_tables_average_folds_and_use_scenario2_for_baseline():
    rows = []
    for fold, correct in (("t/1", 4), ("t/2", 6)):
        rows += _utterances("", 2, "rf", fold, correct)
        rows += _utterances("", 2, "majority", fold, 2)
        rows += _utterances("s", 3, "rf", fold, correct - 1)
        rows += _utterances("s", 3, "fcnn", fold, 7)
    rows += _utterances("s", 1, "rf", "all", 3)
    figures = tables.Figures.of(pd.DataFrame(rows))
    table2, table3 = tables.build_tables(figures, [("s", "t")])
    assert table2.iloc[0].to_dict() == {"source": "s", "target": "t", "majority": 25.0, "chance": 25.0, "scenario1": 37.5, "scenario2": 62.5, "scenario3": 50.0}
    assert table3.loc[0, "rf"] == 62.5 and table3.loc[0, "fcnn"] == 87.5
    # Only the methods that ran get a column; chance stands beside majority.
    assert list(table3.columns) == ["source", "target", "majority", "chance", "rf", "fcnn"]


def test_speaker_missing_a_class_runs_and_says_so(datasets):
    frame = make_frame("c", ["u1", "u2"])
    frame = frame[~((frame["speaker"] == "u1") & (frame["emotion"] == "joy"))]
    target = protocol.Dataset.from_frame(frame)
    warnings = protocol.check_pair(datasets["a"], target)
    assert warnings == [
        "a:c: speaker c/u1 has no joy; the fold training on it goes without",
        "a:c: the fold training on c/u2 tests on c/u1, who have no joy; that fold's UAR counts it as recall 0 (the pooled UAR does not depend on it)",
    ]
    task = next(t for t in protocol.plan({"a": datasets["a"], "c": target}, [("a", "c")], ["rf"], overrides={"rf": {"n_estimators": 5}}) if t.scenario == 2 and t.fold == "c/u1")
    frame = protocol.run_task(task, None, target)
    assert set(frame["true"]) == set(EMOTIONS) and "joy" not in set(frame["predicted"])


def test_a_recording_the_target_holds_is_left_out_of_the_source():
    source_frame = make_frame("a", ["s1", "s2"]).assign(sha256=lambda f: [f"a{i}" for i in range(len(f))])
    target_frame = make_frame("b", ["t1", "t2"], seed=1).assign(sha256=lambda f: [f"b{i}" for i in range(len(f))])
    shared_uri = target_frame.loc[5, "uri"]
    source_frame.loc[7, "sha256"] = target_frame.loc[5, "sha256"]  # the same bytes in both corpora
    source, target = protocol.Dataset.from_frame(source_frame), protocol.Dataset.from_frame(target_frame)
    leaked = source_frame.loc[7, "uri"]
    for scenario, fold in ((1, "all"), (3, "b/t1"), (3, "b/t2")):
        train, test = protocol.split(protocol.Task(scenario, "rf", "a", "b", fold), source, target)
        source_rows = train["X"][~train["is_target"]]
        assert len(source_rows) == len(source_frame) - 1
        assert not any((source_rows == source.X[list(source.uris).index(leaked)]).all(axis=1))
        assert shared_uri in set(test["uris"]) or fold == "b/" + target_frame.loc[5, "speaker"]
    # Nothing shared: the source is used whole, as the same object.
    assert protocol.usable_source(source, protocol.Dataset.from_frame(make_frame("c", ["u1", "u2"]))) is source


def test_a_pair_whose_source_shrinks_says_by_how_much(datasets):
    source_frame = make_frame("a", ["s1", "s2"]).assign(sha256=lambda f: [f"x{i}" for i in range(len(f))])
    target_frame = make_frame("b", ["t1", "t2"], seed=1).assign(sha256=lambda f: [f"x{i}" for i in range(len(f))])
    source, target = protocol.Dataset.from_frame(source_frame), protocol.Dataset.from_frame(pd.concat([target_frame.iloc[:5], target_frame.iloc[-5:]]))
    warnings = protocol.check_pair(source, target)
    assert f"a:b: 10 of the source's {len(source_frame)} utterances are also in the target and are left out of its source, which trains on {len(source_frame) - 10}" in warnings


def test_a_pair_whose_source_is_all_in_the_target_is_refused_in_one_line():
    # A manifest of some of the target's own files as the source: the duplicate rule empties the source,
    # and scenario 1's forest failed on no rows with a traceback.
    target_frame = make_frame("b", ["t1", "t2"], seed=1).assign(sha256=lambda f: [f"x{i}" for i in range(len(f))])
    source = protocol.Dataset.from_frame(make_frame("a", ["s1"]).assign(sha256=lambda f: [f"x{i}" for i in range(len(f))]))
    with pytest.raises(protocol.ProtocolError, match=rf"^pair a:b: all {len(source.y)} of the source's utterances are also in the target \(the same recordings\)"):
        protocol.check_pair(source, protocol.Dataset.from_frame(target_frame))


def test_task_keys_follow_the_evaluation_code(datasets, monkeypatch):
    pairs = protocol.parse_pairs("all", sorted(datasets))
    before = {t.key for t in protocol.plan(datasets, pairs, ["rf"])}
    monkeypatch.setattr(protocol, "evaluation_code_digest", lambda: "changed")
    assert not before & {t.key for t in protocol.plan(datasets, pairs, ["rf"])}
